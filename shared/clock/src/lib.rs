//! Where a service's "now" comes from, passed in as a handle like the bus and the stores.
//!
//! Production uses the system clock. Tests of expiry (idle rooms, session TTLs, grace
//! periods) use [`Clock::tokio`], which follows tokio's pausable clock, so that "an hour
//! later" takes no time and no sleep. It lives apart from `p2piano-protocol`, which holds
//! only what travels on the wire.

use p2piano_protocol::Timestamp;

/// Where "now" comes from. Production uses the system clock; tests of expiry use
/// [`Clock::tokio`], which follows tokio's pausable clock, so that "an hour later" takes no
/// time and no sleep.
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_tokio_clock_follows_paused_time() {
        let clock = Clock::tokio();
        let before = clock.now();
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(clock.now().millis() - before.millis(), 3_600_000);
    }
}
