//! Composition of the tracing subscriber: filter, log output, and optional span export.

use std::io::IsTerminal;

use opentelemetry_sdk::trace::SdkTracer;
use tracing::{Metadata, Subscriber};
use tracing_subscriber::filter::{EnvFilter, FilterExt, filter_fn};
use tracing_subscriber::layer::{Layer, SubscriberExt};
use tracing_subscriber::registry::Registry;

/// Parses a log filter.
pub(crate) fn filter(level: &str) -> Result<EnvFilter, crate::TelemetryError> {
    EnvFilter::try_new(level).map_err(|source| crate::TelemetryError::Filter {
        filter: level.to_owned(),
        source,
    })
}

/// Targets whose spans are not exported: the exporter's own HTTP stack and the OpenTelemetry
/// crates. Exporting them would make each export produce spans to export, a loop.
fn exportable(metadata: &Metadata<'_>) -> bool {
    const INTERNAL: [&str; 6] = ["opentelemetry", "hyper", "h2", "reqwest", "tower", "tonic"];
    let target = metadata.target();
    !INTERNAL.iter().any(|prefix| {
        target
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(':') || rest.starts_with('_'))
    })
}

/// Whether the log output takes spans and events of `metadata`: everything but the
/// [`crate::TRACE_TARGET`] spans, which exist for the exported trace only. Without an
/// exporter no layer wants those, so their callsites are disabled and creating one costs a
/// filter check instead of a span (they are created per message on hot paths).
fn logged(metadata: &Metadata<'_>) -> bool {
    metadata.target() != crate::TRACE_TARGET
}

/// The full subscriber: text or JSON output on stdout and, with a tracer, an OpenTelemetry
/// layer, each filtered by the log filter `level` (already checked by [`filter`]).
///
/// The log filter is applied to each layer rather than globally: a global filter counts as a
/// layer that wants every span it lets through, so a span that neither output wants (a
/// [`crate::TRACE_TARGET`] span without an exporter) would still be created.
pub(crate) fn subscriber(
    level: &str,
    json: bool,
    tracer: Option<SdkTracer>,
) -> Result<
    impl Subscriber + Send + Sync + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    crate::TelemetryError,
> {
    let mut layers: Vec<Box<dyn Layer<Registry> + Send + Sync>> = Vec::new();
    let logs = filter(level)?.and(filter_fn(logged));
    let output = tracing_subscriber::fmt::layer().with_ansi(std::io::stdout().is_terminal());
    layers.push(if json {
        output
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_filter(logs)
            .boxed()
    } else {
        output.with_filter(logs).boxed()
    });
    if let Some(tracer) = tracer {
        layers.push(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(filter(level)?.and(filter_fn(exportable)))
                .boxed(),
        );
    }
    Ok(tracing_subscriber::registry().with(layers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_targets_are_not_exported() {
        fn target_exportable(target: &'static str) -> bool {
            struct Cs;
            impl tracing::callsite::Callsite for Cs {
                fn set_interest(&self, _: tracing::subscriber::Interest) {}
                fn metadata(&self) -> &Metadata<'_> {
                    unreachable!()
                }
            }
            static CS: Cs = Cs;
            let metadata = Metadata::new(
                "span",
                target,
                tracing::Level::INFO,
                None,
                None,
                None,
                tracing::field::FieldSet::new(&[], tracing::callsite::Identifier(&CS)),
                tracing::metadata::Kind::SPAN,
            );
            exportable(&metadata)
        }
        assert!(!target_exportable("hyper"));
        assert!(!target_exportable("hyper_util::client"));
        assert!(!target_exportable("opentelemetry_sdk"));
        assert!(!target_exportable("reqwest::connect"));
        assert!(target_exportable("p2piano_edge::socket"));
        assert!(target_exportable("hyperactive"));
    }

    /// Trace-only spans cost nothing without an exporter, and are there with one.
    #[test]
    fn trace_only_spans_exist_only_for_export() {
        use opentelemetry::trace::TracerProvider as _;
        let _one = crate::one_subscriber_at_a_time();

        for json in [false, true] {
            let logs_only = subscriber("info", json, None).unwrap();
            tracing::subscriber::with_default(logs_only, || {
                let hot = tracing::info_span!(target: crate::TRACE_TARGET, "hot");
                assert!(hot.is_disabled());
                assert!(!tracing::info_span!("logged").is_disabled());
            });
            let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
            let exporting = subscriber("info", json, Some(provider.tracer("test"))).unwrap();
            tracing::subscriber::with_default(exporting, || {
                let hot = tracing::info_span!(target: crate::TRACE_TARGET, "hot");
                assert!(!hot.is_disabled());
            });
        }
    }

    #[test]
    fn bad_filters_are_reported() {
        assert!(filter("info,p2piano=debug").is_ok());
        let err = filter("info,=[").unwrap_err();
        assert!(err.to_string().contains("info,=["), "{err}");
    }
}
