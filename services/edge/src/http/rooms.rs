//! The room routes of both dialects: `/rooms` (service dialect) and `/api/room` (the p2piano
//! web client's), each getting or creating the caller's session first.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use p2piano_protocol::rpc::{CreateRoom, GetRoom, UpdateRoom};
use p2piano_protocol::{ClientRoom, RoomCode, RoomView, SettingsPatch};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::ApiError;
use super::limits::HttpClass;
use super::session::HttpSession;
use super::{ErrorResponse, HttpState};

/// Largest request body the room routes read (a settings object is well under 1 KiB).
pub const MAX_BODY: usize = 16 * 1024;

/// Body of `POST /rooms` and `PUT /rooms/:code`.
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsBody {
    /// Settings to merge into the defaults (create) or the current settings (update).
    #[serde(default)]
    pub settings: Option<SettingsPatch>,
}

/// Answer of `POST /api/room`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedRoomId {
    /// The new room's code.
    #[schema(example = "fxa3x")]
    pub room_id: String,
}

/// Whether `headers` declare a JSON body (`application/json`, with or without parameters
/// such as `charset`).
fn declares_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

/// Reads a JSON body of at most [`MAX_BODY`] bytes; an empty body is `T::default()` and
/// needs no `Content-Type` (the web client creates rooms with neither), any other body must
/// be declared `application/json` (415). A body that stalls past its deadline
/// ([`crate::serve`]) is 408.
async fn json_body<T: for<'de> Deserialize<'de> + Default>(
    headers: &HeaderMap,
    body: Body,
) -> Result<T, ApiError> {
    let bytes =
        axum::body::to_bytes(body, MAX_BODY).await.map_err(
            |e| match crate::serve::is_body_timeout(e) {
                true => ApiError::BodyTimeout,
                false => {
                    ApiError::TooLarge(format!("request body must be at most {MAX_BODY} bytes"))
                }
            },
        )?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    if !declares_json(headers) {
        return Err(ApiError::UnsupportedMediaType(
            "the request body must be application/json".into(),
        ));
    }
    serde_json::from_slice(&bytes).map_err(|e| ApiError::BadRequest(format!("invalid body: {e}")))
}

/// Runs a room route: session first (so that even a refused request gets its cookie), then
/// the per-session limit of `class`, then `work`; the `Set-Cookie` of a new session goes on
/// whatever the answer is.
async fn with_session<F, Fut>(
    state: &HttpState,
    headers: &HeaderMap,
    addr: SocketAddr,
    class: HttpClass,
    work: F,
) -> Response
where
    F: FnOnce(HttpSession) -> Fut,
    Fut: Future<Output = Result<Response, ApiError>>,
{
    let session = match state.auth().get_or_create(headers, addr.ip()).await {
        Ok(s) => s,
        Err(e) => {
            if e.code == p2piano_protocol::ErrorCode::RateLimited {
                state.metrics().http_rate_limited.inc();
            }
            return ApiError::from(e).into_response();
        }
    };
    let cookie = session.set_cookie.clone();
    let result = match state.limits().check(&session.user_id, class) {
        Ok(()) => work(session).await,
        Err(wait) => {
            state.metrics().http_rate_limited.inc();
            Err(ApiError::RateLimited(wait))
        }
    };
    let mut response = result.unwrap_or_else(IntoResponse::into_response);
    if let Some(cookie) = cookie {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

fn service_code(code: &str) -> Result<RoomCode, ApiError> {
    RoomCode::parse(code).map_err(|e| ApiError::BadRequest(e.to_string()))
}

/// Creates a room owned by the caller's session.
#[utoipa::path(
    post,
    path = "/rooms",
    tag = "rooms",
    request_body(content = Option<SettingsBody>, description = "Optional initial settings"),
    responses(
        (status = 201, description = "The new room", body = RoomView),
        (status = 400, description = "Invalid settings", body = ErrorResponse),
        (status = 408, description = "The body did not arrive within P2PIANO_BODY_TIMEOUT_MS; the connection is closed", body = ErrorResponse),
        (status = 415, description = "A body that is not declared application/json", body = ErrorResponse),
        (status = 429, description = "More than 10 rooms a minute from this session, or too many new sessions from this address (P2PIANO_IP_CONNECT_RATE)", body = ErrorResponse),
        (status = 503, description = "The rooms service is unavailable", body = ErrorResponse),
    )
)]
#[tracing::instrument(skip_all)]
pub async fn create_room(
    State(state): State<HttpState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    with_session(&state, &headers, addr, HttpClass::Create, |session| async {
        let body: SettingsBody = json_body(&headers, body).await?;
        let room = state
            .rpc()
            .create_room(&CreateRoom {
                owner_id: session.user_id,
                settings: body.settings,
            })
            .await?;
        Ok((StatusCode::CREATED, axum::Json(room.to_view())).into_response())
    })
    .await
}

