//! The time source of the rooms service.
//!
//! Production uses the system clock. Tests of expiry use [`Clock::tokio`], which follows
//! tokio's (pausable) clock, so that "an hour later" takes no time and no sleep.

use p2piano_protocol::Timestamp;

/// Where "now" comes from.
#[derive(Clone, Debug)]
pub enum Clock {
    /// Wall-clock time.
    System,
    /// Wall-clock time at creation plus tokio time elapsed since; advances with
    /// `tokio::time::advance` when the runtime's time is paused.
    Tokio {
        /// Wall time when the clock was made.
        base: Timestamp,
        /// Tokio instant when the clock was made.
        start: tokio::time::Instant,
    },
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Clock::System
    }

    /// A clock driven by tokio's time, for tests with paused time.
    pub fn tokio() -> Self {
        Clock::Tokio {
            base: Timestamp::now(),
            start: tokio::time::Instant::now(),
        }
    }

    /// The current time, in milliseconds.
    pub fn now(&self) -> Timestamp {
        match self {
            Clock::System => Timestamp::now(),
            Clock::Tokio { base, start } => base.plus(start.elapsed()),
        }
    }
}
