//! Rate limits on client events, per session (docs/protocol.md): key presses and key
//! releases 1,000 / 10 s each, pedal 1,000 / 10 s, CRDT 100 / 10 s, user updates 60 / 30 s,
//! signals 300 / 10 s, everything else 200 / 10 s.
//!
//! Token buckets, not fixed windows: a bucket starts full and refills evenly, so a burst
//! (a backlog handled at once after the edge was busy) is judged by how much was sent over
//! the budget's period, not by where a window boundary fell. The buckets belong to the
//! session ([`crate::socket::budgets`]), so that a reconnect does not refill them, and a
//! session that keeps exceeding for [`ABUSE_LIMIT`] is disconnected and refused for
//! [`COOL_DOWN`].

use std::collections::BTreeMap;
use std::time::Duration;

use p2piano_protocol::Timestamp;
use p2piano_protocol::budget::BudgetSnapshot;
use tokio::time::Instant;

/// Classes of events with their own budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// KEY_DOWN (and a service-dialect `peer-message` carrying one).
    KeyDown,
    /// KEY_UP (likewise).
    KeyUp,
    /// SUSTAIN_DOWN, SUSTAIN_UP (likewise).
    Pedal,
    /// AUTOMERGE_PROTOCOL.
    Crdt,
    /// USER_UPDATE / user-update.
    UserUpdate,
    /// SIGNAL / webrtc-signal.
    Signal,
    /// Everything else.
    Other,
}

/// Number of classes.
const CLASSES: usize = 7;

/// Every class, in the order of their bucket slots.
const ALL: [Class; CLASSES] = [
    Class::KeyDown,
    Class::KeyUp,
    Class::Pedal,
    Class::Crdt,
    Class::UserUpdate,
    Class::Signal,
    Class::Other,
];

impl Class {
    /// The class's name in a [`BudgetSnapshot`].
    pub fn name(self) -> &'static str {
        match self {
            Class::KeyDown => "keyDown",
            Class::KeyUp => "keyUp",
            Class::Pedal => "pedal",
            Class::Crdt => "crdt",
            Class::UserUpdate => "userUpdate",
            Class::Signal => "signal",
            Class::Other => "other",
        }
    }

    /// The budget: `(events, per)`. A class may spend its whole budget at once (the bucket
    /// starts full) and gets it back evenly over `per`. Key presses and releases have one
    /// each, the original's 1,000 per 10 s: a player's chord of ten notes is ten of each.
    pub fn budget(self) -> (u32, Duration) {
        match self {
            Class::KeyDown | Class::KeyUp => (1000, Duration::from_secs(10)),
            Class::Pedal => (1000, Duration::from_secs(10)),
            Class::Crdt => (100, Duration::from_secs(10)),
            Class::UserUpdate => (60, Duration::from_secs(30)),
            Class::Signal => (300, Duration::from_secs(10)),
            Class::Other => (200, Duration::from_secs(10)),
        }
    }
}

/// How long a session may keep exceeding its limits before it is disconnected.
pub const ABUSE_LIMIT: Duration = Duration::from_secs(10);

/// How long a session disconnected for abuse is refused a new socket on this edge.
pub const COOL_DOWN: Duration = Duration::from_secs(30);

/// A token bucket: `tokens` left as of `at`, in thousandths of an event, so that refills
/// of less than one event a millisecond add up without floating point.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    at: Instant,
    milli_tokens: u64,
}

/// What a check decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Within budget.
    Allow,
    /// Over budget: drop the event and tell the sender.
    Refuse,
    /// Over budget for too long: disconnect.
    Disconnect,
}

/// The budgets of one session on this edge: token buckets per [`Class`], and the abuse
/// streak. Kept per session, not per socket ([`crate::socket::budgets`]), so that a
/// reconnect does not refill them.
#[derive(Debug)]
pub struct Limits {
    buckets: [Option<Bucket>; CLASSES],
    /// When the session started exceeding without a clean budget period since.
    exceeding_since: Option<Instant>,
    last_refusal: Option<Instant>,
    /// Until when the session is refused new sockets (it was disconnected for abuse).
    cool_down_until: Option<Instant>,
}

impl Default for Limits {
    fn default() -> Self {
        Self::new()
    }
}

impl Limits {
    /// Full budgets.
    pub fn new() -> Self {
        Self {
            buckets: [None; CLASSES],
            exceeding_since: None,
            last_refusal: None,
            cool_down_until: None,
        }
    }

