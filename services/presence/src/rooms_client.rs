//! The rooms RPCs presence makes: `leave`, when a session's grace period ends, and `join`,
//! when an edge re-asserts a socket whose member was announced as left while the edge was
//! wrongly believed dead.

use std::time::Duration;

use p2piano_bus::Bus;
use p2piano_protocol::rpc::{JoinRoom, LeaveRoom};
use p2piano_protocol::{Call, ErrorCode, RoomCode, Subjects, Timestamp, UserId};
use p2piano_rpc::{CallError, RpcClient};

/// Calls the rooms service over the bus.
#[derive(Clone, Debug)]
pub struct RoomsClient {
    client: RpcClient,
}

impl RoomsClient {
    /// A client on `bus` with the given request timeout.
    pub fn new(bus: Bus, subjects: Subjects, timeout: Duration) -> Self {
        Self {
            client: RpcClient::new(bus, subjects, timeout),
        }
    }

    /// Removes `user` from `code`. `Ok(true)` when the user was a member (rooms then
    /// publishes `left`), `Ok(false)` when not, or when the room is gone; `Err` with the
    /// reason when rooms could not be asked, so that the caller retries later.
    /// With `decided`, only a membership that began at or before it is ended.
    #[tracing::instrument(skip_all, fields(code = %code, user_id = %user))]
    pub async fn leave(
        &self,
        code: &RoomCode,
        user: &UserId,
        decided: Option<Timestamp>,
    ) -> Result<bool, String> {
        let req = LeaveRoom {
            code: code.clone(),
            user_id: user.clone(),
            joined_before: decided,
        };
        match self.call(&req).await? {
            Some(r) => Ok(r.left),
            None => Ok(false),
        }
    }

    /// Puts `user` back into `code` (a restore: allowed into a locked or full room, since
    /// the member should never have left). `Ok(true)` when the user had to be joined again
    /// (rooms then publishes `joined`), `Ok(false)` when still a member or the room is gone.
    #[tracing::instrument(skip_all, fields(code = %code, user_id = %user))]
    pub async fn restore(&self, code: &RoomCode, user: &UserId) -> Result<bool, String> {
        let req = JoinRoom {
            code: code.clone(),
            user_id: user.clone(),
            display_name: None,
            instrument: None,
            renew: false,
            restore: true,
        };
        match self.call(&req).await? {
            Some(r) => Ok(!r.rejoined),
            None => Ok(false),
        }
    }

    /// One request; `Ok(None)` when rooms says the room is gone, `Err` with the reason
    /// for any other failure.
    async fn call<C: Call>(&self, req: &C) -> Result<Option<C::Reply>, String> {
        match self.client.call(req).await {
            Ok(reply) => Ok(Some(reply)),
            Err(CallError::Refused(e)) if e.code == ErrorCode::NotFound => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }
}
