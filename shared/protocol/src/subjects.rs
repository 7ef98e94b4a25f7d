//! Every NATS subject the services use, built in one place.
//!
//! The prefix (default `p2piano`, `P2PIANO_SUBJECT_PREFIX`) lets several deployments, or
//! several tests, share one NATS without seeing each other's traffic.

use crate::validate::{RoomCode, ValidationError, is_subject_token};

/// Operations of the rooms service, the last token of `<prefix>.rpc.rooms.<op>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RoomsOp {
    /// Create a room.
    Create,
    /// Read a room.
    Get,
    /// Change settings.
    Update,
    /// Add a member.
    Join,
    /// Remove a member.
    Leave,
    /// Change a member's profile.
    UpdateUser,
}

impl RoomsOp {
    /// Every operation, for subscriptions and metrics.
    pub const ALL: [RoomsOp; 6] = [
        RoomsOp::Create,
        RoomsOp::Get,
        RoomsOp::Update,
        RoomsOp::Join,
        RoomsOp::Leave,
        RoomsOp::UpdateUser,
    ];

    /// The subject token of this operation.
    pub fn as_str(self) -> &'static str {
        match self {
            RoomsOp::Create => "create",
            RoomsOp::Get => "get",
            RoomsOp::Update => "update",
            RoomsOp::Join => "join",
            RoomsOp::Leave => "leave",
            RoomsOp::UpdateUser => "update_user",
        }
    }

    /// The operation named by a subject token.
    pub fn from_token(token: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|op| op.as_str() == token)
    }
}

/// Operations of the presence service, the last token of `<prefix>.rpc.presence.<op>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PresenceOp {
    /// Create a session.
    SessionCreate,
    /// Validate and refresh a session.
    SessionGet,
    /// Register a socket for a session.
    Connect,
    /// Report a socket gone.
    Disconnect,
    /// An edge re-asserts the sockets it holds (after presence declared it dead, or when
    /// their digests disagree).
    Resync,
}

impl PresenceOp {
    /// Every operation.
    pub const ALL: [PresenceOp; 5] = [
        PresenceOp::SessionCreate,
        PresenceOp::SessionGet,
        PresenceOp::Connect,
        PresenceOp::Disconnect,
        PresenceOp::Resync,
    ];

    /// The subject token of this operation.
    pub fn as_str(self) -> &'static str {
        match self {
            PresenceOp::SessionCreate => "session_create",
            PresenceOp::SessionGet => "session_get",
            PresenceOp::Connect => "connect",
            PresenceOp::Disconnect => "disconnect",
            PresenceOp::Resync => "resync",
        }
    }

    /// The operation named by a subject token.
    pub fn from_token(token: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|op| op.as_str() == token)
    }
}

/// Builds the subjects of one deployment (one prefix).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subjects {
    prefix: String,
}

impl Subjects {
    /// The default prefix.
    pub const DEFAULT_PREFIX: &'static str = "p2piano";

    /// Subjects under `prefix`, which must be one or more dot-separated tokens of
    /// letters, digits, `_` and `-`.
    pub fn new(prefix: &str) -> Result<Self, ValidationError> {
        if prefix.split('.').all(is_subject_token) {
            Ok(Self {
                prefix: prefix.to_owned(),
            })
        } else {
            Err(ValidationError::SubjectToken("P2PIANO_SUBJECT_PREFIX"))
        }
    }

    /// The prefix in use.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `<prefix>.rpc.rooms.<op>`
    pub fn rooms_rpc(&self, op: RoomsOp) -> String {
        format!("{}.rpc.rooms.{}", self.prefix, op.as_str())
    }

    /// `<prefix>.rpc.rooms.*`, what the rooms service subscribes to.
    pub fn rooms_rpc_all(&self) -> String {
        format!("{}.rpc.rooms.*", self.prefix)
    }

    /// `<prefix>.rpc.presence.<op>`
    pub fn presence_rpc(&self, op: PresenceOp) -> String {
        format!("{}.rpc.presence.{}", self.prefix, op.as_str())
    }

    /// `<prefix>.rpc.presence.*`, what the presence service subscribes to.
    pub fn presence_rpc_all(&self) -> String {
        format!("{}.rpc.presence.*", self.prefix)
    }

    /// `<prefix>.room.<code>.members`: membership events of one room.
    pub fn room_members(&self, code: &RoomCode) -> String {
        format!("{}.room.{}.members", self.prefix, code)
    }

    /// `<prefix>.room.<code>.relay`: relayed client events of one room.
    pub fn room_relay(&self, code: &RoomCode) -> String {
        format!("{}.room.{}.relay", self.prefix, code)
    }

