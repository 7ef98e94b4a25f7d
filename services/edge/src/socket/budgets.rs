//! The event budgets of the sessions on this edge, kept per session rather than per socket:
//! a session that reconnects (same cookie, new socket) finds its buckets as it left them,
//! so closing the socket after a burst buys nothing. An entry outlives the session's last
//! socket by [`RETAIN`], the longest budget period, after which a fresh budget is what the
//! session would have earned back anyway. A session disconnected for abuse is refused new
//! sockets here for [`COOL_DOWN`].
//!
//! Keyed by the session's public user id (one per session), so that no session secret is
//! kept here. One short lock per event on the session's own bucket; the table's lock is
//! taken only when a socket connects or closes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use p2piano_protocol::UserId;
use tokio::time::Instant;

use super::limits::{COOL_DOWN, Class, Limits, Verdict};

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
    cool_down_until: Option<Instant>,
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

    /// The budgets of `user`'s session for a new socket, or the cool-down left when the
    /// session was disconnected for abuse too recently.
    pub fn attach(self: &Arc<Self>, user: &UserId) -> Result<SessionBudget, Duration> {
        let now = Instant::now();
        let mut table = self.lock();
        table.since_sweep += 1;
        if table.since_sweep >= SWEEP_EVERY {
            table.since_sweep = 0;
            table.entries.retain(|_, e| {
                e.sockets > 0
                    || e.idle_since.is_some_and(|t| now.duration_since(t) < RETAIN)
                    || e.cool_down_until.is_some_and(|t| t > now)
            });
        }
        let entry = table.entries.entry(user.clone()).or_insert_with(|| Entry {
            limits: Arc::new(Mutex::new(Limits::new())),
            sockets: 0,
            idle_since: None,
            cool_down_until: None,
        });
        if let Some(until) = entry.cool_down_until.filter(|t| *t > now) {
            return Err(until - now);
        }
        if entry
            .idle_since
            .is_some_and(|t| entry.sockets == 0 && now.duration_since(t) >= RETAIN)
        {
            entry.limits = Arc::new(Mutex::new(Limits::new()));
        }
        entry.sockets += 1;
        entry.idle_since = None;
        Ok(SessionBudget {
            budgets: self.clone(),
            user: user.clone(),
            limits: entry.limits.clone(),
        })
    }

    /// Refuses `user`'s session new sockets for [`COOL_DOWN`] (it was disconnected for
    /// exceeding its limits for too long).
    pub fn cool_down(&self, user: &UserId) {
        if let Some(e) = self.lock().entries.get_mut(user) {
            e.cool_down_until = Some(Instant::now() + COOL_DOWN);
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
        self.limits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .check(class)
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

    #[tokio::test(start_paused = true)]
    async fn a_reconnect_finds_its_budget_spent() {
        let budgets = Budgets::new();
        let me = UserId::random();
        let first = budgets.attach(&me).unwrap();
        for _ in 0..1000 {
            assert_eq!(first.check(Class::KeyDown), Verdict::Allow);
        }
        drop(first);
        let second = budgets.attach(&me).unwrap();
        assert_eq!(second.check(Class::KeyDown), Verdict::Refuse);
        // Another session has its own.
        let other = budgets.attach(&UserId::random()).unwrap();
        assert_eq!(other.check(Class::KeyDown), Verdict::Allow);
        // After the retention with no socket, a fresh budget.
        drop(second);
        tokio::time::advance(RETAIN).await;
        let later = budgets.attach(&me).unwrap();
        for _ in 0..1000 {
            assert_eq!(later.check(Class::KeyDown), Verdict::Allow);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn abuse_is_refused_for_the_cool_down() {
        let budgets = Budgets::new();
        let me = UserId::random();
        let socket = budgets.attach(&me).unwrap();
        budgets.cool_down(&me);
        drop(socket);
        let left = budgets.attach(&me).unwrap_err();
        assert_eq!(left, COOL_DOWN);
        tokio::time::advance(COOL_DOWN).await;
        assert!(budgets.attach(&me).is_ok());
    }
}
