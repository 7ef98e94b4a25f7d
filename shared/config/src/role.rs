//! Which process is starting.

use std::fmt;

/// Which process is starting; decides which variables the production checks of
/// [`crate::Config::validate`] require, since each role needs different dependencies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The HTTP and Socket.IO gateway: needs the cookie secret and NATS.
    Edge,
    /// The room service: needs MongoDB and NATS.
    Rooms,
    /// The presence service: needs NATS.
    Presence,
    /// Everything in one process: needs the cookie secret, and MongoDB when it runs on
    /// NATS (split-like mode); without `NATS_URL` it runs on the in-process bus and memory
    /// stores.
    All,
}

impl fmt::Display for Role {
    /// The subcommand name (`edge`, `rooms`, `presence`, `all`), for log lines.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Edge => "edge",
            Role::Rooms => "rooms",
            Role::Presence => "presence",
            Role::All => "all",
        })
    }
}
