//! `p2piano`: one binary for every role — `edge`, `rooms`, `presence`, or `all` in one
//! process. This file only parses the command line; `p2piano::run` does the rest.

use clap::Parser;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    p2piano::run(p2piano::Cli::parse()).await
}
