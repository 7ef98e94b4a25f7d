//! Presence: session secrets, the presence RPCs (`<prefix>.rpc.presence.<op>`), and the
//! messages between presence and edges (heartbeats, control).
//!
//! The session id is a secret: whoever holds it *is* the user. It travels only in the
//! presence RPCs and is never printed (its `Debug` is redacted and it has no `Display`).
//! Presence stores sessions under [`SessionId::storage_key`], a SHA-256 digest, so neither
//! the KV buckets nor their NATS subjects ever hold a usable secret.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::time::Timestamp;
use crate::validate::{RoomCode, UserId, ValidationError, is_subject_token};

/// A session secret: 128 random bits as 32 lower-case hex digits.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SessionId(String);

impl SessionId {
    /// Parses a session id; anything but 32 lower-case hex digits is refused (and so, for
    /// example, a session id of the original service is treated as absent).
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        if s.len() == 32
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(Self(s.to_owned()))
        } else {
            Err(ValidationError::SessionId)
        }
    }

    /// A fresh secret from the thread-local CSPRNG (ChaCha, seeded by the OS).
    pub fn random() -> Self {
        let bits: u128 = rand::random();
        Self(format!("{bits:032x}"))
    }

    /// The secret itself, for the cookie or the bearer header only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Where presence stores this session: hex SHA-256 of the secret. One-way, so a dump of
    /// the KV buckets does not let anyone act as the user.
    pub fn storage_key(&self) -> String {
        let digest = Sha256::digest(self.0.as_bytes());
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl std::fmt::Debug for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionId(<redacted>)")
    }
}

impl TryFrom<String> for SessionId {
    type Error = ValidationError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<SessionId> for String {
    fn from(s: SessionId) -> String {
        s.0
    }
}

/// An edge's id: one subject token (`P2PIANO_EDGE_ID`).
pub fn parse_edge_id(s: &str) -> Result<String, ValidationError> {
    if is_subject_token(s) && s.len() <= 64 {
        Ok(s.to_owned())
    } else {
        Err(ValidationError::SubjectToken("edgeId"))
    }
}

fn edge_id<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    parse_edge_id(&s).map_err(serde::de::Error::custom)
}

/// Whether `s` can be a page id (Socket.IO's `pid`): 1–64 letters, digits, `_` or `-`.
pub fn is_page_id(s: &str) -> bool {
    is_subject_token(s) && s.len() <= 64
}

/// A fresh page id: 128 random bits as 32 lower-case hex digits. Presence gives one to every
/// new page; it is private to that page (only its own socket receives it), so it proves
/// nothing but "the same page as before" within one session.
pub fn new_page_id() -> String {
    let bits: u128 = rand::random();
    format!("{bits:032x}")
}

/// An optional page id; a malformed one counts as none (the client then is a new page).
fn page_id<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = Option::<String>::deserialize(d)?;
    Ok(s.filter(|s| is_page_id(s)))
}

/// A socket id, unique per edge: 1–64 characters of letters, digits, `_` and `-`.
fn conn_id<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if is_subject_token(&s) && s.len() <= 64 {
        Ok(s)
    } else {
        Err(serde::de::Error::custom(
            "connId must be 1 to 64 letters, digits, '_' or '-'",
        ))
    }
}

/// `session_create`: a new session. The optional client details are kept for operators.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionCreate {
    /// Client address as the edge saw it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// Client `User-Agent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
}

/// Reply to `session_create`: the secret (for the cookie) and the public id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionCreated {
    /// The secret.
    pub session_id: SessionId,
    /// The public id other members see.
    pub user_id: UserId,
    /// Creation time.
    pub created_at: Timestamp,
}

/// `session_get`: look a session up (and keep it alive).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionGet {
    /// The secret presented by the client.
    pub session_id: SessionId,
}

/// A session as presence reports it (without the secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionInfo {
    /// Public id.
    pub user_id: UserId,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last time the session was used (to the refresh granularity).
    pub last_seen: Timestamp,
}

/// `connect`: a socket of this session is now open on `edgeId` for `roomCode`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Connect {
    /// The session's secret.
    pub session_id: SessionId,
    /// The edge holding the socket.
    #[serde(deserialize_with = "edge_id")]
    pub edge_id: String,
    /// The socket's id on that edge.
    #[serde(deserialize_with = "conn_id")]
    pub conn_id: String,
    /// The room the socket is for. Absent for a service-dialect socket that has not joined
    /// a room yet: the session's room, if any, is then kept (so a reconnecting client that
    /// rejoins it is not announced as leaving and joining).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room_code: Option<RoomCode>,
    /// The page id (Socket.IO connection state recovery's `pid`) the client presented in its
    /// namespace connect, if any. Equal to the one presence gave the session's previous socket,
    /// it proves that the same page is coming back (a blip, a drain): its return within the
    /// grace period is silent. Without it, a socket that arrives while the previous one is in
    /// its grace period is a new page (a reload): the old membership ends at once, so the
    /// others see a leave and then a join and rebuild their links to it.
    #[serde(
        default,
        deserialize_with = "page_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub pid: Option<String>,
}

