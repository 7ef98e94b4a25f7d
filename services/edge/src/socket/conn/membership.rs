//! A socket's membership: the namespace connect (session, budgets, and for the web client
//! the join), registering with presence, joining and leaving rooms, and the end of the
//! socket (a leave at once when the page went away, else the grace period).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::ws::Utf8Bytes;
use p2piano_protocol::presence::{Connect, ConnectReply, Disconnect, HeldSocket, is_page_id};
use p2piano_protocol::rpc::{JoinRoom, LeaveRoom};
use p2piano_protocol::{DisplayName, ErrorBody, ErrorCode, Instrument, RoomCode, UserId};
use serde_json::{Value, json};
use tokio::time::Instant;
use tracing::Instrument as _;

use super::{Conn, Joined};
use crate::dialect::Dialect;
use crate::fanout::{LocalMember, LocalRoom};
use crate::sio::{self, SioPacket};
use crate::socket::outbox::Frame;

impl Conn {
    /// Handles a namespace connect in an `edge.connect` span, the root of its trace: for the
    /// web client this is the join, whose RPCs to presence and rooms (and the membership
    /// event rooms then publishes) carry the span's context.
    pub(super) async fn on_connect(&mut self, packet: SioPacket) {
        let dialect = match Dialect::of_namespace(&packet.namespace) {
            Some(Dialect::Client) => "client",
            Some(Dialect::Service) => "service",
            None => "unknown",
        };
        let span = tracing::info_span!(
            target: p2piano_telemetry::TRACE_TARGET,
            parent: None,
            "edge.connect",
            otel.kind = "server",
            dialect,
            code = tracing::field::Empty,
        );
        self.handle_connect(packet).instrument(span).await
    }

    pub(super) async fn handle_connect(&mut self, packet: SioPacket) {
        let ns = packet.namespace.as_str();
        let Some(dialect) = Dialect::of_namespace(ns) else {
            return self.connect_error(ns, "Invalid namespace").await;
        };
        if self.dialect.is_some() {
            return self.connect_error(ns, "Already connected").await;
        }
        let field = |name: &str| {
            packet
                .data
                .as_ref()
                .and_then(|d| d.get(name))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let explicit = field("sessionId");
        // Connection state recovery: socket.io-client sends back the `pid` of its last
        // connect reply (and an `offset`, unused: see docs/protocol.md).
        self.claimed_pid = field("pid").filter(|p| is_page_id(p));
        let session = match self
            .edge
            .auth
            .resolve_with(explicit.as_deref(), &self.handshake.headers)
            .await
        {
            Ok(Some((id, info))) => (id, info.user_id, info.budget),
            Ok(None) => {
                self.edge
                    .auth
                    .note_forged(&self.handshake.headers, self.handshake.ip);
                return self.connect_error(ns, "Session required").await;
            }
            Err(_) => {
                return self
                    .connect_error(ns, "Service unavailable, try again")
                    .await;
            }
        };
        let (id, user, handed) = session;
        match self.edge.budgets.attach(&user, handed.as_ref()) {
            Ok(budget) => self.budget = Some(budget),
            Err(left) => {
                tracing::debug!(
                    user_id = %user,
                    cool_down_ms = left.as_millis() as u64,
                    "session in its cool-down after abuse"
                );
                return self
                    .connect_error(ns, "Too many events, try again later")
                    .await;
            }
        }
        self.session = Some((id, user));
        match dialect {
            Dialect::Client => self.connect_client(ns).await,
            Dialect::Service => self.connect_service(ns).await,
        }
    }

    /// The web client connects straight into its room (`roomId`, `displayName` query).
    pub(super) async fn connect_client(&mut self, ns: &str) {
        let Some(code) = self
            .handshake
            .room_id
            .as_deref()
            .and_then(|c| RoomCode::parse(c).ok())
        else {
            return self.connect_error(ns, "Room not found").await;
        };
        tracing::Span::current().record("code", code.as_str());
        let display_name = match self.handshake.display_name.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(n) => match DisplayName::parse(n) {
                Ok(n) => Some(n),
                Err(e) => return self.connect_error(ns, &e.to_string()).await,
            },
        };
        let (room, reply) = match self.join(&code, display_name, None, Dialect::Client).await {
            Ok(j) => j,
            Err(e) => return self.connect_error(ns, &client_join_message(&e)).await,
        };
        self.dialect = Some(Dialect::Client);
        self.edge.set_dialect(&self.sid, Some(Dialect::Client));
        self.send(Utf8Bytes::from(sio::encode_connect(
            ns,
            &self.sid,
            self.pid.as_deref(),
        )))
        .await;
        let me = reply.user.id.clone();
        let welcome = json!({"userId": me, "room": reply.room.to_client()});
        let welcome = Frame::Text(Dialect::Client.event("ROOM_JOIN", Some(&welcome)));
        self.enter(room, me, Dialect::Client, Some(welcome));
    }

