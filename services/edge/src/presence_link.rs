//! The edge's side of the presence contract: heartbeats on
//! `<prefix>.edge.<id>.heartbeat` (sent from a lane of their own, see
//! [`p2piano_bus::spawn_lane`]) and the control messages presence sends on
//! `<prefix>.edge.<id>.control`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use p2piano_bus::{Bus, BusError};
use p2piano_protocol::presence::{
    DIGEST_BUCKETS, EdgeControl, EdgeDigest, Heartbeat, digest_bucket, digest_of,
};
use p2piano_protocol::{Subjects, Timestamp};
use tokio_util::sync::CancellationToken;

/// What an edge's heartbeat reports, kept up to date by the edge and read by its heartbeat
/// lane: how many sockets it has, the digest of the sockets presence knows of (those whose
/// connect presence answered and whose disconnect has not been sent), and the generation of
/// its record it last re-asserted its sockets for.
#[derive(Debug)]
pub struct EdgeVitals {
    /// Open sockets.
    pub connections: AtomicU64,
    /// See [`Heartbeat::generation`].
    pub generation: AtomicU64,
    digest: Mutex<Digest>,
}

#[derive(Debug)]
struct Digest {
    buckets: [u64; DIGEST_BUCKETS],
    changed: [Instant; DIGEST_BUCKETS],
}

impl Default for EdgeVitals {
    fn default() -> Self {
        Self {
            connections: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            digest: Mutex::new(Digest {
                buckets: [0; DIGEST_BUCKETS],
                changed: [Instant::now(); DIGEST_BUCKETS],
            }),
        }
    }
}

impl EdgeVitals {
    /// Socket `conn_id` is now known to presence (its connect was answered).
    pub fn hold(&self, conn_id: &str) {
        self.flip(conn_id);
    }

    /// Socket `conn_id` is no longer known to presence (its disconnect is on its way).
    pub fn release(&self, conn_id: &str) {
        self.flip(conn_id);
    }

    fn flip(&self, conn_id: &str) {
        let h = digest_of(conn_id);
        let b = digest_bucket(h);
        let mut d = self.digest.lock().unwrap_or_else(|e| e.into_inner());
        d.buckets[b] ^= h;
        d.changed[b] = Instant::now();
    }

    /// The digest as of now.
    pub fn digest(&self) -> EdgeDigest {
        let d = self.digest.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        EdgeDigest {
            buckets: d.buckets,
            stable_ms: d
                .changed
                .map(|t| u32::try_from(now.duration_since(t).as_millis()).unwrap_or(u32::MAX)),
        }
    }

    /// Raises the generation to `generation` (never lowers it).
    pub fn resynced(&self, generation: u64) {
        self.generation.fetch_max(generation, Ordering::Relaxed);
    }
}

/// The heartbeats of an edge, running on their lane. Dropping this stops them (without the
/// stopping heartbeat), so that a lane never outlives the edge that started it.
#[derive(Debug)]
pub struct Heartbeats {
    killed: CancellationToken,
    _dropped: tokio_util::sync::DropGuard,
    done: tokio::sync::oneshot::Receiver<()>,
}

impl Heartbeats {
    /// Stops the heartbeats without the last one that says the edge is stopping: what
    /// presence sees of an edge that crashed.
    pub fn kill(&self) {
        self.killed.cancel();
    }

    /// Waits until the lane is done (after its shutdown token, with the stopping heartbeat
    /// sent, or after [`Heartbeats::kill`]).
    pub async fn finished(self) {
        let Heartbeats { done, _dropped, .. } = self;
        let _ = done.await;
        drop(_dropped);
    }
}

/// One edge's link to presence.
#[derive(Clone, Debug)]
pub struct EdgeLink {
    bus: Bus,
    subjects: Subjects,
    edge_id: String,
    /// Where this edge's relay links are, said in every heartbeat so that the other edges
    /// find them.
    mesh: Option<String>,
}

