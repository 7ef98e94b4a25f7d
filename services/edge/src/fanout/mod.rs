//! Per-room fan-out: while this edge holds at least one local member of a room it is
//! subscribed to the room's membership events (through a no-echo handle on the bus),
//! keeps the room's member set from them (so the same-room rule needs no request per
//! event), and delivers relays and membership changes to its local sockets, encoding each
//! frame once per dialect. The relays of its own sockets it delivers itself, in the sender's
//! task ([`Registry::relay`]). The other edges' relays come over the relay links
//! ([`crate::mesh`]) on NATS, and on the room's relay subject on the in-process bus.

mod registry;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use axum::extract::ws::Utf8Bytes;
use p2piano_bus::{BusKind, Headers};
use p2piano_protocol::relay::Relay;
use p2piano_protocol::{MembersEvent, Room, RoomCode, UserId};
use tokio_util::sync::CancellationToken;

pub use registry::Registry;

use crate::dialect::{Dialect, MembersFrame};
use crate::mesh::Peer;
use crate::metrics::EdgeMetrics;
use crate::socket::outbox::{Frame, Offer, Outbox, Write};

/// The rooms this edge holds, by code: what the relay links deliver into and what their
/// interest is checked against.
pub type RoomIndex = RwLock<HashMap<RoomCode, Arc<LocalRoom>>>;

/// The room `code` of `index`, if this edge holds it.
pub fn index_get(index: &RoomIndex, code: &RoomCode) -> Option<Arc<LocalRoom>> {
    index
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(code)
        .cloned()
}

/// Every room of `index`.
pub fn index_rooms(index: &RoomIndex) -> Vec<Arc<LocalRoom>> {
    index
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .cloned()
        .collect()
}

/// A local socket that is in a room.
#[derive(Clone, Debug)]
pub struct LocalMember {
    /// The socket's id on this edge.
    pub conn_id: Arc<str>,
    /// Public id of its session.
    pub user_id: UserId,
    /// Its dialect.
    pub dialect: Dialect,
    /// Its outbound queue.
    pub outbox: Outbox,
}

/// What this edge knows about one room.
#[derive(Debug)]
pub struct LocalRoom {
    code: RoomCode,
    /// `<prefix>.room.<code>.relay`, built once rather than per note.
    relay_subject: String,
    inner: Mutex<Inner>,
    /// Whether the room's first member's wait for the other edges is over: until then
    /// later members of the room wait too.
    ready: tokio::sync::watch::Sender<bool>,
    /// Stops the room's subscription task when the last member is gone.
    stop: CancellationToken,
}

#[derive(Debug, Default)]
struct Inner {
    /// Latest room record (highest revision seen).
    snapshot: Option<Room>,
    /// Local sockets receiving this room's traffic.
    members: Vec<LocalMember>,
    /// Sockets attached (joining or joined); the subscription lives while this is > 0.
    attached: usize,
    /// The other edges that hold members of the room: where this edge's relays of it go.
    peers: Vec<Arc<Peer>>,
}

