//! One relay link: this edge's connection to one other edge, over which go this edge's
//! relays for rooms that edge holds, and its interest in rooms. The link is dialed when
//! the other edge is first heard of and redialed with backoff after a failure; what is
//! queued while it is down goes out, in order, once it is up again, after a sync that
//! tells the other edge exactly which rooms this edge holds. The queue is bounded: past
//! it, frames are dropped and counted, and a dropped interest or drop is made good by a
//! sync before the next write.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use p2piano_protocol::RoomCode;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Mesh;
use super::wire::{self, Kind, Reader};

/// Where a link is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum LinkState {
    /// Not connected yet since the other edge was heard of.
    New = 0,
    /// Connected, handshake sent.
    Up = 1,
    /// Was up, failed; being redialed.
    Down = 2,
    /// The other edge is forgotten; the link's task ends.
    Gone = 3,
}

impl LinkState {
    fn of(b: u8) -> Self {
        match b {
            0 => Self::New,
            1 => Self::Up,
            2 => Self::Down,
            _ => Self::Gone,
        }
    }
}

#[derive(Default)]
struct Queue {
    frames: VecDeque<Bytes>,
    /// A control frame was dropped: the next write starts with a sync.
    resync: bool,
}

/// Another edge, as this edge knows it, and the queue of what this edge sends it.
pub struct Peer {
    id: Arc<str>,
    addr: Mutex<String>,
    state: AtomicU8,
    last_heard: Mutex<Instant>,
    queue: Mutex<Queue>,
    capacity: usize,
    wake: Notify,
    waiters: Mutex<HashMap<u32, (RoomCode, oneshot::Sender<bool>)>>,
    next_id: AtomicU32,
    /// Cancelled when the peer is forgotten: ends its link at once, even mid-write to an
    /// edge that stopped reading.
    gone: CancellationToken,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("id", &self.id)
            .field("state", &self.state())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Peer {
    pub(super) fn new(id: &str, addr: &str, capacity: usize) -> Self {
        Self {
            id: id.into(),
            addr: Mutex::new(addr.to_owned()),
            state: AtomicU8::new(LinkState::New as u8),
            last_heard: Mutex::new(Instant::now()),
            queue: Mutex::default(),
            capacity,
            wake: Notify::new(),
            waiters: Mutex::default(),
            next_id: AtomicU32::new(1),
            gone: CancellationToken::new(),
        }
    }

    /// The other edge's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Where its link is.
    pub fn state(&self) -> LinkState {
        LinkState::of(self.state.load(Ordering::SeqCst))
    }

    fn set_state(&self, s: LinkState) {
        self.state.store(s as u8, Ordering::SeqCst);
    }

    /// Notes that the other edge was heard of (a heartbeat, a roll call, a hello) at
    /// `addr`, which it may have changed.
    pub(super) fn heard(&self, addr: &str) {
        *lock(&self.last_heard) = Instant::now();
        let mut a = lock(&self.addr);
        if *a != addr {
            *a = addr.to_owned();
        }
    }

    /// Queues a relay frame. Returns false when the queue was full and it was dropped.
    pub fn send_relay(&self, frame: Bytes) -> bool {
        self.push(frame, false)
    }

    fn push(&self, frame: Bytes, control: bool) -> bool {
        {
            let mut q = lock(&self.queue);
            if q.frames.len() >= self.capacity {
                q.resync |= control;
                return false;
            }
            q.frames.push_back(frame);
        }
        self.wake.notify_one();
        true
    }

    /// Queues an interest in `code`; the receiver resolves when the other edge answers
    /// whether it holds the room too.
    pub(super) fn interest(&self, code: &RoomCode) -> oneshot::Receiver<bool> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.waiters).insert(id, (code.clone(), tx));
        if !self.push(wire::interest(id, code), true) {
            lock(&self.waiters).remove(&id);
        }
        rx
    }

    /// Queues a drop of `code`.
    pub(super) fn drop_room(&self, code: &RoomCode) {
        self.push(wire::drop_room(code), true);
    }

    /// Marks the peer forgotten: its link's task ends.
    pub(super) fn forget(&self) {
        self.set_state(LinkState::Gone);
        self.gone.cancel();
    }

    fn take_batch(&self, out: &mut BytesMut) -> bool {
        let mut q = lock(&self.queue);
        let resync = std::mem::take(&mut q.resync);
        for f in q.frames.drain(..) {
            out.extend_from_slice(&f);
        }
        resync
    }
}

