//! The OpenTelemetry tracer provider that exports spans over OTLP/HTTP.

use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::runtime::Tokio;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use tokio::runtime::{Handle, RuntimeFlavor};

use crate::TelemetryError;

/// The traces URL for a collector base URL, as `OTEL_EXPORTER_OTLP_ENDPOINT` defines it.
pub(crate) fn traces_url(endpoint: &str) -> String {
    format!("{}/v1/traces", endpoint.trim().trim_end_matches('/'))
}

/// Checks that a multi-threaded tokio runtime is running: the batch processor spawns its
/// task on it, and flushing at shutdown blocks one thread while another runs that task.
fn check_runtime() -> Result<(), TelemetryError> {
    let handle = Handle::try_current()
        .map_err(|_| TelemetryError::Runtime("no tokio runtime is running"))?;
    if matches!(handle.runtime_flavor(), RuntimeFlavor::CurrentThread) {
        return Err(TelemetryError::Runtime(
            "the running tokio runtime is single-threaded",
        ));
    }
    Ok(())
}

/// A tracer provider exporting batches of spans as protobuf to `<endpoint>/v1/traces`, with
/// `service.name` set. Must be called inside a multi-threaded tokio runtime.
pub(crate) fn tracer_provider(
    service_name: &str,
    endpoint: &str,
) -> Result<SdkTracerProvider, TelemetryError> {
    check_runtime()?;
    let url = traces_url(endpoint);
    let exporter = SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url.clone())
        .build()
        .map_err(|source| TelemetryError::Exporter {
            endpoint: url,
            source,
        })?;
    let processor = BatchSpanProcessor::builder(exporter, Tokio).build();
    let resource = Resource::builder()
        .with_service_name(service_name.to_owned())
        .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(resource)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traces_url_appends_the_signal_path() {
        assert_eq!(traces_url("http://c:4318"), "http://c:4318/v1/traces");
        assert_eq!(traces_url("http://c:4318/"), "http://c:4318/v1/traces");
        assert_eq!(
            traces_url("http://c:4318/base/"),
            "http://c:4318/base/v1/traces"
        );
    }

    #[test]
    fn export_needs_a_multi_threaded_runtime() {
        assert!(matches!(
            tracer_provider("t", "http://127.0.0.1:1"),
            Err(TelemetryError::Runtime(_))
        ));
        let current = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        current.block_on(async {
            assert!(matches!(
                tracer_provider("t", "http://127.0.0.1:1"),
                Err(TelemetryError::Runtime(_))
            ));
        });
    }
}
