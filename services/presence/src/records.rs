//! What presence keeps in its KV buckets, as JSON (inspectable with `nats kv get`).
//!
//! - `sessions`, key = SHA-256 of the session secret: [`SessionRecord`];
//! - `connections`, same key (one current socket per session): [`ConnRecord`];
//! - `edges`, key = edge id: [`EdgeRecord`].

use bytes::Bytes;
use p2piano_protocol::budget::BudgetSnapshot;
use p2piano_protocol::{RoomCode, Timestamp, UserId};
use serde::de::DeserializeOwned;

use crate::kv::KvError;
use serde::{Deserialize, Serialize};

/// A session: the public id it maps to, and when it was made and last used.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionRecord {
    /// Public id.
    pub user_id: UserId,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last refresh of the idle expiry.
    pub last_seen: Timestamp,
    /// Client address at creation, for operators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// Client `User-Agent` at creation, for operators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// The event budgets the session's last closed socket left behind, handed to the edge
    /// of its next socket (`p2piano_protocol::budget`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetSnapshot>,
}

/// Where a session's socket stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ConnState {
    /// The socket is open.
    Live,
    /// The socket closed; unless the session comes back by `until`, it leaves its room.
    Grace {
        /// End of the grace period (wall-clock, shared by all replicas).
        until: Timestamp,
    },
    /// A replica won the right to announce the leave and is doing it; if it dies, another
    /// replica takes over once `since` is older than the stale bound.
    Leaving {
        /// When the leave was claimed.
        since: Timestamp,
    },
}

/// A session's current socket (or the memory of it during the grace period).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnRecord {
    /// Public id of the session, for the leave.
    pub user_id: UserId,
    /// Edge holding the socket.
    pub edge_id: String,
    /// Socket id on that edge.
    pub conn_id: String,
    /// The room the session is a member of through this socket, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room_code: Option<RoomCode>,
    /// The page the socket belongs to (Socket.IO's `pid`), given to the client in its
    /// namespace connect reply; a later socket that presents it is the same page coming back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<String>,
    /// Where it stands.
    #[serde(flatten)]
    pub state: ConnState,
}

/// An edge known to presence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EdgeRecord {
    /// False once a replica has declared the edge dead: its sockets then count as in
    /// their grace period, which ends a grace after `since`.
    pub alive: bool,
    /// When the state last changed.
    pub since: Timestamp,
    /// Raised each time the edge is declared dead; an edge heard again with an older one in
    /// its heartbeat has not re-asserted its sockets since, and is asked to.
    #[serde(default)]
    pub generation: u64,
}

/// Encodes a record for the KV. Our records have string keys and no floats, so this does
/// not fail; if it ever did, the write is refused as invalid rather than storing an empty
/// value that every later read would take for a missing record.
pub fn encode<T: Serialize>(value: &T) -> Result<Bytes, KvError> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|e| KvError::Invalid(format!("record not encodable: {e}")))
}

/// Decodes a record read from the KV; `None` (logged) for a value this version cannot read,
/// which callers treat like an absent one rather than failing every request on it.
pub fn decode<T: DeserializeOwned>(key: &str, value: &[u8]) -> Option<T> {
    match serde_json::from_slice(value) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(key, error = %e, "unreadable presence record ignored");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conn_record_is_flat_json() {
        let r = ConnRecord {
            user_id: UserId::random(),
            edge_id: "e1".into(),
            conn_id: "c1".into(),
            room_code: Some(RoomCode::parse("fxa3x").unwrap()),
            pid: Some("p1".into()),
            state: ConnState::Grace {
                until: Timestamp::from_millis(5),
            },
        };
        let v: serde_json::Value = serde_json::from_slice(&encode(&r).unwrap()).unwrap();
        assert_eq!(v["state"], "grace");
        assert_eq!(v["until"], "1970-01-01T00:00:00.005Z");
        assert_eq!(decode::<ConnRecord>("k", &encode(&r).unwrap()), Some(r));
        assert_eq!(decode::<ConnRecord>("k", b"{}"), None);
    }
}
