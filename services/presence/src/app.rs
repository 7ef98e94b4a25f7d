//! Start-up and shutdown of `p2piano presence`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use p2piano_bus::{Bus, BusError};
use p2piano_clock::Clock;
use p2piano_config::{Config, DEFAULT_NATS_URL, DEFAULT_PRESENCE_ADMIN_ADDR};
use p2piano_protocol::Subjects;
use p2piano_telemetry::{AdminState, Metrics, Readiness};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::kv::{BucketConfig, KvBucket, KvError, MemoryBucket, open_jetstream};
use crate::metrics::PresenceMetrics;
use crate::presence::{Buckets, Presence, Settings};
use crate::service::PresenceService;

/// Why presence could not start.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The bus could not be reached or refused a subscription.
    #[error("bus: {0}")]
    Bus(#[from] BusError),
    /// A KV bucket could not be opened or created.
    #[error("kv: {0}")]
    Kv(#[from] KvError),
    /// The admin address could not be bound.
    #[error("admin listener: {0}")]
    Io(#[from] std::io::Error),
    /// A setting is unusable.
    #[error("configuration: {0}")]
    Config(String),
}

/// Bucket names under a subject prefix (JetStream names allow no dots): `p2piano` gives
/// `p2piano_sessions`, `p2piano_connections`, `p2piano_edges`.
pub fn bucket_configs(config: &Config) -> [BucketConfig; 3] {
    let base = config.subject_prefix.replace('.', "_");
    let bucket = |name: &str, max_age: Option<Duration>, description: &str| BucketConfig {
        name: format!("{base}_{name}"),
        max_age,
        replicas: config.kv_replicas,
        description: description.to_owned(),
    };
    [
        bucket(
            "sessions",
            Some(config.session_ttl),
            "p2piano sessions by hashed secret; expire when idle",
        ),
        bucket(
            "connections",
            None,
            "p2piano: each session's current socket and grace state",
        ),
        bucket("edges", None, "p2piano edges and whether they are alive"),
    ]
}

/// Opens (creating when missing) the JetStream buckets.
pub async fn jetstream_buckets(bus: &Bus, config: &Config) -> Result<Buckets, AppError> {
    let client = bus
        .nats_client()
        .ok_or_else(|| AppError::Config("JetStream buckets need a NATS bus".to_owned()))?;
    let [s, c, e] = bucket_configs(config);
    let timeout = config.request_timeout;
    Ok(Buckets {
        sessions: open_jetstream(client.clone(), s, timeout).await?,
        connections: open_jetstream(client.clone(), c, timeout).await?,
        edges: open_jetstream(client, e, timeout).await?,
    })
}

/// In-memory buckets with the same semantics, for `p2piano all` and tests.
pub fn memory_buckets(config: &Config) -> Buckets {
    let [s, c, e] = bucket_configs(config);
    let open = |b| -> Arc<dyn KvBucket> { Arc::new(MemoryBucket::new(b)) };
    Buckets {
        sessions: open(s),
        connections: open(c),
        edges: open(e),
    }
}

/// A built presence service: subscribed, admin port bound, not yet serving.
pub struct Application {
    service: PresenceService,
    presence: Arc<Presence>,
    admin: TcpListener,
    admin_state: AdminState,
    draining: Arc<AtomicBool>,
}

impl Application {
    /// Connects to NATS, opens the JetStream buckets and builds the service.
    pub async fn build(config: &Config) -> Result<Self, AppError> {
        let url = config.nats_url.as_deref().unwrap_or(DEFAULT_NATS_URL);
        let bus = Bus::connect_nats(url, "p2piano-presence").await?;
        let buckets = jetstream_buckets(&bus, config).await?;
        Self::build_with(config, bus, buckets, Clock::system()).await
    }

    /// Builds the service on a given bus, buckets and clock (embedded mode and tests).
    pub async fn build_with(
        config: &Config,
        bus: Bus,
        buckets: Buckets,
        clock: Clock,
    ) -> Result<Self, AppError> {
        Self::build_beside(config, bus, buckets, clock, None).await
    }

    /// [`Application::build_with`] for a presence that shares its process with edge
    /// `local_edge` (`p2piano all`): that edge is never judged by its heartbeats.
    pub async fn build_beside(
        config: &Config,
        bus: Bus,
        buckets: Buckets,
        clock: Clock,
        local_edge: Option<String>,
    ) -> Result<Self, AppError> {
        let subjects =
            Subjects::new(&config.subject_prefix).map_err(|e| AppError::Config(e.to_string()))?;
        let metrics = Metrics::new("p2piano");
        metrics.report_bus(&bus);
        let settings = Settings {
            grace: config.leave_grace,
            session_ttl: config.session_ttl,
            edge_timeout: config.edge_timeout,
            request_timeout: config.request_timeout,
            local_edge,
        };
        let presence = Presence::new(
            buckets.clone(),
            bus.clone(),
            subjects.clone(),
            clock,
            settings,
            PresenceMetrics::new(&metrics),
        );
        let addr = config.admin_addr.unwrap_or(DEFAULT_PRESENCE_ADMIN_ADDR);
        let admin = TcpListener::bind(addr).await?;
        let draining = Arc::new(AtomicBool::new(false));
        let readiness = Arc::new(PresenceReadiness {
            bus: bus.clone(),
            buckets,
            draining: draining.clone(),
            presence: presence.clone(),
        });
        let service = PresenceService::subscribe(
            presence.clone(),
            &bus,
            &subjects,
            config.heartbeat,
            config.drain_timeout,
        )
        .await?;
        tracing::info!(admin = %admin.local_addr()?, "presence service ready");
        Ok(Self {
            service,
            presence,
            admin,
            admin_state: AdminState { metrics, readiness },
            draining,
        })
    }

    /// The bound admin port.
    pub fn admin_port(&self) -> u16 {
        self.admin.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// The presence handle (tests read its metrics).
    pub fn presence(&self) -> Arc<Presence> {
        self.presence.clone()
    }

    /// Serves until `shutdown`, then drains and stops the admin server.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), AppError> {
        p2piano_telemetry::serve_with_admin(
            self.admin,
            self.admin_state,
            self.draining,
            shutdown.clone(),
            self.service.serve(shutdown),
        )
        .await?;
        Ok(())
    }
}

/// Ready when the bus is connected, the KV answers, not draining, and not behind on
/// requests.
struct PresenceReadiness {
    bus: Bus,
    buckets: Buckets,
    draining: Arc<AtomicBool>,
    presence: Arc<Presence>,
}

impl Readiness for PresenceReadiness {
    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            if self.draining.load(Ordering::Relaxed) {
                return Err("draining".to_owned());
            }
            if !self.bus.is_connected() {
                return Err("nats: not connected".to_owned());
            }
            if self.presence.behind() {
                return Err(format!(
                    "behind: {} requests in flight",
                    self.presence.metrics.rpc_in_flight.get()
                ));
            }
            self.buckets
                .edges
                .get("readiness-probe")
                .await
                .map(|_| ())
                .map_err(|e| format!("jetstream kv: {e}"))
        })
    }
}
