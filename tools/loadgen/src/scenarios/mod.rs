//! The scenarios, and what they share: the run context, seats in rooms (a room code and a
//! cookie per player), joining, and failure tallies.

pub mod fanout;
mod fanout_player;
pub mod idle;
pub mod join_storm;
pub mod reconnect;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};

use crate::addr::Sources;
use crate::api;
use crate::cli::Common;
use crate::client::Client;
use crate::report::Report;
use crate::target::Target;

/// Longest a socket join (TCP, upgrade, namespace connect, `ROOM_JOIN`) may take.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(15);

/// What every scenario works with.
#[derive(Debug)]
pub struct Ctx {
    /// Where to connect from.
    pub sources: Sources,
    /// The edges, used in turn.
    pub targets: Vec<Target>,
    /// Joins in flight at once during set-up.
    pub concurrency: usize,
    /// Server processes to measure.
    pub server_pids: Vec<u32>,
}

impl Ctx {
    /// The context for `common`.
    pub fn new(common: &Common) -> Arc<Ctx> {
        Arc::new(Ctx {
            sources: Sources::new(common.sources),
            targets: common.targets.0.clone(),
            concurrency: usize::try_from(common.concurrency).unwrap_or(128),
            server_pids: common.server_pids.clone(),
        })
    }

    /// The `i`-th target in turn.
    pub fn target(&self, i: usize) -> &Target {
        &self.targets[i % self.targets.len()]
    }

    /// An empty report for `scenario` with the shared parameters filled in.
    pub fn report(&self, scenario: &str, common: &Common) -> Report {
        let mut r = Report::new(
            scenario,
            common.label.clone(),
            self.targets.iter().map(Target::url).collect(),
        );
        r.param("sources", common.sources);
        r.param("server_pids", json!(self.server_pids));
        r
    }
}

/// One player's place: its room, cookie and edge.
#[derive(Clone, Debug)]
pub struct Seat {
    /// Index of the player (0..).
    pub index: usize,
    /// Index of the room (0..).
    pub room: usize,
    /// The room code.
    pub code: String,
    /// The player's `sessionId=...` cookie.
    pub cookie: String,
}

impl Seat {
    /// Joins this seat's room from the edge `index` picks, as `lg<index>`.
    pub async fn join(&self, ctx: &Ctx) -> Result<Client, String> {
        self.join_at(ctx, ctx.target(self.index)).await
    }

    /// Joins this seat's room on `target`.
    pub async fn join_at(&self, ctx: &Ctx, target: &Target) -> Result<Client, String> {
        let name = format!("lg{}", self.index);
        Client::join(
            &ctx.sources,
            target,
            (&self.code, &self.cookie, None),
            &name,
            JOIN_TIMEOUT,
        )
        .await
    }
}

/// Tallies of failures by reason.
#[derive(Clone, Debug, Default)]
pub struct Failures {
    by_reason: HashMap<String, u64>,
}

impl Failures {
    /// Counts one failure (the reason is cut to its first 80 characters).
    pub fn add(&mut self, reason: &str) {
        let key: String = reason.chars().take(80).collect();
        *self.by_reason.entry(key).or_default() += 1;
    }

    /// Adds `n` failures with `reason`.
    pub fn add_n(&mut self, reason: &str, n: u64) {
        if n > 0 {
            let key: String = reason.chars().take(80).collect();
            *self.by_reason.entry(key).or_default() += n;
        }
    }

    /// Adds every failure of `other`.
    pub fn absorb(&mut self, other: &Failures) {
        for (reason, n) in &other.by_reason {
            *self.by_reason.entry(reason.clone()).or_default() += n;
        }
    }

    /// All failures counted.
    pub fn total(&self) -> u64 {
        self.by_reason.values().sum()
    }

    /// The ten most frequent reasons with their counts.
    pub fn to_json(&self) -> Value {
        let mut v: Vec<(&String, &u64)> = self.by_reason.iter().collect();
        v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        Value::Object(
            v.into_iter()
                .take(10)
                .map(|(k, n)| (k.clone(), json!(n)))
                .collect(),
        )
    }
}

/// Creates `ceil(players / per_room)` rooms (round-robin over the targets) and gets a
/// cookie for every seat: the creator's from the create, the others' from reading the
/// room. Seats of rooms that could not be set up are missing, their failures counted.
pub async fn make_seats(ctx: &Ctx, players: usize, per_room: usize) -> (Vec<Seat>, Failures) {
    let per_room = per_room.max(1);
    let rooms = players.div_ceil(per_room);
    let mut results = futures::stream::iter(0..rooms)
        .map(|room| async move {
            let n = per_room.min(players - room * per_room);
            let target = ctx.target(room);
            let mut seats = Vec::with_capacity(n);
            let mut failures = Failures::default();
            let created = match api::create_room(&ctx.sources, target, per_room).await {
                Ok(c) => c,
                Err(e) => {
                    failures.add_n(&format!("rest: {e}"), n as u64);
                    return (seats, failures);
                }
            };
            let seat = |j: usize, cookie: String| Seat {
                index: room * per_room + j,
                room,
                code: created.code.clone(),
                cookie,
            };
            seats.push(seat(0, created.cookie.clone()));
            for j in 1..n {
                match api::guest_cookie(&ctx.sources, target, &created.code).await {
                    Ok(cookie) => seats.push(seat(j, cookie)),
                    Err(e) => failures.add(&format!("rest: {e}")),
                }
            }
            (seats, failures)
        })
        .buffer_unordered(ctx.concurrency);
    let mut all = Vec::with_capacity(players);
    let mut failures = Failures::default();
    while let Some((seats, f)) = results.next().await {
        all.extend(seats);
        failures.absorb(&f);
    }
    all.sort_by_key(|s| s.index);
    (all, failures)
}

/// `delta / seconds`, 0 when no time passed.
pub fn per_sec(count: u64, secs: f64) -> f64 {
    if secs > 0.0 { count as f64 / secs } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_tally_by_reason() {
        let mut f = Failures::default();
        f.add("timeout");
        f.add("timeout");
        f.add_n("refused", 3);
        f.add_n("none", 0);
        assert_eq!(f.total(), 5);
        assert_eq!(f.to_json(), json!({"refused": 3, "timeout": 2}));
        f.add(&"x".repeat(200));
        assert!(
            f.to_json()
                .as_object()
                .unwrap()
                .keys()
                .all(|k| k.len() <= 80)
        );
    }

    #[test]
    fn rates() {
        assert_eq!(per_sec(10, 2.0), 5.0);
        assert_eq!(per_sec(10, 0.0), 0.0);
    }
}
