//! Prometheus series of the presence service.

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

p2piano_telemetry::metric_set! {
    /// The presence service's metrics.
    #[derive(Clone)]
    pub struct PresenceMetrics {
        /// `p2piano_presence_requests_total{op,outcome}`.
        pub requests: Family<RequestLabels, Counter> = Family::default()
            => ("presence_requests", "Presence RPC requests by operation and outcome"),
        /// `p2piano_presence_leaves_total`: leaves this replica announced through rooms (a
        /// departure is counted once across all replicas).
        pub leaves: Counter = Counter::default()
            => ("presence_leaves", "Leaves announced through rooms (after a grace period, or at once when a page went away)"),
        /// `p2piano_presence_replaced_total`: sockets replaced by a newer one of their session.
        pub replaced: Counter = Counter::default()
            => ("presence_replaced", "Sockets replaced by a newer socket of their session"),
        /// `p2piano_presence_grace_started_total`: sockets that entered the grace period.
        pub grace_started: Counter = Counter::default()
            => ("presence_grace_started", "Sockets that entered the grace period"),
        /// `p2piano_presence_reconnects_total`: sessions back within the grace period.
        pub reconnects: Counter = Counter::default()
            => ("presence_reconnects", "Sessions that came back within the grace period"),
        /// `p2piano_presence_new_pages_total`: sockets of a new page (a reload) that arrived
        /// while the session's previous socket was in its grace period, ending its membership.
        pub new_pages: Counter = Counter::default()
            => ("presence_new_pages", "Sockets of a new page that ended the membership of a socket in its grace period"),
        /// `p2piano_presence_pages_gone_total`: sockets whose page went away (a close frame or a
        /// Socket.IO disconnect), their membership ended without a grace period.
        pub pages_gone: Counter = Counter::default()
            => ("presence_pages_gone", "Sockets whose page went away, their membership ended without a grace period"),
        /// `p2piano_presence_budgets_kept_total`: event budgets a closing socket handed over,
        /// kept with its session for the edge of its next socket.
        pub budgets_kept: Counter = Counter::default()
            => ("presence_budgets_kept", "Event budgets handed over by a closing socket and kept with its session"),
        /// `p2piano_presence_edges_dead_total`: edges this replica declared dead.
        pub edges_dead: Counter = Counter::default()
            => ("presence_edges_dead", "Edges declared dead"),
        /// `p2piano_presence_edges_alive`: edges heard from within the timeout (this replica's view).
        pub edges_alive: Gauge = Gauge::default()
            => ("presence_edges_alive", "Edges heard from within the timeout"),
        /// `p2piano_presence_edges_revived_total`: edges declared dead and then heard again (a
        /// pause, a partition): a false death, healed.
        pub edges_revived: Counter = Counter::default()
            => ("presence_edges_revived", "Edges declared dead and then heard again"),
        /// `p2piano_presence_resyncs_asked_total`: requests to an edge to re-assert its sockets.
        pub resyncs_asked: Counter = Counter::default()
            => ("presence_resyncs_asked", "Requests to an edge to re-assert its sockets"),
        /// `p2piano_presence_digest_mismatches_total`: heartbeats whose socket digest kept
        /// disagreeing with presence's records.
        pub digest_mismatches: Counter = Counter::default()
            => ("presence_digest_mismatches", "Heartbeats whose socket digest kept disagreeing with presence's records"),
        /// `p2piano_presence_resynced_total`: records made live again (or recreated) because an
        /// edge re-asserted a socket presence had let go of.
        pub resynced: Counter = Counter::default()
            => ("presence_resynced", "Records made live again because an edge re-asserted the socket"),
        /// `p2piano_presence_kv_ops_total{bucket,op}`: KV round trips, by bucket and operation.
        pub kv_ops: Family<KvOpLabels, Counter> = Family::default()
            => ("presence_kv_ops", "KV operations by bucket and operation"),
        /// `p2piano_presence_leaves_held_total`: 100 ms steps for which a dead edge's leaves
        /// were held back because this replica was behind on requests.
        pub leaves_held: Counter = Counter::default()
            => ("presence_leaves_held", "100 ms steps for which a dead edge's leaves waited for presence to catch up"),
        /// `p2piano_presence_rpc_in_flight`: RPCs being handled now; a backlog shows here first.
        pub rpc_in_flight: Gauge = Gauge::default()
            => ("presence_rpc_in_flight", "Presence RPCs being handled"),
    }
}
