//! `Duration` views of the numeric settings, so that callers never mix up units.

use std::time::Duration;

use crate::Config;

impl Config {
    /// Bound on each bus request (`P2PIANO_REQUEST_TIMEOUT_MS`).
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// Server selection and per-operation bound for MongoDB (`P2PIANO_MONGO_TIMEOUT_MS`).
    pub fn mongo_timeout(&self) -> Duration {
        Duration::from_millis(self.mongo_timeout_ms)
    }

    /// How long an empty room is kept (`P2PIANO_ROOM_IDLE_SECS`).
    pub fn room_idle(&self) -> Duration {
        Duration::from_secs(self.room_idle_secs)
    }

    /// Idle expiry of a session (`P2PIANO_SESSION_TTL_SECS`).
    pub fn session_ttl(&self) -> Duration {
        Duration::from_secs(self.session_ttl_secs)
    }

    /// Grace before a dropped connection's member is announced as left
    /// (`P2PIANO_LEAVE_GRACE_MS`).
    pub fn leave_grace(&self) -> Duration {
        Duration::from_millis(self.leave_grace_ms)
    }

    /// Interval of edge heartbeats (`P2PIANO_HEARTBEAT_MS`).
    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms)
    }

    /// Silence after which an edge is considered dead (`P2PIANO_EDGE_TIMEOUT_MS`).
    pub fn edge_timeout(&self) -> Duration {
        Duration::from_millis(self.edge_timeout_ms)
    }

    /// How long a request body may take (`P2PIANO_BODY_TIMEOUT_MS`).
    pub fn body_timeout(&self) -> Duration {
        Duration::from_millis(self.body_timeout_ms)
    }

    /// How soon a socket must connect to a namespace (`P2PIANO_CONNECT_TIMEOUT_MS`).
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// Budget for a graceful stop (`P2PIANO_DRAIN_TIMEOUT_MS`).
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.drain_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_as_durations() {
        let config = Config::default();
        assert_eq!(config.request_timeout(), Duration::from_secs(5));
        assert_eq!(config.mongo_timeout(), Duration::from_secs(2));
        assert_eq!(config.room_idle(), Duration::from_secs(5400));
        assert_eq!(config.session_ttl(), Duration::from_secs(86400));
        assert_eq!(config.leave_grace(), Duration::from_secs(5));
        assert_eq!(config.heartbeat(), Duration::from_secs(1));
        assert_eq!(config.edge_timeout(), Duration::from_secs(3));
        assert_eq!(config.drain_timeout(), Duration::from_secs(20));
    }
}
