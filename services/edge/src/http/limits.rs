//! Per-session rate limits of the HTTP API (docs/protocol.md): room creation 10 per minute,
//! reads 60 per minute, and settings updates 30 per minute (not in docs/protocol.md; an owner
//! toggling a lock now and then never meets it, a script hammering the database does).
//!
//! Fixed one-minute windows per (session, class), kept in one map behind a mutex: HTTP
//! requests are rare next to socket events, so a shared lock here costs nothing that
//! matters, and the socket path has its own per-socket limits without any shared lock.
//! Expired windows are swept every few thousand checks, so the map holds only sessions
//! active in the last minute.

use std::collections::HashMap;
use std::net::IpAddr;
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

    /// Sessions × classes with a window held now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.table
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .windows
            .len()
    }
}

/// Most client addresses [`IpLimits`] tracks one by one. Past it (an address spray, which
/// IPv6 makes cheap) the untracked addresses share one bucket, so they are limited together
/// instead of not at all, and the map stays bounded.
pub const MAX_TRACKED_ADDRESSES: usize = 100_000;

/// A token bucket: `tokens` as of `at`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

#[derive(Debug, Default)]
struct IpTable {
    /// `None`: the shared bucket of addresses past [`MAX_TRACKED_ADDRESSES`].
    buckets: HashMap<Option<IpAddr>, Bucket>,
    since_sweep: u32,
}

/// Connection attempts per client address (`P2PIANO_IP_CONNECT_RATE` and
/// `P2PIANO_IP_CONNECT_BURST`): every new session and every Socket.IO upgrade takes a
/// token from its address's bucket; an empty bucket is answered `429` with `Retry-After`.
///
/// The per-session limits above cannot stop a client that drops its cookie: each request
/// without one makes a new session with a fresh budget (a session-creation flood fills
/// presence, and it makes room-code guessing free). This bounds both per address.
/// IPv6 addresses are limited by their /64, which one host usually owns whole. Buckets that
/// have refilled completely carry no information and are swept every few thousand checks.
#[derive(Debug)]
pub struct IpLimits {
    rate: f64,
    burst: f64,
    table: Mutex<IpTable>,
}

impl IpLimits {
    /// `rate` attempts per second with bursts of `burst` (at least 1); `rate` 0 turns the
    /// limit off.
    pub fn new(rate: u32, burst: u32) -> Self {
        Self {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            table: Mutex::new(IpTable::default()),
        }
    }

    /// Whether the limit is on.
    pub fn enabled(&self) -> bool {
        self.rate > 0.0
    }

    /// Takes one token for `ip`; `Err(wait)` when its bucket is empty, with the time until
    /// the next token (for `Retry-After`).
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        if !self.enabled() {
            return Ok(());
        }
        let now = Instant::now();
        let key = match ip {
            IpAddr::V4(_) => ip,
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
            },
        };
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        table.since_sweep += 1;
        if table.since_sweep >= SWEEP_EVERY || table.buckets.len() >= MAX_TRACKED_ADDRESSES {
            table.since_sweep = 0;
            let (rate, burst) = (self.rate, self.burst);
            table
                .buckets
                .retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < burst);
        }
        let key = if table.buckets.len() < MAX_TRACKED_ADDRESSES
            || table.buckets.contains_key(&Some(key))
        {
            Some(key)
        } else {
            None
        };
        let b = table.buckets.entry(key).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * self.rate).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / self.rate))
        }
    }

    /// Addresses with a bucket held now.
    pub fn len(&self) -> usize {
        self.table
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .buckets
            .len()
    }

    /// Whether no bucket is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn ip_buckets_allow_a_burst_then_the_rate() {
        let limits = IpLimits::new(2, 4);
        for _ in 0..4 {
            limits.check(ip("10.0.0.1")).unwrap();
        }
        let wait = limits.check(ip("10.0.0.1")).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        // Other addresses have their own bucket; a /64 is one client.
        limits.check(ip("10.0.0.2")).unwrap();
        for i in 0..4 {
            limits.check(ip(&format!("2001:db8::{i}"))).unwrap();
        }
        assert!(limits.check(ip("2001:db8::ffff")).is_err());
        limits.check(ip("2001:db8:0:1::1")).unwrap();
        tokio::time::advance(Duration::from_millis(500)).await;
        limits.check(ip("10.0.0.1")).unwrap();
        assert!(limits.check(ip("10.0.0.1")).is_err());
        // Off: anything goes.
        let off = IpLimits::new(0, 0);
        for _ in 0..10_000 {
            off.check(ip("10.0.0.1")).unwrap();
        }
        assert!(off.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn full_ip_buckets_are_swept() {
        let limits = IpLimits::new(10, 10);
        for i in 0..100u32 {
            limits.check(IpAddr::V4(i.into())).unwrap();
        }
        assert_eq!(limits.len(), 100);
        tokio::time::advance(Duration::from_secs(1)).await;
        for _ in 0..SWEEP_EVERY {
            let _ = limits.check(ip("10.9.9.9"));
        }
        assert_eq!(limits.len(), 1);
    }

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