impl LocalRoom {
    /// A room with nobody attached yet; `ready` says whether members may be welcomed at
    /// once or must wait for [`LocalRoom::set_ready`].
    fn new(code: RoomCode, relay_subject: String, ready: bool) -> Self {
        Self {
            code,
            relay_subject,
            inner: Mutex::default(),
            ready: tokio::sync::watch::Sender::new(ready),
            stop: CancellationToken::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The room's code.
    pub fn code(&self) -> &RoomCode {
        &self.code
    }

    /// The subject this room's relays are published to.
    pub fn relay_subject(&self) -> &str {
        &self.relay_subject
    }

    /// Takes `room` as the current record if it is newer than the one held.
    pub fn observe(&self, room: &Room) {
        let mut inner = self.lock();
        if inner
            .snapshot
            .as_ref()
            .is_none_or(|s| s.revision < room.revision)
        {
            inner.snapshot = Some(room.clone());
        }
    }

    /// Whether `user` is a member of the room, as far as the membership events tell.
    pub fn is_member(&self, user: &UserId) -> bool {
        self.lock()
            .snapshot
            .as_ref()
            .is_some_and(|r| r.is_member(user))
    }

    /// The latest room record.
    pub fn snapshot(&self) -> Option<Room> {
        self.lock().snapshot.clone()
    }

    /// Records that edge `peer` holds members of the room too (once). A forgotten peer is
    /// not recorded: it is marked gone before it is taken out of every room, and this
    /// looks under the room's lock, so a late answer from it cannot put it back.
    pub fn add_peer(&self, peer: &Arc<Peer>) {
        let mut inner = self.lock();
        if peer.state() == crate::mesh::LinkState::Gone {
            return;
        }
        if !inner.peers.iter().any(|p| p.id() == peer.id()) {
            inner.peers.push(peer.clone());
        }
    }

    /// Records that edge `id` no longer holds members of the room.
    pub fn remove_peer(&self, id: &str) {
        self.lock().peers.retain(|p| p.id() != id);
    }

    /// The ids of the other edges this room's relays go to.
    #[cfg(test)]
    pub fn peer_ids(&self) -> Vec<String> {
        self.lock()
            .peers
            .iter()
            .map(|p| p.id().to_owned())
            .collect()
    }

    /// Queues the frame `build` makes (built once, and only if some edge is to get it) on
    /// the link of every other edge that holds the room. Returns how many frames were
    /// dropped for full queues.
    pub fn send_to_peers(&self, build: impl FnOnce() -> Option<bytes::Bytes>) -> u64 {
        let inner = self.lock();
        if inner.peers.is_empty() {
            return 0;
        }
        let Some(frame) = build() else { return 0 };
        inner
            .peers
            .iter()
            .filter(|p| !p.send_relay(frame.clone()))
            .count() as u64
    }

    /// Lets members be welcomed: the first member's wait for the other edges is over.
    pub fn set_ready(&self) {
        self.ready.send_replace(true);
    }

    /// Waits until members may be welcomed.
    pub async fn until_ready(&self) {
        let mut rx = self.ready.subscribe();
        let _ = rx.wait_for(|r| *r).await;
    }

    /// Starts delivering this room's traffic to `member`.
    pub fn add(&self, member: LocalMember) {
        self.lock().members.push(member);
    }

    /// Sends `first` to `member`, then starts delivering this room's traffic to it, under
    /// the room's lock: no relay or membership change of the room can reach the socket
    /// ahead of `first` (a web client's `ROOM_JOIN`), and none sent after the client has
    /// seen `first` can miss it.
    pub fn add_after(&self, member: LocalMember, first: Frame) {
        let mut inner = self.lock();
        member.outbox.send_now(first);
        inner.members.push(member);
    }

    /// Delivers a relay to its local targets, written as `write` says, counting the frames
    /// queued by event name. Returns how many frames were queued.
    pub fn deliver_relay(&self, relay: &Relay, write: Write, metrics: &EdgeMetrics) -> u64 {
        let inner = self.lock();
        let mut frames: [Option<Option<(&'static str, Utf8Bytes)>>; 2] = [None, None];
        let mut queued = [0u64; 2];
        for m in &inner.members {
            // Never back to the sender, whatever the targets say.
            let targeted = m.user_id != relay.from
                && relay.to.as_ref().is_none_or(|to| to.contains(&m.user_id));
            if !targeted {
                continue;
            }
            let slot = &mut frames[m.dialect as usize];
            let Some((_, frame)) = slot.get_or_insert_with(|| m.dialect.relay_frame(relay)) else {
                continue;
            };
            match m.outbox.offer(Frame::Text(frame.clone()), write) {
                Offer::Queued => queued[m.dialect as usize] += 1,
                Offer::Dropped => {
                    metrics.dropped.inc();
                }
                Offer::Closed => {}
            }
        }
        count_delivered(&frames, queued, |(name, _)| name, metrics)
    }

    /// Applies a membership event and tells the local sockets, counting the frames queued
    /// by event name. Returns how many frames were queued.
    pub fn deliver_members(
        &self,
        event: &MembersEvent,
        write: Write,
        metrics: &EdgeMetrics,
    ) -> u64 {
        let mut inner = self.lock();
        // Every event describes one change and is delivered; the record kept is the newest
        // (events of concurrent changes, or a join reply, may arrive out of order).
        if inner
            .snapshot
            .as_ref()
            .is_none_or(|s| s.revision < event.room.revision)
        {
            inner.snapshot = Some(event.room.clone());
        }
        let mut frames: [Option<Option<MembersFrame>>; 2] = [None, None];
        let mut queued = [0u64; 2];
        for m in &inner.members {
            let slot = &mut frames[m.dialect as usize];
            let Some(out) = slot.get_or_insert_with(|| m.dialect.members_frame(event)) else {
                continue;
            };
            if out.exclude.as_ref() == Some(&m.user_id) {
                continue;
            }
            match m.outbox.offer(Frame::Text(out.frame.clone()), write) {
                Offer::Queued => queued[m.dialect as usize] += 1,
                Offer::Dropped => {
                    metrics.dropped.inc();
                }
                Offer::Closed => {}
            }
        }
        count_delivered(&frames, queued, |out| out.name, metrics)
    }
}

/// Adds the frames queued per dialect to the delivered counter under each dialect's event
/// name (the same event has a different name in each dialect); returns their sum.
fn count_delivered<F>(
    frames: &[Option<Option<F>>; 2],
    queued: [u64; 2],
    name: impl Fn(&F) -> &'static str,
    metrics: &EdgeMetrics,
) -> u64 {
    for (frame, n) in frames.iter().zip(queued) {
        if let Some(Some(frame)) = frame {
            metrics.delivered(name(frame), n);
        }
    }
    queued.iter().sum()
}

/// Delivers another edge's relay to the local members of `room` in an `edge.deliver` span
/// joined to the trace of the sender's event (carried in `headers`), so that a trace
/// follows an event to every edge that delivers it. The span is a
/// [`p2piano_telemetry::TRACE_TARGET`] span: without export it is never created.
pub fn deliver_relay_traced(
    room: &LocalRoom,
    relay: &Relay,
    headers: &Headers,
    metrics: &EdgeMetrics,
) -> u64 {
    let span = deliver_span(room, "relay");
    p2piano_telemetry::set_parent_from(&span, headers);
    let _entered = span.enter();
    span.record("event", relay.event.as_str());
    let n = room.deliver_relay(relay, Write::Queued, metrics);
    span.record("delivered", n);
    n
}

/// The `edge.deliver` span of one delivery of a relay or a membership event (`kind`).
fn deliver_span(room: &LocalRoom, kind: &'static str) -> tracing::Span {
    tracing::info_span!(
        target: p2piano_telemetry::TRACE_TARGET,
        parent: None,
        "edge.deliver",
        otel.kind = "consumer",
        code = %room.code,
        kind,
        event = tracing::field::Empty,
        delivered = tracing::field::Empty,
    )
}

/// Who writes the frames of an edge's own relays to its sockets, by the bus it runs on.
///
/// On the in-process bus (`p2piano all`) the sender writes them: the publish is a channel
/// send, and handing each frame to a writer task costs a wake-up and a task switch per
/// receiving socket for nothing (measured: CPU per delivery 1.21x the reference's with the
/// writers, 1.08x without). On NATS the writers take them: with the senders writing, the
/// edge's NATS connection task gathered fewer publishes into each system call and the split
/// deployment spent more CPU per delivery, not less.
pub fn local_write(kind: BusKind) -> Write {
    match kind {
        BusKind::InProcess => Write::Now,
        BusKind::Nats => Write::Queued,
    }
}

#[cfg(test)]
mod tests {
    use p2piano_protocol::relay::RelayKind;
    use serde_json::json;

    use super::*;
    use crate::socket::outbox::outbox;

    const SENDER: &str = "00000000-0000-4000-8000-00000000000a";
    const JOINER: &str = "00000000-0000-4000-8000-00000000000b";

    fn room() -> LocalRoom {
        LocalRoom::new(
            RoomCode::parse("abcde").unwrap(),
            "test.room.abcde.relay".into(),
            true,
        )
    }

    fn joiner(outbox: &Outbox) -> LocalMember {
        LocalMember {
            conn_id: "conn-b".into(),
            user_id: UserId::parse(JOINER).unwrap(),
            dialect: Dialect::Client,
            outbox: outbox.clone(),
        }
    }

    fn note(n: u32) -> Relay {
        Relay {
            from: UserId::parse(SENDER).unwrap(),
            to: Some(vec![UserId::parse(JOINER).unwrap()]),
            kind: RelayKind::Event,
            event: "KEY_DOWN".into(),
            data: json!({ "note": n }),
        }
    }

    fn welcome() -> Frame {
        Frame::Text(Utf8Bytes::from_static("welcome"))
    }

    fn metrics() -> EdgeMetrics {
        EdgeMetrics::new(&p2piano_telemetry::Metrics::new("test"))
    }

    #[test]
    fn the_welcome_goes_ahead_of_the_rooms_traffic_and_nothing_after_it_is_missed() {
        let (room, metrics) = (room(), metrics());
        let b = outbox(16);
        room.deliver_relay(&note(1), Write::Queued, &metrics);
        room.add_after(joiner(&b), welcome());
        room.deliver_relay(&note(2), Write::Queued, &metrics);
        let texts = b.queued_texts();
        assert_eq!(texts.len(), 2, "{texts:?}");
        assert_eq!(texts[0], "welcome");
        assert!(texts[1].contains(r#""note":2"#), "{texts:?}");
    }

    /// A sender that sees the welcome reach the socket and relays at once (a player
    /// answering a `ROOM_JOIN`) must find the socket a member. Relays are delivered under
    /// the room's lock, so the welcome must be sent under it too: while another holds the
    /// lock, the welcome does not appear.
    #[test]
    fn the_welcome_is_sent_under_the_rooms_lock() {
        let room = Arc::new(room());
        let b = outbox(16);
        let held = room.lock();
        let joining = {
            let (room, b) = (room.clone(), b.clone());
            std::thread::spawn(move || room.add_after(joiner(&b), welcome()))
        };
        // Proving that something does not happen takes a wait: 200 ms in which a welcome
        // sent outside the lock would show in microseconds.
        let until = std::time::Instant::now() + std::time::Duration::from_millis(200);
        while std::time::Instant::now() < until {
            assert!(
                b.queued_texts().is_empty(),
                "welcome sent before the lock was had"
            );
            std::thread::yield_now();
        }
        drop(held);
        joining.join().unwrap();
        assert_eq!(b.queued_texts(), ["welcome"]);
        assert_eq!(room.lock().members.len(), 1);
    }

    #[test]
    fn own_relays_are_written_by_the_sender_only_on_the_in_process_bus() {
        assert_eq!(local_write(BusKind::InProcess), Write::Now);
        assert_eq!(local_write(BusKind::Nats), Write::Queued);
    }
}
