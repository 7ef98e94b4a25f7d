//! Typed calls from the edge to the rooms and presence services over the bus.
//!
//! Every call has the configured timeout; a service that cannot be reached (no responders,
//! timeout, NATS down) is reported as `unavailable`, which HTTP turns into 503 and sockets
//! into an error event, never a hang.

use std::time::{Duration, Instant};

use p2piano_bus::{Bus, Headers};
use p2piano_protocol::presence::{
    Connect, ConnectReply, Disconnect, DisconnectReply, Resync, ResyncReply, SessionCreate,
    SessionCreated, SessionGet, SessionInfo,
};
use p2piano_protocol::rpc::{
    CreateRoom, GetRoom, JoinReply, JoinRoom, LeaveReply, LeaveRoom, UpdateRoom, UpdateUser,
    UpdateUserReply,
};
use p2piano_protocol::{
    ErrorBody, ErrorCode, PresenceOp, Reply, Room, RoomsOp, SessionId, Subjects,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::metrics::EdgeMetrics;

/// How long the edge keeps trying to tell an unreachable presence that a socket closed.
pub const DISCONNECT_RETRY_FOR: Duration = Duration::from_secs(600);

/// The edge's client of the rooms and presence RPCs.
#[derive(Clone, Debug)]
pub struct Rpc {
    bus: Bus,
    subjects: Subjects,
    timeout: Duration,
    metrics: EdgeMetrics,
}

fn unavailable(what: &str) -> ErrorBody {
    ErrorBody::new(
        ErrorCode::Unavailable,
        format!("{what} is unavailable, try again later"),
    )
}

impl Rpc {
    /// The edge's metrics, which the requests are timed into.
    pub fn metrics(&self) -> &EdgeMetrics {
        &self.metrics
    }

    /// A client on `bus` with the given per-request timeout, recording each request's
    /// round trip in `metrics`.
    pub fn new(bus: Bus, subjects: Subjects, timeout: Duration, metrics: EdgeMetrics) -> Self {
        Self {
            bus,
            subjects,
            timeout,
            metrics,
        }
    }

    /// The subjects in use.
    pub fn subjects(&self) -> &Subjects {
        &self.subjects
    }

    /// The bus in use.
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// Sends `req` as operation `op` of `service` and decodes the `{"ok"}`/`{"error"}`
    /// reply. The request runs in a client span whose context travels in the request's
    /// headers, so that the service's span is its child in the same trace; its round trip
    /// (failures included) goes to the bus request latency.
    #[tracing::instrument(
        name = "edge.rpc",
        skip_all,
        fields(otel.kind = "client", service = service, op = op)
    )]
    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        service: &'static str,
        op: &'static str,
        subject: String,
        req: &Req,
    ) -> Result<Resp, ErrorBody> {
        let body = serde_json::to_vec(req)
            .map_err(|e| ErrorBody::new(ErrorCode::Invalid, e.to_string()))?;
        let mut headers = Headers::new();
        p2piano_telemetry::inject_context(&mut headers);
        let started = Instant::now();
        let result = self
            .bus
            .request(&subject, headers, body.into(), self.timeout)
            .await;
        self.metrics.bus_request(service, op, started.elapsed());
        let msg = result.map_err(|e| {
            tracing::warn!(error = %e, service, op, "rpc failed");
            unavailable(service)
        })?;
        match serde_json::from_slice::<Reply<Resp>>(&msg.payload) {
            Ok(reply) => reply.into_result(),
            Err(e) => {
                tracing::warn!(error = %e, service, op, "unreadable rpc reply");
                Err(unavailable(service))
            }
        }
    }

    async fn rooms<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        op: RoomsOp,
        req: &Req,
    ) -> Result<Resp, ErrorBody> {
        self.call("rooms", op.as_str(), self.subjects.rooms_rpc(op), req)
            .await
    }

    async fn presence<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        op: PresenceOp,
        req: &Req,
    ) -> Result<Resp, ErrorBody> {
        self.call("presence", op.as_str(), self.subjects.presence_rpc(op), req)
            .await
    }

    /// rooms `create`.
    pub async fn create_room(&self, req: &CreateRoom) -> Result<Room, ErrorBody> {
        self.rooms(RoomsOp::Create, req).await
    }

    /// rooms `get`.
    pub async fn get_room(&self, req: &GetRoom) -> Result<Room, ErrorBody> {
        self.rooms(RoomsOp::Get, req).await
    }

    /// rooms `update`.
    pub async fn update_room(&self, req: &UpdateRoom) -> Result<Room, ErrorBody> {
        self.rooms(RoomsOp::Update, req).await
    }

    /// rooms `join`.
    pub async fn join_room(&self, req: &JoinRoom) -> Result<JoinReply, ErrorBody> {
        self.rooms(RoomsOp::Join, req).await
    }

    /// rooms `leave`.
    pub async fn leave_room(&self, req: &LeaveRoom) -> Result<LeaveReply, ErrorBody> {
        self.rooms(RoomsOp::Leave, req).await
    }

    /// rooms `update_user`.
    pub async fn update_user(&self, req: &UpdateUser) -> Result<UpdateUserReply, ErrorBody> {
        self.rooms(RoomsOp::UpdateUser, req).await
    }

    /// presence `session_create`.
    pub async fn session_create(&self, req: &SessionCreate) -> Result<SessionCreated, ErrorBody> {
        self.presence(PresenceOp::SessionCreate, req).await
    }

    /// presence `session_get`.
    pub async fn session_get(&self, id: &SessionId) -> Result<SessionInfo, ErrorBody> {
        self.presence(
            PresenceOp::SessionGet,
            &SessionGet {
                session_id: id.clone(),
            },
        )
        .await
    }

    /// presence `connect`.
    pub async fn connect(&self, req: &Connect) -> Result<ConnectReply, ErrorBody> {
        self.presence(PresenceOp::Connect, req).await
    }

    /// presence `resync`: one part of this edge's re-assertion of its sockets.
    pub async fn resync(&self, req: &Resync) -> Result<ResyncReply, ErrorBody> {
        self.presence(PresenceOp::Resync, req).await
    }

    /// presence `disconnect`. When presence cannot be reached, the call is also retried in
    /// the background (backing off to every 5 s, for up to [`DISCONNECT_RETRY_FOR`]) until
    /// presence answers: a socket that closed while presence was down would otherwise stay
    /// its session's live socket on a live edge, and its member a ghost for ever. A late
    /// disconnect is harmless: presence ignores it if the session has a newer socket. The
    /// first failure is still returned.
    pub async fn disconnect(&self, req: &Disconnect) -> Result<DisconnectReply, ErrorBody> {
        let result = self.presence(PresenceOp::Disconnect, req).await;
        if matches!(&result, Err(e) if e.code == ErrorCode::Unavailable) {
            let rpc = self.clone();
            let req = req.clone();
            tokio::spawn(async move {
                let deadline = tokio::time::Instant::now() + DISCONNECT_RETRY_FOR;
                let mut pause = Duration::from_secs(1);
                while tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                    let retry: Result<DisconnectReply, ErrorBody> =
                        rpc.presence(PresenceOp::Disconnect, &req).await;
                    if !matches!(&retry, Err(e) if e.code == ErrorCode::Unavailable) {
                        return;
                    }
                }
                tracing::warn!(conn_id = %req.conn_id, "presence never heard of a closed socket");
            });
        }
        result
    }
}
