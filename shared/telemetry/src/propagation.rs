//! Trace context across the bus: W3C `traceparent`/`tracestate` in message headers, so that
//! one client event is one trace through edge, NATS and the services.

use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::HeaderCarrier;

/// Installs the W3C TraceContext propagator globally. [`crate::init`] does this; it is
/// public for tests and tools that install their own subscriber. Idempotent.
pub fn install_propagator() {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
}

struct Inject<'a, C: ?Sized>(&'a mut C);

impl<C: HeaderCarrier + ?Sized> Injector for Inject<'_, C> {
    fn set(&mut self, key: &str, value: String) {
        self.0.set(key, value);
    }
}

struct Extract<'a, C: ?Sized>(&'a C);

impl<C: HeaderCarrier + ?Sized> Extractor for Extract<'_, C> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key)
    }

    fn keys(&self) -> Vec<&str> {
        // The TraceContext propagator only looks keys up by name.
        Vec::new()
    }
}

/// Writes the current tracing span's OpenTelemetry context (`traceparent`, and
/// `tracestate` when there is one) into `headers`, so that the receiver continues the
/// trace. Writes nothing outside a span, or when no OpenTelemetry layer is installed.
pub fn inject_context(headers: &mut impl HeaderCarrier) {
    let current = tracing::Span::current();
    if current.is_disabled() {
        // Outside any span, or inside a trace-only span with export off: nothing to carry,
        // and this is the common case on hot paths without export.
        return;
    }
    let context = current.context();
    if !context.span().span_context().is_valid() {
        return;
    }
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut Inject(&mut *headers));
    });
}

/// Makes `span` a child of the remote span whose context is in `headers`, joining the
/// sender's trace. Does nothing when the headers carry no valid context. Call it right
/// after creating the span, before entering it: a started span keeps its parent.
pub fn set_parent_from(span: &tracing::Span, headers: &impl HeaderCarrier) {
    if span.is_disabled() || headers.get("traceparent").is_none() {
        // Nothing to join, or nothing to join with: skip parsing the headers.
        return;
    }
    let context: Context = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&Extract(headers))
    });
    if context.span().span_context().is_valid() {
        // Fails only without an OpenTelemetry layer (export off: nothing to join), for a
        // disabled span, or for a span already started; none of these is worth a log line
        // per message.
        let _ = span.set_parent(context);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::SdkTracerProvider;

    use super::*;

    /// Both cases in one test, one after the other: a span's "disabled" depends on the
    /// interest tracing caches per call site for every subscriber in the process, which a
    /// test running on another thread with another subscriber would change meanwhile.
    #[test]
    fn with_and_without_export() {
        let _one = crate::one_subscriber_at_a_time();
        without_export_nothing_is_carried();
        round_trip_through_the_installed_composition();
    }

    /// Without an exporter nothing is injected, and joining does nothing.
    fn without_export_nothing_is_carried() {
        install_propagator();
        let subscriber = crate::subscriber::subscriber("info", false, None).unwrap();
        tracing::subscriber::with_default(subscriber, || {
            let mut headers = BTreeMap::new();
            tracing::info_span!("send").in_scope(|| inject_context(&mut headers));
            tracing::info_span!(target: crate::TRACE_TARGET, "hot")
                .in_scope(|| inject_context(&mut headers));
            assert!(headers.is_empty(), "{headers:?}");
            headers.insert(
                "traceparent".to_owned(),
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned(),
            );
            let hot = tracing::info_span!(target: crate::TRACE_TARGET, "hot");
            set_parent_from(&hot, &headers);
            assert!(hot.is_disabled());
        });
    }

    /// The subscriber `init` installs (boxed layers, per-layer filters) still lets the span
    /// extension reach the OpenTelemetry layer.
    fn round_trip_through_the_installed_composition() {
        install_propagator();
        let provider = SdkTracerProvider::builder().build();
        for json in [false, true] {
            let subscriber =
                crate::subscriber::subscriber("info", json, Some(provider.tracer("test"))).unwrap();
            tracing::subscriber::with_default(subscriber, || {
                let sender = tracing::info_span!("send");
                let mut headers = BTreeMap::new();
                sender.in_scope(|| inject_context(&mut headers));
                assert!(headers.contains_key("traceparent"), "{headers:?}");

                let receiver = tracing::info_span!(parent: None, "receive");
                set_parent_from(&receiver, &headers);
                assert_eq!(
                    receiver.context().span().span_context().trace_id(),
                    sender.context().span().span_context().trace_id()
                );

                // Trace-only spans (not logged) carry and join context the same way.
                let hot = tracing::info_span!(target: crate::TRACE_TARGET, parent: None, "hot");
                let mut carried = BTreeMap::new();
                hot.in_scope(|| inject_context(&mut carried));
                let joined =
                    tracing::info_span!(target: crate::TRACE_TARGET, parent: None, "joined");
                set_parent_from(&joined, &carried);
                assert_eq!(
                    joined.context().span().span_context().trace_id(),
                    hot.context().span().span_context().trace_id()
                );
            });
        }
    }
}
