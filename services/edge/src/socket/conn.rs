//! One socket's task: reads its frames and handles them in order (never one task per
//! message, which would reorder a player's notes), with the namespace-connect deadline and
//! the ping timeout. Bad input gets an error to this socket only; a frame that is not
//! Socket.IO at all closes this socket (1002/1007/1009) and nothing else.
//!
//! This file is the Engine.IO/Socket.IO side (frames, packets, deadlines); what a socket
//! does as a member is in [`membership`] and what it does with client events in
//! [`actions`].

mod actions;
mod membership;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::SplitStream;
use p2piano_protocol::{SessionId, UserId};
use tokio::time::Instant;

use crate::dialect::Dialect;
use crate::edge::{Edge, SocketEntry};
use crate::events::Refusal;
use crate::fanout::LocalRoom;
use crate::security::Kind as SecurityKind;
use crate::sio::{self, BinaryAssembly, EioPacket, SioKind, SioPacket};
use crate::socket::budgets::SessionBudget;
use crate::socket::outbox::{self, Close, Frame, Outbox};
use crate::socket::writer;

/// What the HTTP handshake carried.
#[derive(Debug)]
pub struct Handshake {
    /// The `roomId` query parameter (the client dialect's room). Only the two parameters
    /// a namespace connect reads are kept, not the query's map, which every socket would
    /// carry for its life.
    pub room_id: Option<Box<str>>,
    /// The `displayName` query parameter (the client dialect's name for the player).
    pub display_name: Option<Box<str>>,
    /// Request headers (cookie, authorization).
    pub headers: axum::http::HeaderMap,
    /// Peer address.
    pub ip: IpAddr,
    /// The socket's places under the edge's connection caps, held for its life (`None`
    /// where the router runs without the accept loop).
    #[expect(dead_code, reason = "held for its Drop, which gives the places back")]
    pub places: Option<crate::gate::Places>,
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
    /// Boxed: binary events are rare, and an idle socket should not carry room for one.
    assembling: Option<Box<BinaryAssembly>>,
    replaced: Arc<AtomicBool>,
}

