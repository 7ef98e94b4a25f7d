//! The Socket.IO-over-WebSocket layer: the upgrade route, one task per socket that reads and
//! handles its frames in order, an outbox per socket that senders write through (a writer
//! task per socket takes what they cannot write at once), and per-socket limits.

pub mod budgets;
pub mod conn;
pub mod limits;
pub mod outbox;
#[cfg(test)]
mod test_support;
pub mod upgrade;
pub mod writer;
