//! The event budgets of the sessions on this edge, kept per session rather than per socket:
//! a session that reconnects (same cookie, new socket) finds its buckets as it left them,
//! so closing the socket after a burst buys nothing. An entry outlives the session's last
//! socket by [`RETAIN`], the longest budget period, after which a fresh budget is what the
//! session would have earned back anyway. A session disconnected for abuse is refused new
//! sockets for [`COOL_DOWN`](super::limits::COOL_DOWN).
//!
//! Across edges, the budgets travel with the session: a socket that closes with much spent
//! hands a snapshot to presence in its `disconnect` ([`SessionBudget::snapshot`]), and the
//! edge of the session's next socket takes it in from `session_get`
//! ([`Budgets::attach`]), merged with whatever it holds itself.
//!
//! Keyed by the session's public user id (one per session), so that no session secret is
//! kept here. One short lock per event on the session's own bucket; the table's lock is
//! taken only when a socket connects or closes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use p2piano_protocol::budget::BudgetSnapshot;
use p2piano_protocol::{Timestamp, UserId};
use tokio::time::Instant;

use super::limits::{Class, Limits, Verdict};

/// How long a session's budgets are kept after its last socket closed: the longest budget
/// period (user updates, 30 s).
pub const RETAIN: Duration = Duration::from_secs(30);

/// Connects between two sweeps of entries that are no longer needed.
const SWEEP_EVERY: u32 = 1024;

#[derive(Debug)]
struct Entry {
    limits: Arc<Mutex<Limits>>,
    sockets: u32,
    idle_since: Option<Instant>,
}

fn lock(limits: &Mutex<Limits>) -> std::sync::MutexGuard<'_, Limits> {
    limits.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Debug, Default)]
struct Table {
    entries: HashMap<UserId, Entry>,
    since_sweep: u32,
}

/// Every session's budgets on this edge.
#[derive(Debug, Default)]
pub struct Budgets {
    table: Mutex<Table>,
}

/// A socket's handle on its session's budgets; dropping it (the socket closed) starts the
/// entry's retention.
#[derive(Debug)]
pub struct SessionBudget {
    budgets: Arc<Budgets>,
    user: UserId,
    limits: Arc<Mutex<Limits>>,
}

impl Budgets {
    /// A new, empty table.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The budgets of `user`'s session for a new socket, with what another edge handed on
    /// (`handed`, from `session_get`) taken in; or the cool-down left when the session was
    /// disconnected for abuse too recently, here or elsewhere.
    pub fn attach(
        self: &Arc<Self>,
        user: &UserId,
        handed: Option<&BudgetSnapshot>,
    ) -> Result<SessionBudget, Duration> {
        let now = Instant::now();
        let mut table = self.lock();
        table.since_sweep += 1;
        if table.since_sweep >= SWEEP_EVERY {
            table.since_sweep = 0;
            table.entries.retain(|_, e| {
                e.sockets > 0
                    || e.idle_since.is_some_and(|t| now.duration_since(t) < RETAIN)
                    || lock(&e.limits).cool_down_left(now).is_some()
            });
        }
        let entry = table.entries.entry(user.clone()).or_insert_with(|| Entry {
            limits: Arc::new(Mutex::new(Limits::new())),
            sockets: 0,
            idle_since: None,
        });
        if entry
            .idle_since
            .is_some_and(|t| entry.sockets == 0 && now.duration_since(t) >= RETAIN)
            && lock(&entry.limits).cool_down_left(now).is_none()
        {
            entry.limits = Arc::new(Mutex::new(Limits::new()));
        }
        {
            let mut limits = lock(&entry.limits);
            if let Some(snapshot) = handed {
                let age = Timestamp::now().millis() - snapshot.at.millis();
                let age = Duration::from_millis(age.max(0) as u64);
                limits.absorb(snapshot, age, now);
            }
            if let Some(left) = limits.cool_down_left(now) {
                return Err(left);
            }
        }
        entry.sockets += 1;
        entry.idle_since = None;
        Ok(SessionBudget {
            budgets: self.clone(),
            user: user.clone(),
            limits: entry.limits.clone(),
        })
    }

    /// Refuses `user`'s session new sockets for the cool-down (it was disconnected for
    /// exceeding its limits for too long).
    pub fn cool_down(&self, user: &UserId) {
        if let Some(e) = self.lock().entries.get(user) {
            lock(&e.limits).start_cool_down(Instant::now());
        }
    }

    /// Sessions with an entry (tests and the sweep's bound).
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether no session has an entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl SessionBudget {
    /// Counts one event of `class` against the session's budget.
    pub fn check(&self, class: Class) -> Verdict {
        lock(&self.limits).check(class)
    }

    /// The session's budgets to hand on with its socket's `disconnect`, when worth it
    /// ([`Limits::snapshot`]).
    pub fn snapshot(&self) -> Option<BudgetSnapshot> {
        lock(&self.limits).snapshot(Instant::now(), Timestamp::now())
    }
}

impl Drop for SessionBudget {
    fn drop(&mut self) {
        let mut table = self.budgets.lock();
        if let Some(e) = table.entries.get_mut(&self.user) {
            e.sockets = e.sockets.saturating_sub(1);
            if e.sockets == 0 {
                e.idle_since = Some(Instant::now());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::socket::limits::COOL_DOWN;

    #[tokio::test(start_paused = true)]
    async fn a_reconnect_finds_its_budget_spent() {
        let budgets = Budgets::new();
        let me = UserId::random();
        let first = budgets.attach(&me, None).unwrap();
        for _ in 0..1000 {
            assert_eq!(first.check(Class::KeyDown), Verdict::Allow);
        }
        drop(first);
        let second = budgets.attach(&me, None).unwrap();
        assert_eq!(second.check(Class::KeyDown), Verdict::Refuse);
        // Another session has its own.
        let other = budgets.attach(&UserId::random(), None).unwrap();
        assert_eq!(other.check(Class::KeyDown), Verdict::Allow);
        // After the retention with no socket, a fresh budget.
        drop(second);
        tokio::time::advance(RETAIN).await;
        let later = budgets.attach(&me, None).unwrap();
        for _ in 0..1000 {
            assert_eq!(later.check(Class::KeyDown), Verdict::Allow);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn abuse_is_refused_for_the_cool_down() {
        let budgets = Budgets::new();
        let me = UserId::random();
        let socket = budgets.attach(&me, None).unwrap();
        budgets.cool_down(&me);
        drop(socket);
        let left = budgets.attach(&me, None).unwrap_err();
        assert_eq!(left, COOL_DOWN);
        tokio::time::advance(COOL_DOWN).await;
        assert!(budgets.attach(&me, None).is_ok());
    }

    /// A session that spent its budget on another edge finds it spent here, and one in its
    /// cool-down there is refused here.
    #[tokio::test(start_paused = true)]
    async fn budgets_handed_on_from_another_edge_hold_here() {
        let (there, here) = (Budgets::new(), Budgets::new());
        let me = UserId::random();
        let socket = there.attach(&me, None).unwrap();
        for _ in 0..1000 {
            socket.check(Class::KeyDown);
        }
        let handed = socket.snapshot().expect("worth handing on");
        let mine = here.attach(&me, Some(&handed)).unwrap();
        assert_eq!(mine.check(Class::KeyDown), Verdict::Refuse);
        drop(mine);
        there.cool_down(&me);
        let handed = socket.snapshot().expect("a cool-down is always handed on");
        let left = here.attach(&me, Some(&handed)).unwrap_err();
        assert!(left > COOL_DOWN - Duration::from_secs(1), "{left:?}");
    }
}
