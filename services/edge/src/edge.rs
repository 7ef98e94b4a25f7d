//! The edge's shared state: its id, clients of the other services, the room registry, and
//! the table of open sockets (for presence's replace commands and for the drain).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::presence_link::EdgeVitals;
use futures::{Stream, StreamExt};
use p2piano_bus::Bus;
use p2piano_protocol::presence::{
    EdgeControl, HeldSocket, RESYNC_PART, Resync, digest_bucket, digest_of,
};
use tokio_util::task::TaskTracker;

use crate::dialect::Dialect;
use crate::fanout::Registry;
use crate::http::SessionAuth;
use crate::metrics::EdgeMetrics;
use crate::rpc::Rpc;
use crate::socket::outbox::{Close, Frame, Outbox};

/// Engine.IO timing and limits.
#[derive(Clone, Debug)]
pub struct SocketSettings {
    /// Server ping period (`pingInterval`).
    pub ping_interval: Duration,
    /// How long past a ping the client may stay silent (`pingTimeout`).
    pub ping_timeout: Duration,
    /// A socket must connect to a namespace this soon after opening.
    pub connect_timeout: Duration,
    /// Largest WebSocket message (and `maxPayload`).
    pub max_payload: usize,
    /// Most binary attachments per packet.
    pub max_attachments: usize,
    /// Frames a socket's outbound queue holds before relayed events to it are dropped
    /// (the slow-consumer policy of docs/architecture.md). Tests lower it to reach the policy with
    /// little traffic.
    pub outbox_capacity: usize,
    /// How long a client may take to send a request's headers (from the connection's
    /// start, or the end of its previous request) before the connection is closed: the
    /// slowloris bound. Does not apply to upgraded sockets.
    pub header_read_timeout: Duration,
    /// How long a request's body may take, from the end of its headers
    /// (`P2PIANO_BODY_TIMEOUT_MS`).
    pub body_timeout: Duration,
}

impl Default for SocketSettings {
    fn default() -> Self {
        Self {
            ping_interval: Duration::from_millis(25_000),
            ping_timeout: Duration::from_millis(20_000),
            connect_timeout: Duration::from_secs(10),
            max_payload: 64 * 1024,
            max_attachments: 4,
            outbox_capacity: crate::socket::outbox::OUTBOX_CAPACITY,
            header_read_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
        }
    }
}

/// An open socket as the edge sees it.
#[derive(Clone, Debug)]
pub struct SocketEntry {
    /// Its outbound queue.
    pub outbox: Outbox,
    /// Its dialect once connected to a namespace.
    pub dialect: Option<Dialect>,
    /// Set when presence replaced it: its close is then no departure.
    pub replaced: Arc<AtomicBool>,
    /// What presence knows of it, from the answer to its connect until its disconnect is
    /// sent: what the edge re-asserts when presence asks.
    pub held: Option<HeldSocket>,
}

/// State shared by every socket and route of one edge.
pub struct Edge {
    /// This edge's id on the bus.
    pub edge_id: String,
    /// Rooms and presence clients.
    pub rpc: Rpc,
    /// Session lookup (cookie, bearer, handshake auth).
    pub auth: SessionAuth,
    /// Rooms with local members.
    pub registry: Registry,
    /// Browser origins allowed to open sockets.
    pub cors_origins: Vec<String>,
    /// Engine.IO settings.
    pub settings: SocketSettings,
    /// Metrics.
    pub metrics: EdgeMetrics,
    /// What the heartbeats report: open sockets, the digest of those presence knows of,
    /// the generation last re-asserted.
    pub vitals: Arc<EdgeVitals>,
    /// True once the drain began: no new sockets, readiness 503.
    pub draining: Arc<AtomicBool>,
    /// The event budgets of the sessions with a socket here (or recently).
    pub budgets: Arc<crate::socket::budgets::Budgets>,
    sockets: Mutex<HashMap<Arc<str>, SocketEntry>>,
    /// Socket tasks, awaited by the drain.
    pub tasks: TaskTracker,
}

