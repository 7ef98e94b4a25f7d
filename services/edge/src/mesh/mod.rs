//! Relay links between the edges of a split deployment: a relay goes from the sender's
//! edge straight to each edge that holds members of the room, over TCP, never through
//! nats-server. Membership events, requests and heartbeats stay on the bus.
//!
//! Which edges hold a room is interest that the edges tell each other over the links: an
//! edge that takes its first member of a room tells every other edge, and waits (bounded)
//! for their answers before that member is welcomed, so that nothing the other members
//! send after the welcome misses it; the answers say which of them hold the room too. A
//! link's first frame is a sync of every room its edge holds, so a link that comes back
//! after a failure, or an edge that restarted, leaves no stale interest behind.
//!
//! The edges find each other through the bus: every heartbeat names where its edge's links
//! are, a starting edge calls the roll before it serves ([`discovery`]), and a hello on an
//! incoming link introduces its dialer. A link is authenticated by an HMAC of the
//! deployment's secret over the listener's challenge ([`wire`]).

mod discovery;
mod inbound;
pub mod link;
#[cfg(test)]
mod tests;
pub mod wire;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use p2piano_protocol::RoomCode;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use discovery::{roll_call, run_discovery};
pub use link::{LinkState, Peer};

use crate::fanout::RoomIndex;
use crate::metrics::EdgeMetrics;

/// How the links behave.
#[derive(Clone, Debug)]
pub struct MeshSettings {
    /// Frames queued for one other edge; past it they are dropped and counted.
    pub queue: usize,
    /// How long a new room's first member waits for the other edges' answers.
    pub ack_timeout: Duration,
    /// How long a dial and a handshake may take.
    pub handshake_timeout: Duration,
    /// How long an edge may be neither reachable nor heard of before it is forgotten.
    pub forget_after: Duration,
    /// Incoming connections that may be in their handshake at once.
    pub max_handshakes: usize,
}

impl Default for MeshSettings {
    fn default() -> Self {
        Self {
            queue: 8192,
            ack_timeout: Duration::from_secs(1),
            handshake_timeout: Duration::from_secs(2),
            forget_after: Duration::from_secs(3),
            max_handshakes: 64,
        }
    }
}

/// Who this edge is on the relay links and where it listens.
#[derive(Clone)]
pub struct MeshIdentity {
    /// This edge's id.
    pub edge_id: String,
    /// Where the relay listener binds.
    pub listen: SocketAddr,
    /// Where the other edges reach it, when not the bound address.
    pub advertise: Option<String>,
    /// The deployment's secret, which a link's hello proves the dialer holds.
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for MeshIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshIdentity")
            .field("edge_id", &self.edge_id)
            .field("listen", &self.listen)
            .field("advertise", &self.advertise)
            .finish_non_exhaustive()
    }
}

/// This edge's side of the relay links.
pub struct Mesh {
    me: Arc<str>,
    addr: String,
    key: Arc<[u8]>,
    index: Arc<RoomIndex>,
    peers: Mutex<HashMap<Arc<str>, Arc<Peer>>>,
    settings: MeshSettings,
    metrics: EdgeMetrics,
    stop: CancellationToken,
    /// Notified whenever a link comes up.
    changed: tokio::sync::Notify,
}

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh")
            .field("me", &self.me)
            .field("addr", &self.addr)
            .finish()
    }
}

/// Why the links could not start.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    /// The listener could not be bound.
    #[error("relay listener: {0}")]
    Io(#[from] std::io::Error),
    /// The listener is on a wildcard address and no address to advertise was given.
    #[error("relay listener on {0}: set P2PIANO_MESH_ADVERTISE to the address other edges reach")]
    NoAdvertise(SocketAddr),
}

