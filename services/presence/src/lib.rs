//! The presence service: sessions, which socket each session has now and on which edge,
//! edge liveness, and the leave when a socket or a whole edge goes away and nobody comes
//! back within the grace period.
//!
//! State lives in three KV buckets (JetStream KV in production, memory in `p2piano all`),
//! so replicas are stateless and a restart loses nothing; see [`presence`] for how
//! compare-and-set on revisions gives exactly one leave per departure.
//!
//! - [`sessions`], [`connections`], [`liveness`]: the rules;
//! - [`service`]: the bus side; [`app`]: start-up and shutdown;
//! - [`kv`]: the KV abstraction and its two implementations.
//!
//! The edge's side of the contract (heartbeats, control) lives with the edge, in
//! `p2piano_edge::presence_link`.

pub mod app;
pub mod connections;
pub mod index;
pub mod judge;
pub mod keys;
pub mod kv;
pub mod liveness;
pub mod metrics;
pub mod presence;
pub mod records;
pub mod resync;
pub mod rooms_client;
pub mod service;
pub mod sessions;

pub use app::{AppError, Application};
pub use presence::{Buckets, Presence, Settings};
