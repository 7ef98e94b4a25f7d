//! The closed set of error codes and the reply envelope every bus RPC uses.
//!
//! A reply is either `{"ok": value}` or `{"error": {"code", "message"}}`. Keeping the set of
//! codes closed lets the edge map each one to an HTTP status and a client event without a
//! catch-all, and lets tests match on a code instead of a message.

use serde::{Deserialize, Serialize};

/// Why a request failed. Services use the first six; the edge adds `rate_limited` and
/// `too_large` toward clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The room, session or member does not exist (or has expired).
    NotFound,
    /// The request is malformed or a value is out of range.
    Invalid,
    /// The caller may not do this (not the owner, room locked, not a member).
    Forbidden,
    /// The room has reached its participant limit.
    Full,
    /// A concurrent change won and retries were exhausted, or a unique value is taken.
    Conflict,
    /// A dependency (MongoDB, NATS, a service) cannot be reached right now; retry later.
    Unavailable,
    /// The client is over a rate limit (edge only).
    RateLimited,
    /// The input is larger than allowed (edge only).
    TooLarge,
}

impl ErrorCode {
    /// The code as it appears on the wire (`"not_found"`, ...), for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::NotFound => "not_found",
            ErrorCode::Invalid => "invalid",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Full => "full",
            ErrorCode::Conflict => "conflict",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::TooLarge => "too_large",
        }
    }
}

impl ErrorCode {
    /// Every code, for tests that pin how each one leaves the edge.
    pub const ALL: [ErrorCode; 8] = [
        ErrorCode::NotFound,
        ErrorCode::Invalid,
        ErrorCode::Forbidden,
        ErrorCode::Full,
        ErrorCode::Conflict,
        ErrorCode::Unavailable,
        ErrorCode::RateLimited,
        ErrorCode::TooLarge,
    ];

    /// The HTTP status of the code: the status of an HTTP answer and the `code` number of
    /// the client dialect's `exception`. The one table of numbers; `full` is a conflict
    /// with the room's state.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::Invalid => 400,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::Full | ErrorCode::Conflict => 409,
            ErrorCode::TooLarge => 413,
            ErrorCode::RateLimited => 429,
            ErrorCode::Unavailable => 503,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The body of an error reply: a code for programs and a message for people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ErrorBody {
    /// What kind of failure this is.
    pub code: ErrorCode,
    /// A human-readable explanation that never contains internals (no driver errors).
    pub message: String,
}

impl ErrorBody {
    /// Builds an error body from a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// The envelope of every bus RPC reply: `{"ok": T}` or `{"error": ErrorBody}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reply<T> {
    /// The request succeeded with this value.
    Ok(T),
    /// The request failed.
    Error(ErrorBody),
}

impl<T> Reply<T> {
    /// Converts the envelope into a `Result`, the form callers want to `?` on.
    pub fn into_result(self) -> Result<T, ErrorBody> {
        match self {
            Reply::Ok(v) => Ok(v),
            Reply::Error(e) => Err(e),
        }
    }
}

impl<T> From<Result<T, ErrorBody>> for Reply<T> {
    fn from(r: Result<T, ErrorBody>) -> Self {
        match r {
            Ok(v) => Reply::Ok(v),
            Err(e) => Reply::Error(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_envelope_shapes() {
        let ok: Reply<u32> = Reply::Ok(3);
        assert_eq!(serde_json::to_string(&ok).unwrap(), r#"{"ok":3}"#);
        let err: Reply<u32> = Reply::Error(ErrorBody::new(ErrorCode::NotFound, "no such room"));
        assert_eq!(
            serde_json::to_string(&err).unwrap(),
            r#"{"error":{"code":"not_found","message":"no such room"}}"#
        );
        let back: Reply<u32> =
            serde_json::from_str(r#"{"error":{"code":"rate_limited","message":"x"}}"#).unwrap();
        assert_eq!(back.into_result().unwrap_err().code, ErrorCode::RateLimited);
    }

    #[test]
    fn codes_serialize_as_their_names() {
        for code in [
            ErrorCode::NotFound,
            ErrorCode::Invalid,
            ErrorCode::Forbidden,
            ErrorCode::Full,
            ErrorCode::Conflict,
            ErrorCode::Unavailable,
            ErrorCode::RateLimited,
            ErrorCode::TooLarge,
        ] {
            assert_eq!(
                serde_json::to_value(code).unwrap(),
                serde_json::Value::String(code.as_str().into())
            );
        }
    }
}
