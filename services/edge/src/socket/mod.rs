//! The Socket.IO-over-WebSocket layer: the upgrade route, one task per socket that reads and
//! handles its frames in order, a writer task per socket, and per-socket limits.

pub mod budgets;
pub mod conn;
pub mod limits;
pub mod outbox;
pub mod upgrade;
