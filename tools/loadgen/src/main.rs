//! `loadgen`: load scenarios against p2piano edges, and the reference server they are
//! compared with. See `cli.rs` for the commands and `README.md` beside `Cargo.toml`.

mod addr;
mod api;
mod bench_report;
mod cli;
mod client;
mod http;
mod plot;
mod procstat;
mod reference;
mod report;
mod scenarios;
mod sendlog;
mod seq;
mod target;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command, Common};
use crate::report::Report;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadgen: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(cli.command))
}

async fn run(command: Command) -> ExitCode {
    let (common, outcome): (&Common, _) = match &command {
        Command::ReferenceServer(args) => {
            return match reference::serve(args.port).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("loadgen reference-server: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::BenchReport(args) => {
            return match bench_report::run(&args.results, &args.markdown, args.plot.as_deref()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("loadgen bench-report: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Idle(a) => (&a.common, bounded(&a.common, scenarios::idle::run(a)).await),
        Command::Fanout(a) => (
            &a.common,
            bounded(&a.common, scenarios::fanout::run(a)).await,
        ),
        Command::JoinStorm(a) => (
            &a.common,
            bounded(&a.common, scenarios::join_storm::run(a)).await,
        ),
        Command::Reconnect(a) => (
            &a.common,
            bounded(&a.common, scenarios::reconnect::run(a)).await,
        ),
    };
    match outcome {
        Ok(report) => match report.emit(common.json.as_deref()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("loadgen: cannot write the report: {e}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs a scenario under the run's hard time limit (`--timeout`).
async fn bounded(
    common: &Common,
    scenario: impl Future<Output = Result<Report, String>>,
) -> Result<Report, String> {
    let limit = common.timeout.0;
    tokio::time::timeout(limit, scenario)
        .await
        .map_err(|_| format!("the run passed its limit of {} s", limit.as_secs_f64()))?
}
