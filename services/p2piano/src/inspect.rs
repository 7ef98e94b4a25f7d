//! `p2piano sub` and `p2piano request`: look at the bus without the nats CLI. They read
//! `NATS_URL` (default `nats://127.0.0.1:4222`) and nothing else.

use std::process::ExitCode;
use std::time::Duration;

use futures::StreamExt;
use p2piano_bus::{Bus, Headers};
use p2piano_config::DEFAULT_NATS_URL;

use crate::Command;

/// Runs an inspection command.
pub async fn run(command: Command) -> ExitCode {
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| DEFAULT_NATS_URL.to_owned());
    let bus = match Bus::connect_nats(&url, "p2piano-inspect").await {
        Ok(b) => b,
        Err(e) => {
            eprintln!("cannot connect to {url}: {e}");
            return ExitCode::from(1);
        }
    };
    let result = match command {
        Command::Sub { subject, count } => sub(&bus, &subject, count).await,
        Command::Request {
            subject,
            body,
            timeout_ms,
        } => request(&bus, &subject, body, Duration::from_millis(timeout_ms)).await,
        _ => Ok(()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
    }
}

/// One output line: `{"subject": ..., "data": <payload as JSON, or as a string>}`.
fn line(subject: &str, payload: &[u8]) -> String {
    let data = serde_json::from_slice::<serde_json::Value>(payload).unwrap_or_else(|_| {
        serde_json::Value::String(String::from_utf8_lossy(payload).into_owned())
    });
    serde_json::json!({"subject": subject, "data": data}).to_string()
}

async fn sub(bus: &Bus, subject: &str, count: Option<u64>) -> Result<(), p2piano_bus::BusError> {
    let mut s = bus.subscribe(subject).await?;
    bus.flush().await?;
    eprintln!("listening on {subject}");
    let mut seen = 0;
    while let Some(msg) = s.next().await {
        println!("{}", line(&msg.subject, &msg.payload));
        seen += 1;
        if count.is_some_and(|c| seen >= c) {
            break;
        }
    }
    Ok(())
}

async fn request(
    bus: &Bus,
    subject: &str,
    body: String,
    timeout: Duration,
) -> Result<(), p2piano_bus::BusError> {
    let reply = bus
        .request(subject, Headers::new(), body.into(), timeout)
        .await?;
    println!("{}", line(&reply.subject, &reply.payload));
    Ok(())
}
