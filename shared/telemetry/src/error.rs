//! Errors from setting telemetry up and tearing it down.

/// Why telemetry could not be installed or flushed.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The log filter does not parse; start-up should stop rather than log the wrong things.
    #[error("invalid log filter {filter:?}: {source}")]
    Filter {
        /// The filter as given.
        filter: String,
        /// What the parser rejected.
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    /// The OTLP exporter could not be built (for example a malformed endpoint).
    #[error("could not set up OTLP export to {endpoint}: {source}")]
    Exporter {
        /// The traces URL the exporter was built for.
        endpoint: String,
        /// The exporter's own error.
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
    /// OTLP export runs its batches as a tokio task and flushes by blocking on it, which
    /// needs a multi-threaded tokio runtime to be running.
    #[error("OTLP export needs a multi-threaded tokio runtime: {0}")]
    Runtime(&'static str),
    /// Flushing or shutting the tracer provider down failed or timed out.
    #[error("telemetry shutdown failed: {0}")]
    Shutdown(String),
}
