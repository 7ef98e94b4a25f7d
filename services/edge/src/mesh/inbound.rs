//! The other edges' links into this edge: the challenge and the hello, then their relays
//! (delivered to the local members of the room), their interest and drops (which decide
//! where this edge's own relays go) and their syncs, answered on the same connection.

use std::collections::HashSet;
use std::sync::{Arc, Weak};

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::Mesh;
use super::link::Peer;
use super::wire::{self, Kind, Reader, WireError};
use crate::fanout::{deliver_relay_traced, index_get, index_rooms};

/// Answers queued on one incoming link; a dialer that does not read them is cut off.
const ANSWERS: usize = 1024;

/// Accepts links until `stop`. At most `max_handshakes` connections may be in their
/// handshake at once; past that a new connection is closed at once (and counted as
/// refused), so that connections that never say hello cannot pile up.
pub(super) async fn accept(
    mesh: Weak<Mesh>,
    listener: TcpListener,
    max_handshakes: usize,
    stop: CancellationToken,
) {
    let handshakes = Arc::new(Semaphore::new(max_handshakes));
    loop {
        let sock = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => match a {
                Ok((sock, _)) => sock,
                Err(e) => {
                    tracing::warn!(error = %e, "relay listener: accept failed");
                    continue;
                }
            },
        };
        let Some(m) = mesh.upgrade() else {
            return;
        };
        let Ok(permit) = handshakes.clone().try_acquire_owned() else {
            m.metrics.mesh_refused.inc();
            tracing::warn!("relay link refused: too many handshakes at once");
            continue;
        };
        drop(m);
        let (mesh, stop) = (mesh.clone(), stop.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = serve(mesh, sock, permit) => {}
            }
        });
    }
}

/// Serves one incoming link; `handshaking` is held until its handshake is over.
async fn serve(mesh: Weak<Mesh>, sock: TcpStream, handshaking: OwnedSemaphorePermit) {
    let _ = sock.set_nodelay(true);
    let (rd, mut wr) = sock.into_split();
    let mut rd = Reader::new(rd);
    let peer = handshake(&mesh, &mut rd, &mut wr).await;
    drop(handshaking);
    let Some(peer) = peer else {
        return;
    };
    let (answers, mut queued) = mpsc::channel::<Bytes>(ANSWERS);
    let writer = async move {
        while let Some(first) = queued.recv().await {
            let mut out = first.to_vec();
            while let Ok(more) = queued.try_recv() {
                out.extend_from_slice(&more);
            }
            if wr.write_all(&out).await.is_err() {
                return;
            }
        }
    };
    let reader = async {
        loop {
            let f = match rd.next().await {
                Ok(Some(f)) => f,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(peer = peer.id(), error = %e, "relay link closed");
                    return;
                }
            };
            let Some(m) = mesh.upgrade() else { return };
            if let Err(e) = handle(&m, &peer, f.kind, f.body, &answers) {
                tracing::warn!(peer = peer.id(), error = %e, "relay link closed");
                return;
            }
        }
    };
    tokio::select! {
        _ = writer => {}
        _ = reader => {}
    }
}

/// Sends a challenge and checks the hello that answers it, within the handshake timeout.
/// Returns the dialer, known to this edge from now on.
async fn handshake(
    mesh: &Weak<Mesh>,
    rd: &mut Reader<tokio::net::tcp::OwnedReadHalf>,
    wr: &mut tokio::net::tcp::OwnedWriteHalf,
) -> Option<Arc<Peer>> {
    let m = mesh.upgrade()?;
    let nonce: [u8; wire::CHALLENGE_LEN] = rand::random();
    let timeout = m.settings.handshake_timeout;
    let hello = tokio::time::timeout(timeout, async {
        wr.write_all(&wire::challenge(&nonce)).await?;
        let hello = match rd.next().await? {
            Some(f) if f.kind == Kind::Hello => wire::check_hello(&m.key, &nonce, &f.body)?,
            _ => return Err(WireError::Malformed("hello")),
        };
        wr.write_all(&wire::welcome()).await?;
        Ok(hello)
    })
    .await;
    match hello {
        Ok(Ok(hello)) if hello.edge_id != *m.me => m.heard(&hello.edge_id, &hello.addr),
        Ok(Ok(_)) => None,
        Ok(Err(e)) => {
            m.metrics.mesh_refused.inc();
            tracing::warn!(error = %e, "relay link refused");
            None
        }
        Err(_) => {
            m.metrics.mesh_refused.inc();
            tracing::warn!("relay link refused: no hello in time");
            None
        }
    }
}

/// Handles one frame of an incoming link.
fn handle(
    m: &Mesh,
    peer: &Arc<Peer>,
    kind: Kind,
    body: Bytes,
    answers: &mpsc::Sender<Bytes>,
) -> Result<(), WireError> {
    let answer = |frame: Bytes| {
        answers
            .try_send(frame)
            .map_err(|_| WireError::Malformed("unread answers"))
    };
    match kind {
        Kind::Relay => {
            let (code, headers, relay) = wire::read_relay(body)?;
            if let Some(room) = index_get(&m.index, &code) {
                deliver_relay_traced(&room, &relay, &headers, &m.metrics);
            }
        }
        Kind::Interest => {
            let (id, code) = wire::read_interest(body)?;
            let holds = match index_get(&m.index, &code) {
                Some(room) => {
                    room.add_peer(peer);
                    true
                }
                None => false,
            };
            answer(wire::ack(id, holds))?;
        }
        Kind::Drop => {
            let code = wire::read_drop(body)?;
            if let Some(room) = index_get(&m.index, &code) {
                room.remove_peer(peer.id());
            }
        }
        Kind::Sync => {
            let (id, codes) = wire::read_rooms(body)?;
            let codes: HashSet<_> = codes.into_iter().collect();
            let mut held = Vec::new();
            for room in index_rooms(&m.index) {
                if codes.contains(room.code()) {
                    room.add_peer(peer);
                    held.push(room.code().clone());
                } else {
                    room.remove_peer(peer.id());
                }
            }
            answer(wire::rooms(Kind::SyncAck, id, &held))?;
        }
        _ => return Err(WireError::Malformed("unexpected")),
    }
    Ok(())
}
