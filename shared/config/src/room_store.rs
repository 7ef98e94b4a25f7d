//! `P2PIANO_ROOM_STORE`, where the rooms service keeps rooms.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};

/// Where `p2piano rooms` keeps rooms.
///
/// An enum rather than a string so that a typo (`mem`, `redis`) stops start-up with a
/// message naming `P2PIANO_ROOM_STORE` instead of silently falling back to MongoDB.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum RoomStore {
    /// `mongo`, the default: rooms in MongoDB (`MONGO_URI`), shared by every replica.
    #[default]
    Mongo,
    /// `memory`: rooms in the process, lost on restart and not shared between replicas;
    /// for one replica in development and benchmarks. Refused in production.
    Memory,
}

impl RoomStore {
    /// The keyword as written in `P2PIANO_ROOM_STORE` and the TOML file.
    pub fn as_str(self) -> &'static str {
        match self {
            RoomStore::Mongo => "mongo",
            RoomStore::Memory => "memory",
        }
    }
}

/// A `P2PIANO_ROOM_STORE` value that is neither `mongo` nor `memory`; the message is the
/// one validation used to give, and figment adds the variable or key it came from.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a room store (mongo or memory)")]
pub struct UnknownRoomStore(pub String);

impl FromStr for RoomStore {
    type Err = UnknownRoomStore;

    /// `mongo` or `memory`, trimmed, in any case.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        [RoomStore::Mongo, RoomStore::Memory]
            .into_iter()
            .find(|store| store.as_str().eq_ignore_ascii_case(text))
            .ok_or_else(|| UnknownRoomStore(text.to_owned()))
    }
}

impl fmt::Display for RoomStore {
    /// [`RoomStore::as_str`], for log lines.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for RoomStore {
    /// Reads a string with [`RoomStore::from_str`]; anything else is an error.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(de::Error::custom)
    }
}

impl Serialize for RoomStore {
    /// Writes [`RoomStore::as_str`].
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords() {
        assert_eq!("mongo".parse(), Ok(RoomStore::Mongo));
        assert_eq!(" Memory ".parse(), Ok(RoomStore::Memory));
        assert_eq!(
            "redis".parse::<RoomStore>(),
            Err(UnknownRoomStore("redis".to_owned()))
        );
        assert_eq!(
            UnknownRoomStore("redis".to_owned()).to_string(),
            "\"redis\" is not a room store (mongo or memory)"
        );
    }
}
