//! The `p2piano` command: configuration, telemetry, signals, and the role to run.
//!
//! Exit codes: 0 after a clean stop, 1 when the service failed while running or at start-up,
//! 2 when the configuration is invalid (the message names the variable).

mod all;
pub mod cluster;
mod inspect;
mod signals;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use p2piano_config::{Config, LogFormat, Role};
use p2piano_telemetry::TelemetryOptions;
use tokio_util::sync::CancellationToken;

/// Command line of `p2piano`.
#[derive(Debug, Parser)]
#[command(
    name = "p2piano",
    version,
    about = "Backend of p2piano: play music together in the browser"
)]
pub struct Cli {
    /// Which part of the service to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The roles one binary can take, and two small tools for looking at the bus.
#[derive(Clone, Debug, Subcommand)]
pub enum Command {
    /// HTTP API and Socket.IO gateway (stateless; run as many as needed).
    Edge,
    /// Room lifecycle and membership; owns MongoDB.
    Rooms,
    /// Sessions, connections and edge liveness; keeps its state in JetStream KV.
    Presence,
    /// Everything in one process; without NATS_URL/MONGO_URI it needs nothing else.
    All,
    /// Print the messages of a NATS subject (wildcards allowed) as they pass, one JSON line
    /// each; like `nats sub`, for machines without the nats CLI.
    Sub {
        /// Subject to watch, e.g. 'p2piano.room.*.members'.
        subject: String,
        /// Stop after this many messages.
        #[arg(long)]
        count: Option<u64>,
    },
    /// Send one request and print the reply; like `nats request`.
    Request {
        /// Subject, e.g. p2piano.rpc.rooms.get.
        subject: String,
        /// JSON body, e.g. '{"code":"fxa3x"}'.
        body: String,
        /// How long to wait for the reply, in milliseconds.
        #[arg(long, default_value_t = 5000)]
        timeout_ms: u64,
    },
}

impl Command {
    fn role(&self) -> Option<Role> {
        match self {
            Command::Edge => Some(Role::Edge),
            Command::Rooms => Some(Role::Rooms),
            Command::Presence => Some(Role::Presence),
            Command::All => Some(Role::All),
            Command::Sub { .. } | Command::Request { .. } => None,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Command::Edge => "edge",
            Command::Rooms => "rooms",
            Command::Presence => "presence",
            Command::All => "all",
            Command::Sub { .. } => "sub",
            Command::Request { .. } => "request",
        }
    }
}

/// Loads and checks the configuration, installs telemetry and signal handling, and runs
/// the chosen role until SIGTERM or SIGINT.
pub async fn run(cli: Cli) -> ExitCode {
    let command = cli.command;
    let Some(role) = command.role() else {
        return inspect::run(command).await;
    };
    let config = match Config::load().and_then(|c| c.validate(role).map(|()| c)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("p2piano {}: {e}", command.name());
            return ExitCode::from(2);
        }
    };
    let service_name = config
        .service_name
        .clone()
        .unwrap_or_else(|| format!("p2piano-{}", command.name()));
    let _telemetry = match p2piano_telemetry::init(TelemetryOptions {
        service_name,
        level: config.log_level.clone(),
        json: matches!(config.log_format, LogFormat::Json),
        otlp_endpoint: config.otel_exporter_otlp_endpoint.clone(),
    }) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("p2piano {}: telemetry: {e}", command.name());
            return ExitCode::from(2);
        }
    };
    let shutdown = CancellationToken::new();
    signals::cancel_on_signal(shutdown.clone());
    let result = match command {
        Command::Rooms => run_rooms(&config, shutdown)
            .await
            .map_err(|e| e.to_string()),
        Command::Presence => run_presence(&config, shutdown)
            .await
            .map_err(|e| e.to_string()),
        Command::Edge => run_edge(&config, shutdown).await.map_err(|e| e.to_string()),
        Command::All => all::run(&config, shutdown).await.map_err(|e| e.to_string()),
        // Handled above: they need no configuration or telemetry.
        Command::Sub { .. } | Command::Request { .. } => return ExitCode::from(1),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, role = command.name(), "stopped with an error");
            ExitCode::from(1)
        }
    }
}

async fn run_rooms(
    config: &Config,
    shutdown: CancellationToken,
) -> Result<(), p2piano_rooms::AppError> {
    let app = p2piano_rooms::Application::build(config).await?;
    tracing::info!(admin_port = app.admin_port(), "p2piano rooms started");
    app.run_until_stopped(shutdown).await
}

async fn run_presence(
    config: &Config,
    shutdown: CancellationToken,
) -> Result<(), p2piano_presence::AppError> {
    let app = p2piano_presence::Application::build(config).await?;
    tracing::info!(admin_port = app.admin_port(), "p2piano presence started");
    app.run_until_stopped(shutdown).await
}

async fn run_edge(
    config: &Config,
    shutdown: CancellationToken,
) -> Result<(), p2piano_edge::AppError> {
    let app = p2piano_edge::Application::build(config).await?;
    tracing::info!(
        port = app.port(),
        edge_id = app.edge_id(),
        admin_port = app.admin_port(),
        "p2piano edge started"
    );
    app.run_until_stopped(shutdown).await
}
