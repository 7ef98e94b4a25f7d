//! Prometheus series of the edge.

use p2piano_telemetry::Metrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

/// Label of per-event counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabel {
    /// Event name as the client sent it (unknown names are counted as `unknown`).
    pub event: String,
}

/// The edge's metrics. Cloning shares the series.
#[derive(Clone, Debug)]
pub struct EdgeMetrics {
    /// `p2piano_edge_connections`: open sockets.
    pub connections: Gauge,
    /// `p2piano_edge_rooms`: rooms with a local member (one subscription each).
    pub rooms: Gauge,
    /// `p2piano_edge_events_in_total{event}`: client events received.
    pub events_in: Family<EventLabel, Counter>,
    /// `p2piano_edge_delivered_total`: relayed frames queued to local sockets.
    pub delivered: Counter,
    /// `p2piano_edge_dropped_total`: relayed frames dropped for slow consumers.
    pub dropped: Counter,
    /// `p2piano_edge_rate_limited_total`: client events refused by a rate limit.
    pub rate_limited: Counter,
    /// `p2piano_edge_rejected_total`: client events refused as invalid or not allowed.
    pub rejected: Counter,
    /// `p2piano_edge_http_rate_limited_total`: HTTP requests answered 429.
    pub http_rate_limited: Counter,
}

impl EdgeMetrics {
    /// Creates the series and registers them.
    pub fn new(registry: &Metrics) -> Self {
        let m = Self {
            connections: Gauge::default(),
            rooms: Gauge::default(),
            events_in: Family::default(),
            delivered: Counter::default(),
            dropped: Counter::default(),
            rate_limited: Counter::default(),
            rejected: Counter::default(),
            http_rate_limited: Counter::default(),
        };
        registry.register(
            "edge_connections",
            "Open Socket.IO connections",
            m.connections.clone(),
        );
        registry.register("edge_rooms", "Rooms with a local member", m.rooms.clone());
        registry.register(
            "edge_events_in",
            "Client events received",
            m.events_in.clone(),
        );
        registry.register(
            "edge_delivered",
            "Relayed frames queued to local sockets",
            m.delivered.clone(),
        );
        registry.register(
            "edge_dropped",
            "Relayed frames dropped for slow consumers",
            m.dropped.clone(),
        );
        registry.register(
            "edge_rate_limited",
            "Client events refused by a rate limit",
            m.rate_limited.clone(),
        );
        registry.register(
            "edge_rejected",
            "Client events refused as invalid",
            m.rejected.clone(),
        );
        registry.register(
            "edge_http_rate_limited",
            "HTTP requests answered 429",
            m.http_rate_limited.clone(),
        );
        m
    }

    /// Counts one received event.
    pub fn event_in(&self, name: &str) {
        self.events_in
            .get_or_create(&EventLabel {
                event: name.to_owned(),
            })
            .inc();
    }
}
