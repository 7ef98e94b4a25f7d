//! The rooms this edge holds: attaching a socket subscribes to the room's events (and, on
//! NATS, tells the other edges through the relay links), detaching the last one lets go;
//! a local relay goes to the local members and to the other edges that hold the room.

use std::sync::{Arc, OnceLock};

use futures::StreamExt;
use p2piano_bus::{Bus, BusError, Headers, Message, Subscription};
use p2piano_protocol::relay::Relay;
use p2piano_protocol::{MembersEvent, RoomCode, Subjects};

use super::{LocalRoom, RoomIndex, deliver_relay_traced, deliver_span, index_get, local_write};
use crate::mesh::{Mesh, wire};
use crate::metrics::EdgeMetrics;
use crate::socket::outbox::Write;

/// The rooms this edge holds members of, subscribed through a no-echo handle on the bus:
/// the relays this edge sends reach its own sockets through [`Registry::relay`], never
/// back from the bus or a link.
pub struct Registry {
    bus: Bus,
    subjects: Subjects,
    metrics: EdgeMetrics,
    /// Held by an attach or a detach for the whole of its change (a subscribe is awaited
    /// under it), so that two sockets never both subscribe to a room.
    changes: tokio::sync::Mutex<()>,
    /// The rooms held; the relay links look rooms up here without waiting.
    index: Arc<RoomIndex>,
    /// The relay links, when the edge has them (on NATS): relays go to the other edges
    /// over them, not through the bus.
    mesh: OnceLock<Arc<Mesh>>,
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
            changes: tokio::sync::Mutex::new(()),
            index: Arc::default(),
            mesh: OnceLock::new(),
            local_write,
        }
    }

    /// The rooms held, as the relay links see them.
    pub fn index(&self) -> Arc<RoomIndex> {
        self.index.clone()
    }

    /// Sends relays to the other edges over `mesh` from now on. Set once, before the edge
    /// serves; a second call is ignored.
    pub fn set_mesh(&self, mesh: Arc<Mesh>) {
        let _ = self.mesh.set(mesh);
    }

    /// Sends a relay to the other edges holding members of the room (over the relay
    /// links, or on the room's subject without them), and delivers it to this edge's own
    /// members of the room at once. Returns how many local frames were queued. On the
    /// in-process bus the relay goes as a value, never serialized.
    pub async fn relay(
        &self,
        room: &LocalRoom,
        relay: Relay,
        headers: Headers,
    ) -> Result<u64, BusError> {
        if self.mesh.get().is_some() {
            let dropped = room.send_to_peers(|| match wire::relay(room.code(), &headers, &relay) {
                Ok(f) => Some(f),
                Err(e) => {
                    tracing::warn!(error = %e, "relay not serialized");
                    None
                }
            });
            self.metrics.mesh_dropped.inc_by(dropped);
            return Ok(room.deliver_relay(&relay, self.local_write, &self.metrics));
        }
        let relay = Arc::new(relay);
        self.bus
            .publish_value(room.relay_subject(), headers, Arc::clone(&relay))
            .await?;
        Ok(room.deliver_relay(&relay, self.local_write, &self.metrics))
    }

    /// Whether the rooms' bus connection is up (part of readiness: without it no
    /// membership event reaches this edge).
    pub fn is_connected(&self) -> bool {
        self.bus.is_connected()
    }

    /// Attaches a socket to `code`: subscribes to the room's subjects first if this edge
    /// had nobody there (so that nothing published after the join is missed) and, with
    /// relay links, tells the other edges and waits for their answers (so that nothing
    /// their members relay after the join is missed). Every attach must be paired with a
    /// [`Registry::detach`].
    pub async fn attach(&self, code: &RoomCode) -> Result<Arc<LocalRoom>, BusError> {
        let changes = self.changes.lock().await;
        if let Some(room) = index_get(&self.index, code) {
            room.lock().attached += 1;
            drop(changes);
            room.until_ready().await;
            return Ok(room);
        }
        let mesh = self.mesh.get();
        let subject = match mesh {
            Some(_) => self.subjects.room_members(code),
            None => self.subjects.room_all(code),
        };
        let sub = self.bus.subscribe(&subject).await?;
        let room = Arc::new(LocalRoom::new(
            code.clone(),
            self.subjects.room_relay(code),
            mesh.is_none(),
        ));
        room.lock().attached = 1;
        tokio::spawn(run_room(
            room.clone(),
            sub,
            self.subjects.room_members(code),
            self.metrics.clone(),
        ));
        self.metrics.rooms.inc();
        self.index
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(code.clone(), room.clone());
        drop(changes);
        if let Some(mesh) = mesh {
            mesh.announce(code).await;
            room.set_ready();
        }
        Ok(room)
    }

    /// Detaches socket `conn_id` from `code`; the last one out unsubscribes and, with relay
    /// links, tells the other edges.
    pub async fn detach(&self, code: &RoomCode, conn_id: &str) {
        let _changes = self.changes.lock().await;
        let Some(room) = index_get(&self.index, code) else {
            return;
        };
        let empty = {
            let mut inner = room.lock();
            inner.members.retain(|m| &*m.conn_id != conn_id);
            inner.attached = inner.attached.saturating_sub(1);
            inner.attached == 0
        };
        if empty {
            room.stop.cancel();
            self.index
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .remove(code);
            if let Some(mesh) = self.mesh.get() {
                mesh.withdraw(code);
            }
            self.metrics.rooms.dec();
        }
    }

    /// The room `code`, if this edge holds it.
    #[cfg(test)]
    pub fn room(&self, code: &RoomCode) -> Option<Arc<LocalRoom>> {
        index_get(&self.index, code)
    }
}

/// Reads one room's subscription until the room is let go ([`LocalRoom`]'s `stop`).
async fn run_room(
    room: Arc<LocalRoom>,
    mut sub: Subscription,
    members_subject: String,
    metrics: EdgeMetrics,
) {
    let stop = room.stop.clone();
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
/// a relay) in its `edge.deliver` span, joined to the trace of the event that caused it
/// (rooms' `rooms.rpc` for a membership change, the sender's `edge.event` for a relay).
fn deliver(room: &LocalRoom, msg: &Message, members: bool, metrics: &EdgeMetrics) {
    if !members {
        // Handed over as a value on the in-process bus; parsed once here off NATS.
        match msg.value::<Relay>() {
            Ok(r) => {
                deliver_relay_traced(room, &r, &msg.headers, metrics);
            }
            Err(e) => tracing::warn!(error = %e, code = %room.code, "unreadable relay"),
        }
        return;
    }
    let span = deliver_span(room, "members");
    p2piano_telemetry::set_parent_from(&span, &msg.headers);
    let _entered = span.enter();
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
}
