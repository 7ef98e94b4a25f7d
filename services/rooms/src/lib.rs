//! The rooms service: room lifecycle and membership, the only writer of the `rooms` and
//! `users` collections.
//!
//! It answers `<prefix>.rpc.rooms.{create,get,update,join,leave,update_user}` in queue group
//! `rooms` (any number of replicas), and after every committed change publishes a
//! [`p2piano_protocol::MembersEvent`] on `<prefix>.room.<code>.members`.
//!
//! - [`rooms`]: the rules, over any store;
//! - [`store`]: MongoDB and memory stores with the same semantics;
//! - [`service`]: the bus side (dispatch, replies, events, drain);
//! - [`app`]: start-up, admin HTTP, shutdown.

pub mod app;
pub mod metrics;
pub mod rooms;
pub mod service;
pub mod store;

pub use app::{AppError, Application};
pub use p2piano_clock::Clock;
pub use rooms::Rooms;
pub use service::RoomsService;
