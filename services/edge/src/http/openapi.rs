//! The OpenAPI 3 document of the HTTP API, generated from the handlers' own annotations and
//! types (utoipa), at `/openapi.json`, and a page that renders it at `/docs`.
//!
//! The page is plain HTML, CSS and JavaScript compiled into the binary and served from this
//! origin, so it works without internet access and under the edge's strict
//! Content-Security-Policy (the original served Swagger UI from a CDN bundle).

use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use utoipa::OpenApi;

use super::rooms::{CreatedRoomId, SettingsBody};
use super::{ErrorResponse, Health};

/// The generated API description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "p2piano edge",
        description = "HTTP API of the p2piano backend. Every room route gets or creates the \
caller's session (cookie `sessionId`, or `Authorization: Bearer <value>`). The Socket.IO \
protocol (`/socket.io/`, WebSocket only) is described in docs/protocol.md."
    ),
    paths(
        super::health,
        super::rooms::create_room,
        super::rooms::get_room,
        super::rooms::update_room,
        super::rooms::create_client_room,
        super::rooms::get_client_room,
    ),
    components(schemas(
        ErrorResponse,
        Health,
        SettingsBody,
        CreatedRoomId,
        p2piano_protocol::RoomView,
        p2piano_protocol::ClientRoom,
        p2piano_protocol::ClientUser,
        p2piano_protocol::Participant,
        p2piano_protocol::RoomSettings,
        p2piano_protocol::SettingsPatch,
        p2piano_protocol::Instrument,
    )),
    tags(
        (name = "rooms", description = "Rooms in the service dialect"),
        (name = "client", description = "The p2piano web client's routes"),
        (name = "health", description = "Liveness"),
    )
)]
pub struct ApiDoc;

/// The document as JSON text.
pub fn document() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

const PAGE: &str = include_str!("../../assets/docs/index.html");
const SCRIPT: &str = include_str!("../../assets/docs/docs.js");
const STYLE: &str = include_str!("../../assets/docs/docs.css");

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// `/openapi.json`, `/docs` and the page's assets.
pub fn router() -> Router {
    let doc = document();
    Router::new()
        .route(
            "/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], doc).into_response() }
            }),
        )
        .route(
            "/docs",
            get(|| async { asset("text/html; charset=utf-8", PAGE) }),
        )
        .route(
            "/docs/docs.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/docs/docs.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_names_every_route_and_schema() {
        let doc: serde_json::Value = serde_json::from_str(&document()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        for path in [
            "/health",
            "/rooms",
            "/rooms/{code}",
            "/api/room",
            "/api/room/{id}",
        ] {
            assert!(doc["paths"][path].is_object(), "{path} missing");
        }
        assert!(doc["paths"]["/rooms/{code}"]["put"].is_object());
        let room = &doc["components"]["schemas"]["RoomView"]["properties"];
        for field in [
            "code",
            "createdAt",
            "lastActivity",
            "participants",
            "settings",
        ] {
            assert!(room[field].is_object(), "RoomView.{field} missing");
        }
    }
}
