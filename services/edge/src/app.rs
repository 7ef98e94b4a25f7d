//! Start-up and shutdown of `p2piano edge`: connect the bus, serve HTTP and Socket.IO on
//! `PORT`, heartbeat to presence, obey its control messages, and drain on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::presence_link::EdgeLink;
use futures::future::BoxFuture;
use p2piano_bus::{Bus, BusError, BusKind};
use p2piano_config::{
    Config, DEFAULT_EDGE_ADMIN_ADDR, DEFAULT_NATS_URL, DEVELOPMENT_COOKIE_SECRET, Secret,
};
use p2piano_protocol::Subjects;
use p2piano_telemetry::{AdminState, Metrics, Readiness};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::edge::{Edge, SocketSettings};
use crate::gate::Gate;
use crate::http::{self, CookieSigner, HttpState, IpLimits, SessionAuth};
use crate::mesh::{self, Mesh, MeshIdentity, MeshSettings};
use crate::metrics::EdgeMetrics;
use crate::rpc::Rpc;

/// Where an edge's relay listener binds when `P2PIANO_MESH_ADDR` is unset: loopback, on a
/// port of the system's choosing (every edge on one host, as in `make up` and the tests).
pub const DEFAULT_MESH_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// Why the edge could not start.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The bus could not be reached or refused a subscription.
    #[error("bus: {0}")]
    Bus(#[from] BusError),
    /// The port could not be bound.
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
    /// A setting is unusable.
    #[error("configuration: {0}")]
    Config(String),
}

/// This edge's id: `P2PIANO_EDGE_ID`, else the host name plus a random suffix (so two
/// processes on one host, or a restarted pod, never share an id).
pub fn edge_id(config: &Config) -> String {
    if let Some(id) = config.edge_id.clone().filter(|s| !s.is_empty()) {
        return id;
    }
    let host: String = hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "edge".to_owned())
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    let suffix: u32 = rand::random();
    format!("{host}-{suffix:08x}")
}

/// A built edge: bound, subscribed to its control subject, not yet serving.
pub struct Application {
    listener: TcpListener,
    edge: Arc<Edge>,
    link: EdgeLink,
    router: axum::Router,
    heartbeat: std::time::Duration,
    drain_budget: std::time::Duration,
    limits: crate::serve::Limits,
    /// The admin listener (health and `/metrics`), when configured.
    admin: Option<(TcpListener, AdminState)>,
    /// Stops the relay links (after the drain, or when the application is dropped).
    mesh_stop: tokio_util::sync::DropGuard,
}

impl Application {
    /// Connects to NATS and builds the edge, with its admin listener (health and
    /// `/metrics`) on `P2PIANO_ADMIN_ADDR`, by default [`DEFAULT_EDGE_ADMIN_ADDR`].
    pub async fn build(config: &Config) -> Result<Self, AppError> {
        let url = config.nats_url.as_deref().unwrap_or(DEFAULT_NATS_URL);
        // Fix the id once, so that the bus connection and the edge carry the same one.
        let mut config = config.clone();
        config.admin_addr.get_or_insert(DEFAULT_EDGE_ADMIN_ADDR);
        config.edge_id = Some(edge_id(&config));
        let id = config.edge_id.clone().unwrap_or_default();
        let bus = Bus::connect_nats(url, &format!("p2piano-edge-{id}")).await?;
        Self::build_with(&config, bus).await
    }

    /// Builds the edge on a given bus (embedded mode and tests). With `P2PIANO_ADMIN_ADDR`
    /// set, `/metrics` is served there only; without it (`p2piano all`'s zero-setup
    /// default) on the public port.
    pub async fn build_with(config: &Config, bus: Bus) -> Result<Self, AppError> {
        let settings = SocketSettings {
            connect_timeout: config.connect_timeout,
            body_timeout: config.body_timeout,
            ..SocketSettings::default()
        };
        Self::build_with_settings(config, bus, settings).await
    }