    /// Counts one event of `class` that arrived at `now`.
    pub fn check_at(&mut self, class: Class, now: Instant) -> Verdict {
        let (limit, per) = class.budget();
        let full = u64::from(limit) * 1000;
        let bucket = self.buckets[class as usize].get_or_insert(Bucket {
            at: now,
            milli_tokens: full,
        });
        // Refill: `limit` events per `per`, i.e. limit * 1000 milli-tokens per per-ms.
        let elapsed_ms = now.saturating_duration_since(bucket.at).as_millis() as u64;
        let per_ms = per.as_millis().max(1) as u64;
        let refill = elapsed_ms.saturating_mul(u64::from(limit)) * 1000 / per_ms;
        if refill > 0 {
            bucket.milli_tokens = (bucket.milli_tokens + refill).min(full);
            bucket.at = now;
        }
        // A whole budget period without refusals ends an abuse streak.
        if self
            .last_refusal
            .is_some_and(|t| now.saturating_duration_since(t) >= per)
        {
            self.exceeding_since = None;
        }
        if bucket.milli_tokens >= 1000 {
            bucket.milli_tokens -= 1000;
            return Verdict::Allow;
        }
        self.last_refusal = Some(now);
        let since = *self.exceeding_since.get_or_insert(now);
        if now.saturating_duration_since(since) >= ABUSE_LIMIT {
            Verdict::Disconnect
        } else {
            Verdict::Refuse
        }
    }

    /// Counts one event of `class` arriving now.
    pub fn check(&mut self, class: Class) -> Verdict {
        self.check_at(class, Instant::now())
    }

    /// Refuses the session new sockets for [`COOL_DOWN`] from `now`.
    pub fn start_cool_down(&mut self, now: Instant) {
        self.cool_down_until = Some(now + COOL_DOWN);
    }

    /// What is left of the cool-down at `now`, if one is running.
    pub fn cool_down_left(&self, now: Instant) -> Option<Duration> {
        self.cool_down_until
            .filter(|t| *t > now)
            .map(|t| t.duration_since(now))
    }

    /// Thousandths of an event of `class` spent below a full bucket at `now`.
    fn spent_at(&self, class: Class, now: Instant) -> u64 {
        let (limit, per) = class.budget();
        let full = u64::from(limit) * 1000;
        let Some(b) = self.buckets[class as usize] else {
            return 0;
        };
        let elapsed_ms = now.saturating_duration_since(b.at).as_millis() as u64;
        let refill = elapsed_ms.saturating_mul(u64::from(limit)) * 1000 / per.as_millis() as u64;
        full.saturating_sub(b.milli_tokens.saturating_add(refill))
    }

    /// The budgets as of `now` (wall clock `wall`) for another edge, when worth handing on:
    /// a quarter or more of some class spent, an abuse streak, or a cool-down. A session
    /// playing within its budgets hands nothing on (its buckets refill faster than it plays),
    /// so normal closes cost presence nothing.
    pub fn snapshot(&self, now: Instant, wall: Timestamp) -> Option<BudgetSnapshot> {
        let spent: BTreeMap<String, u64> = ALL
            .iter()
            .map(|c| (c.name().to_owned(), self.spent_at(*c, now)))
            .filter(|(_, s)| *s > 0)
            .collect();
        let heavy = ALL.iter().any(|c| {
            let full = u64::from(c.budget().0) * 1000;
            self.spent_at(*c, now) * 4 >= full
        });
        let cool_down = self.cool_down_left(now);
        if !heavy && self.exceeding_since.is_none() && cool_down.is_none() {
            return None;
        }
        let ms = |d: Duration| d.as_millis() as u64;
        Some(BudgetSnapshot {
            at: wall,
            spent,
            exceeding_ms: self
                .exceeding_since
                .map(|t| ms(now.saturating_duration_since(t))),
            refused_ms_ago: self
                .last_refusal
                .map(|t| ms(now.saturating_duration_since(t))),
            cool_down_until: cool_down.map(|d| wall.plus(d)),
        })
    }

