//! `p2piano all`: the edge, rooms and presence in one process.
//!
//! Without `NATS_URL` the services talk over the in-process bus and presence keeps its state
//! in memory; without `MONGO_URI` rooms live in memory. That is the zero-setup default
//! (`make run`): nothing to install, nothing kept across restarts. Given `NATS_URL` (and then
//! `MONGO_URI`, which production requires), the same process joins a real deployment and
//! behaves exactly like the three split services.
//!
//! Only the edge listens in public (`PORT`, with `/health`, `/health/ready` and `/metrics`);
//! the admin listeners that rooms and presence have when split are bound to an ephemeral
//! loopback port here, so that one `P2PIANO_ADMIN_ADDR` cannot make two of them collide.

use std::net::SocketAddr;
use std::sync::Arc;

use p2piano_bus::Bus;
use p2piano_config::Config;
use p2piano_rooms::Clock;
use p2piano_rooms::store::{MemoryStore, RoomStore};
use tokio_util::sync::CancellationToken;

/// Why `p2piano all` stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AllError {
    /// The bus could not be reached.
    #[error("bus: {0}")]
    Bus(#[from] p2piano_bus::BusError),
    /// The rooms service failed.
    #[error("rooms: {0}")]
    Rooms(#[from] p2piano_rooms::AppError),
    /// The presence service failed.
    #[error("presence: {0}")]
    Presence(#[from] p2piano_presence::AppError),
    /// The edge failed.
    #[error("edge: {0}")]
    Edge(#[from] p2piano_edge::AppError),
    /// A service stopped by itself before shutdown was asked for.
    #[error("{0} stopped unexpectedly")]
    Stopped(&'static str),
}

/// What the process runs on, for its first log line.
fn describe(config: &Config) -> &'static str {
    match (config.nats_url.is_some(), config.mongo_uri.is_some()) {
        (false, false) => "in-process bus and memory stores (nothing is kept across restarts)",
        (false, true) => "in-process bus, memory sessions, rooms in MongoDB",
        (true, false) => "NATS with JetStream KV sessions, rooms in memory",
        (true, true) => "NATS with JetStream KV sessions, rooms in MongoDB",
    }
}

/// Runs the three services until `shutdown`, then drains the edge and stops the others.
pub async fn run(config: &Config, shutdown: CancellationToken) -> Result<(), AllError> {
    tracing::info!(
        mode = describe(config),
        url = %format!("http://localhost:{}/", config.port),
        "p2piano all: {}; open http://localhost:{}/",
        describe(config),
        config.port
    );
    let bus = match &config.nats_url {
        Some(url) => Bus::connect_nats(url, "p2piano-all").await?,
        None => Bus::in_process(),
    };
    let store: Arc<dyn RoomStore> = match &config.mongo_uri {
        Some(_) => Arc::new(p2piano_rooms::app::connect_mongo(config).await?),
        None => Arc::new(MemoryStore::new()),
    };
    let buckets = match &config.nats_url {
        Some(_) => p2piano_presence::app::jetstream_buckets(&bus, config).await?,
        None => p2piano_presence::app::memory_buckets(config),
    };
    // The edge's id is fixed here, so that presence knows which edge shares its process:
    // that one it never judges by its heartbeats (a busy process delays both alike).
    let mut config = config.clone();
    config.edge_id = Some(p2piano_edge::app::edge_id(&config));
    let mut inner = config.clone();
    inner.admin_addr = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    let rooms =
        p2piano_rooms::Application::build_with(&inner, bus.clone(), store, Clock::system()).await?;
    let presence = p2piano_presence::Application::build_beside(
        &inner,
        bus.clone(),
        buckets,
        Clock::system(),
        config.edge_id.clone(),
    )
    .await?;
    let edge = p2piano_edge::Application::build_with(&config, bus).await?;
    tracing::info!(
        port = edge.port(),
        edge_id = edge.edge_id(),
        "p2piano all started"
    );

    let services = CancellationToken::new();
    let mut rooms = tokio::spawn(rooms.run_until_stopped(services.clone()));
    let mut presence = tokio::spawn(presence.run_until_stopped(services.clone()));
    let edge_stop = CancellationToken::new();
    let mut edge = tokio::spawn(edge.run_until_stopped(edge_stop.clone()));

    // Runs until asked to stop, or until a service ends by itself (which is an error: the
    // others are then stopped too, so that the process exits rather than limp on).
    let early: Option<(&'static str, Result<(), AllError>)> = tokio::select! {
        _ = shutdown.cancelled() => None,
        r = &mut rooms => Some(("rooms", joined(r, "rooms"))),
        r = &mut presence => Some(("presence", joined(r, "presence"))),
        r = &mut edge => Some(("edge", joined(r, "edge"))),
    };
    let finished = early.as_ref().map(|(name, _)| *name);
    let mut failure = early.map(|(name, r)| r.err().unwrap_or(AllError::Stopped(name)));
    // The edge drains first (its clients reconnect elsewhere, its last heartbeat reaches
    // presence), then presence and rooms finish what they were answering.
    edge_stop.cancel();
    if finished != Some("edge")
        && let Err(e) = joined(edge.await, "edge")
    {
        failure.get_or_insert(e);
    }
    services.cancel();
    if finished != Some("presence")
        && let Err(e) = joined(presence.await, "presence")
    {
        failure.get_or_insert(e);
    }
    if finished != Some("rooms")
        && let Err(e) = joined(rooms.await, "rooms")
    {
        failure.get_or_insert(e);
    }
    failure.map_or(Ok(()), Err)
}

/// A service task's outcome; a panicked task counts as stopped.
fn joined<E: Into<AllError>>(
    r: Result<Result<(), E>, tokio::task::JoinError>,
    name: &'static str,
) -> Result<(), AllError> {
    match r {
        Ok(r) => r.map_err(Into::into),
        Err(_) => Err(AllError::Stopped(name)),
    }
}
