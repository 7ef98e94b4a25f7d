//! `idle --conns N`: open N sockets across rooms and hold them; report the REST and
//! connect rates, failures, join latency, and the server's RSS per socket once all are in.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::{Ctx, make_seats, per_sec};
use crate::cli::IdleArgs;
use crate::client::{Frame, Seen};
use crate::procstat;
use crate::report::{Report, histogram};

/// Time the server gets to settle after the last join before its RSS is read.
const SETTLE: Duration = Duration::from_millis(500);

/// What one held socket saw.
#[derive(Default)]
struct Held {
    seen: Seen,
    dropped: bool,
}

/// Runs the scenario.
pub async fn run(args: &IdleArgs) -> Result<Report, String> {
    let ctx = Ctx::new(&args.common);
    let n = usize::try_from(args.conns).map_err(|e| e.to_string())?;
    let per_room = usize::try_from(args.per_room).map_err(|e| e.to_string())?;
    let mut report = ctx.report("idle", &args.common);
    report.param("conns", args.conns);
    report.param("per_room", args.per_room);
    report.param("hold_s", args.hold.0.as_secs_f64());
    let cpu0 = procstat::own_cpu_seconds();

    let rss_before = procstat::rss_kib_sum(&ctx.server_pids);
    let t = Instant::now();
    let (seats, mut failures) = make_seats(&ctx, n, per_room).await;
    let rest_s = t.elapsed().as_secs_f64();
    let rss_sessions = procstat::rss_kib_sum(&ctx.server_pids);

    let stop = CancellationToken::new();
    let (tx, mut rx) = mpsc::unbounded_channel::<Result<Duration, String>>();
    let sem = Arc::new(Semaphore::new(ctx.concurrency));
    let t = Instant::now();
    let mut tasks = Vec::with_capacity(seats.len());
    let spawning = seats.len();
    for seat in seats {
        let permit = sem
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| e.to_string())?;
        let (ctx, tx, stop) = (ctx.clone(), tx.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let began = Instant::now();
            let joined = seat.join(&ctx).await;
            drop(permit);
            let mut client = match joined {
                Ok(c) => {
                    let _ = tx.send(Ok(began.elapsed()));
                    c
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return Held::default();
                }
            };
            drop(tx);
            let mut held = Held::default();
            match client.idle_until(stop.cancelled(), &mut held.seen).await {
                Ok(()) => client.leave().await,
                Err(Frame::Closed(_) | Frame::Disconnected) => held.dropped = true,
                Err(Frame::Event(_)) => {}
            }
            held
        }));
    }
    drop(tx);
    let mut join_lat = histogram();
    let mut joined = 0u64;
    for _ in 0..spawning {
        match rx.recv().await {
            Some(Ok(d)) => {
                joined += 1;
                let _ = join_lat.record(d.as_micros() as u64);
            }
            Some(Err(e)) => failures.add(&e),
            None => break,
        }
    }
    let connect_s = t.elapsed().as_secs_f64();
    tokio::time::sleep(SETTLE).await;
    let rss_after = procstat::rss_kib_sum(&ctx.server_pids);
    tokio::time::sleep(args.hold.0).await;
    stop.cancel();
    let mut seen = Seen::default();
    let mut dropped = 0u64;
    for task in tasks {
        if let Ok(h) = task.await {
            dropped += u64::from(h.dropped);
            seen.user_connect += h.seen.user_connect;
            seen.user_disconnect += h.seen.user_disconnect;
            seen.exceptions += h.seen.exceptions;
        }
    }

    report.set("joined", joined);
    report.set("failed", failures.total());
    report.set("failures", failures.to_json());
    report.set("rest_s", rest_s);
    report.set("rest_sessions_per_s", per_sec(n as u64, rest_s));
    report.set("connect_s", connect_s);
    report.set("connect_per_s", per_sec(joined, connect_s));
    report.latency("join_latency_us", &join_lat);
    report.set("dropped_during_hold", dropped);
    report.set("user_connect_seen", seen.user_connect);
    report.set("exceptions", seen.exceptions);
    report.set_opt("server_rss_before_kib", rss_before);
    report.set_opt("server_rss_after_sessions_kib", rss_sessions);
    report.set_opt("server_rss_after_kib", rss_after);
    let per_conn = |from: Option<u64>| match (from, rss_after) {
        (Some(a), Some(b)) if joined > 0 => Some(b.saturating_sub(a) as f64 / joined as f64),
        _ => None,
    };
    report.set_opt("server_rss_per_conn_kib", per_conn(rss_sessions));
    report.set_opt("server_rss_per_conn_with_session_kib", per_conn(rss_before));
    report.set_opt(
        "loadgen_cpu_s",
        procstat::own_cpu_seconds().zip(cpu0).map(|(a, b)| a - b),
    );
    Ok(report)
}
