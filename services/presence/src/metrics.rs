//! Prometheus series of the presence service.

use p2piano_telemetry::Metrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::kv::KvOpLabels;

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
    /// `p2piano_presence_edges_revived_total`: edges declared dead and then heard again (a
    /// pause, a partition): a false death, healed.
    pub edges_revived: Counter,
    /// `p2piano_presence_resyncs_asked_total`: requests to an edge to re-assert its sockets.
    pub resyncs_asked: Counter,
    /// `p2piano_presence_digest_mismatches_total`: heartbeats whose socket digest kept
    /// disagreeing with presence's records.
    pub digest_mismatches: Counter,
    /// `p2piano_presence_resynced_total`: records made live again (or recreated) because an
    /// edge re-asserted a socket presence had let go of.
    pub resynced: Counter,
    /// `p2piano_presence_kv_ops_total{bucket,op}`: KV round trips, by bucket and operation.
    pub kv_ops: Family<KvOpLabels, Counter>,
    /// `p2piano_presence_rpc_in_flight`: RPCs being handled now; a backlog shows here first.
    pub rpc_in_flight: Gauge,
    /// `p2piano_presence_leaves_held_total`: 100 ms steps for which a dead edge's leaves
    /// were held back because this replica was behind on requests.
    pub leaves_held: Counter,
    /// `p2piano_presence_budgets_kept_total`: event budgets a closing socket handed over,
    /// kept with its session for the edge of its next socket.
    pub budgets_kept: Counter,
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
            edges_revived: Counter::default(),
            resyncs_asked: Counter::default(),
            digest_mismatches: Counter::default(),
            resynced: Counter::default(),
            kv_ops: Family::default(),
            rpc_in_flight: Gauge::default(),
            leaves_held: Counter::default(),
            budgets_kept: Counter::default(),
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
            "presence_budgets_kept",
            "Event budgets handed over by a closing socket and kept with its session",
            m.budgets_kept.clone(),
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
        registry.register(
            "presence_edges_revived",
            "Edges declared dead and then heard again",
            m.edges_revived.clone(),
        );
        registry.register(
            "presence_resyncs_asked",
            "Requests to an edge to re-assert its sockets",
            m.resyncs_asked.clone(),
        );
        registry.register(
            "presence_digest_mismatches",
            "Heartbeats whose socket digest kept disagreeing with presence's records",
            m.digest_mismatches.clone(),
        );
        registry.register(
            "presence_resynced",
            "Records made live again because an edge re-asserted the socket",
            m.resynced.clone(),
        );
        registry.register(
            "presence_kv_ops",
            "KV operations by bucket and operation",
            m.kv_ops.clone(),
        );
        registry.register(
            "presence_leaves_held",
            "100 ms steps for which a dead edge's leaves waited for presence to catch up",
            m.leaves_held.clone(),
        );
        registry.register(
            "presence_rpc_in_flight",
            "Presence RPCs being handled",
            m.rpc_in_flight.clone(),
        );
        m
    }
}
