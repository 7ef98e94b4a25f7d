//! `reconnect --conns N`: clients spread over the edges of `--targets`; one edge is
//! drained (SIGTERM) or killed (SIGKILL); every client whose socket closes reconnects to
//! the next edge in the list with the same cookie and room, after socket.io-client's
//! randomized backoff (0.5–1.5 s, then doubling). Reports the time until every
//! client is back, and the leave/join events the others saw (a return within the grace
//! period should be announced to nobody).

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::{Ctx, Failures, JOIN_TIMEOUT, Seat, make_seats};
use crate::cli::{ReconnectArgs, Signal};
use crate::client::{Client, Frame, Seen};
use hdrhistogram::Histogram;

use crate::report::{Report, histogram};

/// Time the clients settle between the last join and the signal.
const SETTLE: Duration = Duration::from_secs(1);
/// socket.io-client's reconnection defaults: `reconnectionDelay`, `reconnectionDelayMax`
/// and `randomizationFactor`.
const BACKOFF_MIN_MS: f64 = 1000.0;
const BACKOFF_MAX_MS: f64 = 5000.0;
const BACKOFF_JITTER: f64 = 0.5;

/// The wait before reconnection attempt `attempt` (0 for the first), as socket.io-client
/// computes it: 1 s doubling per attempt up to 5 s, each spread by ±50 % at random. Real
/// clients do not all come back at the same instant, and neither do these.
fn backoff(attempt: u32, random: f64) -> Duration {
    let base = (BACKOFF_MIN_MS * 2f64.powi(attempt.min(16) as i32)).min(BACKOFF_MAX_MS);
    let deviation = base * BACKOFF_JITTER * (2.0 * random - 1.0);
    Duration::from_secs_f64((base + deviation).clamp(0.0, BACKOFF_MAX_MS) / 1000.0)
}

enum Ev {
    Joined(Result<(), String>),
    Closed(Option<u16>),
    Back {
        from_signal: Duration,
        from_close: Duration,
    },
    GaveUp(String),
}

#[derive(Default)]
struct Tally {
    seen_after: Seen,
    attempts_failed: u64,
    ended_by_server: bool,
}

/// The orchestrator's tallies of the clients' events.
struct Books {
    joined: u64,
    failures: Failures,
    closes: BTreeMap<String, u64>,
    closed: u64,
    back: u64,
    gave_up: Failures,
    from_signal: Histogram<u64>,
    from_close: Histogram<u64>,
    last_back: Option<Duration>,
}

impl Default for Books {
    fn default() -> Self {
        Self {
            joined: 0,
            failures: Failures::default(),
            closes: BTreeMap::new(),
            closed: 0,
            back: 0,
            gave_up: Failures::default(),
            from_signal: histogram(),
            from_close: histogram(),
            last_back: None,
        }
    }
}

impl Books {
    fn note(&mut self, ev: Ev) {
        match ev {
            Ev::Joined(Ok(())) => self.joined += 1,
            Ev::Joined(Err(e)) => self.failures.add(&e),
            Ev::Closed(code) => {
                self.closed += 1;
                let key = code.map_or("none".to_owned(), |c| c.to_string());
                *self.closes.entry(key).or_default() += 1;
            }
            Ev::Back {
                from_signal,
                from_close,
            } => {
                self.back += 1;
                let _ = self.from_signal.record(from_signal.as_micros() as u64 + 1);
                let _ = self.from_close.record(from_close.as_micros() as u64 + 1);
                self.last_back = Some(self.last_back.map_or(from_signal, |l| l.max(from_signal)));
            }
            Ev::GaveUp(why) => self.gave_up.add(&why),
        }
    }
}

struct Shared {
    ctx: Arc<Ctx>,
    signaled: CancellationToken,
    signal_at: OnceLock<Instant>,
    stop: CancellationToken,
    deadline: Duration,
    /// Where every client starts (`--all-on-victim`), else spread by index.
    first_target: Option<usize>,
}

/// Sends `signal` to `pid` with kill(1).
fn send_signal(pid: u32, signal: Signal) -> Result<(), String> {
    let name = match signal {
        Signal::Term => "TERM",
        Signal::Kill => "KILL",
        Signal::None => return Ok(()),
    };
    if pid <= 1 || pid == std::process::id() {
        return Err(format!("refusing to signal pid {pid}"));
    }
    let status = std::process::Command::new("kill")
        .args(["-s", name, &pid.to_string()])
        .status()
        .map_err(|e| format!("kill: {e}"))?;
    status
        .success()
        .then_some(())
        .ok_or_else(|| format!("kill -s {name} {pid} failed"))
}

