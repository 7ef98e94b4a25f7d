//! Telemetry shared by every p2piano service: logs and spans with `tracing`, span export
//! over OTLP, trace context carried in bus headers, Prometheus metrics, and the admin HTTP
//! surface (`/health/live`, `/health/ready`, `/metrics`).
//!
//! Start-up calls [`init`] once and keeps the returned [`TelemetryGuard`] alive until the
//! end of `main`, so that buffered spans are exported before the process exits. Each
//! service builds one [`Metrics`] registry and serves it with [`admin_router`] or
//! [`serve_admin`].

mod admin;
mod carrier;
mod error;
mod guard;
mod init;
mod metric_set;
mod metrics;
mod options;
mod otlp;
mod propagation;
mod readiness;
mod serve;
mod subscriber;

/// Tests that install subscribers run one at a time: tracing caches, per call site, an
/// interest combined over every subscriber alive in the process, so a subscriber of one
/// test would change whether another test's spans are enabled.
#[cfg(test)]
pub(crate) fn one_subscriber_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub use admin::{AdminState, OPENMETRICS_CONTENT_TYPE, admin_router, health_router};
pub use carrier::HeaderCarrier;
pub use error::TelemetryError;
pub use guard::TelemetryGuard;
pub use init::init;
pub use metrics::Metrics;
pub use options::TelemetryOptions;
pub use propagation::{inject_context, install_propagator, set_parent_from};
pub use readiness::{AlwaysReady, Readiness};
pub use serve::{serve_admin, serve_with_admin};

/// Target of spans that exist only for the exported trace, such as the per-message spans of
/// the edge (`tracing::info_span!(target: p2piano_telemetry::TRACE_TARGET, "edge.deliver")`).
///
/// The log output ignores this target, so when OTLP export is off no layer wants such a span
/// and its callsite is disabled: creating one is a cheap filter check, not an allocation
/// and a formatted field set per message. The log filter (`P2PIANO_LOG`) still applies to it
/// like to any other target.
pub const TRACE_TARGET: &str = "p2piano::trace";

/// Re-exported so that services register metrics with the exact version [`Metrics`]
/// accepts, without a dependency of their own to keep in step.
pub use prometheus_client;
