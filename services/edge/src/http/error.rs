//! The one error type of the HTTP routes and its JSON rendering.
//!
//! Every failure leaves as `{"statusCode","error","message"}` (the shape NestJS clients
//! already parse), never as a stack trace or a driver message: internal causes are logged
//! here and replaced by a generic message. The client dialect's unknown room is the one
//! exception, `{"statusCode":404,"message":"Room not found"}` exactly as the web client
//! expects it.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use p2piano_protocol::{ErrorBody, ErrorCode};
use serde_json::json;

/// Why an HTTP request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed (400).
    #[error("{0}")]
    BadRequest(String),
    /// The session may not do this (403).
    #[error("{0}")]
    Forbidden(String),
    /// No such room (404).
    #[error("{0}")]
    NotFound(String),
    /// The client dialect's unknown or malformed room (404, the original's exact body).
    #[error("Room not found")]
    ClientRoomNotFound,
    /// A concurrent change won or the room is full (409).
    #[error("{0}")]
    Conflict(String),
    /// The body is larger than allowed (413).
    #[error("{0}")]
    TooLarge(String),
    /// The body did not arrive within `P2PIANO_BODY_TIMEOUT_MS` (408; the connection is
    /// closed after the answer).
    #[error("the request body did not arrive in time")]
    BodyTimeout,
    /// A body that is not JSON on a JSON route (415).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// Over a per-session rate limit (429 with `Retry-After`).
    #[error("Too many requests, retry in {} s", retry_secs(*.0))]
    RateLimited(Duration),
    /// A service behind the edge cannot be reached now (503 with `Retry-After`).
    #[error("{0}")]
    Unavailable(String),
}

/// Whole seconds to wait, at least one (a `Retry-After: 0` invites a busy loop).
fn retry_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0).max(u64::from(d.as_secs() == 0))
}

impl ApiError {
    /// The error code this error shares with the bus and the socket dialects, if it is one
    /// of theirs: its HTTP status then comes from [`ErrorCode::http_status`], the one table
    /// of those numbers.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ApiError::BadRequest(_) => Some(ErrorCode::Invalid),
            ApiError::Forbidden(_) => Some(ErrorCode::Forbidden),
            ApiError::NotFound(_) | ApiError::ClientRoomNotFound => Some(ErrorCode::NotFound),
            ApiError::Conflict(_) => Some(ErrorCode::Conflict),
            ApiError::TooLarge(_) => Some(ErrorCode::TooLarge),
            ApiError::RateLimited(_) => Some(ErrorCode::RateLimited),
            ApiError::Unavailable(_) => Some(ErrorCode::Unavailable),
            ApiError::BodyTimeout | ApiError::UnsupportedMediaType(_) => None,
        }
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        if let Some(code) = self.code() {
            return StatusCode::from_u16(code.http_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        }
        match self {
            ApiError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<ErrorBody> for ApiError {
    /// Maps a bus error to its HTTP meaning. `full` is a conflict with the room's state;
    /// the messages of the services are written for clients and are passed on.
    fn from(e: ErrorBody) -> Self {
        match e.code {
            ErrorCode::NotFound => ApiError::NotFound(e.message),
            ErrorCode::Invalid => ApiError::BadRequest(e.message),
            ErrorCode::Forbidden => ApiError::Forbidden(e.message),
            ErrorCode::Full | ErrorCode::Conflict => ApiError::Conflict(e.message),
            ErrorCode::Unavailable => ApiError::Unavailable(e.message),
            ErrorCode::RateLimited => ApiError::RateLimited(Duration::from_secs(1)),
            ErrorCode::TooLarge => ApiError::TooLarge(e.message),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = self.to_string();
        let body = match &self {
            ApiError::ClientRoomNotFound => json!({"statusCode": 404, "message": message}),
            _ => json!({
                "statusCode": status.as_u16(),
                "error": status.canonical_reason().unwrap_or("Error"),
                "message": message,
            }),
        };
        let mut response = (status, axum::Json(body)).into_response();
        let retry = match &self {
            ApiError::RateLimited(d) => Some(retry_secs(*d)),
            ApiError::Unavailable(_) => Some(1),
            _ => None,
        };
        if let Some(secs) = retry {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if matches!(self, ApiError::BodyTimeout) {
            // The rest of the body may still come: the connection cannot carry another
            // request, and a client that stalls does not get to hold it.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_and_is_never_zero() {
        assert_eq!(retry_secs(Duration::ZERO), 1);
        assert_eq!(retry_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_secs(Duration::from_secs(3)), 3);
        assert_eq!(retry_secs(Duration::from_millis(3001)), 4);
    }

    #[tokio::test]
    async fn client_room_not_found_has_the_original_body() {
        let r = ApiError::ClientRoomNotFound.into_response();
        let body = axum::body::to_bytes(r.into_body(), 4096).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            body,
            json!({"statusCode": 404, "message": "Room not found"})
        );
    }
}
