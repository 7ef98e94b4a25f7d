//! Prometheus series of the edge.

use std::sync::Arc;
use std::time::Duration;

use p2piano_telemetry::Metrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

/// Label of per-event counters. A `&'static str` from a fixed set of names (never a name as
/// a client sent it), so that the series stay bounded and counting allocates nothing.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabel {
    /// Event name (see [`crate::events::known_event`] for received events).
    pub event: &'static str,
}

/// Labels of the bus request latency: which service and which of its operations.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `rooms` or `presence`.
    pub service: &'static str,
    /// The operation, e.g. `join` or `session_get`.
    pub op: &'static str,
}

/// Label of connections turned away at accept: which cap was reached.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CapLabel {
    /// `total` or `per_address`.
    pub cap: &'static str,
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
    /// `p2piano_edge_delivered_total{event}`: other members' events (relays and membership
    /// changes) queued to local sockets, by the event name the socket receives.
    pub delivered: Family<EventLabel, Counter>,
    /// `p2piano_edge_dropped_total`: relayed frames dropped for slow consumers.
    pub dropped: Counter,
    /// `p2piano_edge_dropped_targets_total`: targets of client-dialect events dropped
    /// without an error because they are not (or no longer) members of the sender's room,
    /// as the web client keeps pinging a player for a while after they left.
    pub dropped_targets: Counter,
    /// `p2piano_edge_rate_limited_total`: client events refused by a rate limit.
    pub rate_limited: Counter,
    /// `p2piano_edge_rejected_total`: client events refused as invalid or not allowed.
    pub rejected: Counter,
    /// `p2piano_edge_http_rate_limited_total`: HTTP requests answered 429.
    pub http_rate_limited: Counter,
    /// `p2piano_edge_tcp_connections`: TCP connections open (sockets and HTTP), the count
    /// the caps apply to.
    pub tcp_connections: Gauge,
    /// `p2piano_edge_connections_refused_total{cap}`: connections closed at accept because
    /// a cap was reached.
    pub connections_refused: Family<CapLabel, Counter>,
    /// `p2piano_edge_header_timeouts_total`: connections closed because a request's
    /// headers (or the next request on an idle keep-alive connection) did not come in time.
    pub header_timeouts: Counter,
    /// `p2piano_edge_body_timeouts_total`: request bodies that did not arrive in time.
    pub body_timeouts: Counter,
    /// `p2piano_edge_connect_timeouts_total`: sockets closed because they did not connect
    /// to a namespace in time.
    pub connect_timeouts: Counter,
    /// Security events and their rate-limited log lines.
    pub security: Arc<crate::security::SecurityLog>,
    /// `p2piano_edge_security_events_total{kind}`: what [`Self::security`] counts.
    pub security_events: Family<crate::security::KindLabel, Counter>,
    /// `p2piano_edge_bus_request_duration_seconds{service,op}`: time from sending a request
    /// to rooms or presence until its reply (or failure), as the edge waits for it.
    pub bus_request_duration: Family<RequestLabels, Histogram>,
    /// `p2piano_edge_mesh_links`: relay links from this edge to other edges that are up.
    pub mesh_links: Gauge,
    /// `p2piano_edge_mesh_dropped_total`: frames for another edge dropped because its
    /// link's queue was full (a stalled or unreachable edge).
    pub mesh_dropped: Counter,
    /// `p2piano_edge_mesh_refused_total`: incoming relay links closed at the handshake (a
    /// wrong secret, a malformed or late hello).
    pub mesh_refused: Counter,
}

