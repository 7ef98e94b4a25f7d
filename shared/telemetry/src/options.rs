//! What [`crate::init`] installs.

/// Settings for [`crate::init`], usually taken from the service's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TelemetryOptions {
    /// `service.name` on exported spans, and the name of the tracer, so that traces show
    /// which service did the work.
    pub service_name: String,
    /// Log filter in `tracing_subscriber::EnvFilter` syntax (`info`, `debug,hyper=warn`).
    /// It applies to exported spans too.
    pub level: String,
    /// JSON lines (for log collectors) instead of human-readable text.
    pub json: bool,
    /// Base URL of an OTLP/HTTP collector (`http://collector:4318`); spans go to
    /// `<endpoint>/v1/traces`. `None` (or empty) turns export off.
    pub otlp_endpoint: Option<String>,
}
