//! The one rooms RPC presence makes: `leave`, when a session's grace period ends.

use std::time::Duration;

use p2piano_bus::{Bus, Headers};
use p2piano_protocol::rpc::{LeaveReply, LeaveRoom};
use p2piano_protocol::{ErrorCode, Reply, RoomCode, RoomsOp, Subjects, UserId};

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
    #[tracing::instrument(skip_all, fields(code = %code, user_id = %user))]
    pub async fn leave(&self, code: &RoomCode, user: &UserId) -> Result<bool, String> {
        let body = serde_json::to_vec(&LeaveRoom {
            code: code.clone(),
            user_id: user.clone(),
        })
        .map_err(|e| e.to_string())?;
        let mut headers = Headers::new();
        p2piano_telemetry::inject_context(&mut headers);
        let msg = self
            .bus
            .request(
                &self.subjects.rooms_rpc(RoomsOp::Leave),
                headers,
                body.into(),
                self.timeout,
            )
            .await
            .map_err(|e| e.to_string())?;
        match serde_json::from_slice::<Reply<LeaveReply>>(&msg.payload) {
            Ok(Reply::Ok(r)) => Ok(r.left),
            Ok(Reply::Error(e)) if e.code == ErrorCode::NotFound => Ok(false),
            Ok(Reply::Error(e)) => Err(e.to_string()),
            Err(e) => Err(format!("unreadable rooms reply: {e}")),
        }
    }
}