    /// The service dialect connects without a room; a second socket of the session
    /// replaces the first right away.
    pub(super) async fn connect_service(&mut self, ns: &str) {
        if let Err(e) = self.register(None).await {
            return self.connect_error(ns, &e.message).await;
        }
        self.dialect = Some(Dialect::Service);
        self.edge.set_dialect(&self.sid, Some(Dialect::Service));
        self.send(Utf8Bytes::from(sio::encode_connect(
            ns,
            &self.sid,
            self.pid.as_deref(),
        )))
        .await;
    }

    /// Subscribes the edge to the room, registers the socket with presence, and joins.
    pub(super) async fn join(
        &mut self,
        code: &RoomCode,
        display_name: Option<DisplayName>,
        instrument: Option<Instrument>,
        dialect: Dialect,
    ) -> Result<(Arc<LocalRoom>, p2piano_protocol::rpc::JoinReply), ErrorBody> {
        let Some((_, user)) = self.session.clone() else {
            return Err(ErrorBody::new(ErrorCode::Forbidden, "no session"));
        };
        let room = self
            .edge
            .registry
            .attach(code)
            .await
            .map_err(|_| ErrorBody::new(ErrorCode::Unavailable, "service unavailable"))?;
        let connected = match self.register(Some(code)).await {
            Ok(reply) => reply,
            Err(e) => {
                self.edge.registry.detach(code, &self.sid).await;
                return Err(e);
            }
        };
        let join = JoinRoom {
            code: code.clone(),
            user_id: user,
            display_name,
            instrument,
            renew: connected.renew,
            restore: false,
        };
        match self.edge.rpc.join_room(&join).await {
            Ok(reply) => {
                room.observe(&reply.room);
                Ok((room, reply))
            }
            Err(e) => {
                self.edge.registry.detach(code, &self.sid).await;
                // Presence heard of this socket: it must hear that it is gone, whatever
                // became of the join (refused, timed out). A web-client socket has nothing
                // left to do, and it never joined, so there is no grace period to keep: its
                // record goes at once.
                if dialect == Dialect::Client {
                    self.disconnect(true).await;
                }
                Err(e)
            }
        }
    }

    /// Tells presence that this socket is its session's current one, for `room` (none yet
    /// for a service-dialect socket), and records what presence now knows of it. A socket
    /// that already has its page id (a service-dialect socket joining a room) presents it,
    /// so that presence keeps it; else the one the client claimed.
    pub(super) async fn register(
        &mut self,
        room: Option<&RoomCode>,
    ) -> Result<ConnectReply, ErrorBody> {
        let Some((session, user)) = self.session.clone() else {
            return Err(ErrorBody::new(ErrorCode::Forbidden, "no session"));
        };
        let connect = Connect {
            session_id: session.clone(),
            edge_id: self.edge.edge_id.clone(),
            conn_id: self.sid.to_string(),
            room_code: room.cloned(),
            pid: self.pid.clone().or_else(|| self.claimed_pid.clone()),
            user_id: Some(user.clone()),
        };
        let reply = self.edge.rpc.connect(&connect).await?;
        self.pid = reply.pid.clone();
        self.edge.set_held(
            &self.sid,
            Some(HeldSocket {
                session_id: session,
                conn_id: self.sid.to_string(),
                user_id: user,
                room_code: room.cloned(),
                pid: self.pid.clone(),
            }),
        );
        Ok(reply)
    }

