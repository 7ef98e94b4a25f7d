//! `join-storm --rate r --total n`: players arrive at r per second (open loop: an arrival
//! does not wait for the previous one). Every `per_room`-th creates a room
//! (`POST /api/room`), the others read it for a cookie (`GET /api/room/:id`); then each
//! joins over the socket. Reports the latency of each step and of the whole.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::{Ctx, Failures, Seat, per_sec};
use crate::api;
use crate::cli::JoinStormArgs;
use crate::client::Seen;
use crate::procstat;
use crate::report::{Report, histogram};

/// How long players stay once the last one is in, before all leave.
const SETTLE: Duration = Duration::from_millis(300);

enum Outcome {
    Joined {
        created: bool,
        rest: Duration,
        join: Duration,
        total: Duration,
    },
    Failed(String),
}

type RoomCode = watch::Sender<Option<Result<String, String>>>;

/// Runs the scenario.
pub async fn run(args: &JoinStormArgs) -> Result<Report, String> {
    if !(args.rate.is_finite() && args.rate > 0.0 && args.rate <= 10_000.0) {
        return Err("--rate must be in (0, 10000] joins/s".into());
    }
    let ctx = Ctx::new(&args.common);
    let total = usize::try_from(args.total).map_err(|e| e.to_string())?;
    let per_room = usize::try_from(args.per_room).map_err(|e| e.to_string())?;
    let mut report = ctx.report("join-storm", &args.common);
    report.param("rate", args.rate);
    report.param("total", args.total);
    report.param("per_room", args.per_room);

    let rooms: Arc<Vec<RoomCode>> = Arc::new(
        (0..total.div_ceil(per_room))
            .map(|_| watch::channel(None).0)
            .collect(),
    );
    let (tx, mut rx) = mpsc::unbounded_channel::<Outcome>();
    let stop = CancellationToken::new();
    let cpu0 = procstat::cpu_seconds_sum(&ctx.server_pids);
    let own0 = procstat::own_cpu_seconds();
    let t0 = Instant::now();
    let period = Duration::from_secs_f64(1.0 / args.rate);
    let mut tasks = Vec::with_capacity(total);
    let mut late = histogram();
    for i in 0..total {
        let due = t0 + period.mul_f64(i as f64);
        tokio::time::sleep_until(due.into()).await;
        let _ = late.record(due.elapsed().as_micros() as u64 + 1);
        let (ctx, tx, stop, rooms) = (ctx.clone(), tx.clone(), stop.clone(), rooms.clone());
        tasks.push(tokio::spawn(async move {
            let arrived = Instant::now();
            let room = i / per_room;
            let mut seat = Seat {
                index: i,
                room,
                code: String::new(),
                cookie: String::new(),
            };
            let target = ctx.target(room).clone();
            let created = i % per_room == 0;
            let rest_start;
            if created {
                rest_start = Instant::now();
                match api::create_room(&ctx.sources, &target, per_room).await {
                    Ok(c) => {
                        rooms[room].send_replace(Some(Ok(c.code.clone())));
                        (seat.code, seat.cookie) = (c.code, c.cookie);
                    }
                    Err(e) => {
                        rooms[room].send_replace(Some(Err(e.clone())));
                        let _ = tx.send(Outcome::Failed(e));
                        return;
                    }
                }
            } else {
                let mut code_rx = rooms[room].subscribe();
                let code = code_rx
                    .wait_for(Option::is_some)
                    .await
                    .ok()
                    .and_then(|c| c.clone());
                match code {
                    Some(Ok(code)) => seat.code = code,
                    _ => {
                        let _ = tx.send(Outcome::Failed("room was not created".into()));
                        return;
                    }
                }
                rest_start = Instant::now();
                match api::guest_cookie(&ctx.sources, &target, &seat.code).await {
                    Ok(c) => seat.cookie = c,
                    Err(e) => {
                        let _ = tx.send(Outcome::Failed(e));
                        return;
                    }
                }
            }
            let rest = rest_start.elapsed();
            let join_start = Instant::now();
            let mut client = match seat.join_at(&ctx, &target).await {
                Ok(c) => c,
                Err(e) => {
                    let _ = tx.send(Outcome::Failed(e));
                    return;
                }
            };
            let _ = tx.send(Outcome::Joined {
                created,
                rest,
                join: join_start.elapsed(),
                total: arrived.elapsed(),
            });
            drop(tx);
            let mut seen = Seen::default();
            if client.idle_until(stop.cancelled(), &mut seen).await.is_ok() {
                client.leave().await;
            }
        }));
    }
    drop(tx);
    let (mut create, mut get, mut join, mut whole) =
        (histogram(), histogram(), histogram(), histogram());
    let mut failures = Failures::default();
    let mut joined = 0u64;
    let us = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
    while let Some(o) = rx.recv().await {
        match o {
            Outcome::Joined {
                created,
                rest,
                join: j,
                total: t,
            } => {
                joined += 1;
                let rest_hist = if created { &mut create } else { &mut get };
                let _ = rest_hist.record(us(rest));
                let _ = join.record(us(j));
                let _ = whole.record(us(t));
            }
            Outcome::Failed(e) => failures.add(&e),
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu1 = procstat::cpu_seconds_sum(&ctx.server_pids);
    let own1 = procstat::own_cpu_seconds();
    tokio::time::sleep(SETTLE).await;
    stop.cancel();
    for t in tasks {
        let _ = t.await;
    }

    report.set("joined", joined);
    report.set("failed", failures.total());
    report.set("failures", failures.to_json());
    report.set("elapsed_s", elapsed);
    report.set("joins_per_s", per_sec(joined, elapsed));
    report.latency("create_latency_us", &create);
    report.latency("get_latency_us", &get);
    report.latency("socket_join_latency_us", &join);
    report.latency("total_latency_us", &whole);
    report.latency("arrival_lag_us", &late);
    report.set_opt("server_cpu_s", cpu1.zip(cpu0).map(|(a, b)| a - b));
    report.set_opt("loadgen_cpu_s", own1.zip(own0).map(|(a, b)| a - b));
    Ok(report)
}
