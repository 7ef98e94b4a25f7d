//! The admin HTTP surface every service has: liveness, readiness and metrics.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::{Metrics, Readiness};

/// `Content-Type` of `/metrics`: the OpenMetrics text format that prometheus-client writes.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Longest a readiness probe may take before the service is reported unavailable, so that a
/// hanging dependency check does not hang the load balancer's probe too.
const READY_TIMEOUT: Duration = Duration::from_secs(5);

/// What the admin routes need: the service's metrics and its readiness probe.
#[derive(Clone)]
pub struct AdminState {
    /// Rendered at `/metrics`.
    pub metrics: Metrics,
    /// Asked at `/health/ready`.
    pub readiness: Arc<dyn Readiness>,
}

/// The admin routes, so that services don't repeat them:
///
/// - `GET /health/live`: `200 {"status":"ok"}` while the process serves requests;
/// - `GET /health/ready`: `200 {"status":"ok"}` when the probe passes, else
///   `503 {"status":"unavailable","reason":"..."}` (also after 5 s without an answer);
/// - `GET /metrics`: [`Metrics::render`] as [`OPENMETRICS_CONTENT_TYPE`].
///
/// Every service serves it on its admin listener with [`crate::serve_admin`]; the edge
/// serves [`health_router`] on its public port too, for load balancers.
pub fn admin_router(state: AdminState) -> Router {
    health_router(state.clone()).merge(
        Router::new()
            .route("/metrics", get(metrics))
            .with_state(state),
    )
}

/// The health routes of [`admin_router`] without `/metrics`: what a port that the
/// internet reaches may serve.
pub fn health_router(state: AdminState) -> Router {
    Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .with_state(state)
}

async fn live() -> Response {
    (StatusCode::OK, axum::Json(json!({ "status": "ok" }))).into_response()
}

async fn ready(State(state): State<AdminState>) -> Response {
    let outcome = match tokio::time::timeout(READY_TIMEOUT, state.readiness.check()).await {
        Ok(outcome) => outcome,
        Err(_) => Err(format!(
            "readiness check took longer than {READY_TIMEOUT:?}"
        )),
    };
    match outcome {
        Ok(()) => (StatusCode::OK, axum::Json(json!({ "status": "ok" }))).into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "status": "unavailable", "reason": reason })),
        )
            .into_response(),
    }
}

async fn metrics(State(state): State<AdminState>) -> Response {
    (
        [(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)],
        state.metrics.render(),
    )
        .into_response()
}