/// A socket somewhere: which edge, which id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnRef {
    /// Edge id.
    pub edge_id: String,
    /// Socket id on that edge.
    pub conn_id: String,
}

/// Reply to `connect`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectReply {
    /// The session's public id (so the edge needs no second lookup).
    pub user_id: UserId,
    /// The socket this one replaces, already told to close.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaced: Option<ConnRef>,
    /// True when the session is still a member of that room (a replaced socket, or a
    /// return within the grace period): the edge announces no join.
    pub reconnect: bool,
    /// The page id to give the client in the namespace `CONNECT` reply: the one it presented
    /// when it is the same page, else a new one. Absent from an older presence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<String>,
}

/// `disconnect`: a socket closed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Disconnect {
    /// The session's secret.
    pub session_id: SessionId,
    /// The edge that held the socket.
    #[serde(deserialize_with = "edge_id")]
    pub edge_id: String,
    /// The socket's id.
    #[serde(deserialize_with = "conn_id")]
    pub conn_id: String,
    /// True when the page went away (the client closed its WebSocket with 1000 or 1001, or
    /// sent a Socket.IO disconnect): the session leaves its room at once, with no grace
    /// period. False when the transport was lost (a network drop, a ping timeout, the edge's
    /// own close): the grace period starts.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub leave: bool,
}

/// Reply to `disconnect`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DisconnectReply {
    /// True when that socket was the session's current one and the grace period started;
    /// false for a stale disconnect (an older, replaced socket), which changes nothing.
    pub grace_started: bool,
    /// True when the disconnect asked to leave and this socket's membership was ended (the
    /// leave announced, or nothing to announce). False for a stale disconnect.
    #[serde(default)]
    pub left: bool,
}

/// `<prefix>.edge.<id>.heartbeat`: an edge is alive and holds this many sockets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Heartbeat {
    /// The edge.
    #[serde(deserialize_with = "edge_id")]
    pub edge_id: String,
    /// Open sockets.
    pub connections: u64,
    /// When the edge sent it.
    pub at: Timestamp,
    /// True in the last heartbeat of an edge that is shutting down: presence treats its
    /// sockets as gone at once (their clients reconnect elsewhere within the grace period).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stopping: bool,
}

/// `<prefix>.edge.<id>.control`: what presence asks of one edge.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EdgeControl {
    /// A newer socket of the same session exists: tell this one (NEWER_CONNECTION /
    /// session-replaced) and close it.
    Replace {
        /// The socket to replace.
        #[serde(rename = "connId")]
        conn_id: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn session_ids_are_secret_and_hashed() {
        let a = SessionId::random();
        let b = SessionId::random();
        assert_ne!(a, b);
        assert_eq!(a.expose().len(), 32);
        assert!(SessionId::parse(a.expose()).is_ok());
        assert_eq!(format!("{a:?}"), "SessionId(<redacted>)");
        assert_eq!(a.storage_key().len(), 64);
        assert_ne!(a.storage_key(), a.expose());
        assert_eq!(
            a.storage_key(),
            SessionId::parse(a.expose()).unwrap().storage_key()
        );
        for bad in [
            "",
            "6f9619ff-8b86-d011-b42d-00c04fc964ff",
            &"A".repeat(32),
            &"0".repeat(31),
        ] {
            assert!(SessionId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rpc_shapes() {
        let sid = SessionId::random();
        let c: Connect = serde_json::from_value(json!({
            "sessionId": sid.expose(), "edgeId": "edge-1", "connId": "c1", "roomCode": "fxa3x"
        }))
        .unwrap();
        assert_eq!(c.edge_id, "edge-1");
        for bad in [
            json!({"sessionId": sid.expose(), "edgeId": "edge.1", "connId": "c1", "roomCode": "fxa3x"}),
            json!({"sessionId": sid.expose(), "edgeId": "e", "connId": "c 1", "roomCode": "fxa3x"}),
            json!({"sessionId": "nope", "edgeId": "e", "connId": "c1", "roomCode": "fxa3x"}),
            json!({"sessionId": sid.expose(), "edgeId": "e", "connId": "c1", "roomCode": "FXA3X"}),
        ] {
            assert!(
                serde_json::from_value::<Connect>(bad.clone()).is_err(),
                "{bad}"
            );
        }
        let ctl = serde_json::to_value(EdgeControl::Replace {
            conn_id: "c1".into(),
        })
        .unwrap();
        assert_eq!(ctl, json!({"kind": "replace", "connId": "c1"}));
        let hb = Heartbeat {
            edge_id: "e1".into(),
            connections: 3,
            at: Timestamp::from_millis(0),
            stopping: false,
        };
        assert!(serde_json::to_value(&hb).unwrap().get("stopping").is_none());
    }
}
