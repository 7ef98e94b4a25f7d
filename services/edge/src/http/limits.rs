//! Per-session rate limits of the HTTP API (PROTOCOL.md): room creation 10 per minute,
//! reads 60 per minute, and settings updates 30 per minute (not in PROTOCOL.md; an owner
//! toggling a lock now and then never meets it, a script hammering the database does).
//!
//! Fixed one-minute windows per (session, class), kept in one map behind a mutex: HTTP
//! requests are rare next to socket events, so a shared lock here costs nothing that
//! matters, and the socket path has its own per-socket limits without any shared lock.
//! Expired windows are swept every few thousand checks, so the map holds only sessions
//! active in the last minute.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use p2piano_protocol::UserId;
use tokio::time::Instant;

/// Length of every HTTP limit window.
pub const WINDOW: Duration = Duration::from_secs(60);

/// Checks between two sweeps of expired windows.
const SWEEP_EVERY: u32 = 4096;

/// The kinds of HTTP request with a budget of their own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HttpClass {
    /// `POST /rooms`, `POST /api/room`.
    Create,
    /// `GET /rooms/:code`, `GET /api/room/:id`.
    Read,
    /// `PUT /rooms/:code`.
    Update,
}

impl HttpClass {
    /// Requests allowed per [`WINDOW`].
    pub fn limit(self) -> u32 {
        match self {
            HttpClass::Create => 10,
            HttpClass::Read => 60,
            HttpClass::Update => 30,
        }
    }
}

#[derive(Debug)]
struct Window {
    start: Instant,
    used: u32,
}

#[derive(Debug, Default)]
struct Table {
    windows: HashMap<(UserId, HttpClass), Window>,
    since_sweep: u32,
}

/// The HTTP limits of one edge.
#[derive(Debug, Default)]
pub struct HttpLimits {
    table: Mutex<Table>,
}

impl HttpLimits {
    /// Empty budgets.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one request; `Err(wait)` when over the budget, with the time until the
    /// window ends (for `Retry-After`).
    pub fn check(&self, user: &UserId, class: HttpClass) -> Result<(), Duration> {
        let now = Instant::now();
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        table.since_sweep += 1;
        if table.since_sweep >= SWEEP_EVERY {
            table.since_sweep = 0;
            table
                .windows
                .retain(|_, w| now.duration_since(w.start) < WINDOW);
        }
        let w = table
            .windows
            .entry((user.clone(), class))
            .or_insert(Window {
                start: now,
                used: 0,
            });
        if now.duration_since(w.start) >= WINDOW {
            *w = Window {
                start: now,
                used: 0,
            };
        }
        if w.used < class.limit() {
            w.used += 1;
            Ok(())
        } else {
            Err(WINDOW.saturating_sub(now.duration_since(w.start)))
        }
    }

    /// Sessions × classes with a window held now (for tests and metrics).
    pub fn len(&self) -> usize {
        self.table
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .windows
            .len()
    }

    /// Whether no window is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn budgets_per_session_and_class_refill_after_the_window() {
        let limits = HttpLimits::new();
        let (a, b) = (UserId::random(), UserId::random());
        for _ in 0..10 {
            assert!(limits.check(&a, HttpClass::Create).is_ok());
        }
        tokio::time::advance(Duration::from_secs(15)).await;
        let wait = limits.check(&a, HttpClass::Create).unwrap_err();
        assert_eq!(wait, Duration::from_secs(45));
        // Another session, and another class of the same session, are not affected.
        assert!(limits.check(&b, HttpClass::Create).is_ok());
        assert!(limits.check(&a, HttpClass::Read).is_ok());
        tokio::time::advance(Duration::from_secs(45)).await;
        assert!(limits.check(&a, HttpClass::Create).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn expired_windows_are_swept() {
        let limits = HttpLimits::new();
        for _ in 0..100 {
            limits.check(&UserId::random(), HttpClass::Read).unwrap();
        }
        assert_eq!(limits.len(), 100);
        tokio::time::advance(WINDOW).await;
        let me = UserId::random();
        for _ in 0..SWEEP_EVERY {
            let _ = limits.check(&me, HttpClass::Read);
        }
        assert_eq!(limits.len(), 1);
    }
}