/// One client: join, idle, and on every close go to the next edge until back.
async fn client_task(
    seat: Seat,
    sh: Arc<Shared>,
    tx: mpsc::UnboundedSender<Ev>,
    permit: OwnedSemaphorePermit,
) -> Tally {
    let mut tally = Tally::default();
    let targets = sh.ctx.targets.len();
    let mut at = sh.first_target.unwrap_or(seat.index % targets);
    let joined = seat.join_at(&sh.ctx, &sh.ctx.targets[at]).await;
    drop(permit);
    let mut client = match joined {
        Ok(c) => {
            let _ = tx.send(Ev::Joined(Ok(())));
            c
        }
        Err(e) => {
            let _ = tx.send(Ev::Joined(Err(e)));
            return tally;
        }
    };
    let mut before = Seen::default();
    loop {
        let ended = if sh.signaled.is_cancelled() {
            client
                .idle_until(sh.stop.cancelled(), &mut tally.seen_after)
                .await
        } else {
            client
                .idle_until(sh.signaled.cancelled(), &mut before)
                .await
        };
        let code = match ended {
            Ok(()) if sh.stop.is_cancelled() => {
                client.leave().await;
                return tally;
            }
            Ok(()) => continue,
            Err(Frame::Disconnected) => {
                tally.ended_by_server = true;
                let _ = tx.send(Ev::GaveUp("41/api, from the server".into()));
                return tally;
            }
            Err(Frame::Closed(code)) => code,
            Err(Frame::Event(_)) => continue,
        };
        let closed_at = Instant::now();
        let _ = tx.send(Ev::Closed(code));
        let give_up = *sh.signal_at.get().unwrap_or(&closed_at) + sh.deadline;
        let mut attempt = 0;
        client = loop {
            at = (at + 1) % targets;
            tokio::time::sleep(backoff(attempt, rand::random())).await;
            attempt += 1;
            if Instant::now() >= give_up || sh.stop.is_cancelled() {
                let _ = tx.send(Ev::GaveUp("not back in time".into()));
                return tally;
            }
            let left = give_up.saturating_duration_since(Instant::now());
            let target = &sh.ctx.targets[at];
            let name = format!("lg{}", seat.index);
            // Back as the same page, with the page id it was given, as socket.io-client
            // reconnects: within the grace period that is announced to nobody.
            let join = Client::join(
                &sh.ctx.sources,
                target,
                (&seat.code, &seat.cookie, client.pid.as_deref()),
                &name,
                left.min(JOIN_TIMEOUT),
            );
            match join.await {
                Ok(c) => break c,
                Err(_) => tally.attempts_failed += 1,
            }
        };
        let now = Instant::now();
        let _ = tx.send(Ev::Back {
            from_signal: now.duration_since(*sh.signal_at.get().unwrap_or(&closed_at)),
            from_close: now.duration_since(closed_at),
        });
    }
}

