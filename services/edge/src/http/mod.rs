//! The edge's HTTP API: health (and metrics where there is no admin listener), the room routes of both dialects with their
//! sessions and per-session limits, the OpenAPI document and its page, CORS and the
//! security headers every response carries.

pub mod demo;
pub mod error;
mod headers;
pub mod limits;
pub mod openapi;
pub mod rooms;
pub mod session;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use p2piano_protocol::Timestamp;
use p2piano_telemetry::{AdminState, admin_router, health_router};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

pub use headers::apply_layers;
pub use limits::{HttpLimits, IpLimits};
pub use session::{CookieSigner, SessionAuth};

use crate::metrics::EdgeMetrics;
use crate::rpc::Rpc;

/// The JSON body of every HTTP error (except the client dialect's unknown room).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorResponse {
    /// The HTTP status again.
    #[schema(example = 404)]
    pub status_code: u16,
    /// The status's reason phrase.
    #[schema(example = "Not Found")]
    pub error: String,
    /// What went wrong, for people.
    pub message: String,
}

/// `GET /health`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok` while the process answers.
    #[schema(example = "ok")]
    pub status: String,
    /// The edge's current time, ISO-8601.
    pub timestamp: String,
    /// Seconds since the edge started.
    pub uptime: f64,
}

struct Inner {
    rpc: Rpc,
    auth: SessionAuth,
    limits: HttpLimits,
    metrics: EdgeMetrics,
    admin: AdminState,
    started: std::time::Instant,
}

/// What the HTTP handlers share. Cheap to clone.
#[derive(Clone)]
pub struct HttpState {
    inner: Arc<Inner>,
}

impl HttpState {
    /// The state of one edge's routes.
    pub fn new(rpc: Rpc, auth: SessionAuth, metrics: EdgeMetrics, admin: AdminState) -> Self {
        let inner = Inner {
            rpc,
            auth,
            limits: HttpLimits::new(),
            metrics,
            admin,
            started: std::time::Instant::now(),
        };
        Self {
            inner: Arc::new(inner),
        }
    }

    /// Rooms and presence clients.
    pub fn rpc(&self) -> &Rpc {
        &self.inner.rpc
    }

    /// Session lookup and creation.
    pub fn auth(&self) -> &SessionAuth {
        &self.inner.auth
    }

    /// Per-session limits.
    pub fn limits(&self) -> &HttpLimits {
        &self.inner.limits
    }

    /// The edge's metrics.
    pub fn metrics(&self) -> &EdgeMetrics {
        &self.inner.metrics
    }
}

/// The HTTP routes of docs/protocol.md (without CORS and headers: see [`apply_layers`]),
/// with the health routes. `/metrics` only with `with_metrics`: the edge serves it on its
/// admin listener when it has one, never on the port that the internet reaches.
pub fn router(state: HttpState, with_metrics: bool) -> Router {
    let admin = match with_metrics {
        true => admin_router(state.inner.admin.clone()),
        false => health_router(state.inner.admin.clone()),
    };
    Router::new()
        .route("/health", get(health))
        .route("/rooms", post(rooms::create_room))
        .route(
            "/rooms/{code}",
            get(rooms::get_room).put(rooms::update_room),
        )
        .route("/api/room", post(rooms::create_client_room))
        .route("/api/room/{id}", get(rooms::get_client_room))
        .with_state(state)
        .merge(admin)
        .merge(openapi::router())
        .merge(demo::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
}

/// Liveness with the original's fields.
#[utoipa::path(get, path = "/health", tag = "health", responses((status = 200, body = Health)))]
async fn health(State(state): State<HttpState>) -> axum::Json<Health> {
    axum::Json(Health {
        status: "ok".to_owned(),
        timestamp: Timestamp::now().to_iso(),
        uptime: state.inner.started.elapsed().as_secs_f64(),
    })
}

/// Unknown routes, as NestJS answered them.
async fn not_found(method: Method, uri: Uri) -> Response {
    let body = json!({
        "statusCode": 404,
        "error": "Not Found",
        "message": format!("Cannot {method} {}", uri.path()),
    });
    (StatusCode::NOT_FOUND, axum::Json(body)).into_response()
}

async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    let body = json!({
        "statusCode": 405,
        "error": "Method Not Allowed",
        "message": format!("Cannot {method} {}", uri.path()),
    });
    (StatusCode::METHOD_NOT_ALLOWED, axum::Json(body)).into_response()
}