/// Runs the link to `peer` until the peer is forgotten or the mesh stops: dial, handshake,
/// sync, then write what is queued; on failure redial with backoff, and forget the peer
/// once it has been neither reachable nor heard of for the mesh's `forget_after`.
pub(super) async fn run(mesh: Weak<Mesh>, peer: Arc<Peer>) {
    let mut backoff = Duration::from_millis(20);
    loop {
        let Some(m) = mesh.upgrade() else { return };
        if peer.state() == LinkState::Gone || m.stop.is_cancelled() {
            return;
        }
        let addr = lock(&peer.addr).clone();
        let stop = m.stop.clone();
        let settings = m.settings.clone();
        drop(m);
        let dialed = tokio::select! {
            _ = stop.cancelled() => return,
            _ = peer.gone.cancelled() => return,
            d = tokio::time::timeout(settings.handshake_timeout, dial(&mesh, &addr)) => d,
        };
        match dialed {
            Ok(Ok((rd, wr))) => {
                backoff = Duration::from_millis(20);
                connected(&mesh, &peer, rd, wr, &stop).await;
            }
            Ok(Err(e)) => {
                tracing::debug!(peer = %peer.id, %addr, error = %e, "relay link not opened")
            }
            Err(_) => tracing::debug!(peer = %peer.id, %addr, "relay link: no answer"),
        }
        if peer.state() == LinkState::Gone {
            return;
        }
        if peer.state() == LinkState::Up {
            peer.set_state(LinkState::Down);
        }
        let silent = lock(&peer.last_heard).elapsed();
        if silent > settings.forget_after {
            if let Some(m) = mesh.upgrade() {
                tracing::info!(peer = %peer.id, "edge unreachable and silent: forgotten");
                m.forget(&peer.id);
            }
            return;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = peer.gone.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

/// Connects and answers the listener's challenge.
async fn dial(
    mesh: &Weak<Mesh>,
    addr: &str,
) -> std::io::Result<(Reader<OwnedReadHalf>, OwnedWriteHalf)> {
    let sock = TcpStream::connect(addr).await?;
    sock.set_nodelay(true)?;
    let (rd, mut wr) = sock.into_split();
    let mut rd = Reader::new(rd);
    let challenge = match rd.next().await {
        Ok(Some(f)) if f.kind == Kind::Challenge && f.body.len() == wire::CHALLENGE_LEN => f.body,
        _ => return Err(std::io::Error::other("no challenge")),
    };
    let Some(m) = mesh.upgrade() else {
        return Err(std::io::Error::other("stopped"));
    };
    let hello = wire::hello(&m.key, &challenge, &m.me, &m.addr);
    drop(m);
    wr.write_all(&hello).await?;
    // Up only once the listener has accepted the hello: a refused dialer (a wrong secret)
    // keeps backing off instead of sending its queue into a closing connection.
    match rd.next().await {
        Ok(Some(f)) if f.kind == Kind::Welcome => Ok((rd, wr)),
        _ => Err(std::io::Error::other("hello refused")),
    }
}

/// Serves one connection of the link until it fails or the peer is forgotten.
async fn connected(
    mesh: &Weak<Mesh>,
    peer: &Arc<Peer>,
    mut rd: Reader<OwnedReadHalf>,
    mut wr: OwnedWriteHalf,
    stop: &CancellationToken,
) {
    let Some(m) = mesh.upgrade() else { return };
    let metrics = m.metrics.clone();
    peer.set_state(LinkState::Up);
    m.changed.notify_waiters();
    drop(m);
    metrics.mesh_links.inc();
    tracing::info!(peer = %peer.id, "relay link up");
    // Up before the sync is built: an attach that does not see the link up yet has its
    // room in this sync, and one that does sends its own interest.
    let end = tokio::select! {
        r = write_queued(mesh, peer, &mut wr) => Some(wire::WireError::from(r)),
        r = read_answers(mesh, peer, &mut rd) => r.err(),
        _ = stop.cancelled() => None,
        _ = peer.gone.cancelled() => None,
    };
    if peer.state() != LinkState::Gone {
        peer.set_state(LinkState::Down);
    }
    metrics.mesh_links.dec();
    tracing::info!(peer = %peer.id, error = ?end, "relay link down");
}

/// Writes what is queued for `peer`, a sync first (and again after a control frame was
/// dropped), each batch in one write. Returns only when a write fails.
async fn write_queued(mesh: &Weak<Mesh>, peer: &Peer, wr: &mut OwnedWriteHalf) -> std::io::Error {
    let mut out = BytesMut::with_capacity(16 * 1024);
    let mut first = true;
    loop {
        out.clear();
        let resync = peer.take_batch(&mut out);
        if (std::mem::take(&mut first) || resync)
            && let Some(m) = mesh.upgrade()
        {
            let sync = wire::rooms(Kind::Sync, 0, &m.held());
            let mut with = BytesMut::with_capacity(sync.len() + out.len());
            with.extend_from_slice(&sync);
            with.extend_from_slice(&out);
            out = with;
        }
        if out.is_empty() {
            peer.wake.notified().await;
            continue;
        }
        if let Err(e) = wr.write_all(&out).await {
            return e;
        }
    }
}

/// Reads the other edge's answers to this edge's interest and syncs.
async fn read_answers(
    mesh: &Weak<Mesh>,
    peer: &Arc<Peer>,
    rd: &mut Reader<OwnedReadHalf>,
) -> Result<(), wire::WireError> {
    while let Some(f) = rd.next().await? {
        let Some(m) = mesh.upgrade() else {
            return Ok(());
        };
        match f.kind {
            Kind::Ack => {
                let (id, holds) = wire::read_ack(f.body)?;
                let waiter = lock(&peer.waiters).remove(&id);
                if let Some((code, waiter)) = waiter {
                    if holds {
                        m.peer_holds(peer, std::slice::from_ref(&code));
                    }
                    let _ = waiter.send(holds);
                }
            }
            Kind::SyncAck => {
                let (_, codes) = wire::read_rooms(f.body)?;
                m.peer_holds(peer, &codes);
            }
            _ => return Err(wire::WireError::Malformed("answer")),
        }
    }
    Ok(())
}
