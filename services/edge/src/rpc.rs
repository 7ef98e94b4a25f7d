//! Typed calls from the edge to the rooms and presence services over the bus.
//!
//! Every call has the configured timeout; a service that cannot be reached (no responders,
//! timeout, NATS down) is reported as `unavailable`, which HTTP turns into 503 and sockets
//! into an error event, never a hang.

use std::sync::Arc;
use std::time::Duration;

use p2piano_bus::Bus;
use p2piano_protocol::presence::{
    Connect, ConnectReply, Disconnect, DisconnectReply, Resync, ResyncReply, SessionCreate,
    SessionCreated, SessionGet, SessionInfo,
};
use p2piano_protocol::rpc::{
    CreateRoom, GetRoom, JoinReply, JoinRoom, LeaveReply, LeaveRoom, UpdateRoom, UpdateUser,
    UpdateUserReply,
};
use p2piano_protocol::{Call, ErrorBody, ErrorCode, Room, SessionId, Subjects};
use p2piano_rpc::{CallError, RpcClient};

use crate::metrics::EdgeMetrics;

/// How long the edge keeps trying to tell an unreachable presence that a socket closed.
pub const DISCONNECT_RETRY_FOR: Duration = Duration::from_secs(600);

/// The edge's client of the rooms and presence RPCs: the shared typed client
/// ([`RpcClient`]), timed into the edge's bus request latency, in a client span.
#[derive(Clone, Debug)]
pub struct Rpc {
    client: RpcClient,
    metrics: EdgeMetrics,
}

impl Rpc {
    /// The edge's metrics, which the requests are timed into.
    pub fn metrics(&self) -> &EdgeMetrics {
        &self.metrics
    }

    /// A client on `bus` with the given per-request timeout, recording each request's
    /// round trip in `metrics`.
    pub fn new(bus: Bus, subjects: Subjects, timeout: Duration, metrics: EdgeMetrics) -> Self {
        let timed = metrics.clone();
        let client =
            RpcClient::new(bus, subjects, timeout).observed(Arc::new(move |service, op, took| {
                timed.bus_request(service, op, took)
            }));
        Self { client, metrics }
    }

    /// The subjects in use.
    pub fn subjects(&self) -> &Subjects {
        self.client.subjects()
    }

    /// The bus in use.
    pub fn bus(&self) -> &Bus {
        self.client.bus()
    }

    /// Sends `req` to its operation and reads the reply. The request runs in a client span
    /// whose context travels in the request's headers, so that the service's span is its
    /// child in the same trace. A service that could not be asked, or whose answer could
    /// not be read, is `unavailable` (the cause is logged).
    #[tracing::instrument(
        name = "edge.rpc",
        skip_all,
        fields(otel.kind = "client", service = C::OP.service(), op = C::OP.as_str())
    )]
    pub async fn call<C: Call>(&self, req: &C) -> Result<C::Reply, ErrorBody> {
        self.client.call(req).await.map_err(CallError::into_body)
    }

    /// rooms `create`.
    pub async fn create_room(&self, req: &CreateRoom) -> Result<Room, ErrorBody> {
        self.call(req).await
    }

    /// rooms `get`.
    pub async fn get_room(&self, req: &GetRoom) -> Result<Room, ErrorBody> {
        self.call(req).await
    }

    /// rooms `update`.
    pub async fn update_room(&self, req: &UpdateRoom) -> Result<Room, ErrorBody> {
        self.call(req).await
    }

    /// rooms `join`.
    pub async fn join_room(&self, req: &JoinRoom) -> Result<JoinReply, ErrorBody> {
        self.call(req).await
    }

    /// rooms `leave`.
    pub async fn leave_room(&self, req: &LeaveRoom) -> Result<LeaveReply, ErrorBody> {
        self.call(req).await
    }

    /// rooms `update_user`.
    pub async fn update_user(&self, req: &UpdateUser) -> Result<UpdateUserReply, ErrorBody> {
        self.call(req).await
    }

    /// presence `session_create`.
    pub async fn session_create(&self, req: &SessionCreate) -> Result<SessionCreated, ErrorBody> {
        self.call(req).await
    }

    /// presence `session_get`.
    pub async fn session_get(&self, id: &SessionId) -> Result<SessionInfo, ErrorBody> {
        self.call(&SessionGet {
            session_id: id.clone(),
        })
        .await
    }

    /// presence `connect`.
    pub async fn connect(&self, req: &Connect) -> Result<ConnectReply, ErrorBody> {
        self.call(req).await
    }

    /// presence `resync`: one part of this edge's re-assertion of its sockets.
    pub async fn resync(&self, req: &Resync) -> Result<ResyncReply, ErrorBody> {
        self.call(req).await
    }

    /// presence `disconnect`. When presence cannot be reached, the call is also retried in
    /// the background (backing off to every 5 s, for up to [`DISCONNECT_RETRY_FOR`]) until
    /// presence answers: a socket that closed while presence was down would otherwise stay
    /// its session's live socket on a live edge, and its member a ghost for ever. A late
    /// disconnect is harmless: presence ignores it if the session has a newer socket. The
    /// first failure is still returned.
    pub async fn disconnect(&self, req: &Disconnect) -> Result<DisconnectReply, ErrorBody> {
        let result = self.call(req).await;
        if matches!(&result, Err(e) if e.code == ErrorCode::Unavailable) {
            let rpc = self.clone();
            let req = req.clone();
            tokio::spawn(async move {
                let deadline = tokio::time::Instant::now() + DISCONNECT_RETRY_FOR;
                let mut pause = Duration::from_secs(1);
                while tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                    let retry = rpc.call(&req).await;
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