impl EdgeLink {
    /// The link of edge `edge_id` (a subject token).
    pub fn new(bus: Bus, subjects: Subjects, edge_id: impl Into<String>) -> Self {
        Self {
            bus,
            subjects,
            edge_id: edge_id.into(),
            mesh: None,
        }
    }

    /// The same link, whose heartbeats say that this edge's relay links are at `addr`.
    pub fn with_mesh(mut self, addr: Option<String>) -> Self {
        self.mesh = addr;
        self
    }

    /// This edge's id.
    pub fn edge_id(&self) -> &str {
        &self.edge_id
    }

    /// Sends one heartbeat now, on `bus`, saying what `vitals` say.
    pub async fn beat_on(
        &self,
        bus: &Bus,
        vitals: &EdgeVitals,
        stopping: bool,
    ) -> Result<(), BusError> {
        let hb = Heartbeat {
            edge_id: self.edge_id.clone(),
            connections: vitals.connections.load(Ordering::Relaxed),
            at: Timestamp::now(),
            stopping,
            generation: vitals.generation.load(Ordering::Relaxed),
            digest: Some(vitals.digest()),
            mesh: self.mesh.clone(),
        };
        let body = match serde_json::to_vec(&hb) {
            Ok(b) => Bytes::from(b),
            Err(e) => return Err(BusError::other(e)),
        };
        bus.publish(&self.subjects.edge_heartbeat(&self.edge_id), body)
            .await
    }

    /// Sends a heartbeat at once and then every `every`, saying what `vitals` say, until
    /// `shutdown`; then one last heartbeat saying the edge is stopping, so presence treats
    /// its sockets as in their grace period without waiting for the timeout.
    ///
    /// Runs on a lane of its own (a thread, a runtime and, on NATS, a connection), so that
    /// no amount of client traffic on the edge's runtime delays a heartbeat.
    pub fn spawn_heartbeats(
        &self,
        every: Duration,
        vitals: Arc<EdgeVitals>,
        shutdown: CancellationToken,
    ) -> Heartbeats {
        let killed = CancellationToken::new();
        let kill = killed.clone();
        let dropped = CancellationToken::new();
        let gone = dropped.clone();
        let (finished, done) = tokio::sync::oneshot::channel();
        let link = self.clone();
        let name = format!("p2piano-edge-{}-liveness", self.edge_id);
        let lane = p2piano_bus::spawn_lane("edge-heartbeats", move || async move {
            let bus = loop {
                match link.bus.dedicated(&name).await {
                    Ok(b) => break b,
                    Err(e) => {
                        tracing::warn!(error = %e, "heartbeats: bus not reached yet");
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = gone.cancelled() => return,
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                    }
                }
            };
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    _ = kill.cancelled() => return,
                    _ = gone.cancelled() => return,
                    _ = shutdown.cancelled() => break,
                    _ = tick.tick() => {
                        if let Err(e) = link.beat_on(&bus, &vitals, false).await {
                            tracing::warn!(error = %e, "heartbeat not sent");
                        }
                    }
                }
            }
            if let Err(e) = link.beat_on(&bus, &vitals, true).await {
                tracing::warn!(error = %e, "stopping heartbeat not sent");
            }
            let _ = bus.flush().await;
            let _ = finished.send(());
        });
        if let Err(e) = lane {
            tracing::error!(error = %e, "could not start the heartbeat lane");
        }
        Heartbeats {
            killed,
            _dropped: dropped.drop_guard(),
            done,
        }
    }

    /// The control messages for this edge; malformed ones are logged and skipped.
    pub async fn control(
        &self,
    ) -> Result<impl Stream<Item = EdgeControl> + Send + Unpin + use<>, BusError> {
        let sub = self
            .bus
            .subscribe(&self.subjects.edge_control(&self.edge_id))
            .await?;
        Ok(sub.filter_map(|msg| {
            let parsed = serde_json::from_slice::<EdgeControl>(&msg.payload);
            if let Err(e) = &parsed {
                tracing::warn!(error = %e, "malformed edge control ignored");
            }
            futures::future::ready(parsed.ok())
        }))
    }
}
