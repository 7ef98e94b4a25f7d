//! Per-socket rate limits on client events (docs/protocol.md): notes 1000 / 10 s, CRDT 100 / 10 s,
//! user updates 60 / 30 s, signals 300 / 10 s, everything else 200 / 10 s. One session has
//! one live socket (a second one replaces the first), so counting per socket is counting per
//! session, without a lock shared across sockets on the hot path.

use std::time::Duration;

use tokio::time::Instant;

/// Classes of events with their own budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// KEY_*, SUSTAIN_* (and a service-dialect `peer-message` carrying one of them).
    Notes,
    /// AUTOMERGE_PROTOCOL.
    Crdt,
    /// USER_UPDATE / user-update.
    UserUpdate,
    /// SIGNAL / webrtc-signal.
    Signal,
    /// Everything else.
    Other,
}

impl Class {
    fn budget(self) -> (u32, Duration) {
        match self {
            Class::Notes => (1000, Duration::from_secs(10)),
            Class::Crdt => (100, Duration::from_secs(10)),
            Class::UserUpdate => (60, Duration::from_secs(30)),
            Class::Signal => (300, Duration::from_secs(10)),
            Class::Other => (200, Duration::from_secs(10)),
        }
    }
}

/// How long a session may keep exceeding its limits before it is disconnected.
pub const ABUSE_LIMIT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug)]
struct Window {
    start: Instant,
    used: u32,
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

/// The limits of one socket.
#[derive(Debug)]
pub struct Limits {
    windows: [Option<Window>; 5],
    /// When the socket started exceeding without a clean window since.
    exceeding_since: Option<Instant>,
    last_refusal: Option<Instant>,
}

impl Default for Limits {
    fn default() -> Self {
        Self::new()
    }
}

impl Limits {
    /// Fresh budgets.
    pub fn new() -> Self {
        Self {
            windows: [None; 5],
            exceeding_since: None,
            last_refusal: None,
        }
    }

    /// Counts one event of `class` (fixed windows per class).
    pub fn check(&mut self, class: Class) -> Verdict {
        let now = Instant::now();
        let (limit, window) = class.budget();
        let slot = &mut self.windows[class as usize];
        let w = match slot {
            Some(w) if now.duration_since(w.start) < window => w,
            _ => slot.insert(Window {
                start: now,
                used: 0,
            }),
        };
        // A whole limit window without refusals ends an abuse streak.
        if self
            .last_refusal
            .is_some_and(|t| now.duration_since(t) >= window)
        {
            self.exceeding_since = None;
        }
        if w.used < limit {
            w.used += 1;
            return Verdict::Allow;
        }
        self.last_refusal = Some(now);
        let since = *self.exceeding_since.get_or_insert(now);
        if now.duration_since(since) >= ABUSE_LIMIT {
            Verdict::Disconnect
        } else {
            Verdict::Refuse
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn budgets_refill_per_window_and_abuse_disconnects() {
        let mut l = Limits::new();
        for _ in 0..1000 {
            assert_eq!(l.check(Class::Notes), Verdict::Allow);
        }
        assert_eq!(l.check(Class::Notes), Verdict::Refuse);
        // Other classes have their own budget.
        assert_eq!(l.check(Class::Signal), Verdict::Allow);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(l.check(Class::Notes), Verdict::Allow);
        // Keeps exceeding, window after window, for 10 s: disconnect.
        let mut verdict = Verdict::Allow;
        for _ in 0..3 {
            for _ in 0..1001 {
                verdict = l.check(Class::Notes);
            }
            tokio::time::advance(Duration::from_secs(5)).await;
        }
        for _ in 0..1001 {
            verdict = l.check(Class::Notes);
        }
        assert_eq!(verdict, Verdict::Disconnect);
    }
}
