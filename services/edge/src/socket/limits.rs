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

use std::time::Duration;

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

impl Class {
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