    /// `<prefix>.room.<code>.>`: everything about one room, what an edge subscribes to while
    /// it holds a member of that room.
    pub fn room_all(&self, code: &RoomCode) -> String {
        format!("{}.room.{}.>", self.prefix, code)
    }

    /// `<prefix>.room.*.members`: membership events of every room (monitoring, tests).
    pub fn all_room_members(&self) -> String {
        format!("{}.room.*.members", self.prefix)
    }

    /// `<prefix>.edge.<edge_id>.control`: commands for one edge. The edge id must be a
    /// subject token (see [`Subjects::check_edge_id`]).
    pub fn edge_control(&self, edge_id: &str) -> String {
        format!("{}.edge.{}.control", self.prefix, edge_id)
    }

    /// `<prefix>.edge.<edge_id>.heartbeat`: liveness of one edge.
    pub fn edge_heartbeat(&self, edge_id: &str) -> String {
        format!("{}.edge.{}.heartbeat", self.prefix, edge_id)
    }

    /// `<prefix>.edge.*.heartbeat`: what presence subscribes to.
    pub fn all_edge_heartbeats(&self) -> String {
        format!("{}.edge.*.heartbeat", self.prefix)
    }

    /// `<prefix>.mesh.roll`: a starting edge's roll call; every edge with relay links
    /// answers with where it is (see [`crate::mesh`]).
    pub fn mesh_roll(&self) -> String {
        format!("{}.mesh.roll", self.prefix)
    }

    /// `<prefix>.mesh.roll.<edge_id>`: where the answers to one edge's roll call go.
    pub fn mesh_roll_reply(&self, edge_id: &str) -> String {
        format!("{}.mesh.roll.{}", self.prefix, edge_id)
    }

    /// Checks that an edge id can be used as one subject token.
    pub fn check_edge_id(edge_id: &str) -> Result<(), ValidationError> {
        if is_subject_token(edge_id) {
            Ok(())
        } else {
            Err(ValidationError::SubjectToken("P2PIANO_EDGE_ID"))
        }
    }

    /// The operation addressed by an RPC subject under this prefix, if any.
    pub fn rooms_op_of(&self, subject: &str) -> Option<RoomsOp> {
        let rest = subject
            .strip_prefix(&self.prefix)?
            .strip_prefix(".rpc.rooms.")?;
        RoomsOp::from_token(rest)
    }

    /// The presence operation addressed by an RPC subject under this prefix, if any.
    pub fn presence_op_of(&self, subject: &str) -> Option<PresenceOp> {
        let rest = subject
            .strip_prefix(&self.prefix)?
            .strip_prefix(".rpc.presence.")?;
        PresenceOp::from_token(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_the_documented_subjects() {
        let s = Subjects::new(Subjects::DEFAULT_PREFIX).unwrap();
        let code = RoomCode::parse("fxa3x").unwrap();
        assert_eq!(
            s.rooms_rpc(RoomsOp::UpdateUser),
            "p2piano.rpc.rooms.update_user"
        );
        assert_eq!(s.rooms_rpc_all(), "p2piano.rpc.rooms.*");
        assert_eq!(
            s.presence_rpc(PresenceOp::SessionGet),
            "p2piano.rpc.presence.session_get"
        );
        assert_eq!(s.room_members(&code), "p2piano.room.fxa3x.members");
        assert_eq!(s.room_relay(&code), "p2piano.room.fxa3x.relay");
        assert_eq!(s.room_all(&code), "p2piano.room.fxa3x.>");
        assert_eq!(s.edge_control("e1"), "p2piano.edge.e1.control");
        assert_eq!(s.edge_heartbeat("e1"), "p2piano.edge.e1.heartbeat");
        for op in RoomsOp::ALL {
            assert_eq!(s.rooms_op_of(&s.rooms_rpc(op)), Some(op));
        }
        for op in PresenceOp::ALL {
            assert_eq!(s.presence_op_of(&s.presence_rpc(op)), Some(op));
        }
        assert_eq!(s.rooms_op_of("p2piano.rpc.rooms.nope"), None);
        assert_eq!(s.rooms_op_of("other.rpc.rooms.get"), None);
    }

    #[test]
    fn prefix_and_edge_ids_are_checked() {
        assert!(Subjects::new("staging.p2piano").is_ok());
        for bad in ["", "a..b", "a b", "a.*", ">", "a."] {
            assert!(Subjects::new(bad).is_err(), "{bad:?}");
        }
        assert!(Subjects::check_edge_id("edge-7f3a_1").is_ok());
        assert!(Subjects::check_edge_id("edge.1").is_err());
    }
}
