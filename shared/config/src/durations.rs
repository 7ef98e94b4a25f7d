//! Serde helpers that keep durations as [`Duration`] in [`crate::Config`] while the
//! environment and the TOML file keep giving whole numbers, with the unit in the key's name
//! (`leave_grace_ms = 600`, `room_idle_secs = 60`).
//!
//! Serializing writes the number back in the same unit, because figment's defaults layer
//! is [`crate::Config::default`] serialized. A sub-unit remainder (a `Duration` of 1.5 s in
//! a `_secs` field) is dropped when serialized, as the key cannot express it.

/// For fields whose key ends in `_ms`: whole milliseconds.
pub(crate) mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes whole milliseconds (saturating at `u64::MAX`).
    pub(crate) fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(value.as_millis()).unwrap_or(u64::MAX))
    }

    /// Reads a non-negative whole number of milliseconds.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// For fields whose key ends in `_secs`: whole seconds.
pub(crate) mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes whole seconds.
    pub(crate) fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(value.as_secs())
    }

    /// Reads a non-negative whole number of seconds.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use figment::Figment;
    use figment::providers::Serialized;

    use crate::Config;

    #[test]
    fn defaults_as_durations() {
        let config = Config::default();
        assert_eq!(config.request_timeout, Duration::from_secs(5));
        assert_eq!(config.mongo_timeout, Duration::from_secs(2));
        assert_eq!(config.room_idle, Duration::from_secs(5400));
        assert_eq!(config.session_ttl, Duration::from_secs(86400));
        assert_eq!(config.body_timeout, Duration::from_secs(10));
        assert_eq!(config.connect_timeout, Duration::from_secs(10));
        assert_eq!(config.leave_grace, Duration::from_secs(5));
        assert_eq!(config.heartbeat, Duration::from_secs(1));
        assert_eq!(config.edge_timeout, Duration::from_secs(3));
        assert_eq!(config.drain_timeout, Duration::from_secs(20));
    }

    #[test]
    fn serialized_in_the_unit_of_the_key() {
        let figment = Figment::from(Serialized::defaults(Config::default()));
        assert_eq!(
            figment.extract_inner::<u64>("leave_grace_ms").ok(),
            Some(5000)
        );
        assert_eq!(
            figment.extract_inner::<u64>("room_idle_secs").ok(),
            Some(5400)
        );
        let back: Config = figment.extract().expect("defaults round-trip");
        assert_eq!(back.leave_grace, Duration::from_secs(5));
        assert_eq!(back.room_idle, Duration::from_secs(5400));
    }
}