impl Mesh {
    /// Binds the relay listener and starts accepting links, until `stop`. The other edges
    /// are told the advertised address, or the bound one.
    pub async fn start(
        identity: MeshIdentity,
        index: Arc<RoomIndex>,
        settings: MeshSettings,
        metrics: EdgeMetrics,
        stop: CancellationToken,
    ) -> Result<Arc<Self>, MeshError> {
        let MeshIdentity {
            edge_id,
            listen,
            advertise,
            secret,
        } = identity;
        let listener = TcpListener::bind(listen).await?;
        let bound = listener.local_addr()?;
        let addr = match advertise.filter(|a| !a.is_empty()) {
            Some(a) => a,
            None if bound.ip().is_unspecified() => return Err(MeshError::NoAdvertise(bound)),
            None => bound.to_string(),
        };
        let mesh = Arc::new(Self {
            me: edge_id.into(),
            addr,
            key: secret.into(),
            index,
            peers: Mutex::default(),
            settings,
            metrics,
            stop,
            changed: tokio::sync::Notify::new(),
        });
        tokio::spawn(inbound::accept(
            Arc::downgrade(&mesh),
            listener,
            mesh.settings.max_handshakes,
            mesh.stop.clone(),
        ));
        tracing::info!(addr = %mesh.addr, listen = %bound, "relay links listening");
        Ok(mesh)
    }

    /// Where the other edges reach this edge's links.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// This edge's id.
    pub fn edge_id(&self) -> &str {
        &self.me
    }

    /// The other edges known, with their links' states (tests and metrics look).
    pub fn peers(&self) -> Vec<(String, LinkState)> {
        self.table()
            .values()
            .map(|p| (p.id().to_owned(), p.state()))
            .collect()
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Arc<Peer>>> {
        self.peers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes that edge `id` is at `addr`: a new edge gets a link, dialed at once.
    pub fn heard(self: &Arc<Self>, id: &str, addr: &str) -> Option<Arc<Peer>> {
        if id == &*self.me || self.stop.is_cancelled() {
            return None;
        }
        let mut table = self.table();
        if let Some(p) = table.get(id) {
            p.heard(addr);
            return Some(p.clone());
        }
        let peer = Arc::new(Peer::new(id, addr, self.settings.queue));
        table.insert(id.into(), peer.clone());
        drop(table);
        tracing::info!(peer = id, %addr, "edge heard of: dialing its relay link");
        tokio::spawn(link::run(Arc::downgrade(self), peer.clone()));
        Some(peer)
    }

    /// Forgets edge `id` (it stopped, or has been unreachable and silent too long): its
    /// link ends and no room relays to it any more.
    pub fn forget(&self, id: &str) {
        let Some(peer) = self.table().remove(id) else {
            return;
        };
        peer.forget();
        for room in self.rooms() {
            room.remove_peer(id);
        }
    }

    fn rooms(&self) -> Vec<Arc<crate::fanout::LocalRoom>> {
        crate::fanout::index_rooms(&self.index)
    }

    /// The rooms this edge holds.
    fn held(&self) -> Vec<RoomCode> {
        self.rooms().iter().map(|r| r.code().clone()).collect()
    }

    /// Records that `peer` holds those of `codes` that this edge holds too.
    fn peer_holds(&self, peer: &Arc<Peer>, codes: &[RoomCode]) {
        for code in codes {
            if let Some(room) = crate::fanout::index_get(&self.index, code) {
                room.add_peer(peer);
            }
        }
    }

    /// Tells every other edge that this edge now holds `code`, and waits (at most the
    /// answer timeout) for the answers of those whose links are up or being opened for the
    /// first time; those that hold the room too are recorded as its relays' targets. An
    /// edge whose link is down learns of the room from the sync that starts its next link.
    #[tracing::instrument(skip(self), fields(code = %code))]
    pub async fn announce(&self, code: &RoomCode) {
        let waits: Vec<_> = self
            .table()
            .values()
            .filter(|p| matches!(p.state(), LinkState::Up | LinkState::New))
            .map(|p| (p.id().to_owned(), p.interest(code)))
            .collect();
        let deadline = tokio::time::Instant::now() + self.settings.ack_timeout;
        for (peer, rx) in waits {
            if tokio::time::timeout_at(deadline, rx).await.is_err() {
                tracing::warn!(peer, "no answer to this edge's interest in time");
            }
        }
    }

    /// Tells every other edge that this edge no longer holds `code`.
    pub fn withdraw(&self, code: &RoomCode) {
        for p in self.table().values() {
            p.drop_room(code);
        }
    }

    /// How many of the known edges have their link up.
    pub fn links_up(&self) -> usize {
        self.table()
            .values()
            .filter(|p| p.state() == LinkState::Up)
            .count()
    }
}
