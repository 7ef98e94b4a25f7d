//! Composition of the tracing subscriber: filter, log output, and optional span export.

use std::io::IsTerminal;

use opentelemetry_sdk::trace::SdkTracer;
use tracing::{Metadata, Subscriber};
use tracing_subscriber::filter::{EnvFilter, filter_fn};
use tracing_subscriber::layer::{Layer, Layered, SubscriberExt};
use tracing_subscriber::registry::Registry;

/// The subscriber below the boxed layers.
type Base = Layered<EnvFilter, Registry>;

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

/// The full subscriber: `filter`, text or JSON output on stdout, and, with a tracer, an
/// OpenTelemetry layer.
pub(crate) fn subscriber(
    filter: EnvFilter,
    json: bool,
    tracer: Option<SdkTracer>,
) -> impl Subscriber + Send + Sync + for<'a> tracing_subscriber::registry::LookupSpan<'a> {
    let mut layers: Vec<Box<dyn Layer<Base> + Send + Sync>> = Vec::new();
    let output = tracing_subscriber::fmt::layer().with_ansi(std::io::stdout().is_terminal());
    layers.push(if json {
        output
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .boxed()
    } else {
        output.boxed()
    });
    if let Some(tracer) = tracer {
        layers.push(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(filter_fn(exportable))
                .boxed(),
        );
    }
    tracing_subscriber::registry().with(filter).with(layers)
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

    #[test]
    fn bad_filters_are_reported() {
        assert!(filter("info,p2piano=debug").is_ok());
        let err = filter("info,=[").unwrap_err();
        assert!(err.to_string().contains("info,=["), "{err}");
    }
}
