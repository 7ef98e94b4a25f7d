//! One socket's task: reads its frames and handles them in order (never one task per
//! message, which would reorder a player's notes), with the namespace-connect deadline and
//! the ping timeout. Bad input gets an error to this socket only; a frame that is not
//! Socket.IO at all closes this socket (1002/1007/1009) and nothing else.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use bytes::Bytes;
use futures::StreamExt;
use p2piano_bus::Headers;
use p2piano_protocol::presence::{Connect, ConnectReply, Disconnect, HeldSocket, is_page_id};
use p2piano_protocol::relay::{Relay, RelayKind};
use p2piano_protocol::rpc::{JoinRoom, LeaveRoom, UpdateUser};
use p2piano_protocol::{
    DisplayName, ErrorBody, ErrorCode, Instrument, RoomCode, SessionId, UserId,
};
use serde_json::{Value, json};
use tokio::time::Instant;
use tracing::Instrument as _;

use crate::dialect::Dialect;
use crate::edge::{Edge, SocketEntry};
use crate::events::{self, Action, Refusal};
use crate::fanout::{LocalMember, LocalRoom};
use crate::sio::{self, BinaryAssembly, EioPacket, SioKind, SioPacket};
use crate::socket::budgets::SessionBudget;
use crate::socket::limits::Verdict;
use crate::socket::outbox::{self, Close, Frame, Outbox};

/// What the HTTP handshake carried.
#[derive(Debug)]
pub struct Handshake {
    /// Query parameters (`roomId`, `displayName` for the client dialect).
    pub query: HashMap<String, String>,
    /// Request headers (cookie, authorization).
    pub headers: axum::http::HeaderMap,
    /// Peer address.
    pub ip: IpAddr,
    /// The connection's place under the edge's connection caps, held for the socket's life
    /// (`None` where the router runs without the accept loop).
    pub pass: Option<Arc<crate::gate::Pass>>,
}

