//! Presence: session secrets, the presence RPCs (`<prefix>.rpc.presence.<op>`), and the
//! messages between presence and edges (heartbeats, control).
//!
//! The session id is a secret: whoever holds it *is* the user. It travels only in the
//! presence RPCs and is never printed (its `Debug` is redacted and it has no `Display`).
//! Presence stores sessions under a SHA-256 digest of it (`p2piano_presence::keys`), so neither
//! the KV buckets nor their NATS subjects ever hold a usable secret.

use serde::{Deserialize, Serialize};

use crate::budget::BudgetSnapshot;
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
    /// The budgets its last socket left behind, if recent ([`crate::budget`]): the edge the
    /// session connects to starts from them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetSnapshot>,
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
    /// The session's public id, when the edge has just looked the session up (it always
    /// does, at the socket's handshake): presence then need not read the session again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<UserId>,
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
    /// True when this is a new page of a member whose previous socket is in its grace
    /// period (a reload): the edge joins with `renew`, so that the others hear a leave and
    /// a join and rebuild their links to the new page.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub renew: bool,
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
    /// The session's event budgets when this socket closed, when worth remembering (much
    /// spent, an abuse streak, a cool-down): presence keeps them with the session, so that
    /// a reconnect to another edge does not find a full budget ([`crate::budget`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetSnapshot>,
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

/// How many buckets the socket digest of an edge has: conn ids are spread over them by
/// hash, so that a busy edge, whose sockets come and go all the time, still has buckets that
/// stay unchanged long enough to be compared.
pub const DIGEST_BUCKETS: usize = 16;

/// How long a digest bucket must have been unchanged, on the edge and in presence, before
/// the two are compared: longer than a connect or disconnect takes to reach both sides.
pub const DIGEST_SETTLE_MS: u32 = 2_000;

/// The 64-bit hash of a conn id that socket digests are made of (FNV-1a: the edge and
/// presence must compute the same value, in any process and any version).
pub fn digest_of(conn_id: &str) -> u64 {
    conn_id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The digest bucket of a hash from [`digest_of`].
pub fn digest_bucket(hash: u64) -> usize {
    (hash >> 60) as usize % DIGEST_BUCKETS
}

/// What a set of sockets looks like, cheaply: per bucket, the XOR of [`digest_of`] of the
/// conn ids in it, and how long the bucket has been unchanged. An edge sends the digest of
/// the sockets it holds; presence compares it with the one of the live records it has for
/// the edge, bucket by bucket, where both sides have been unchanged for a while.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EdgeDigest {
    /// XOR of the hashes in each bucket.
    pub buckets: [u64; DIGEST_BUCKETS],
    /// Milliseconds since each bucket last changed.
    pub stable_ms: [u32; DIGEST_BUCKETS],
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
    /// The generation of the edge's record that the edge last re-asserted its sockets
    /// for. Presence raises the generation when it declares the edge dead; an edge that is
    /// heard again with an older one was not dead after all (a pause), and is asked to
    /// re-assert its sockets (a [`EdgeControl::Resync`]).
    #[serde(default)]
    pub generation: u64,
    /// The digest of the sockets the edge holds (absent from an older edge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<EdgeDigest>,
    /// Where the other edges reach this edge's relay links (`host:port`), when it has them:
    /// the edges learn of each other from their heartbeats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh: Option<String>,
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
    /// Re-assert the sockets you hold (those of `buckets`, or all of them): presence
    /// declared this edge dead, or its records and the edge's digest disagree.
    Resync {
        /// The generation of the edge's record to report once done.
        generation: u64,
        /// The connections bucket's revision when presence asked; echoed back, so that only
        /// records written before the edge looked at its sockets count as orphans.
        before: u64,
        /// The digest buckets to re-assert; all when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        buckets: Option<Vec<u8>>,
    },
}

/// One socket an edge holds, as it re-asserts it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeldSocket {
    /// The session's secret.
    pub session_id: SessionId,
    /// The socket's id on the edge.
    #[serde(deserialize_with = "conn_id")]
    pub conn_id: String,
    /// The session's public id.
    pub user_id: UserId,
    /// The room the socket is in, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room_code: Option<RoomCode>,
    /// The socket's page id.
    #[serde(
        default,
        deserialize_with = "page_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub pid: Option<String>,
}

/// `resync`: an edge re-asserts (part of) the sockets it holds, after a
/// [`EdgeControl::Resync`]. Sent in parts of at most [`RESYNC_PART`] sockets; the last part
/// carries the ids of every socket of the buckets concerned, so that presence can retire
/// the records of sockets the edge no longer has.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resync {
    /// The edge.
    #[serde(deserialize_with = "edge_id")]
    pub edge_id: String,
    /// Echoed from the request.
    pub before: u64,
    /// Echoed from the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buckets: Option<Vec<u8>>,
    /// The sockets of this part.
    pub sockets: Vec<HeldSocket>,
    /// In the last part only: the conn ids of every socket of the buckets concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<Vec<String>>,
}

/// Most sockets in one [`Resync`] part (a part stays well under NATS's 1 MB payload).
pub const RESYNC_PART: usize = 500;

/// Reply to `resync`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResyncReply {
    /// Sockets whose records were missing or in their grace period and are live again.
    pub restored: u64,
    /// Sockets whose members had been announced as left and were joined to their rooms
    /// again.
    pub rejoined: u64,
    /// Sockets that another socket of their session has replaced meanwhile: the edge closes
    /// them as replaced.
    pub stale: Vec<String>,
    /// Records of sockets the edge no longer holds, moved to their grace period.
    pub retired: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn session_ids_are_secret() {
        let a = SessionId::random();
        let b = SessionId::random();
        assert_ne!(a, b);
        assert_eq!(a.expose().len(), 32);
        assert!(SessionId::parse(a.expose()).is_ok());
        assert_eq!(format!("{a:?}"), "SessionId(<redacted>)");
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
            generation: 0,
            digest: None,
            mesh: None,
        };
        assert!(serde_json::to_value(&hb).unwrap().get("stopping").is_none());
        assert!(serde_json::to_value(&hb).unwrap().get("mesh").is_none());
        // An older edge's heartbeat (no generation, no digest) still reads.
        let old: Heartbeat = serde_json::from_value(
            json!({"edgeId": "e1", "connections": 3, "at": "1970-01-01T00:00:00.000Z"}),
        )
        .unwrap();
        assert_eq!(old, hb);
        // The digest hash is stable across processes and versions.
        assert_eq!(digest_of(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(digest_of("a"), 0xaf63_dc4c_8601_ec8c);
        assert!(digest_bucket(u64::MAX) < DIGEST_BUCKETS);
    }
}
