//! Security events: what an operator wants to see when someone probes or abuses the edge.
//! Each event is counted (`p2piano_edge_security_events_total{kind}`) and written as one
//! structured `warn` line with the client's address and, when known, its public user id,
//! never a session id. The lines are rate-limited for the whole edge ([`LINES_PER_SECOND`]):
//! past that, events are only counted, and the next line says how many went unwritten, so
//! that a flood cannot fill the disk.

use std::net::IpAddr;
use std::sync::Mutex;

use p2piano_protocol::UserId;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::time::{Duration, Instant};

/// Lines written per second at most, for all kinds together.
pub const LINES_PER_SECOND: u32 = 20;

/// The kinds of security event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A socket closed for breaking the protocol (bad frames, oversized messages).
    ProtocolViolation,
    /// A socket closed for exceeding its event limits for too long.
    RateLimitDisconnect,
    /// An upgrade refused for its `Origin`.
    RefusedOrigin,
    /// A connection (or a proxied client's request) turned away by a connection cap.
    CapRefused,
    /// A session cookie whose signature is wrong (forged or altered).
    BadSession,
}

impl Kind {
    /// The metric label and the log's `kind` field.
    pub fn label(self) -> &'static str {
        match self {
            Kind::ProtocolViolation => "protocol_violation",
            Kind::RateLimitDisconnect => "rate_limit_disconnect",
            Kind::RefusedOrigin => "refused_origin",
            Kind::CapRefused => "cap_refused",
            Kind::BadSession => "bad_session",
        }
    }
}

/// Label of the security event counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// See [`Kind::label`].
    pub kind: &'static str,
}

#[derive(Debug)]
struct Budget {
    second: Instant,
    written: u32,
    unwritten: u64,
}

/// The edge's security log. Cloned with the metrics (shared state behind an `Arc`).
#[derive(Debug)]
pub struct SecurityLog {
    counter: Family<KindLabel, Counter>,
    budget: Mutex<Budget>,
}

impl SecurityLog {
    /// A log counting into `counter`.
    pub fn new(counter: Family<KindLabel, Counter>) -> Self {
        Self {
            counter,
            budget: Mutex::new(Budget {
                second: Instant::now(),
                written: 0,
                unwritten: 0,
            }),
        }
    }

    /// Records one event from `ip` (and `user`, when known); `detail` says what happened.
    /// Returns whether a line was written (tests look at it).
    pub fn record(
        &self,
        kind: Kind,
        ip: IpAddr,
        user: Option<&UserId>,
        detail: &'static str,
    ) -> bool {
        self.counter
            .get_or_create(&KindLabel { kind: kind.label() })
            .inc();
        let now = Instant::now();
        let unwritten = {
            let mut b = self.budget.lock().unwrap_or_else(|e| e.into_inner());
            if now.duration_since(b.second) >= Duration::from_secs(1) {
                b.second = now;
                b.written = 0;
            }
            if b.written >= LINES_PER_SECOND {
                b.unwritten += 1;
                return false;
            }
            b.written += 1;
            std::mem::take(&mut b.unwritten)
        };
        match user {
            Some(user) => tracing::warn!(
                target: "p2piano::security",
                kind = kind.label(),
                %ip,
                user_id = %user,
                detail,
                unwritten_before = unwritten,
                "security event"
            ),
            None => tracing::warn!(
                target: "p2piano::security",
                kind = kind.label(),
                %ip,
                detail,
                unwritten_before = unwritten,
                "security event"
            ),
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_flood_is_counted_but_written_at_a_bounded_rate() {
        let counter = Family::<KindLabel, Counter>::default();
        let log = SecurityLog::new(counter.clone());
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let written = (0..1000)
            .filter(|_| log.record(Kind::CapRefused, ip, None, "test"))
            .count();
        assert_eq!(written, LINES_PER_SECOND as usize);
        assert_eq!(
            counter
                .get_or_create(&KindLabel {
                    kind: "cap_refused"
                })
                .get(),
            1000
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(log.record(Kind::BadSession, ip, None, "test"));
        assert_eq!(
            log.budget.lock().unwrap().unwritten,
            0,
            "reported and reset"
        );
    }
}