    /// Starts receiving the room's traffic, after `welcome` if given: the web client's
    /// `ROOM_JOIN` goes out ahead of the room's traffic, and the socket is a member by the
    /// time the client has it (players act on it at once).
    pub(super) fn enter(
        &mut self,
        room: Arc<LocalRoom>,
        user_id: UserId,
        dialect: Dialect,
        welcome: Option<Frame>,
    ) {
        let member = LocalMember {
            conn_id: self.sid.clone(),
            user_id,
            dialect,
            outbox: self.outbox.clone(),
        };
        match welcome {
            Some(welcome) => room.add_after(member, welcome),
            None => room.add(member),
        }
        self.joined = Some(Joined { room });
    }

    /// Leaves the current room: at once when `explicit` (the client asked), else
    /// through presence's grace period.
    pub(super) async fn leave(&mut self, explicit: bool) {
        let Some(joined) = self.joined.take() else {
            return;
        };
        let code = joined.room.code().clone();
        self.edge.registry.detach(&code, &self.sid).await;
        if explicit && let Some((_, user)) = &self.session {
            let req = LeaveRoom {
                code,
                user_id: user.clone(),
                joined_before: None,
            };
            if let Err(e) = self.edge.rpc.leave_room(&req).await {
                tracing::warn!(error = %e, "leave failed; presence will retire the member");
            }
        }
    }

    /// The socket is gone: stop its room traffic and tell presence (unless replaced): the
    /// member leaves at once if its page went away, else after the grace period.
    pub(super) async fn finish(&mut self) {
        self.leave(false).await;
        self.disconnect(self.page_gone).await;
    }

    /// A Socket.IO disconnect from the client (`41<ns>`): the page is done with the
    /// namespace, so its member leaves at once. The WebSocket stays open, and the client may
    /// connect to a namespace again.
    pub(super) async fn leave_namespace(&mut self) {
        self.leave(false).await;
        self.disconnect(true).await;
        self.dialect = None;
        self.edge.set_dialect(&self.sid, None);
        self.claimed_pid = None;
        self.pid = None;
        self.unconnected_since = Instant::now();
    }

    /// Tells presence that this socket is done with its session (unless it was replaced, or
    /// presence never heard of it): `leave` ends the membership now, else the grace period
    /// starts. A socket that the edge's own drain closed needs no word: presence took the
    /// drain's last heartbeat as the grace period of all its sockets.
    ///
    /// Budgets worth handing on ([`crate::socket::budgets`]) go with the disconnect, and
    /// make one even for a replaced socket or one presence never confirmed (which presence
    /// takes as stale but for the budgets), so that a session moving between edges takes its
    /// spent budgets along. A drain hands nothing on: its clients did not choose to move.
    pub(super) async fn disconnect(&mut self, leave: bool) {
        let known = self.edge.table_held(&self.sid).is_some_and(|held| held);
        self.edge.set_held(&self.sid, None);
        if !leave && self.edge.draining.load(Ordering::Relaxed) {
            return;
        }
        let budget = self.budget.as_ref().and_then(|b| b.snapshot());
        let stale = self.replaced.load(Ordering::Relaxed) || !known;
        if stale && budget.is_none() {
            return;
        }
        if let Some((session, _)) = self.session.take() {
            let req = Disconnect {
                session_id: session,
                edge_id: self.edge.edge_id.clone(),
                conn_id: self.sid.to_string(),
                leave,
                budget,
            };
            if let Err(e) = self.edge.rpc.disconnect(&req).await {
                tracing::warn!(error = %e, "presence not told of a closed socket; its edge heartbeat covers it");
            }
        }
    }
}

/// The connect-error message the web client shows for a failed join.
fn client_join_message(e: &ErrorBody) -> String {
    match e.code {
        ErrorCode::NotFound => "Room not found".into(),
        ErrorCode::Full => "Room is full".into(),
        ErrorCode::Forbidden => "Room is locked".into(),
        _ => e.message.clone(),
    }
}