    /// Takes in what another edge handed on, `age` after it was taken (the buckets have
    /// refilled for that long): each class keeps whichever of the two is more spent, the
    /// abuse streak and the cool-down whichever is longer. Merging, not replacing, so that
    /// neither a stale snapshot nor a fresh table can give a session more than it has.
    pub fn absorb(&mut self, snapshot: &BudgetSnapshot, age: Duration, now: Instant) {
        for class in ALL {
            let Some(spent) = snapshot.spent.get(class.name()) else {
                continue;
            };
            let (limit, per) = class.budget();
            let full = u64::from(limit) * 1000;
            let refill = (age.as_millis() as u64).saturating_mul(u64::from(limit)) * 1000
                / per.as_millis() as u64;
            let theirs = spent.saturating_sub(refill).min(full);
            if theirs > self.spent_at(class, now) {
                self.buckets[class as usize] = Some(Bucket {
                    at: now,
                    milli_tokens: full - theirs,
                });
            }
        }
        let back = |ms: u64| now.checked_sub(Duration::from_millis(ms).saturating_add(age));
        if let Some(since) = snapshot.exceeding_ms.and_then(back)
            && self.exceeding_since.is_none_or(|t| since < t)
        {
            self.exceeding_since = Some(since);
        }
        if let Some(at) = snapshot.refused_ms_ago.and_then(back)
            && self.last_refusal.is_none_or(|t| at > t)
        {
            self.last_refusal = Some(at);
        }
        if let Some(until) = snapshot.cool_down_until {
            let left = until.millis() - snapshot.at.millis() - age.as_millis() as i64;
            if left > 0 {
                let until = now + Duration::from_millis(left as u64);
                if self.cool_down_until.is_none_or(|t| until > t) {
                    self.cool_down_until = Some(until);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn budgets_refill_evenly_and_abuse_disconnects() {
        let mut l = Limits::new();
        for _ in 0..1000 {
            assert_eq!(l.check(Class::KeyDown), Verdict::Allow);
        }
        assert_eq!(l.check(Class::KeyDown), Verdict::Refuse);
        // Releases and other classes have their own budget.
        assert_eq!(l.check(Class::KeyUp), Verdict::Allow);
        assert_eq!(l.check(Class::Signal), Verdict::Allow);
        // 100 presses a second come back, evenly.
        tokio::time::advance(Duration::from_millis(100)).await;
        for _ in 0..10 {
            assert_eq!(l.check(Class::KeyDown), Verdict::Allow);
        }
        assert_eq!(l.check(Class::KeyDown), Verdict::Refuse);
        // Keeps exceeding for 10 s: disconnect.
        let mut verdict = Verdict::Allow;
        for _ in 0..21 {
            tokio::time::advance(Duration::from_millis(500)).await;
            for _ in 0..100 {
                verdict = l.check(Class::KeyDown);
            }
        }
        assert_eq!(verdict, Verdict::Disconnect);
    }

    /// What one edge hands on, another takes in: spent buckets (less what refilled on the
    /// way), the abuse streak and the cool-down.
    #[tokio::test(start_paused = true)]
    async fn a_snapshot_carries_the_budgets_to_another_edge() {
        let wall = Timestamp::from_millis(1_000_000);
        let mut here = Limits::new();
        assert!(
            here.snapshot(Instant::now(), wall).is_none(),
            "nothing spent"
        );
        for _ in 0..200 {
            here.check(Class::KeyDown);
        }
        assert!(
            here.snapshot(Instant::now(), wall).is_none(),
            "a fifth is not worth it"
        );
        for _ in 0..900 {
            here.check(Class::KeyDown);
        }
        let snap = here.snapshot(Instant::now(), wall).expect("spent");
        assert_eq!(snap.spent["keyDown"], 1_000_000);
        assert!(snap.exceeding_ms.is_some());
        // Another edge, 1 s later: 100 presses refilled, no more.
        let mut there = Limits::new();
        there.absorb(&snap, Duration::from_secs(1), Instant::now());
        for _ in 0..100 {
            assert_eq!(there.check(Class::KeyDown), Verdict::Allow);
        }
        assert_eq!(there.check(Class::KeyDown), Verdict::Refuse);
        assert_eq!(there.check(Class::KeyUp), Verdict::Allow);
        // A cool-down travels too, less its age.
        here.start_cool_down(Instant::now());
        let snap = here.snapshot(Instant::now(), wall).unwrap();
        let mut elsewhere = Limits::new();
        elsewhere.absorb(&snap, Duration::from_secs(10), Instant::now());
        assert_eq!(
            elsewhere.cool_down_left(Instant::now()),
            Some(COOL_DOWN - Duration::from_secs(10))
        );
        // A fuller table is not refilled by an older, emptier snapshot.
        let mut spent = Limits::new();
        for _ in 0..1000 {
            spent.check(Class::KeyUp);
        }
        spent.absorb(&snap, Duration::ZERO, Instant::now());
        assert_eq!(spent.check(Class::KeyUp), Verdict::Refuse);
    }

    /// A player at 80 notes a second (40 presses and 40 releases) never meets a limit,
    /// even when a backlog of 20 s of play is counted at once: the bucket holds 25 s of it.
    #[tokio::test(start_paused = true)]
    async fn a_backlog_of_real_playing_is_never_refused() {
        let mut l = Limits::new();
        for _ in 0..(40 * 20) {
            assert_eq!(l.check(Class::KeyDown), Verdict::Allow);
            assert_eq!(l.check(Class::KeyUp), Verdict::Allow);
        }
        for _ in 0..600 {
            tokio::time::advance(Duration::from_millis(25)).await;
            assert_eq!(l.check(Class::KeyDown), Verdict::Allow);
            assert_eq!(l.check(Class::KeyUp), Verdict::Allow);
        }
    }
}
