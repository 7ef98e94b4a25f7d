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
//! The deployment is [`Plan::all`], built like every other ([`crate::cluster`]).

use p2piano_config::Config;
use tokio_util::sync::CancellationToken;

use crate::cluster::{ClusterError, Options, Plan};

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
/// A service that ends by itself is an error: the others are then stopped too, so that the
/// process exits rather than limp on.
pub async fn run(config: &Config, shutdown: CancellationToken) -> Result<(), ClusterError> {
    tracing::info!(
        mode = describe(config),
        url = %format!("http://localhost:{}/", config.port),
        "p2piano all: {}; open http://localhost:{}/",
        describe(config),
        config.port
    );
    let mut cluster = Plan::all(config).start(Options::default()).await?;
    if let Some(edge) = cluster.edges().next() {
        tracing::info!(port = edge.port, edge_id = %edge.name, "p2piano all started");
    }
    let failure = tokio::select! {
        _ = shutdown.cancelled() => None,
        (_, r) = cluster.until_one_stops() => r.err(),
    };
    let stopped = cluster.shutdown().await;
    match failure {
        Some(e) => Err(e),
        None => stopped,
    }
}
