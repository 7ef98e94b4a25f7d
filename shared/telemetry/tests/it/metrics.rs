//! Rendering registered metrics.

use p2piano_telemetry::Metrics;
use p2piano_telemetry::prometheus_client::encoding::EncodeLabelSet;
use p2piano_telemetry::prometheus_client::metrics::counter::Counter;
use p2piano_telemetry::prometheus_client::metrics::family::Family;
use p2piano_telemetry::prometheus_client::metrics::gauge::Gauge;
use p2piano_telemetry::prometheus_client::metrics::histogram::Histogram;
use p2piano_telemetry::prometheus_client::registry::Unit;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    kind: String,
}

#[test]
fn registered_counter_is_rendered_after_increments() {
    let metrics = Metrics::new("p2piano");
    let connections = Counter::<u64>::default();
    metrics.register("connections", "Sockets accepted.", connections.clone());
    connections.inc();
    connections.inc();

    let text = metrics.render();
    assert!(
        text.contains("# HELP p2piano_connections Sockets accepted."),
        "{text}"
    );
    assert!(
        text.contains("# TYPE p2piano_connections counter"),
        "{text}"
    );
    assert!(text.contains("p2piano_connections_total 2\n"), "{text}");
    assert!(text.ends_with("# EOF\n"), "{text}");
}

#[test]
fn clones_share_the_registry_and_other_metric_types_render() {
    let metrics = Metrics::new("p2piano");
    let other = metrics.clone();

    let events = Family::<EventLabels, Counter>::default();
    other.register("events_in", "Client events received.", events.clone());
    events
        .get_or_create(&EventLabels {
            kind: "note".into(),
        })
        .inc();

    let rooms = Gauge::<i64>::default();
    metrics.register("rooms", "Rooms open.", rooms.clone());
    rooms.set(4);

    let latency = Histogram::new([0.001, 0.01, 0.1]);
    metrics.register_with_unit(
        "bus_request_duration",
        "Bus request latency.",
        Unit::Seconds,
        latency.clone(),
    );
    latency.observe(0.005);

    let text = metrics.render();
    assert!(
        text.contains(r#"p2piano_events_in_total{kind="note"} 1"#),
        "{text}"
    );
    assert!(text.contains("p2piano_rooms 4"), "{text}");
    assert!(
        text.contains("p2piano_bus_request_duration_seconds_count 1"),
        "{text}"
    );
}