/// Reads a room.
#[utoipa::path(
    get,
    path = "/rooms/{code}",
    tag = "rooms",
    params(("code" = String, Path, description = "5-letter room code", pattern = "^[a-hjkmnp-z2-9]{5}$")),
    responses(
        (status = 200, description = "The room", body = RoomView),
        (status = 400, description = "Not a room code", body = ErrorResponse),
        (status = 404, description = "No such room", body = ErrorResponse),
        (status = 429, description = "More than 60 reads a minute from this session, or too many new sessions from this address (P2PIANO_IP_CONNECT_RATE)", body = ErrorResponse),
        (status = 503, description = "The rooms service is unavailable", body = ErrorResponse),
    )
)]
#[tracing::instrument(skip_all, fields(code = %code))]
pub async fn get_room(
    State(state): State<HttpState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(code): Path<String>,
) -> Response {
    with_session(&state, &headers, addr, HttpClass::Read, |_| async {
        let code = service_code(&code)?;
        let room = state.rpc().get_room(&GetRoom { code }).await?;
        Ok(axum::Json(room.to_view()).into_response())
    })
    .await
}

/// Changes a room's settings; only the session that created it may.
#[utoipa::path(
    put,
    path = "/rooms/{code}",
    tag = "rooms",
    params(("code" = String, Path, description = "5-letter room code", pattern = "^[a-hjkmnp-z2-9]{5}$")),
    request_body(content = SettingsBody, description = "Settings to merge into the current ones"),
    responses(
        (status = 200, description = "The room after the change", body = RoomView),
        (status = 400, description = "Not a room code, or invalid settings", body = ErrorResponse),
        (status = 408, description = "The body did not arrive within P2PIANO_BODY_TIMEOUT_MS; the connection is closed", body = ErrorResponse),
        (status = 415, description = "A body that is not declared application/json", body = ErrorResponse),
        (status = 403, description = "Not the room's creator", body = ErrorResponse),
        (status = 404, description = "No such room", body = ErrorResponse),
        (status = 429, description = "More than 30 updates a minute from this session, or too many new sessions from this address (P2PIANO_IP_CONNECT_RATE)", body = ErrorResponse),
        (status = 503, description = "The rooms service is unavailable", body = ErrorResponse),
    )
)]
#[tracing::instrument(skip_all, fields(code = %code))]
pub async fn update_room(
    State(state): State<HttpState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(code): Path<String>,
    body: Body,
) -> Response {
    with_session(&state, &headers, addr, HttpClass::Update, |session| async {
        let code = service_code(&code)?;
        let body: SettingsBody = json_body(&headers, body).await?;
        let settings = body
            .settings
            .ok_or_else(|| ApiError::BadRequest("settings is required".to_owned()))?;
        let req = UpdateRoom {
            code,
            by: session.user_id,
            settings,
        };
        let room = state.rpc().update_room(&req).await?;
        Ok(axum::Json(room.to_view()).into_response())
    })
    .await
}

/// Creates a room (the p2piano web client's route).
#[utoipa::path(
    post,
    path = "/api/room",
    tag = "client",
    responses(
        (status = 201, description = "The new room's code", body = CreatedRoomId),
        (status = 429, description = "More than 10 rooms a minute from this session, or too many new sessions from this address (P2PIANO_IP_CONNECT_RATE)", body = ErrorResponse),
        (status = 503, description = "The rooms service is unavailable", body = ErrorResponse),
    )
)]
#[tracing::instrument(skip_all)]
pub async fn create_client_room(
    State(state): State<HttpState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    with_session(&state, &headers, addr, HttpClass::Create, |session| async {
        let room = state
            .rpc()
            .create_room(&CreateRoom {
                owner_id: session.user_id,
                settings: None,
            })
            .await?;
        let body = CreatedRoomId {
            room_id: room.code.to_string(),
        };
        Ok((StatusCode::CREATED, axum::Json(body)).into_response())
    })
    .await
}

/// Reads a room (the p2piano web client's route). Malformed codes get the same 404 as
/// unknown rooms: the client shows its message.
#[utoipa::path(
    get,
    path = "/api/room/{id}",
    tag = "client",
    params(("id" = String, Path, description = "5-letter room code")),
    responses(
        (status = 200, description = "The room, without the caller's own user (the web client adds every listed user as a peer)", body = ClientRoom),
        (status = 404, description = "No such room: {\"statusCode\":404,\"message\":\"Room not found\"}"),
        (status = 429, description = "More than 60 reads a minute from this session, or too many new sessions from this address (P2PIANO_IP_CONNECT_RATE)", body = ErrorResponse),
        (status = 503, description = "The rooms service is unavailable", body = ErrorResponse),
    )
)]
#[tracing::instrument(skip_all, fields(id = %id))]
pub async fn get_client_room(
    State(state): State<HttpState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    with_session(&state, &headers, addr, HttpClass::Read, |session| async {
        let caller = session.user_id;
        let code = RoomCode::parse(&id).map_err(|_| ApiError::ClientRoomNotFound)?;
        let room =
            state
                .rpc()
                .get_room(&GetRoom { code })
                .await
                .map_err(|e| match ApiError::from(e) {
                    ApiError::NotFound(_) => ApiError::ClientRoomNotFound,
                    other => other,
                })?;
        // The web client adds every listed user as a peer and cannot tell which is itself
        // (it learns its own id only from ROOM_JOIN): a page that reloads while its previous
        // socket is in the grace period would become its own peer. So the caller is never
        // listed.
        let mut view = room.to_client();
        view.users.retain(|u| u.user_id != caller);
        Ok(axum::Json(view).into_response())
    })
    .await
}
