//! The rooms RPCs presence makes: `leave`, when a session's grace period ends, and `join`,
//! when an edge re-asserts a socket whose member was announced as left while the edge was
//! wrongly believed dead.

use std::time::Duration;

use p2piano_bus::{Bus, Headers};
use p2piano_protocol::rpc::{JoinReply, JoinRoom, LeaveReply, LeaveRoom};
use p2piano_protocol::{ErrorCode, Reply, RoomCode, RoomsOp, Subjects, Timestamp, UserId};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Calls the rooms service over the bus.
#[derive(Clone)]
pub struct RoomsClient {
    bus: Bus,
    subjects: Subjects,
    timeout: Duration,
}

impl RoomsClient {
    /// A client on `bus` with the given request timeout.
    pub fn new(bus: Bus, subjects: Subjects, timeout: Duration) -> Self {
        Self {
            bus,
            subjects,
            timeout,
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
        match self.call::<_, LeaveReply>(RoomsOp::Leave, &req).await? {
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
        match self.call::<_, JoinReply>(RoomsOp::Join, &req).await? {
            Some(r) => Ok(!r.rejoined),
            None => Ok(false),
        }
    }

    /// One request; `Ok(None)` when rooms says the room is gone.
    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        op: RoomsOp,
        req: &Req,
    ) -> Result<Option<Resp>, String> {
        let body = serde_json::to_vec(req).map_err(|e| e.to_string())?;
        let mut headers = Headers::new();
        p2piano_telemetry::inject_context(&mut headers);
        let msg = self
            .bus
            .request(
                &self.subjects.rooms_rpc(op),
                headers,
                body.into(),
                self.timeout,
            )
            .await
            .map_err(|e| e.to_string())?;
        match serde_json::from_slice::<Reply<Resp>>(&msg.payload) {
            Ok(Reply::Ok(r)) => Ok(Some(r)),
            Ok(Reply::Error(e)) if e.code == ErrorCode::NotFound => Ok(None),
            Ok(Reply::Error(e)) => Err(e.to_string()),
            Err(e) => Err(format!("unreadable rooms reply: {e}")),
        }
    }
}