fn new_sid() -> String {
    use base64::Engine;
    let bytes: [u8; 15] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Starts one socket: registers it with the edge, starts its writer, and returns the task
/// that reads it from open to close, to be spawned.
///
/// The set-up runs here, before the task exists, so that the future an idle socket keeps
/// for its whole life holds only what its reading loop needs. An `async fn` keeps room for
/// its arguments in every state (here the WebSocket, 368 bytes, and the handshake, twice),
/// and that room is never given back while the socket is open.
pub fn run(
    edge: Arc<Edge>,
    socket: WebSocket,
    handshake: Handshake,
) -> impl Future<Output = ()> + Send + 'static {
    let sid: Arc<str> = Arc::from(new_sid());
    let (sink, mut stream) = socket.split();
    let outbox = outbox::outbox(edge.settings.outbox_capacity);
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
    let settings = &edge.settings;
    let writer = tokio::spawn(writer::run(sink, outbox.clone(), settings.ping_interval));
    // The first frame goes in before the task starts: an empty queue always takes it.
    outbox.send_now(Frame::Text(Utf8Bytes::from(sio::encode_open(
        &sid,
        settings.ping_interval.as_millis() as u64,
        settings.ping_timeout.as_millis() as u64,
        settings.max_payload,
    ))));
    let silence = settings.ping_interval + settings.ping_timeout;
    let connect_timeout = settings.connect_timeout;
    let mut conn = Conn {
        edge,
        sid,
        outbox,
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
    async move {
        read(&mut conn, &mut stream, silence, connect_timeout).await;
        Box::pin(conn.finish()).await;
        conn.edge.unregister(&conn.sid);
        conn.outbox.close(Close {
            code: 1000,
            reason: "bye",
        });
        let _ = writer.await;
    }
}

/// Reads and handles the socket's frames in order until it closes, is closed, or misses
/// its deadline: the namespace connect's (`connect_timeout` from its open or its last
/// disconnect) until it has a namespace, and its silence (`silence` since it was last
/// heard) always.
async fn read(
    conn: &mut Conn,
    stream: &mut SplitStream<WebSocket>,
    silence: Duration,
    connect_timeout: Duration,
) {
    // Its own handle on the queue: the close waiter below borrows it for the whole loop,
    // while each message borrows `conn` mutably.
    let outbox = conn.outbox.clone();
    let mut last_heard = Instant::now();
    // The socket's deadline: the namespace connect's until it has one, and its silence.
    let deadline = |conn: &Conn, last_heard: Instant| {
        let silent = last_heard + silence;
        match conn.dialect {
            None => (conn.unconnected_since + connect_timeout).min(silent),
            Some(_) => silent,
        }
    };
    // One timer and one close waiter for the socket's life, not new ones per message. The
    // timer is not moved on each message either (a move goes through the runtime's timer
    // wheel): when it fires the deadline is worked out again, and if the client was heard
    // since, the timer is set to the new deadline instead.
    let closed = outbox.closed();
    tokio::pin!(closed);
    let timer = tokio::time::sleep_until(deadline(conn, last_heard));
    tokio::pin!(timer);
    loop {
        let msg = tokio::select! {
            _ = &mut closed => break,
            _ = &mut timer => {
                let due = deadline(conn, last_heard);
                if Instant::now() < due {
                    timer.as_mut().reset(due);
                    continue;
                }
                if conn.dialect.is_none()
                    && Instant::now() >= conn.unconnected_since + connect_timeout
                {
                    conn.edge.metrics.connect_timeouts.inc();
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
            Some(Err(e)) => Err(classify(e)),
            // Boxed: the handling of one message lives only while it runs, so the socket's
            // own state, which an idle socket keeps, is not sized for its deepest await.
            Some(Ok(Message::Text(text))) => Box::pin(conn.on_text(text.as_str())).await,
            Some(Ok(Message::Binary(data))) => Box::pin(conn.on_binary(data)).await,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => Ok(()),
        };
        if let Err(Fatal(code, reason)) = result {
            let kind = match code {
                1008 => SecurityKind::RateLimitDisconnect,
                _ => SecurityKind::ProtocolViolation,
            };
            let user = conn.session.as_ref().map(|(_, user)| user);
            conn.edge
                .metrics
                .security
                .record(kind, conn.handshake.ip, user, reason);
            outbox.close(Close { code, reason });
            break;
        }
        // The client was heard now, and while its message was handled (a join may wait on
        // several RPCs) nothing was read, so that time is not its silence either.
        last_heard = Instant::now();
        // A deadline only moves earlier when the socket leaves its namespace (the connect
        // deadline starts again): only then is the timer moved here.
        let due = deadline(conn, last_heard);
        if due < timer.deadline() {
            timer.as_mut().reset(due);
        }
    }
}

/// Maps a WebSocket read error to a close code, by the kind of error axum's WebSocket
/// (tungstenite) reports: a message over the size limit is 1009, text that is not UTF-8
/// 1007, anything else a protocol error.
fn classify(e: axum::Error) -> Fatal {
    match e.into_inner().downcast::<tungstenite::Error>().map(|e| *e) {
        Ok(tungstenite::Error::Capacity(_)) => Fatal(1009, "message too big"),
        Ok(tungstenite::Error::Utf8(_)) => Fatal(1007, "invalid UTF-8"),
        _ => Fatal(1002, "protocol error"),
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
                self.send(Utf8Bytes::from(sio::encode_pong(probe))).await;
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
                self.assembling = Some(Box::new(assembly));
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
                        let payload = event.args.into_iter().next();
                        self.on_event(dialect, &event.name, payload, ack).await?
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::socket::test_support::{edge, handshake, socket_pair};

    /// An idle socket keeps its task's future for its whole life, so the future holds the
    /// reading loop's state and nothing more: not the WebSocket and the handshake it was
    /// made from, which an `async fn` taking them keeps room for in every state (1,832
    /// bytes in a test build, against 824 now).
    #[tokio::test]
    async fn a_sockets_task_keeps_only_what_its_reading_loop_needs() {
        let (socket, _client) = socket_pair(None).await;
        let task = run(edge(), socket, handshake());
        let size = std::mem::size_of_val(&task);
        assert!(size <= 1024, "the socket task's future is {size} bytes");
    }
}
