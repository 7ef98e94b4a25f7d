//! `fanout --rooms R --users U --rate r`: every user sends KEY_DOWN/KEY_UP to all the
//! others in its room at r events/s. Reports delivered events/s, latency percentiles
//! (send time looked up from the sender's log by the sequence carried in the note), lost
//! and reordered events, 429s, and server CPU seconds per million deliveries.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::fanout_player::{Plan, PlayerStats, play};
use super::{Ctx, make_seats, per_sec};
use crate::cli::FanoutArgs;
use crate::client::Seen;
use crate::procstat;
use crate::report::Report;
use crate::sendlog::SendLog;

/// Most players a fan-out run may have.
pub const MAX_PLAYERS: u64 = 20_000;
/// Time between handing out the plan and the first event.
const LEAD: Duration = Duration::from_millis(300);

/// Runs the scenario.
pub async fn run(args: &FanoutArgs) -> Result<Report, String> {
    if !(args.rate.is_finite() && args.rate > 0.0 && args.rate <= 1000.0) {
        return Err("--rate must be in (0, 1000] events/s per user".into());
    }
    if args.rooms * args.users > MAX_PLAYERS {
        return Err(format!("rooms x users must be at most {MAX_PLAYERS}"));
    }
    if args.rate > 100.0 {
        eprintln!(
            "loadgen: --rate {} is above the server's note limit (100/s per session): expect 429s",
            args.rate
        );
    }
    let ctx = Ctx::new(&args.common);
    let users = usize::try_from(args.users).map_err(|e| e.to_string())?;
    let players = usize::try_from(args.rooms).map_err(|e| e.to_string())? * users;
    let mut report = ctx.report("fanout", &args.common);
    report.param("rooms", args.rooms);
    report.param("users", args.users);
    report.param("rate", args.rate);
    report.param("duration_s", args.duration.0.as_secs_f64());

    let (seats, mut failures) = make_seats(&ctx, players, users).await;
    let (plan_tx, plan_rx) = watch::channel::<Option<Arc<Plan>>>(None);
    let (joined_tx, mut joined_rx) = mpsc::unbounded_channel::<(usize, Result<String, String>)>();
    let stop = CancellationToken::new();
    let sem = Arc::new(Semaphore::new(ctx.concurrency));
    let mut tasks = Vec::with_capacity(seats.len());
    let room_of: HashMap<usize, usize> = seats.iter().map(|s| (s.index, s.room)).collect();
    let spawning = seats.len();
    for seat in seats {
        let permit = sem
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| e.to_string())?;
        let (ctx, joined_tx, stop, mut plan_rx) = (
            ctx.clone(),
            joined_tx.clone(),
            stop.clone(),
            plan_rx.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let joined = seat.join(&ctx).await;
            drop(permit);
            let mut client = match joined {
                Ok(c) => {
                    let _ = joined_tx.send((seat.index, Ok(c.user_id.clone())));
                    c
                }
                Err(e) => {
                    let _ = joined_tx.send((seat.index, Err(e)));
                    return None;
                }
            };
            drop(joined_tx);
            let wait_plan = async {
                let got = plan_rx.wait_for(Option::is_some).await;
                got.ok().and_then(|p| p.clone())
            };
            let mut before = Seen::default();
            let plan = tokio::select! {
                got = client.idle_until(wait_plan, &mut before) => got.ok().flatten(),
                _ = stop.cancelled() => None,
            }?;
            Some(play(client, seat.index, plan, stop).await)
        }));
    }
    drop(joined_tx);
    let mut ids: HashMap<usize, String> = HashMap::new();
    for _ in 0..spawning {
        match joined_rx.recv().await {
            Some((i, Ok(id))) => {
                ids.insert(i, id);
            }
            Some((_, Err(e))) => failures.add(&e),
            None => break,
        }
    }

    // The plan: who sends to whom, and when.
    let mut by_room: HashMap<usize, Vec<usize>> = HashMap::new();
    for &i in ids.keys() {
        by_room.entry(room_of[&i]).or_default().push(i);
    }
    let mut peers = vec![Vec::new(); players];
    let mut suffix = vec![String::new(); players];
    for members in by_room.values() {
        for &me in members {
            let others: Vec<usize> = members.iter().copied().filter(|&o| o != me).collect();
            let list: Vec<String> = others.iter().map(|o| format!("\"{}\"", ids[o])).collect();
            suffix[me] = format!("\"targetUserIds\":[{}]}}]", list.join(","));
            peers[me] = others.iter().map(|&o| o as u32).collect();
        }
    }
    let start = Instant::now() + LEAD;
    let plan = Arc::new(Plan {
        base: Instant::now(),
        logs: (0..players).map(|_| SendLog::new()).collect(),
        index_of: ids.iter().map(|(&i, id)| (id.clone(), i as u32)).collect(),
        peers,
        suffix,
        start,
        end: start + args.duration.0,
        period: Duration::from_secs_f64(1.0 / args.rate),
        received: AtomicU64::new(0),
    });
    let _ = plan_tx.send(Some(plan.clone()));

    tokio::time::sleep_until(start.into()).await;
    let cpu0 = procstat::cpu_seconds_sum(&ctx.server_pids);
    let own0 = procstat::own_cpu_seconds();
    let machine0 = procstat::machine_ticks();
    tokio::time::sleep_until(plan.end.into()).await;
    let machine1 = procstat::machine_ticks();
    // Let the last sends go out, then wait for what is in flight.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let drain_until = Instant::now() + args.drain.0;
    let drain_start = Instant::now();
    while plan.received.load(Ordering::Relaxed) < plan.expected() && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drain_s = drain_start.elapsed().as_secs_f64();
    let cpu1 = procstat::cpu_seconds_sum(&ctx.server_pids);
    let own1 = procstat::own_cpu_seconds();
    stop.cancel();

    let mut total = PlayerStats::default();
    let mut closed_early = 0u64;
    for task in tasks {
        if let Ok(Some(s)) = task.await {
            closed_early += u64::from(s.closed_early);
            total.absorb(&s);
        }
    }
    let secs = args.duration.0.as_secs_f64();
    let expected = plan.expected();
    report.set("players", players as u64);
    report.set("joined", ids.len() as u64);
    report.set("failed", failures.total());
    report.set("failures", failures.to_json());
    report.set("sent", total.sent);
    report.set("sent_per_s", per_sec(total.sent, secs));
    report.set("expected_deliveries", expected);
    report.set("delivered", total.received);
    report.set("delivered_per_s", per_sec(total.received, secs));
    report.set("lost", total.lost);
    report.set("reordered", total.reordered);
    report.set("unmatched", total.unmatched);
    report.latency("latency_us", &total.latency);
    report.set("exceptions_429", total.exceptions_429);
    report.set("exceptions_other", total.exceptions_other);
    report.set("closed_early", closed_early);
    report.set("user_disconnect_seen", total.seen.user_disconnect);
    report.set("drain_s", drain_s);
    let server_cpu = cpu1.zip(cpu0).map(|(a, b)| a - b);
    report.set_opt("server_cpu_s", server_cpu);
    report.set_opt(
        "server_cpu_s_per_million",
        server_cpu
            .filter(|_| total.received > 0)
            .map(|c| c / total.received as f64 * 1e6),
    );
    report.set_opt("loadgen_cpu_s", own1.zip(own0).map(|(a, b)| a - b));
    report.set_opt(
        "machine_busy_pct",
        machine0
            .zip(machine1)
            .and_then(|(a, b)| procstat::busy_percent(a, b)),
    );
    Ok(report)
}
