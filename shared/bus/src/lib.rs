//! The message bus every p2piano service talks through.
//!
//! [`Bus`] is one handle with two backends: NATS (async-nats) when the services run as
//! separate processes, and an in-process implementation for `p2piano all` (one process, zero
//! setup). The same service code runs on both, so both have the same observable semantics:
//!
//! - subjects are `.`-separated tokens; subscriptions may use `*` (one token) and `>` (one or
//!   more trailing tokens); malformed subjects fail with [`BusErrorKind::InvalidSubject`];
//! - every plain subscriber gets each matching message, each queue group gets it once;
//! - messages from one publisher reach each subscriber in publish order;
//! - a subscriber more than 65,536 messages behind loses new messages (counted and logged)
//!   instead of blocking anyone;
//! - [`Bus::request`] fails fast with [`BusErrorKind::NoResponders`] when nobody listens and
//!   with [`BusErrorKind::Timeout`] when nobody answers in time.
//!
//! The shared behaviour test suite (`tests/behaviour`) runs against both backends.

mod bus;
mod error;
mod headers;
mod lane;
mod memory;
mod message;
mod nats;
mod subject;
mod sublist;
mod subscription;
mod transport;

pub use bus::{Bus, BusKind};
pub use error::{BusError, BusErrorKind};
pub use headers::Headers;
pub use lane::spawn_lane;
pub use message::{Local, Message};
pub use subscription::Subscription;
