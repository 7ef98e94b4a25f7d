//! The edge's shared state: its id, clients of the other services, the room registry, and
//! the table of open sockets (for presence's replace commands and for the drain).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use p2piano_protocol::presence::EdgeControl;
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
    /// (the slow-consumer policy of DESIGN.md). Tests lower it to reach the policy with
    /// little traffic.
    pub outbox_capacity: usize,
    /// How long a client may take to send a request's headers (from the connection's
    /// start, or the end of its previous request) before the connection is closed: the
    /// slowloris bound. Does not apply to upgraded sockets.
    pub header_read_timeout: Duration,
}

impl Default for SocketSettings {
    fn default() -> Self {
        Self {
            ping_interval: Duration::from_millis(25_000),
            ping_timeout: Duration::from_millis(20_000),
            connect_timeout: Duration::from_secs(45),
            max_payload: 64 * 1024,
            max_attachments: 4,
            outbox_capacity: crate::socket::outbox::OUTBOX_CAPACITY,
            header_read_timeout: Duration::from_secs(10),
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
    /// Open sockets (read by the heartbeat).
    pub connections: Arc<AtomicU64>,
    /// True once the drain began: no new sockets, readiness 503.
    pub draining: Arc<AtomicBool>,
    sockets: Mutex<HashMap<Arc<str>, SocketEntry>>,
    /// Socket tasks, awaited by the drain.
    pub tasks: TaskTracker,
}

impl Edge {
    /// Assembles the edge state.
    pub fn new(
        edge_id: String,
        rpc: Rpc,
        auth: SessionAuth,
        cors_origins: Vec<String>,
        settings: SocketSettings,
        metrics: EdgeMetrics,
    ) -> Arc<Self> {
        let registry = Registry::new(rpc.bus().clone(), rpc.subjects().clone(), metrics.clone());
        Arc::new(Self {
            edge_id,
            rpc,
            auth,
            registry,
            cors_origins,
            settings,
            metrics,
            connections: Arc::new(AtomicU64::new(0)),
            draining: Arc::new(AtomicBool::new(false)),
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
        self.connections.fetch_add(1, Ordering::Relaxed);
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
        if self.table().remove(id).is_some() {
            self.connections.fetch_sub(1, Ordering::Relaxed);
            self.metrics.connections.dec();
        }
    }

    /// Carries out presence's commands for this edge until the stream ends.
    pub async fn run_control(
        self: Arc<Self>,
        mut control: impl Stream<Item = EdgeControl> + Unpin,
    ) {
        while let Some(cmd) = control.next().await {
            match cmd {
                EdgeControl::Replace { conn_id } => self.replace(&conn_id).await,
            }
        }
    }

    /// Tells a replaced socket why (NEWER_CONNECTION or session-replaced, then `41`) and
    /// closes it. Its close announces nothing.
    async fn replace(&self, conn_id: &str) {
        let entry = self.table().get(conn_id).cloned();
        let Some(entry) = entry else {
            return;
        };
        entry.replaced.store(true, Ordering::Relaxed);
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