    /// Builds the edge on a given bus with explicit Engine.IO settings (tests use small
    /// queues and short timeouts).
    pub async fn build_with_settings(
        config: &Config,
        bus: Bus,
        settings: SocketSettings,
    ) -> Result<Self, AppError> {
        let subjects =
            Subjects::new(&config.subject_prefix).map_err(|e| AppError::Config(e.to_string()))?;
        let id = edge_id(config);
        Subjects::check_edge_id(&id).map_err(|e| AppError::Config(e.to_string()))?;
        let registry = Metrics::new("p2piano");
        registry.report_bus(&bus);
        let metrics = EdgeMetrics::new(&registry);
        let rpc = Rpc::new(
            bus.clone(),
            subjects.clone(),
            config.request_timeout,
            metrics.clone(),
        );
        let secret = config
            .cookie_secret
            .as_ref()
            .map_or(DEVELOPMENT_COOKIE_SECRET, Secret::expose);
        let auth = SessionAuth::new(
            rpc.clone(),
            CookieSigner::new(secret.as_bytes()),
            config.cookie_secure,
            Arc::new(IpLimits::new(
                config.ip_connect_rate,
                config.ip_connect_burst,
            )),
        );
        let max_total = match config.max_connections {
            0 => {
                crate::gate::default_max_connections(crate::gate::open_file_limit().unwrap_or(1024))
            }
            n => n,
        };
        let gate = Gate::new(
            max_total,
            config.max_connections_per_ip,
            metrics.tcp_connections.clone(),
        );
        tracing::info!(
            max_connections = max_total,
            max_connections_per_ip = config.max_connections_per_ip,
            "connection caps"
        );
        let proxies = crate::proxy::TrustedProxies::parse(&config.trusted_proxies)
            .map_err(|e| AppError::Config(format!("P2PIANO_TRUSTED_PROXIES: {e}")))?;
        let limits = crate::serve::Limits {
            proxies: Arc::new(proxies),
            gate: gate.clone(),
            header_read_timeout: settings.header_read_timeout,
            body_timeout: settings.body_timeout,
            metrics: metrics.clone(),
        };
        // Relays cross the bus only to the other edges: this edge hands them to its own
        // sockets itself (`fanout::Registry::relay`).
        let rooms_bus = bus.no_echo(&format!("p2piano-edge-{id}-rooms")).await?;
        let edge = Edge::new(
            id.clone(),
            rpc.clone(),
            rooms_bus,
            auth.clone(),
            config.cors_origin.clone(),
            settings,
            metrics.clone(),
        );
        let readiness = Arc::new(EdgeReadiness {
            bus: bus.clone(),
            edge: edge.clone(),
            gate,
        });
        let admin = AdminState {
            metrics: registry,
            readiness,
        };
        let admin_listener = match config.admin_addr {
            Some(addr) => Some(TcpListener::bind(addr).await?),
            None => None,
        };
        let admin_state = admin.clone();
        let state = HttpState::new(rpc, auth, metrics, admin);
        let socket_routes = axum::Router::new()
            .route(
                "/socket.io/",
                axum::routing::get(crate::socket::upgrade::upgrade),
            )
            .with_state(edge.clone());
        let router = http::apply_layers(
            http::router(state, admin_listener.is_none()).merge(socket_routes),
            &config.cors_origin,
            config.cookie_secure,
        );
        // On NATS the relays go to the other edges over the relay links; the in-process
        // bus (one process, one edge) hands them over as values instead.
        let mesh_stop = CancellationToken::new();
        let mesh = match bus.kind() {
            BusKind::Nats => {
                let identity = MeshIdentity {
                    edge_id: id.clone(),
                    listen: config.mesh_addr.unwrap_or(DEFAULT_MESH_ADDR),
                    advertise: config.mesh_advertise.clone(),
                    secret: secret.as_bytes().to_vec(),
                };
                let settings = MeshSettings {
                    ack_timeout: config.heartbeat,
                    forget_after: config.edge_timeout,
                    ..MeshSettings::default()
                };
                let stop = mesh_stop.clone();
                let mesh = Mesh::start(
                    identity,
                    edge.registry.index(),
                    settings,
                    edge.metrics.clone(),
                    stop,
                )
                .await
                .map_err(|e| AppError::Config(e.to_string()))?;
                mesh::run_discovery(mesh.clone(), bus.clone(), &subjects, mesh_stop.clone())
                    .await?;
                mesh::roll_call(&mesh, &bus, &subjects, config.heartbeat).await?;
                edge.registry.set_mesh(mesh.clone());
                Some(mesh.addr().to_owned())
            }
            BusKind::InProcess => None,
        };
        let link = EdgeLink::new(bus, subjects, id).with_mesh(mesh);
        let addr = SocketAddr::from(([0, 0, 0, 0], config.port));
        let listener = TcpListener::bind(addr).await?;
        let admin_port = match &admin_listener {
            Some(l) => l.local_addr()?.port(),
            None => 0,
        };
        tracing::info!(
            edge_id = %edge.edge_id,
            port = listener.local_addr()?.port(),
            admin_port,
            "edge ready"
        );
        Ok(Self {
            listener,
            edge,
            link,
            router,
            heartbeat: config.heartbeat,
            drain_budget: config.drain_timeout,
            limits,
            admin: admin_listener.map(|l| (l, admin_state)),
            mesh_stop: mesh_stop.drop_guard(),
        })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// The bound admin port, 0 without an admin listener.
    pub fn admin_port(&self) -> u16 {
        self.admin
            .as_ref()
            .and_then(|(l, _)| l.local_addr().ok())
            .map_or(0, |a| a.port())
    }

    /// This edge's id.
    pub fn edge_id(&self) -> &str {
        &self.edge.edge_id
    }

    /// The edge's state (tests look at it).
    pub fn edge(&self) -> Arc<Edge> {
        self.edge.clone()
    }

    /// Serves until `shutdown`, then drains: readiness 503 at once, new sockets refused,
    /// open ones closed at the transport so their clients reconnect elsewhere, a last
    /// heartbeat saying "stopping", and exit within the drain budget.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), AppError> {
        let control = self.link.control().await?;
        tokio::spawn(self.edge.clone().run_control(control));
        let beats_stop = CancellationToken::new();
        let beats = self.link.spawn_heartbeats(
            self.heartbeat,
            self.edge.vitals.clone(),
            beats_stop.clone(),
        );
        let http_stop = CancellationToken::new();
        let serve_stop = http_stop.clone();
        let admin_stop = CancellationToken::new();
        let admin = self.admin.map(|(listener, state)| {
            tokio::spawn(p2piano_telemetry::serve_admin(
                listener,
                state,
                admin_stop.clone(),
            ))
        });
        let server = crate::serve::serve(self.listener, self.router, self.limits, serve_stop);
        let server = tokio::spawn(server);
        shutdown.cancelled().await;
        tracing::info!("edge draining");
        self.edge.draining.store(true, Ordering::Relaxed);
        beats_stop.cancel();
        beats.finished().await;
        self.edge.drain(self.drain_budget).await;
        http_stop.cancel();
        if let Err(e) = server.await {
            tracing::warn!(error = %e, "http server task failed");
        }
        admin_stop.cancel();
        if let Some(admin) = admin {
            let _ = admin.await;
        }
        drop(self.mesh_stop);
        tracing::info!("edge stopped");
        Ok(())
    }
}

/// Ready when the bus is connected, the edge is not draining, and it is not near its cap
/// on connections (a balancer then sends new players to another edge).
struct EdgeReadiness {
    bus: Bus,
    edge: Arc<Edge>,
    gate: Arc<Gate>,
}

impl Readiness for EdgeReadiness {
    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            if self.edge.draining.load(Ordering::Relaxed) {
                return Err("draining".to_owned());
            }
            if !self.bus.is_connected() || !self.edge.registry.is_connected() {
                return Err("nats: not connected".to_owned());
            }
            if self.gate.near_cap() {
                return Err(format!(
                    "near the connection cap: {} of {} open",
                    self.gate.open(),
                    self.gate.max_total()
                ));
            }
            Ok(())
        })
    }
}