impl EdgeMetrics {
    /// Creates the series and registers them.
    pub fn new(registry: &Metrics) -> Self {
        let security_events = Family::<crate::security::KindLabel, Counter>::default();
        let m = Self {
            connections: Gauge::default(),
            rooms: Gauge::default(),
            events_in: Family::default(),
            delivered: Family::default(),
            dropped: Counter::default(),
            dropped_targets: Counter::default(),
            rate_limited: Counter::default(),
            rejected: Counter::default(),
            http_rate_limited: Counter::default(),
            tcp_connections: Gauge::default(),
            connections_refused: Family::default(),
            header_timeouts: Counter::default(),
            body_timeouts: Counter::default(),
            connect_timeouts: Counter::default(),
            security: Arc::new(crate::security::SecurityLog::new(security_events.clone())),
            security_events,
            bus_request_duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0005, 2.0, 14))
            }),
            mesh_links: Gauge::default(),
            mesh_dropped: Counter::default(),
            mesh_refused: Counter::default(),
        };
        registry.register(
            "edge_connections",
            "Open Socket.IO connections",
            m.connections.clone(),
        );
        registry.register("edge_rooms", "Rooms with a local member", m.rooms.clone());
        registry.register(
            "edge_dropped_targets",
            "Targets of client-dialect events dropped quietly as not members of the room",
            m.dropped_targets.clone(),
        );
        registry.register(
            "edge_events_in",
            "Client events received",
            m.events_in.clone(),
        );
        registry.register(
            "edge_delivered",
            "Events queued to local sockets",
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
        registry.register(
            "edge_tcp_connections",
            "TCP connections open, sockets and HTTP (what the connection caps count)",
            m.tcp_connections.clone(),
        );
        registry.register(
            "edge_connections_refused",
            "Connections closed at accept because a connection cap was reached",
            m.connections_refused.clone(),
        );
        registry.register(
            "edge_header_timeouts",
            "Connections closed because request headers did not arrive in time",
            m.header_timeouts.clone(),
        );
        registry.register(
            "edge_body_timeouts",
            "Request bodies that did not arrive in time",
            m.body_timeouts.clone(),
        );
        registry.register(
            "edge_connect_timeouts",
            "Sockets closed because they did not connect to a namespace in time",
            m.connect_timeouts.clone(),
        );
        registry.register(
            "edge_security_events",
            "Security events: protocol violations, rate-limit disconnects, refused origins, cap refusals, bad sessions",
            m.security_events.clone(),
        );
        registry.register(
            "edge_bus_request_duration_seconds",
            "Time until rooms or presence answered a request",
            m.bus_request_duration.clone(),
        );
        registry.register(
            "edge_mesh_links",
            "Relay links to other edges that are up",
            m.mesh_links.clone(),
        );
        registry.register(
            "edge_mesh_dropped",
            "Frames for another edge dropped because its link's queue was full",
            m.mesh_dropped.clone(),
        );
        registry.register(
            "edge_mesh_refused",
            "Incoming relay links closed at the handshake",
            m.mesh_refused.clone(),
        );
        m
    }

    /// Counts one received event, under its name if it is a known one.
    pub fn event_in(&self, name: &str) {
        self.events_in
            .get_or_create(&EventLabel {
                event: crate::events::known_event(name),
            })
            .inc();
    }

    /// Counts `n` frames of event `event` queued to local sockets.
    pub fn delivered(&self, event: &'static str, n: u64) {
        if n > 0 {
            self.delivered
                .get_or_create(&EventLabel { event })
                .inc_by(n);
        }
    }

    /// Counts a connection (or a proxied client's request) from `ip` turned away by a cap,
    /// as a security event too.
    pub fn connection_refused(&self, refused: crate::gate::Refused, ip: std::net::IpAddr) {
        self.connections_refused
            .get_or_create(&CapLabel {
                cap: refused.label(),
            })
            .inc();
        self.security
            .record(crate::security::Kind::CapRefused, ip, None, refused.label());
    }

    /// Records how long a request to `service` took.
    pub fn bus_request(&self, service: &'static str, op: &'static str, took: Duration) {
        self.bus_request_duration
            .get_or_create(&RequestLabels { service, op })
            .observe(took.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_up_event_names_share_one_series() {
        let registry = Metrics::new("p2piano");
        let m = EdgeMetrics::new(&registry);
        m.event_in("KEY_DOWN");
        m.event_in("made-up-1");
        m.event_in("made-up-2");
        m.delivered("KEY_DOWN", 2);
        m.delivered("USER_CONNECT", 0);
        m.bus_request("rooms", "join", Duration::from_millis(3));
        let text = registry.render();
        assert!(
            text.contains("p2piano_edge_events_in_total{event=\"KEY_DOWN\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("p2piano_edge_events_in_total{event=\"unknown\"} 2"),
            "{text}"
        );
        assert!(!text.contains("made-up"), "{text}");
        assert!(
            text.contains("p2piano_edge_delivered_total{event=\"KEY_DOWN\"} 2"),
            "{text}"
        );
        assert!(!text.contains("USER_CONNECT"), "{text}");
        assert!(
            text.contains(
                "p2piano_edge_bus_request_duration_seconds_count{service=\"rooms\",op=\"join\"} 1"
            ),
            "{text}"
        );
    }
}
