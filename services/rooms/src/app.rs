//! Start-up and shutdown of `p2piano rooms`: connect the bus and the store, subscribe, serve
//! the admin HTTP surface, and stop cleanly on the shutdown token.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::future::BoxFuture;
use p2piano_bus::{Bus, BusError};
use p2piano_config::{Config, DEFAULT_MONGO_URI, DEFAULT_NATS_URL, DEFAULT_ROOMS_ADMIN_ADDR};
use p2piano_protocol::Subjects;
use p2piano_telemetry::{AdminState, Metrics, Readiness};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::RoomsMetrics;
use crate::rooms::Rooms;
use crate::service::RoomsService;
use crate::store::{MemoryStore, MongoSettings, MongoStore, RoomStore, StoreError};
use p2piano_clock::Clock;

/// Why the rooms service could not start.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The bus could not be reached or refused the subscription.
    #[error("bus: {0}")]
    Bus(#[from] BusError),
    /// The store could not be set up (bad `MONGO_URI`).
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The admin address could not be bound.
    #[error("admin listener: {0}")]
    Io(#[from] std::io::Error),
    /// A setting is unusable.
    #[error("configuration: {0}")]
    Config(String),
}

/// The MongoDB store as configured (`MONGO_URI`, else the development default, with
/// `MONGO_USERNAME`/`MONGO_PASSWORD` and `P2PIANO_MONGO_DB`), for `p2piano rooms` and for
/// `p2piano all` when it is given a database.
pub async fn connect_mongo(config: &Config) -> Result<MongoStore, AppError> {
    Ok(MongoStore::connect(MongoSettings {
        uri: config
            .mongo_uri
            .clone()
            .unwrap_or_else(|| DEFAULT_MONGO_URI.to_owned()),
        database: config.mongo_database(),
        username: config.mongo_username.clone(),
        password: config.mongo_password.clone(),
        timeout: config.mongo_timeout,
    })
    .await?)
}

/// A built rooms service: subscribed, admin port bound, not yet serving.
pub struct Application {
    service: RoomsService,
    admin: TcpListener,
    admin_state: AdminState,
    draining: Arc<AtomicBool>,
}

impl Application {
    /// Connects to NATS and MongoDB as configured and builds the service.
    pub async fn build(config: &Config) -> Result<Self, AppError> {
        let nats_url = config.nats_url.as_deref().unwrap_or(DEFAULT_NATS_URL);
        let bus = Bus::connect_nats(nats_url, "p2piano-rooms").await?;
        let store: Arc<dyn RoomStore> = if config.room_store == p2piano_config::RoomStore::Memory {
            tracing::warn!(
                "rooms are kept in memory (P2PIANO_ROOM_STORE=memory): lost on restart, not shared between replicas"
            );
            Arc::new(MemoryStore::new())
        } else {
            Arc::new(connect_mongo(config).await?)
        };
        Self::build_with(config, bus, store, Clock::system()).await
    }

    /// Builds the service on a given bus, store and clock (embedded mode and tests).
    pub async fn build_with(
        config: &Config,
        bus: Bus,
        store: Arc<dyn RoomStore>,
        clock: Clock,
    ) -> Result<Self, AppError> {
        let subjects =
            Subjects::new(&config.subject_prefix).map_err(|e| AppError::Config(e.to_string()))?;
        let metrics = Metrics::new("p2piano");
        metrics.report_bus(&bus);
        let rooms_metrics = RoomsMetrics::new(&metrics);
        store.report_to(&rooms_metrics);
        let rooms = Rooms::new(store.clone(), clock, config.room_idle);
        let addr = config.admin_addr.unwrap_or(DEFAULT_ROOMS_ADMIN_ADDR);
        let admin = TcpListener::bind(addr).await?;
        let draining = Arc::new(AtomicBool::new(false));
        let readiness = Arc::new(RoomsReadiness {
            bus: bus.clone(),
            store,
            draining: draining.clone(),
        });
        let service = RoomsService::subscribe(
            bus,
            subjects,
            rooms,
            rooms_metrics,
            config.drain_timeout,
            config.room_idle,
        )
        .await?;
        tracing::info!(admin = %admin.local_addr()?, "rooms service ready");
        Ok(Self {
            service,
            admin,
            admin_state: AdminState { metrics, readiness },
            draining,
        })
    }

    /// The bound admin port (useful when configured as port 0).
    pub fn admin_port(&self) -> u16 {
        self.admin.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Serves until `shutdown` is cancelled, then drains the bus subscription, finishes the
    /// requests in flight and stops the admin server.
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

/// Ready when the bus is connected, the store answers, and the service is not draining.
struct RoomsReadiness {
    bus: Bus,
    store: Arc<dyn RoomStore>,
    draining: Arc<AtomicBool>,
}

impl Readiness for RoomsReadiness {
    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            if self.draining.load(Ordering::Relaxed) {
                return Err("draining".to_owned());
            }
            if !self.bus.is_connected() {
                return Err("nats: not connected".to_owned());
            }
            self.store.ping().await.map_err(|e| format!("mongodb: {e}"))
        })
    }
}
