//! Per-room fan-out: while this edge holds at least one local member of a room it is
//! subscribed to `<prefix>.room.<code>.>` (through a no-echo handle on the bus), keeps the
//! room's member set from the membership events (so the same-room rule needs no request per
//! event), and delivers relays and membership changes to its local sockets, encoding each
//! frame once per dialect. The relays of its own sockets it delivers itself, in the sender's
//! task ([`Registry::relay`]); the bus brings only the other edges'.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::ws::Utf8Bytes;
use futures::StreamExt;
use p2piano_bus::{Bus, BusError, BusKind, Headers, Message, Subscription};
use p2piano_protocol::relay::Relay;
use p2piano_protocol::{MembersEvent, Room, RoomCode, Subjects, UserId};
use tokio_util::sync::CancellationToken;

use crate::dialect::{Dialect, MembersFrame};
use crate::metrics::EdgeMetrics;
use crate::socket::outbox::{Frame, Offer, Outbox, Write};

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
}

#[derive(Debug, Default)]
struct Inner {
    /// Latest room record (highest revision seen).
    snapshot: Option<Room>,
    /// Local sockets receiving this room's traffic.
    members: Vec<LocalMember>,
    /// Sockets attached (joining or joined); the subscription lives while this is > 0.
    attached: usize,
}

impl LocalRoom {
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

struct Slot {
    room: Arc<LocalRoom>,
    stop: CancellationToken,
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

/// The rooms this edge holds members of, subscribed through a no-echo handle on the bus:
/// the relays this edge publishes reach its own sockets through [`Registry::relay`], never
/// back from the bus.
pub struct Registry {
    bus: Bus,
    subjects: Subjects,
    metrics: EdgeMetrics,
    rooms: tokio::sync::Mutex<HashMap<RoomCode, Slot>>,
    /// Who writes the frames of this edge's own relays, chosen once from the bus.
    local_write: Write,
}

impl Registry {
    /// An empty registry.
    pub fn new(bus: Bus, subjects: Subjects, metrics: EdgeMetrics) -> Self {
        let local_write = local_write(bus.kind());
        Self {
            bus,
            subjects,
            metrics,
            rooms: tokio::sync::Mutex::new(HashMap::new()),
            local_write,
        }
    }

    /// Publishes a relay to the room's subject, for the other edges holding members, and
    /// delivers it to this edge's own members of the room at once (the bus does not echo it
    /// back). Returns how many local frames were queued. The relay goes as a value:
    /// serialized only when it leaves the process.
    pub async fn relay(
        &self,
        room: &LocalRoom,
        relay: Relay,
        headers: Headers,
    ) -> Result<u64, BusError> {
        let relay = Arc::new(relay);
        self.bus
            .publish_value(room.relay_subject(), headers, Arc::clone(&relay))
            .await?;
        Ok(room.deliver_relay(&relay, self.local_write, &self.metrics))
    }

    /// Whether the rooms' bus connection is up (part of readiness: without it no relay
    /// reaches another edge).
    pub fn is_connected(&self) -> bool {
        self.bus.is_connected()
    }

    /// Attaches a socket to `code`: subscribes to the room's subjects first if this edge
    /// had nobody there (so that nothing published after the join is missed). Every
    /// attach must be paired with a [`Registry::detach`].
    pub async fn attach(&self, code: &RoomCode) -> Result<Arc<LocalRoom>, BusError> {
        let mut rooms = self.rooms.lock().await;
        if let Some(slot) = rooms.get(code) {
            slot.room.lock().attached += 1;
            return Ok(slot.room.clone());
        }
        let sub = self.bus.subscribe(&self.subjects.room_all(code)).await?;
        let room = Arc::new(LocalRoom {
            code: code.clone(),
            relay_subject: self.subjects.room_relay(code),
            inner: Mutex::new(Inner {
                attached: 1,
                ..Default::default()
            }),
        });
        let stop = CancellationToken::new();
        tokio::spawn(run_room(
            room.clone(),
            sub,
            self.subjects.room_members(code),
            self.metrics.clone(),
            stop.clone(),
        ));
        self.metrics.rooms.inc();
        rooms.insert(
            code.clone(),
            Slot {
                room: room.clone(),
                stop,
            },
        );
        Ok(room)
    }

    /// Detaches socket `conn_id` from `code`; the last one out unsubscribes.
    pub async fn detach(&self, code: &RoomCode, conn_id: &str) {
        let mut rooms = self.rooms.lock().await;
        let Some(slot) = rooms.get(code) else {
            return;
        };
        let empty = {
            let mut inner = slot.room.lock();
            inner.members.retain(|m| &*m.conn_id != conn_id);
            inner.attached = inner.attached.saturating_sub(1);
            inner.attached == 0
        };
        if empty {
            if let Some(slot) = rooms.remove(code) {
                slot.stop.cancel();
            }
            self.metrics.rooms.dec();
        }
    }

    /// How many rooms have a subscription here.
    pub async fn len(&self) -> usize {
        self.rooms.lock().await.len()
    }

    /// Whether no room is subscribed.
    pub async fn is_empty(&self) -> bool {
        self.len().await == 0
    }
}

/// Reads one room's subscription until stopped.
///
/// Each message is delivered in an `edge.deliver` span joined to the trace of the event that
/// caused it (the sender's `edge.event` for a relay, rooms' `rooms.rpc` for a membership
/// change), so that a trace follows an event to every edge that delivers it. The span is a
/// [`p2piano_telemetry::TRACE_TARGET`] span: without export it is never created.
async fn run_room(
    room: Arc<LocalRoom>,
    mut sub: Subscription,
    members_subject: String,
    metrics: EdgeMetrics,
    stop: CancellationToken,
) {
    loop {
        let msg = tokio::select! {
            _ = stop.cancelled() => break,
            msg = sub.next() => match msg {
                Some(m) => m,
                None => break,
            },
        };
        deliver(&room, &msg, msg.subject == members_subject, &metrics);
    }
    let _ = sub.unsubscribe().await;
}

/// Delivers one message of a room's subscription (a membership event when `members`, else
/// a relay) in its `edge.deliver` span.
fn deliver(room: &LocalRoom, msg: &Message, members: bool, metrics: &EdgeMetrics) {
    let span = tracing::info_span!(
        target: p2piano_telemetry::TRACE_TARGET,
        parent: None,
        "edge.deliver",
        otel.kind = "consumer",
        code = %room.code,
        kind = if members { "members" } else { "relay" },
        event = tracing::field::Empty,
        delivered = tracing::field::Empty,
    );
    p2piano_telemetry::set_parent_from(&span, &msg.headers);
    let _entered = span.enter();
    if members {
        match msg.value::<MembersEvent>() {
            Ok(e) => {
                span.record("event", tracing::field::debug(e.kind));
                span.record(
                    "delivered",
                    room.deliver_members(&e, Write::Queued, metrics),
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, code = %room.code, "unreadable membership event")
            }
        }
    } else {
        // Handed over as a value on the in-process bus; parsed once here off NATS.
        match msg.value::<Relay>() {
            Ok(r) => {
                span.record("event", r.event.as_str());
                span.record("delivered", room.deliver_relay(&r, Write::Queued, metrics));
            }
            Err(e) => tracing::warn!(error = %e, code = %room.code, "unreadable relay"),
        }
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
        LocalRoom {
            code: RoomCode::parse("abcde").unwrap(),
            relay_subject: "test.room.abcde.relay".into(),
            inner: Mutex::default(),
        }
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
