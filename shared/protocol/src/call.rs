//! Which request goes to which operation and what it answers, in one place: every RPC
//! request type names its operation and its reply type ([`Call`]), so that a client cannot
//! send a request to the wrong subject or read its reply as the wrong type, and a server
//! decodes and encodes each operation the same way.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::presence::{
    Connect, ConnectReply, Disconnect, DisconnectReply, Resync, ResyncReply, SessionCreate,
    SessionCreated, SessionGet, SessionInfo,
};
use crate::room::Room;
use crate::rpc::{
    CreateRoom, GetRoom, JoinReply, JoinRoom, LeaveReply, LeaveRoom, UpdateRoom, UpdateUser,
    UpdateUserReply,
};
use crate::subjects::{PresenceOp, RoomsOp, Subjects};

/// An RPC operation of either service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// An operation of the rooms service.
    Rooms(RoomsOp),
    /// An operation of the presence service.
    Presence(PresenceOp),
}

impl Op {
    /// The service that answers it (`rooms` or `presence`), for spans and metric labels.
    pub fn service(self) -> &'static str {
        match self {
            Op::Rooms(_) => "rooms",
            Op::Presence(_) => "presence",
        }
    }

    /// The operation's subject token (`join`, `session_get`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Rooms(op) => op.as_str(),
            Op::Presence(op) => op.as_str(),
        }
    }

    /// The subject its requests are sent to.
    pub fn subject(self, subjects: &Subjects) -> String {
        match self {
            Op::Rooms(op) => subjects.rooms_rpc(op),
            Op::Presence(op) => subjects.presence_rpc(op),
        }
    }
}

/// A request of one RPC operation, with the type of its successful reply.
pub trait Call: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// What a success answers.
    type Reply: Serialize + DeserializeOwned + Send + 'static;
    /// The operation.
    const OP: Op;
}

macro_rules! calls {
    ($($req:ty => $reply:ty, $op:expr;)*) => {
        $(impl Call for $req {
            type Reply = $reply;
            const OP: Op = $op;
        })*
    };
}

calls! {
    CreateRoom => Room, Op::Rooms(RoomsOp::Create);
    GetRoom => Room, Op::Rooms(RoomsOp::Get);
    UpdateRoom => Room, Op::Rooms(RoomsOp::Update);
    JoinRoom => JoinReply, Op::Rooms(RoomsOp::Join);
    LeaveRoom => LeaveReply, Op::Rooms(RoomsOp::Leave);
    UpdateUser => UpdateUserReply, Op::Rooms(RoomsOp::UpdateUser);
    SessionCreate => SessionCreated, Op::Presence(PresenceOp::SessionCreate);
    SessionGet => SessionInfo, Op::Presence(PresenceOp::SessionGet);
    Connect => ConnectReply, Op::Presence(PresenceOp::Connect);
    Disconnect => DisconnectReply, Op::Presence(PresenceOp::Disconnect);
    Resync => ResyncReply, Op::Presence(PresenceOp::Resync);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_has_its_request_type() {
        let s = Subjects::new("p").unwrap();
        assert_eq!(
            <JoinRoom as Call>::OP.subject(&s),
            s.rooms_rpc(RoomsOp::Join)
        );
        assert_eq!(<SessionGet as Call>::OP.service(), "presence");
        let ops = [
            CreateRoom::OP,
            GetRoom::OP,
            UpdateRoom::OP,
            JoinRoom::OP,
            LeaveRoom::OP,
            UpdateUser::OP,
            SessionCreate::OP,
            SessionGet::OP,
            Connect::OP,
            Disconnect::OP,
            Resync::OP,
        ];
        for op in RoomsOp::ALL {
            assert!(ops.contains(&Op::Rooms(op)), "{op:?}");
        }
        for op in PresenceOp::ALL {
            assert!(ops.contains(&Op::Presence(op)), "{op:?}");
        }
    }
}
