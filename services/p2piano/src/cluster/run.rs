//! A plan run as tasks of this process.

use std::sync::Arc;

use futures::TryFutureExt;
use p2piano_bus::Bus;
use p2piano_config::{Config, Role, RoomStore as StoreKind};
use p2piano_edge::SocketSettings;
use p2piano_presence::Buckets;
use p2piano_rooms::Clock;
use p2piano_rooms::store::{MemoryStore, RoomStore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::plan::{Plan, Service};

/// Why a deployment could not start, or how one of its services failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The bus could not be reached.
    #[error("bus: {0}")]
    Bus(#[from] p2piano_bus::BusError),
    /// The rooms service failed.
    #[error("rooms: {0}")]
    Rooms(#[from] p2piano_rooms::AppError),
    /// A presence replica failed.
    #[error("presence: {0}")]
    Presence(#[from] p2piano_presence::AppError),
    /// An edge failed.
    #[error("edge: {0}")]
    Edge(#[from] p2piano_edge::AppError),
    /// A service stopped by itself (or panicked) before it was asked to.
    #[error("{0} stopped unexpectedly")]
    Stopped(String),
}

/// What a test may change in how a plan runs, beyond its configuration.
#[derive(Clone, Default)]
pub struct Options {
    /// The clock of rooms and presence (a test's manual clock); the system's by default.
    pub clock: Option<Clock>,
    /// The edges' Engine.IO settings (small queues, short timeouts); by default those the
    /// configuration gives.
    pub edge_settings: Option<SocketSettings>,
    /// The rooms store to use instead of the one the configuration names, so that a test
    /// can look into it.
    pub room_store: Option<Arc<dyn RoomStore>>,
    /// The in-process bus to share with the caller (a test's client), for a plan without
    /// NATS; a new one by default.
    pub bus: Option<Bus>,
    /// The memory buckets presence shares with the caller (a test reading the records),
    /// for a plan without NATS; new ones by default.
    pub buckets: Option<Buckets>,
}

/// One running service.
pub struct Running {
    /// Its name in the plan.
    pub name: String,
    /// Which service it is.
    pub role: Role,
    /// The edge's public port (0 for rooms and presence, which have none).
    pub port: u16,
    /// Its admin port (health, readiness, `/metrics`); the public port of an edge that has
    /// no admin address.
    pub admin_port: u16,
    stop: CancellationToken,
    task: Option<JoinHandle<Result<(), ClusterError>>>,
}

/// A plan running as tasks of this process. Dropping it stops every service without
/// waiting; [`Cluster::shutdown`] stops them in order and waits.
pub struct Cluster {
    plan: Plan,
    options: Options,
    wiring: Wiring,
    services: Vec<Running>,
}

/// How the services of a cluster reach each other.
enum Wiring {
    /// One in-process bus for every service, and memory buckets shared by the presence
    /// replicas (a plan without NATS).
    InProcess { bus: Bus, buckets: Buckets },
    /// A NATS connection of its own for each service, and JetStream buckets.
    Nats { url: String },
}

impl Plan {
    /// Builds every service of the plan (rooms first, edges last) and starts each as a task;
    /// returns once all are built, which for each means subscribed and listening.
    pub async fn start(self, options: Options) -> Result<Cluster, ClusterError> {
        let wiring = match &self.config.nats_url {
            Some(url) => Wiring::Nats { url: url.clone() },
            None => Wiring::InProcess {
                bus: options.bus.clone().unwrap_or_else(Bus::in_process),
                buckets: options
                    .buckets
                    .clone()
                    .unwrap_or_else(|| p2piano_presence::app::memory_buckets(&self.config)),
            },
        };
        let mut cluster = Cluster {
            wiring,
            plan: self,
            options,
            services: Vec::new(),
        };
        for service in cluster.plan.services() {
            cluster.launch(service).await?;
        }
        Ok(cluster)
    }
}

impl Cluster {
    /// The plan it runs.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The running services, in the order they started.
    pub fn services(&self) -> &[Running] {
        &self.services
    }

    /// The running edges, in order.
    pub fn edges(&self) -> impl Iterator<Item = &Running> {
        self.services.iter().filter(|s| s.role == Role::Edge)
    }

    /// The service called `name`.
    pub fn service(&self, name: &str) -> Option<&Running> {
        self.services.iter().find(|s| s.name == name)
    }

    /// Starts one more presence replica (sharing the others' buckets in process, its own
    /// connection to them on NATS); returns its name.
    pub async fn add_presence(&mut self) -> Result<String, ClusterError> {
        let n = self
            .services
            .iter()
            .filter(|s| s.role == Role::Presence)
            .count();
        let service = self.plan.presence_replica(n + 1);
        let name = service.name.clone();
        self.launch(service).await?;
        Ok(name)
    }

    /// Asks service `name` to stop (an edge drains) and waits until it has.
    pub async fn stop(&mut self, name: &str) -> Result<(), ClusterError> {
        match self.services.iter_mut().find(|s| s.name == name) {
            Some(s) => s.stop().await,
            None => Ok(()),
        }
    }

    /// Waits until some service ends by itself (which only a failure does), and says which
    /// and how. Pending for ever if none does.
    pub async fn until_one_stops(&mut self) -> (String, Result<(), ClusterError>) {
        let running: Vec<(usize, &mut JoinHandle<_>)> = self
            .services
            .iter_mut()
            .enumerate()
            .filter_map(|(i, s)| s.task.as_mut().map(|t| (i, t)))
            .collect();
        if running.is_empty() {
            return std::future::pending().await;
        }
        let (i, joined) = futures::future::select_all(
            running
                .into_iter()
                .map(|(i, t)| Box::pin(async move { (i, t.await) })),
        )
        .await
        .0;
        let service = &mut self.services[i];
        service.task = None;
        let name = service.name.clone();
        let result = match joined {
            Ok(Ok(())) | Err(_) => Err(ClusterError::Stopped(name.clone())),
            Ok(Err(e)) => Err(e),
        };
        (name, result)
    }

    /// Stops everything in the order that loses nothing: the edges drain first (their
    /// clients reconnect elsewhere, their last heartbeats reach presence), then presence
    /// and rooms finish what they were answering. The first failure is returned; every
    /// service is stopped either way.
    pub async fn shutdown(mut self) -> Result<(), ClusterError> {
        let mut failure = None;
        for role in [Role::Edge, Role::Presence, Role::Rooms] {
            for service in self.services.iter_mut().filter(|s| s.role == role) {
                service.stop.cancel();
            }
            for service in self.services.iter_mut().filter(|s| s.role == role) {
                if let Err(e) = service.stop().await {
                    failure.get_or_insert(e);
                }
            }
        }
        failure.map_or(Ok(()), Err)
    }

    /// The bus of a new service: its own NATS connection, or the shared in-process bus.
    async fn bus(&self, name: &str) -> Result<Bus, ClusterError> {
        match &self.wiring {
            Wiring::InProcess { bus, .. } => Ok(bus.clone()),
            Wiring::Nats { url } => Ok(Bus::connect_nats(url, &format!("p2piano-{name}")).await?),
        }
    }

    async fn launch(&mut self, service: Service) -> Result<(), ClusterError> {
        let Service { name, role, config } = service;
        let bus = self.bus(&name).await?;
        let clock = self.options.clock.clone().unwrap_or_else(Clock::system);
        let stop = CancellationToken::new();
        let token = stop.clone();
        let (port, admin_port, task) = match role {
            Role::Rooms => {
                let store = match &self.options.room_store {
                    Some(store) => store.clone(),
                    None => room_store(&config).await?,
                };
                let app =
                    p2piano_rooms::Application::build_with(&config, bus, store, clock).await?;
                let admin = app.admin_port();
                (
                    0,
                    admin,
                    tokio::spawn(app.run_until_stopped(token).err_into::<ClusterError>()),
                )
            }
            Role::Presence => {
                let buckets = match &self.wiring {
                    Wiring::InProcess { buckets, .. } => buckets.clone(),
                    Wiring::Nats { .. } => {
                        p2piano_presence::app::jetstream_buckets(&bus, &config).await?
                    }
                };
                let app = p2piano_presence::Application::build_beside(
                    &config,
                    bus,
                    buckets,
                    clock,
                    self.plan.local_edge(),
                )
                .await?;
                let admin = app.admin_port();
                (
                    0,
                    admin,
                    tokio::spawn(app.run_until_stopped(token).err_into::<ClusterError>()),
                )
            }
            Role::Edge | Role::All => {
                let app = match &self.options.edge_settings {
                    Some(s) => {
                        p2piano_edge::Application::build_with_settings(&config, bus, s.clone())
                            .await?
                    }
                    None => p2piano_edge::Application::build_with(&config, bus).await?,
                };
                let (port, admin) = (app.port(), app.admin_port());
                tracing::info!(port, edge_id = app.edge_id(), "edge started");
                (
                    port,
                    admin,
                    tokio::spawn(app.run_until_stopped(token).err_into::<ClusterError>()),
                )
            }
        };
        self.services.push(Running {
            name,
            role,
            port,
            admin_port,
            stop,
            task: Some(task),
        });
        Ok(())
    }
}

impl Running {
    /// Asks the service to stop and waits for it; a service that already ended by itself
    /// was reported by [`Cluster::until_one_stops`].
    async fn stop(&mut self) -> Result<(), ClusterError> {
        self.stop.cancel();
        match self.task.take() {
            Some(task) => match task.await {
                Ok(r) => r,
                Err(_) => Err(ClusterError::Stopped(self.name.clone())),
            },
            None => Ok(()),
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for service in &self.services {
            service.stop.cancel();
        }
    }
}

/// The rooms store the configuration names: MongoDB when it gives a URI (and does not ask
/// for memory), else memory.
async fn room_store(config: &Config) -> Result<Arc<dyn RoomStore>, ClusterError> {
    if config.mongo_uri.is_some() && config.room_store != StoreKind::Memory {
        Ok(Arc::new(p2piano_rooms::app::connect_mongo(config).await?))
    } else {
        Ok(Arc::new(MemoryStore::new()))
    }
}
