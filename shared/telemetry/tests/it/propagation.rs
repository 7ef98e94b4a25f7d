//! Trace context written into headers and read back on the other side.

use std::collections::{BTreeMap, HashMap};

use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::trace::SdkTracerProvider;
use p2piano_telemetry::{inject_context, install_propagator, set_parent_from};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

/// A subscriber with an OpenTelemetry layer and no exporter.
fn subscriber() -> (impl tracing::Subscriber + Send + Sync, SdkTracerProvider) {
    let provider = SdkTracerProvider::builder().build();
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("test"));
    (tracing_subscriber::registry().with(layer), provider)
}

#[test]
fn inject_then_extract_continues_the_trace() {
    install_propagator();
    let (subscriber, _provider) = subscriber();
    tracing::subscriber::with_default(subscriber, || {
        let sender = tracing::info_span!("send");
        let mut headers = BTreeMap::new();
        sender.in_scope(|| inject_context(&mut headers));

        let traceparent = headers.get("traceparent").expect("traceparent injected");
        let sent = sender.context().span().span_context().clone();
        assert_eq!(
            traceparent,
            &format!("00-{}-{}-01", sent.trace_id(), sent.span_id())
        );

        let receiver = tracing::info_span!(parent: None, "receive");
        set_parent_from(&receiver, &headers);
        let received = receiver.context().span().span_context().clone();
        assert_eq!(received.trace_id(), sent.trace_id());
        assert_ne!(received.span_id(), sent.span_id());
    });
}

#[test]
fn hash_maps_carry_context_too() {
    install_propagator();
    let (subscriber, _provider) = subscriber();
    tracing::subscriber::with_default(subscriber, || {
        let sender = tracing::info_span!("send");
        let mut headers = HashMap::new();
        sender.in_scope(|| inject_context(&mut headers));
        let receiver = tracing::info_span!(parent: None, "receive");
        set_parent_from(&receiver, &headers);
        assert_eq!(
            receiver.context().span().span_context().trace_id(),
            sender.context().span().span_context().trace_id()
        );
    });
}

#[test]
fn without_context_nothing_happens() {
    install_propagator();
    let (subscriber, _provider) = subscriber();
    tracing::subscriber::with_default(subscriber, || {
        // Outside any span: nothing to inject.
        let mut headers = BTreeMap::new();
        inject_context(&mut headers);
        assert!(headers.is_empty(), "{headers:?}");

        // No context in the headers: the span starts its own trace.
        let garbage = BTreeMap::from([("traceparent".to_owned(), "not-a-context".to_owned())]);
        let lone = tracing::info_span!(parent: None, "lone");
        set_parent_from(&lone, &garbage);
        let other = tracing::info_span!(parent: None, "other");
        let lone_trace = lone.context().span().span_context().trace_id();
        assert!(lone.context().span().span_context().is_valid());
        assert_ne!(lone_trace, other.context().span().span_context().trace_id());
    });
}

#[test]
fn without_an_opentelemetry_layer_nothing_is_injected() {
    install_propagator();
    tracing::subscriber::with_default(tracing_subscriber::registry(), || {
        let span = tracing::info_span!("plain");
        let mut headers = BTreeMap::new();
        span.in_scope(|| inject_context(&mut headers));
        assert!(headers.is_empty());
        set_parent_from(&span, &headers);
    });
}