/// A protocol violation: close the socket with this WebSocket code.
struct Fatal(u16, &'static str);

/// Whether a close frame from the client says that its page went away: 1000 (a normal
/// close) or 1001 (going away: the browser closes a page's sockets with it on unload,
/// reload and navigation). Any other close, a close frame without a code (engine.io-client
/// closes with none after its own ping timeout), or a transport that ended without a close
/// frame is a lost transport, which the grace period covers.
fn page_went_away(frame: Option<&CloseFrame>) -> bool {
    matches!(frame, Some(f) if f.code == 1000 || f.code == 1001)
}

struct Joined {
    room: Arc<LocalRoom>,
}

struct Conn {
    edge: Arc<Edge>,
    sid: Arc<str>,
    outbox: Outbox,
    handshake: Handshake,
    dialect: Option<Dialect>,
    session: Option<(SessionId, UserId)>,
    /// The page id the client presented in its namespace connect (connection state
    /// recovery), until presence answers with the page id of this socket.
    claimed_pid: Option<String>,
    /// The page id presence gave this socket, sent in the namespace connect reply.
    pid: Option<String>,
    /// Set when the client closed its page (a close frame 1000/1001, or an Engine.IO close
    /// packet): the membership ends at once instead of after the grace period.
    page_gone: bool,
    /// Since when the socket has been without a namespace (from its open, or from a
    /// Socket.IO disconnect): the namespace-connect deadline counts from here.
    unconnected_since: Instant,
    joined: Option<Joined>,
    /// The session's event budgets, once its session is known.
    budget: Option<SessionBudget>,
    assembling: Option<BinaryAssembly>,
    replaced: Arc<AtomicBool>,
}

fn new_sid() -> String {
    use base64::Engine;
    let bytes: [u8; 15] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Runs one socket from open to close.
pub async fn run(edge: Arc<Edge>, socket: WebSocket, handshake: Handshake) {
    let sid: Arc<str> = Arc::from(new_sid());
    let (sink, mut stream) = socket.split();
    let (outbox, rx) = outbox::outbox(edge.settings.outbox_capacity);
    let replaced = Arc::new(AtomicBool::new(false));
    edge.register(
        sid.clone(),
        SocketEntry {
            outbox: outbox.clone(),
            dialect: None,
            replaced: replaced.clone(),
            held: None,
        },
    );
    let settings = edge.settings.clone();
    let writer = tokio::spawn(outbox::run_writer(
        sink,
        rx,
        outbox.clone(),
        settings.ping_interval,
    ));
    let open = sio::encode_open(
        &sid,
        settings.ping_interval.as_millis() as u64,
        settings.ping_timeout.as_millis() as u64,
        settings.max_payload,
    );
    outbox.send(Frame::Text(Utf8Bytes::from(open))).await;

    let mut conn = Conn {
        edge: edge.clone(),
        sid: sid.clone(),
        outbox: outbox.clone(),
        handshake,
        dialect: None,
        session: None,
        claimed_pid: None,
        pid: None,
        page_gone: false,
        unconnected_since: Instant::now(),
        joined: None,
        budget: None,
        assembling: None,
        replaced,
    };
    let closing = outbox.closed_token();
    let silence = settings.ping_interval + settings.ping_timeout;
    let mut last_heard = Instant::now();
    loop {
        let deadline = if conn.dialect.is_none() {
            (conn.unconnected_since + settings.connect_timeout).min(last_heard + silence)
        } else {
            last_heard + silence
        };
        let msg = tokio::select! {
            _ = closing.cancelled() => break,
            _ = tokio::time::sleep_until(deadline) => {
                if conn.dialect.is_none()
                    && Instant::now() >= conn.unconnected_since + settings.connect_timeout
                {
                    edge.metrics.connect_timeouts.inc();
                }
                outbox.close(Close { code: 1000, reason: "timeout" });
                break;
            }
            msg = stream.next() => msg,
        };
        let result = match msg {
            None => break,
            Some(Ok(Message::Close(frame))) => {
                conn.page_gone = page_went_away(frame.as_ref());
                break;
            }
            Some(Err(e)) => Err(classify(&e)),
            Some(Ok(Message::Text(text))) => conn.on_text(text.as_str()).await,
            Some(Ok(Message::Binary(data))) => conn.on_binary(data).await,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => Ok(()),
        };
        if let Err(Fatal(code, reason)) = result {
            tracing::debug!(code, reason, "closing socket on a protocol violation");
            outbox.close(Close { code, reason });
            break;
        }
        // The client was heard now, and while its message was handled (a join may wait on
        // several RPCs) nothing was read, so that time is not its silence either.
        last_heard = Instant::now();
    }
    Box::pin(conn.finish()).await;
    edge.unregister(&sid);
    outbox.close(Close {
        code: 1000,
        reason: "bye",
    });
    let _ = writer.await;
}

/// Maps a WebSocket read error to a close code.
fn classify(e: &axum::Error) -> Fatal {
    let text = e.to_string();
    if text.contains("too long") || text.contains("too big") || text.contains("Space limit") {
        Fatal(1009, "message too big")
    } else if text.contains("UTF-8") || text.contains("utf-8") {
        Fatal(1007, "invalid UTF-8")
    } else {
        Fatal(1002, "protocol error")
    }
}

impl Conn {
    async fn send(&self, frame: Utf8Bytes) {
        self.outbox.send(Frame::Text(frame)).await;
    }

    async fn on_text(&mut self, text: &str) -> Result<(), Fatal> {
        if self.assembling.is_some() {
            return Err(Fatal(
                1002,
                "text frame while binary attachments were expected",
            ));
        }
        let packet = match sio::parse_engine(text) {
            Ok(EioPacket::Message(p)) => p,
            Ok(EioPacket::Ping(probe)) => {
                self.send(Utf8Bytes::from(format!("3{probe}"))).await;
                return Ok(());
            }
            Ok(EioPacket::Pong(_) | EioPacket::Noop | EioPacket::Upgrade) => return Ok(()),
            Ok(EioPacket::Close) => {
                self.page_gone = true;
                return Err(Fatal(1000, "client closed"));
            }
            Ok(EioPacket::Open) => return Err(Fatal(1002, "unexpected open packet")),
            Err(_) => return Err(Fatal(1002, "not an Engine.IO packet")),
        };
        let packet = match sio::parse_socketio(packet) {
            Ok(p) => p,
            Err(e) if e.is_fatal() => return Err(Fatal(1002, "not a Socket.IO packet")),
            Err(e) => {
                self.refuse("packet", None, Refusal::invalid(e.to_string()))
                    .await;
                return Ok(());
            }
        };
        self.on_packet(packet, Vec::new()).await
    }

    async fn on_binary(&mut self, data: Bytes) -> Result<(), Fatal> {
        let Some(assembly) = self.assembling.as_mut() else {
            return Err(Fatal(1002, "unexpected binary frame"));
        };
        match assembly.push(data) {
            Ok(None) => Ok(()),
            Ok(Some((packet, attachments))) => {
                self.assembling = None;
                self.on_packet(packet, attachments).await
            }
            Err(_) => Err(Fatal(1002, "bad binary attachment")),
        }
    }

    async fn on_packet(&mut self, packet: SioPacket, attachments: Vec<Bytes>) -> Result<(), Fatal> {
        match packet.kind {
            SioKind::Connect => {
                // Boxed: a connect waits on several RPCs; see `act_control`.
                Box::pin(self.on_connect(packet)).await;
                Ok(())
            }
            SioKind::Disconnect => {
                if self
                    .dialect
                    .is_some_and(|d| d.namespace() == packet.namespace)
                {
                    Box::pin(self.leave_namespace()).await;
                }
                Ok(())
            }
            SioKind::BinaryEvent | SioKind::BinaryAck if attachments.is_empty() => {
                let assembly = BinaryAssembly::new(packet, self.edge.settings.max_attachments)
                    .map_err(|_| Fatal(1002, "bad binary packet"))?;
                self.assembling = Some(assembly);
                Ok(())
            }
            SioKind::Event | SioKind::BinaryEvent => {
                let Some(dialect) = self.dialect.filter(|d| d.namespace() == packet.namespace)
                else {
                    return Err(Fatal(1002, "event before namespace connect"));
                };
                let binary = !attachments.is_empty();
                match packet.into_event() {
                    Ok((event, ack)) if binary => {
                        let refusal =
                            Refusal::invalid("binary payloads are not supported for this event");
                        self.refuse(&event.name, ack, refusal).await;
                    }
                    Ok((event, ack)) => {
                        self.on_event(dialect, &event.name, event.args.first(), ack)
                            .await?
                    }
                    Err(e) if e.is_fatal() => return Err(Fatal(1002, "malformed event")),
                    Err(e) => {
                        self.refuse("packet", None, Refusal::invalid(e.to_string()))
                            .await
                    }
                }
                Ok(())
            }
            // The server asks for no acks; a client ack is ignored.
            SioKind::Ack | SioKind::BinaryAck => Ok(()),
            SioKind::ConnectError => Err(Fatal(1002, "connect error from a client")),
        }
    }

    async fn connect_error(&self, ns: &str, message: &str) {
        self.send(Utf8Bytes::from(sio::encode_connect_error(ns, message)))
            .await;
    }

    /// Handles a namespace connect in an `edge.connect` span, the root of its trace: for the
    /// web client this is the join, whose RPCs to presence and rooms (and the membership
    /// event rooms then publishes) carry the span's context.
    async fn on_connect(&mut self, packet: SioPacket) {
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

    async fn handle_connect(&mut self, packet: SioPacket) {
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
            Ok(Some((id, info))) => (id, info.user_id),
            Ok(None) => return self.connect_error(ns, "Session required").await,
            Err(_) => {
                return self
                    .connect_error(ns, "Service unavailable, try again")
                    .await;
            }
        };
        match self.edge.budgets.attach(&session.1) {
            Ok(budget) => self.budget = Some(budget),
            Err(left) => {
                tracing::debug!(
                    user_id = %session.1,
                    cool_down_ms = left.as_millis() as u64,
                    "session in its cool-down after abuse"
                );
                return self
                    .connect_error(ns, "Too many events, try again later")
                    .await;
            }
        }
        self.session = Some(session);
        match dialect {
            Dialect::Client => self.connect_client(ns).await,
            Dialect::Service => self.connect_service(ns).await,
        }
    }

    /// The web client connects straight into its room (`roomId`, `displayName` query).
    async fn connect_client(&mut self, ns: &str) {
        let Some(code) = self
            .handshake
            .query
            .get("roomId")
            .and_then(|c| RoomCode::parse(c).ok())
        else {
            return self.connect_error(ns, "Room not found").await;
        };
        tracing::Span::current().record("code", code.as_str());
        let display_name = match self.handshake.query.get("displayName").map(|n| n.trim()) {
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
        self.send(Dialect::Client.event("ROOM_JOIN", Some(&welcome)))
            .await;
        self.enter(room, me, Dialect::Client);
    }

    /// The service dialect connects without a room; a second socket of the session
    /// replaces the first right away.
    async fn connect_service(&mut self, ns: &str) {
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
    async fn join(
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
                let _ = dialect;
                Ok((room, reply))
            }
            Err(e) => {
                self.edge.registry.detach(code, &self.sid).await;
                // Presence heard of this socket: it must hear that it is gone, whatever
                // became of the join (a client dialect socket closes on a refused join).
                if dialect == Dialect::Client {
                    self.disconnect(false).await;
                }
                Err(e)
            }
        }
    }

    /// Tells presence that this socket is its session's current one, for `room` (none yet
    /// for a service-dialect socket), and records what presence now knows of it. A socket
    /// that already has its page id (a service-dialect socket joining a room) presents it,
    /// so that presence keeps it; else the one the client claimed.
    async fn register(&mut self, room: Option<&RoomCode>) -> Result<ConnectReply, ErrorBody> {
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

    /// Starts receiving the room's traffic.
    fn enter(&mut self, room: Arc<LocalRoom>, user_id: UserId, dialect: Dialect) {
        room.add(LocalMember {
            conn_id: self.sid.clone(),
            user_id,
            dialect,
            outbox: self.outbox.clone(),
        });
        self.joined = Some(Joined { room });
    }

    /// Leaves the current room: at once when `explicit` (the client asked), else
    /// through presence's grace period.
    async fn leave(&mut self, explicit: bool) {
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
    async fn finish(&mut self) {
        self.leave(false).await;
        self.disconnect(self.page_gone).await;
    }

    /// A Socket.IO disconnect from the client (`41<ns>`): the page is done with the
    /// namespace, so its member leaves at once. The WebSocket stays open, and the client may
    /// connect to a namespace again.
    async fn leave_namespace(&mut self) {
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
    async fn disconnect(&mut self, leave: bool) {
        let known = self.edge.table_held(&self.sid).is_some_and(|held| held);
        self.edge.set_held(&self.sid, None);
        if self.replaced.load(Ordering::Relaxed) || !known {
            return;
        }
        if !leave && self.edge.draining.load(Ordering::Relaxed) {
            return;
        }
        if let Some((session, _)) = self.session.take() {
            let req = Disconnect {
                session_id: session,
                edge_id: self.edge.edge_id.clone(),
                conn_id: self.sid.to_string(),
                leave,
            };
            if let Err(e) = self.edge.rpc.disconnect(&req).await {
                tracing::warn!(error = %e, "presence not told of a closed socket; its edge heartbeat covers it");
            }
        }
    }

    /// Handles one client event in an `edge.event` span, the root of the event's trace: the
    /// RPCs it makes and the relay it publishes carry the span's context, so that the
    /// services' spans and the deliveries on every edge join it. Named by the event's known
    /// name (see [`events::known_event`]), with how it ended as `outcome`.
    async fn on_event(
        &mut self,
        dialect: Dialect,
        name: &str,
        payload: Option<&Value>,
        ack: Option<u64>,
    ) -> Result<(), Fatal> {
        let span = tracing::info_span!(
            target: p2piano_telemetry::TRACE_TARGET,
            parent: None,
            "edge.event",
            otel.kind = "server",
            event = events::known_event(name),
            outcome = tracing::field::Empty,
        );
        self.handle_event(dialect, name, payload, ack)
            .instrument(span)
            .await
    }

    async fn handle_event(
        &mut self,
        dialect: Dialect,
        name: &str,
        payload: Option<&Value>,
        ack: Option<u64>,
    ) -> Result<(), Fatal> {
        self.edge.metrics.event_in(name);
        let Some((_, me)) = self.session.clone() else {
            return Err(Fatal(1002, "no session"));
        };
        let action = match dialect {
            Dialect::Client => events::client::parse(name, payload, &me),
            Dialect::Service => events::service::parse(name, payload),
        };
        let action = match action {
            Ok(a) => a,
            Err(r) => {
                self.edge.metrics.rejected.inc();
                outcome(r.code());
                self.refuse(name, ack, r).await;
                return Ok(());
            }
        };
        let Some(budget) = self.budget.as_ref() else {
            return Err(Fatal(1002, "no session"));
        };
        match budget.check(action.class()) {
            Verdict::Allow => {}
            Verdict::Refuse => {
                self.edge.metrics.rate_limited.inc();
                outcome("rate_limited");
                let r = Refusal {
                    status: 429,
                    message: "Rate limit exceeded. Please slow down.".into(),
                };
                self.refuse(name, ack, r).await;
                return Ok(());
            }
            Verdict::Disconnect => {
                outcome("disconnected");
                self.edge.budgets.cool_down(&me);
                tracing::warn!(
                    ip = %self.handshake.ip,
                    user_id = %me,
                    "disconnected for exceeding its event limits for too long; refused for a cool-down"
                );
                return Err(Fatal(1008, "rate limits exceeded for too long"));
            }
        }
        match self.act(dialect, name, action, &me).await {
            Ok(reply) => {
                outcome("ok");
                self.ack(ack, reply.unwrap_or_else(|| json!({"ok": true})))
                    .await
            }
            Err(r) => {
                outcome(r.code());
                self.refuse(name, ack, r).await
            }
        }
        Ok(())
    }

    /// Carries out a valid action; `Ok(Some(v))` is the ack body for the service dialect.
    async fn act(
        &mut self,
        dialect: Dialect,
        name: &str,
        action: Action,
        me: &UserId,
    ) -> Result<Option<Value>, Refusal> {
        match action {
            Action::Relay {
                event, to, data, ..
            } => {
                let room = self.room()?;
                let to = match to {
                    Some(list) => {
                        let members = self.same_room(dialect, name, &room, list, me).await?;
                        if members.is_empty() {
                            return Ok(None);
                        }
                        Some(members)
                    }
                    None => None,
                };
                let relay = Relay {
                    from: me.clone(),
                    to,
                    kind: RelayKind::Event,
                    event,
                    data,
                };
                self.publish(&room, &relay).await?;
                Ok(None)
            }
            Action::Signal { to, signal } => {
                let room = self.room()?;
                if self
                    .same_room(dialect, name, &room, vec![to.clone()], me)
                    .await?
                    .is_empty()
                {
                    return Ok(None);
                }
                let relay = Relay {
                    from: me.clone(),
                    to: Some(vec![to]),
                    kind: RelayKind::Signal,
                    event: "SIGNAL".into(),
                    data: signal,
                };
                self.publish(&room, &relay).await?;
                Ok(None)
            }
            other => Box::pin(self.act_control(dialect, name, other, me)).await,
        }
    }

    /// The rarer actions (profile changes, joins, leaves), which wait on RPCs. They run in
    /// their own boxed future so that the socket task's state, which is sized for its
    /// largest await, stays small: it lives as long as the socket, these only while they
    /// run.
    async fn act_control(
        &mut self,
        dialect: Dialect,
        name: &str,
        action: Action,
        me: &UserId,
    ) -> Result<Option<Value>, Refusal> {
        match action {
            Action::Relay { .. } | Action::Signal { .. } => {
                Err(Refusal::invalid(format!("unexpected event {name}")))
            }
            Action::UpdateUser {
                display_name,
                color,
                instrument,
            } => {
                let room = self.room()?;
                let req = UpdateUser {
                    code: room.code().clone(),
                    user_id: me.clone(),
                    display_name,
                    instrument,
                    color,
                };
                let reply = self.edge.rpc.update_user(&req).await.map_err(refusal_of)?;
                Ok(Some(json!({"ok": true, "user": reply.user})))
            }
            Action::Join {
                code,
                display_name,
                instrument,
            } => {
                if dialect != Dialect::Service {
                    return Err(Refusal::invalid(format!("unknown event {name}")));
                }
                self.leave(true).await;
                let (room, reply) = self
                    .join(&code, display_name, instrument, dialect)
                    .await
                    .map_err(refusal_of)?;
                self.enter(room, me.clone(), dialect);
                Ok(Some(
                    json!({"ok": true, "room": reply.room.to_view(), "you": reply.user}),
                ))
            }
            Action::Leave => {
                if self.joined.is_none() {
                    return Err(Refusal::invalid("not in a room"));
                }
                self.leave(true).await;
                Ok(None)
            }
        }
    }

    fn room(&self) -> Result<Arc<LocalRoom>, Refusal> {
        self.joined
            .as_ref()
            .map(|j| j.room.clone())
            .ok_or_else(|| Refusal::forbidden("join a room first"))
    }

    /// Keeps the targets that are members of the room, other than the sender (nothing is
    /// ever relayed back to its sender, whatever the targets say). Targets outside the room
    /// are dropped: quietly in the client dialect, whose web client keeps addressing players
    /// for a while after they left (counted, logged at debug), and reported to the sender in
    /// the service dialect, whose clients ask for acknowledgements (an error when no target
    /// is left).
    async fn same_room(
        &self,
        dialect: Dialect,
        name: &str,
        room: &LocalRoom,
        targets: Vec<UserId>,
        me: &UserId,
    ) -> Result<Vec<UserId>, Refusal> {
        let (members, outsiders): (Vec<UserId>, Vec<UserId>) = targets
            .into_iter()
            .filter(|t| t != me)
            .partition(|t| room.is_member(t));
        if outsiders.is_empty() {
            return Ok(members);
        }
        if dialect == Dialect::Client {
            self.edge
                .metrics
                .dropped_targets
                .inc_by(outsiders.len() as u64);
            tracing::debug!(
                event = events::known_event(name),
                dropped = outsiders.len(),
                "targets outside the room dropped"
            );
            return Ok(members);
        }
        let refusal = Refusal::forbidden(format!(
            "{} target(s) are not members of your room",
            outsiders.len()
        ));
        if members.is_empty() {
            return Err(refusal);
        }
        self.refuse(name, None, refusal).await;
        Ok(members)
    }

    /// Publishes a relay to the room's subject, with the current event's trace context in
    /// its headers so that every edge's delivery joins the sender's trace.
    async fn publish(&self, room: &LocalRoom, relay: &Relay) -> Result<(), Refusal> {
        let body = Bytes::from(serde_json::to_vec(relay).unwrap_or_default());
        let subject = self.edge.rpc.subjects().room_relay(room.code());
        let mut headers = Headers::new();
        p2piano_telemetry::inject_context(&mut headers);
        self.edge
            .rpc
            .bus()
            .publish_with_headers(&subject, headers, body)
            .await
            .map_err(|_| Refusal {
                status: 503,
                message: "relay unavailable, try again".into(),
            })
    }

    async fn ack(&self, ack: Option<u64>, body: Value) {
        if let (Some(id), Some(dialect)) = (ack, self.dialect) {
            self.send(Utf8Bytes::from(sio::encode_ack(
                dialect.namespace(),
                id,
                &[&body],
            )))
            .await;
        }
    }

    async fn refuse(&self, event: &str, ack: Option<u64>, r: Refusal) {
        let dialect = self.dialect.unwrap_or(Dialect::Client);
        match (dialect, ack) {
            (Dialect::Service, Some(id)) => {
                let body = json!({"ok": false, "error": {"code": r.code(), "message": r.message}});
                self.send(Utf8Bytes::from(sio::encode_ack(
                    dialect.namespace(),
                    id,
                    &[&body],
                )))
                .await;
            }
            _ => {
                self.send(dialect.error_frame(event, r.status, r.code(), &r.message))
                    .await
            }
        }
    }
}

/// Records how the current client event ended on its `edge.event` span.
fn outcome(outcome: &'static str) {
    tracing::Span::current().record("outcome", outcome);
}

fn refusal_of(e: ErrorBody) -> Refusal {
    let status = match e.code {
        ErrorCode::Invalid => 400,
        ErrorCode::Forbidden => 403,
        ErrorCode::NotFound => 404,
        ErrorCode::Full | ErrorCode::Conflict => 409,
        ErrorCode::TooLarge => 413,
        ErrorCode::RateLimited => 429,
        ErrorCode::Unavailable => 503,
    };
    Refusal {
        status,
        message: e.message,
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
