//! Millisecond-precision UTC timestamps.
//!
//! MongoDB stores dates in milliseconds; truncating at creation makes a room read back from
//! the database equal to the one written, and gives every shape the same ISO-8601 text
//! (`2026-11-25T06:30:05.123Z`), which is what the original service sent.

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A UTC instant with millisecond precision, serialized as ISO-8601 with a `Z` suffix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The instant `millis` milliseconds after the Unix epoch.
    pub fn from_millis(millis: i64) -> Self {
        Self(millis)
    }

    /// Milliseconds since the Unix epoch.
    pub fn millis(self) -> i64 {
        self.0
    }

    /// The current system time, truncated to milliseconds.
    pub fn now() -> Self {
        Self(Utc::now().timestamp_millis())
    }

    /// This instant plus `d` (saturating), for expiry deadlines.
    pub fn plus(self, d: std::time::Duration) -> Self {
        let add = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        Self(self.0.saturating_add(add))
    }

    /// The instant as a chrono value, for formatting.
    pub fn to_datetime(self) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(self.0)
            .single()
            .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
    }

    /// ISO-8601 text with milliseconds and `Z`.
    pub fn to_iso(self) -> String {
        self.to_datetime()
            .to_rfc3339_opts(SecondsFormat::Millis, true)
    }
}

impl From<DateTime<Utc>> for Timestamp {
    fn from(d: DateTime<Utc>) -> Self {
        Self(d.timestamp_millis())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_iso())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|dt| Timestamp::from(dt.with_timezone(&Utc)))
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_round_trip_keeps_millis() {
        let t = Timestamp::from_millis(1_795_000_000_123);
        let json = serde_json::to_string(&t).unwrap();
        assert!(json.ends_with(".123Z\""), "{json}");
        let back: Timestamp = serde_json::from_str(&json).unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn plus_adds_milliseconds() {
        let t = Timestamp::from_millis(1000);
        assert_eq!(t.plus(std::time::Duration::from_secs(2)).millis(), 3000);
    }
}
