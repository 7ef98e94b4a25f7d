//! The command line: `loadgen idle|fanout|join-storm|reconnect|reference-server`.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::target::{Target, parse_list};

/// Load generator for the p2piano edge, speaking the client dialect (Engine.IO/Socket.IO
/// over WebSocket, cookies from the REST API). Loopback targets only; every scenario is
/// bounded in count and time and stops by itself.
#[derive(Debug, Parser)]
#[command(name = "loadgen", version)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The scenarios, and the reference server.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Open and hold N sockets across rooms; connect rate, failures, server RSS per socket.
    Idle(IdleArgs),
    /// Every user sends KEY_DOWN/KEY_UP to the others in its room; delivery rate, latency,
    /// loss, reordering, server CPU per million deliveries.
    Fanout(FanoutArgs),
    /// Players arrive at a fixed rate: REST create/get and socket join latencies.
    JoinStorm(JoinStormArgs),
    /// Drain (SIGTERM) or kill (SIGKILL) one edge; time until every client is back on
    /// another, and the leave/join events the others saw.
    Reconnect(ReconnectArgs),
    /// The speed-of-light reference: a minimal fan-out server on the same protocol.
    ReferenceServer(ReferenceArgs),
    /// Writes the tables of BENCHMARKS.md and the latency plot from a results file.
    BenchReport(BenchReportArgs),
}

/// A comma-separated list of loopback base URLs.
#[derive(Clone, Debug)]
pub struct Targets(pub Vec<Target>);

impl FromStr for Targets {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_list(s).map(Targets)
    }
}

/// Seconds given as a number (fractions allowed), positive.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Secs(pub Duration);

impl FromStr for Secs {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let v: f64 = s
            .trim_end_matches('s')
            .parse()
            .map_err(|_| format!("{s}: seconds expected"))?;
        if !(v.is_finite() && v > 0.0 && v <= 86_400.0) {
            return Err(format!("{s}: between 0 and 86400 seconds"));
        }
        Ok(Secs(Duration::from_secs_f64(v)))
    }
}

/// Options every scenario has.
#[derive(Debug, Args)]
pub struct Common {
    /// Base URLs of the edges (comma-separated; clients are spread over them in turn).
    /// Loopback only.
    #[arg(
        long,
        visible_alias = "target",
        default_value = "http://127.0.0.1:3001"
    )]
    pub targets: Targets,
    /// Source addresses 127.0.0.1 ..= 127.0.0.K to spread client sockets over.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u8).range(1..=254))]
    pub sources: u8,
    /// Server process id(s) to measure (/proc RSS and CPU), comma-separated; summed.
    #[arg(long = "server-pid", value_delimiter = ',')]
    pub server_pids: Vec<u32>,
    /// Append the run's JSON line to this file (`-`: print it on stdout).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// A label for the run, copied into the JSON (e.g. `p2piano` or `reference`).
    #[arg(long)]
    pub label: Option<String>,
    /// Hard limit on the whole run (seconds); past it the run stops and fails.
    #[arg(long, default_value = "300")]
    pub timeout: Secs,
    /// Joins (REST + socket) in flight at once during set-up.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub concurrency: u64,
}

/// `idle`.
#[derive(Debug, Args)]
pub struct IdleArgs {
    /// Sockets to open and hold.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=200_000))]
    pub conns: u64,
    /// Players per room.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=16))]
    pub per_room: u64,
    /// How long to hold them all once they are in (seconds).
    #[arg(long, default_value = "5")]
    pub hold: Secs,
    /// Shared options.
    #[command(flatten)]
    pub common: Common,
}

/// `fanout`.
#[derive(Debug, Args)]
pub struct FanoutArgs {
    /// Rooms.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub rooms: u64,
    /// Users per room (rooms of more than 8 are created with maxParticipants).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(2..=16))]
    pub users: u64,
    /// Events (KEY_DOWN and KEY_UP alternately) each user sends per second; the server
    /// allows 100/s per session, beyond which 429 exceptions are counted.
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// How long users send (seconds).
    #[arg(long, default_value = "10")]
    pub duration: Secs,
    /// Longest wait for events in flight after the senders stop (seconds).
    #[arg(long, default_value = "3")]
    pub drain: Secs,
    /// Shared options.
    #[command(flatten)]
    pub common: Common,
}