/// Runs the scenario.
pub async fn run(args: &ReconnectArgs) -> Result<Report, String> {
    let ctx = Ctx::new(&args.common);
    if args.victim >= ctx.targets.len() {
        return Err("--victim must index --targets".into());
    }
    if args.signal != Signal::None && args.victim_pid.is_none() {
        return Err("--victim-pid is required unless --signal none".into());
    }
    if ctx.targets.len() < 2 {
        eprintln!("loadgen: one target only: clients have no other edge to go to");
    }
    let n = usize::try_from(args.conns).map_err(|e| e.to_string())?;
    let per_room = usize::try_from(args.per_room).map_err(|e| e.to_string())?;
    let mut report = ctx.report("reconnect", &args.common);
    report.param("conns", args.conns);
    report.param("per_room", args.per_room);
    report.param("victim", args.victim as u64);
    report.param("signal", format!("{:?}", args.signal).to_lowercase());
    report.param("all_on_victim", args.all_on_victim);

    let (seats, mut failures) = make_seats(&ctx, n, per_room).await;
    let first_target = args.all_on_victim.then_some(args.victim);
    let expected = seats
        .iter()
        .filter(|s| first_target.unwrap_or(s.index % ctx.targets.len()) == args.victim)
        .count() as u64;
    let sh = Arc::new(Shared {
        ctx: ctx.clone(),
        signaled: CancellationToken::new(),
        signal_at: OnceLock::new(),
        stop: CancellationToken::new(),
        deadline: args.duration.0,
        first_target,
    });
    let (tx, mut rx) = mpsc::unbounded_channel::<Ev>();
    let sem = Arc::new(Semaphore::new(ctx.concurrency));
    let mut tasks = Vec::with_capacity(seats.len());
    let spawning = seats.len();
    for seat in seats {
        let permit = sem
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| e.to_string())?;
        let (sh, tx) = (sh.clone(), tx.clone());
        tasks.push(tokio::spawn(client_task(seat, sh, tx, permit)));
    }
    drop(tx);
    let mut books = Books::default();
    let mut settled = 0;
    while settled < spawning {
        match rx.recv().await {
            Some(ev) => {
                settled += usize::from(matches!(ev, Ev::Joined(_)));
                books.note(ev);
            }
            None => break,
        }
    }
    tokio::time::sleep(SETTLE).await;
    let signal_at = Instant::now();
    let _ = sh.signal_at.set(signal_at);
    sh.signaled.cancel();
    if let Some(pid) = args.victim_pid {
        send_signal(pid, args.signal)?;
    }
    // Until every moved client is back (or the deadline), then observe.
    let deadline = signal_at + args.duration.0;
    loop {
        let all_back = books.closed >= expected
            && books.back + books.gave_up.total() >= books.closed
            && books.closed > 0;
        if all_back || Instant::now() >= deadline {
            break;
        }
        match tokio::time::timeout(Duration::from_millis(50), rx.recv()).await {
            Ok(Some(ev)) => books.note(ev),
            Ok(None) => break,
            Err(_) => {}
        }
    }
    let all_back_at = signal_at.elapsed();
    let observe_until = Instant::now() + args.observe.0;
    while let Ok(Some(ev)) = tokio::time::timeout_at(observe_until.into(), rx.recv()).await {
        books.note(ev);
    }
    sh.stop.cancel();
    let mut seen = Seen::default();
    let (mut attempts_failed, mut ended_by_server) = (0u64, 0u64);
    for t in tasks {
        if let Ok(t) = t.await {
            seen.user_connect += t.seen_after.user_connect;
            seen.user_disconnect += t.seen_after.user_disconnect;
            seen.exceptions += t.seen_after.exceptions;
            attempts_failed += t.attempts_failed;
            ended_by_server += u64::from(t.ended_by_server);
        }
    }

    failures.absorb(&books.failures);
    let Books {
        joined,
        closes,
        closed,
        back,
        gave_up,
        from_signal,
        from_close,
        last_back,
        ..
    } = books;
    report.set("joined", joined);
    report.set("failed", failures.total());
    report.set("failures", failures.to_json());
    report.set("expected_to_move", expected);
    report.set("closed", closed);
    report.set(
        "close_codes",
        Value::Object(closes.into_iter().map(|(k, v)| (k, json!(v))).collect()),
    );
    report.set("back", back);
    report.set("not_back", gave_up.total());
    report.set("not_back_reasons", gave_up.to_json());
    report.set("ended_by_server_41", ended_by_server);
    report.set("failed_attempts", attempts_failed);
    report.set_opt(
        "time_to_all_back_ms",
        last_back
            .filter(|_| back >= expected && back > 0)
            .map(|d| d.as_secs_f64() * 1000.0),
    );
    report.set("waited_ms", all_back_at.as_secs_f64() * 1000.0);
    report.latency("back_from_signal_us", &from_signal);
    report.latency("back_from_close_us", &from_close);
    report.set("user_disconnect_seen", seen.user_disconnect);
    report.set("user_connect_seen", seen.user_connect);
    report.set("exceptions", seen.exceptions);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_socket_io_clients() {
        assert_eq!(backoff(0, 0.5), Duration::from_secs(1));
        assert_eq!(backoff(0, 0.0), Duration::from_millis(500));
        assert_eq!(backoff(1, 0.5), Duration::from_secs(2));
        assert_eq!(backoff(2, 0.5), Duration::from_secs(4));
        assert_eq!(backoff(3, 0.5), Duration::from_secs(5));
        assert_eq!(backoff(3, 1.0), Duration::from_secs(5));
        assert_eq!(backoff(40, 0.0), Duration::from_millis(2500));
    }
}