impl Edge {
    /// Assembles the edge state. `rooms_bus` is a no-echo handle on the bus
    /// ([`p2piano_bus::Bus::no_echo`]) for the rooms' subscriptions and relays.
    pub fn new(
        edge_id: String,
        rpc: Rpc,
        rooms_bus: Bus,
        auth: SessionAuth,
        cors_origins: Vec<String>,
        settings: SocketSettings,
        metrics: EdgeMetrics,
    ) -> Arc<Self> {
        let registry = Registry::new(rooms_bus, rpc.subjects().clone(), metrics.clone());
        Arc::new(Self {
            edge_id,
            rpc,
            auth,
            registry,
            cors_origins,
            settings,
            metrics,
            vitals: Arc::new(EdgeVitals::default()),
            draining: Arc::new(AtomicBool::new(false)),
            budgets: crate::socket::budgets::Budgets::new(),
            sockets: Mutex::new(HashMap::new()),
            tasks: TaskTracker::new(),
        })
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, SocketEntry>> {
        self.sockets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a new socket.
    pub fn register(&self, id: Arc<str>, entry: SocketEntry) {
        self.table().insert(id, entry);
        self.vitals.connections.fetch_add(1, Ordering::Relaxed);
        self.metrics.connections.inc();
    }

    /// Records the dialect of a socket once it joined a namespace (`None` once it left it).
    pub fn set_dialect(&self, id: &str, dialect: Option<Dialect>) {
        if let Some(e) = self.table().get_mut(id) {
            e.dialect = dialect;
        }
    }

    /// Forgets a closed socket.
    pub fn unregister(&self, id: &str) {
        if let Some(entry) = self.table().remove(id) {
            if entry.held.is_some() {
                self.vitals.release(id);
            }
            self.vitals.connections.fetch_sub(1, Ordering::Relaxed);
            self.metrics.connections.dec();
        }
    }

    /// Whether presence knows of socket `id` (`None` for an unknown socket).
    pub fn table_held(&self, id: &str) -> Option<bool> {
        self.table().get(id).map(|e| e.held.is_some())
    }

    /// Records what presence now knows of socket `id` (`None`: nothing, its disconnect is
    /// on its way), keeping the heartbeat's digest in step.
    pub fn set_held(&self, id: &str, held: Option<HeldSocket>) {
        let mut table = self.table();
        let Some(entry) = table.get_mut(id) else {
            return;
        };
        match (&entry.held, &held) {
            (None, Some(_)) => self.vitals.hold(id),
            (Some(_), None) => self.vitals.release(id),
            _ => {}
        }
        entry.held = held;
    }

    /// Carries out presence's commands for this edge until the stream ends.
    pub async fn run_control(
        self: Arc<Self>,
        mut control: impl Stream<Item = EdgeControl> + Unpin,
    ) {
        while let Some(cmd) = control.next().await {
            match cmd {
                EdgeControl::Replace { conn_id } => self.replace(&conn_id).await,
                EdgeControl::Resync {
                    generation,
                    before,
                    buckets,
                } => {
                    let edge = self.clone();
                    tokio::spawn(async move { edge.resync(generation, before, buckets).await });
                }
            }
        }
    }

    /// Re-asserts the sockets presence knows of (those of `buckets`, or all) in parts, then
    /// reports `generation` in its heartbeats; sockets presence says were replaced meanwhile
    /// are closed as replaced.
    #[tracing::instrument(skip(self))]
    async fn resync(self: Arc<Self>, generation: u64, before: u64, buckets: Option<Vec<u8>>) {
        let in_buckets = |conn: &str| {
            buckets
                .as_ref()
                .is_none_or(|b| b.contains(&(digest_bucket(digest_of(conn)) as u8)))
        };
        let held: Vec<HeldSocket> = self
            .table()
            .iter()
            .filter(|(id, e)| e.held.is_some() && in_buckets(id))
            .filter_map(|(_, e)| e.held.clone())
            .collect();
        let ids: Vec<String> = held.iter().map(|h| h.conn_id.clone()).collect();
        let parts: Vec<Vec<HeldSocket>> = held.chunks(RESYNC_PART).map(<[_]>::to_vec).collect();
        let last = parts.len().saturating_sub(1);
        let mut stale = Vec::new();
        for (i, sockets) in parts
            .into_iter()
            .chain(
                // Nothing held: one empty part still carries the (empty) list.
                std::iter::once(Vec::new()).filter(|_| ids.is_empty()),
            )
            .enumerate()
        {
            let req = Resync {
                edge_id: self.edge_id.clone(),
                before,
                buckets: buckets.clone(),
                sockets,
                held: (i == last).then(|| ids.clone()),
            };
            match self.rpc.resync(&req).await {
                Ok(reply) => stale.extend(reply.stale),
                Err(e) => {
                    tracing::warn!(error = %e, "re-assertion not finished; presence will ask again");
                    return;
                }
            }
        }
        for conn in stale {
            self.replace(&conn).await;
        }
        self.vitals.resynced(generation);
        tracing::info!(
            sockets = ids.len(),
            generation,
            "sockets re-asserted to presence"
        );
    }

    /// Tells a replaced socket why (NEWER_CONNECTION or session-replaced, then `41`) and
    /// closes it. Its close announces nothing.
    async fn replace(&self, conn_id: &str) {
        let entry = self.table().get(conn_id).cloned();
        let Some(entry) = entry else {
            return;
        };
        entry.replaced.store(true, Ordering::Relaxed);
        // Presence's record is the newer socket's now.
        self.set_held(conn_id, None);
        if let Some(dialect) = entry.dialect {
            for frame in dialect.replaced_frames() {
                entry.outbox.send(Frame::Text(frame)).await;
            }
        }
        entry.outbox.close(Close {
            code: 1000,
            reason: "replaced by a newer connection",
        });
    }

    /// Starts the drain: refuse new sockets, close every open one at the transport (not with
    /// a Socket.IO disconnect, so the clients reconnect, to another edge), and wait for their
    /// tasks to finish, at most `budget`.
    pub async fn drain(&self, budget: Duration) {
        self.draining.store(true, Ordering::Relaxed);
        let open: Vec<Outbox> = self.table().values().map(|e| e.outbox.clone()).collect();
        tracing::info!(sockets = open.len(), "draining sockets");
        for outbox in open {
            outbox.close(Close {
                code: 1012,
                reason: "server restarting",
            });
        }
        self.tasks.close();
        if tokio::time::timeout(budget, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("drain budget exhausted with sockets still closing");
        }
    }
}