/// `join-storm`.
#[derive(Debug, Args)]
pub struct JoinStormArgs {
    /// Joins started per second.
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// Joins in all.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub total: u64,
    /// Players per room: every this many joins, one creates a room.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=8))]
    pub per_room: u64,
    /// Shared options.
    #[command(flatten)]
    pub common: Common,
}

/// How to take the victim edge down.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Signal {
    /// SIGTERM: the edge drains (closes sockets with 1012).
    Term,
    /// SIGKILL: the edge dies at once.
    Kill,
    /// Send nothing; wait for someone else to stop it.
    None,
}

/// `reconnect`.
#[derive(Debug, Args)]
pub struct ReconnectArgs {
    /// Sockets, spread over the targets in turn.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub conns: u64,
    /// Players per room.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=16))]
    pub per_room: u64,
    /// Process id of the edge to take down (required unless `--signal none`).
    #[arg(long)]
    pub victim_pid: Option<u32>,
    /// Which of `--targets` (0-based) that edge serves: its clients are the ones expected
    /// to move.
    #[arg(long, default_value_t = 0)]
    pub victim: usize,
    /// Signal for the victim.
    #[arg(long, value_enum, default_value_t = Signal::Term)]
    pub signal: Signal,
    /// Put every client on the victim at first (instead of spreading them over the
    /// targets), so that all of them have to move.
    #[arg(long)]
    pub all_on_victim: bool,
    /// Longest wait for every client to be back (seconds).
    #[arg(long, default_value = "30")]
    pub duration: Secs,
    /// How long to keep counting leave/join events once all are back (seconds; more than
    /// the server's grace period).
    #[arg(long, default_value = "7")]
    pub observe: Secs,
    /// Shared options.
    #[command(flatten)]
    pub common: Common,
}

/// `reference-server`.
#[derive(Debug, Args)]
pub struct ReferenceArgs {
    /// Port on 127.0.0.1 (0: any free port; the chosen one is printed).
    #[arg(long, default_value_t = 3900)]
    pub port: u16,
}

/// `bench-report`.
#[derive(Debug, Args)]
pub struct BenchReportArgs {
    /// The JSON lines of the runs (`make bench` writes target/bench/results.jsonl).
    #[arg(long)]
    pub results: PathBuf,
    /// The Markdown file whose generated part (between the bench markers) is rewritten.
    #[arg(long, default_value = "BENCHMARKS.md")]
    pub markdown: PathBuf,
    /// Where to draw the latency plot (PNG).
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_a_fanout() {
        let cli = Cli::try_parse_from([
            "loadgen",
            "fanout",
            "--rooms",
            "2",
            "--users",
            "3",
            "--rate",
            "20",
            "--duration",
            "2.5",
            "--target",
            "http://localhost:1,http://127.0.0.2:2",
            "--server-pid",
            "10,11",
        ])
        .unwrap();
        let Command::Fanout(f) = cli.command else {
            panic!("not fanout")
        };
        assert_eq!((f.rooms, f.users, f.rate), (2, 3, 20.0));
        assert_eq!(f.duration, Secs(Duration::from_millis(2500)));
        assert_eq!(f.common.targets.0.len(), 2);
        assert_eq!(f.common.server_pids, vec![10, 11]);
    }

    #[test]
    fn refuses_remote_targets_and_bad_numbers() {
        for args in [
            &["loadgen", "idle", "--target", "http://10.0.0.1:3001"][..],
            &["loadgen", "idle", "--conns", "0"],
            &["loadgen", "idle", "--hold", "-1"],
            &["loadgen", "fanout", "--users", "1"],
            &["loadgen", "idle", "--sources", "0"],
        ] {
            assert!(Cli::try_parse_from(args).is_err(), "{args:?}");
        }
    }
}
