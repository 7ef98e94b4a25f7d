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
mod metrics;
mod options;
mod otlp;
mod propagation;
mod readiness;
mod serve;
mod subscriber;

pub use admin::{AdminState, OPENMETRICS_CONTENT_TYPE, admin_router};
pub use carrier::HeaderCarrier;
pub use error::TelemetryError;
pub use guard::TelemetryGuard;
pub use init::init;
pub use metrics::Metrics;
pub use options::TelemetryOptions;
pub use propagation::{inject_context, install_propagator, set_parent_from};
pub use readiness::{AlwaysReady, Readiness};
pub use serve::serve_admin;

/// Re-exported so that services register metrics with the exact version [`Metrics`]
/// accepts, without a dependency of their own to keep in step.
pub use prometheus_client;
