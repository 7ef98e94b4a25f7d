//! Prometheus series of the rooms service.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

/// Labels of a request counter: the operation and how it ended (`ok` or an error code).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// RPC operation (`join`, ...).
    pub op: String,
    /// `ok` or the error code.
    pub outcome: String,
}

/// Label of a latency histogram: the operation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabel {
    /// RPC operation.
    pub op: String,
}

p2piano_telemetry::metric_set! {
    /// The rooms service's metrics, registered in the service's registry.
    #[derive(Clone)]
    pub struct RoomsMetrics {
        /// `p2piano_rooms_requests_total{op,outcome}`.
        pub requests: Family<RequestLabels, Counter> = Family::default()
            => ("rooms_requests", "Rooms RPC requests by operation and outcome"),
        /// `p2piano_rooms_request_duration_seconds{op}`: time from receipt to reply, store
        /// included.
        pub duration: Family<OpLabel, Histogram> = latency()
            => ("rooms_request_duration_seconds", "Rooms RPC handling time"),
        /// `p2piano_rooms_mongo_duration_seconds{op}`: time of each MongoDB operation
        /// (`find`, `replace`, ...), so that a slow database can be told apart from a busy
        /// service.
        pub mongo_duration: Family<OpLabel, Histogram> = latency()
            => ("rooms_mongo_duration_seconds", "MongoDB operation time"),
        /// `p2piano_rooms_events_published_total`: membership events sent.
        pub events: Counter = Counter::default()
            => ("rooms_events_published", "Membership events published"),
        /// `p2piano_rooms_event_publish_failures_total`: membership events the bus refused.
        pub event_failures: Counter = Counter::default()
            => ("rooms_event_publish_failures", "Membership events that could not be published"),
        /// `p2piano_rooms_expired_total`: idle empty rooms deleted by the sweeper.
        pub expired: Counter = Counter::default()
            => ("rooms_expired", "Idle empty rooms deleted"),
    }
}

/// A latency histogram per operation: 0.5 ms to about 4 s in doublings.
fn latency() -> Family<OpLabel, Histogram> {
    Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.0005, 2.0, 14)))
}
