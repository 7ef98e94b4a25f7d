//! Prometheus series of the presence service.

use p2piano_telemetry::Metrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

/// Labels of a request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// RPC operation.
    pub op: String,
    /// `ok` or the error code.
    pub outcome: String,
}

/// The presence service's metrics.
#[derive(Clone)]
pub struct PresenceMetrics {
    /// `p2piano_presence_requests_total{op,outcome}`.
    pub requests: Family<RequestLabels, Counter>,
    /// `p2piano_presence_leaves_total`: leaves this replica announced through rooms (a
    /// departure is counted once across all replicas).
    pub leaves: Counter,
    /// `p2piano_presence_replaced_total`: sockets replaced by a newer one of their session.
    pub replaced: Counter,
    /// `p2piano_presence_grace_started_total`: sockets that entered the grace period.
    pub grace_started: Counter,
    /// `p2piano_presence_reconnects_total`: sessions back within the grace period.
    pub reconnects: Counter,
    /// `p2piano_presence_new_pages_total`: sockets of a new page (a reload) that arrived
    /// while the session's previous socket was in its grace period, ending its membership.
    pub new_pages: Counter,
    /// `p2piano_presence_pages_gone_total`: sockets whose page went away (a close frame or a
    /// Socket.IO disconnect), their membership ended without a grace period.
    pub pages_gone: Counter,
    /// `p2piano_presence_edges_dead_total`: edges this replica declared dead.
    pub edges_dead: Counter,
    /// `p2piano_presence_edges_alive`: edges heard from within the timeout (this replica's view).
    pub edges_alive: Gauge,
}

impl PresenceMetrics {
    /// Creates the series and registers them.
    pub fn new(registry: &Metrics) -> Self {
        let m = Self {
            requests: Family::default(),
            leaves: Counter::default(),
            replaced: Counter::default(),
            grace_started: Counter::default(),
            reconnects: Counter::default(),
            new_pages: Counter::default(),
            pages_gone: Counter::default(),
            edges_dead: Counter::default(),
            edges_alive: Gauge::default(),
        };
        registry.register(
            "presence_requests",
            "Presence RPC requests by operation and outcome",
            m.requests.clone(),
        );
        registry.register(
            "presence_leaves",
            "Leaves announced through rooms (after a grace period, or at once when a page went away)",
            m.leaves.clone(),
        );
        registry.register(
            "presence_replaced",
            "Sockets replaced by a newer socket of their session",
            m.replaced.clone(),
        );
        registry.register(
            "presence_grace_started",
            "Sockets that entered the grace period",
            m.grace_started.clone(),
        );
        registry.register(
            "presence_reconnects",
            "Sessions that came back within the grace period",
            m.reconnects.clone(),
        );
        registry.register(
            "presence_new_pages",
            "Sockets of a new page that ended the membership of a socket in its grace period",
            m.new_pages.clone(),
        );
        registry.register(
            "presence_pages_gone",
            "Sockets whose page went away, their membership ended without a grace period",
            m.pages_gone.clone(),
        );
        registry.register(
            "presence_edges_dead",
            "Edges declared dead",
            m.edges_dead.clone(),
        );
        registry.register(
            "presence_edges_alive",
            "Edges heard from within the timeout",
            m.edges_alive.clone(),
        );
        m
    }
}
