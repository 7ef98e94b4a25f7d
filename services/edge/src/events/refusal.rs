//! Why a client event was refused, as one [`ErrorCode`] and a message. Every output is
//! derived from the code: the client dialect's `exception` number and the HTTP status from
//! [`ErrorCode::http_status`], the service dialect's error code from [`ErrorCode::as_str`],
//! so that a code a service answers with (`full` for a full room) reaches every client as
//! itself.

use p2piano_protocol::{ErrorBody, ErrorCode};

/// A refused event: the code and a message for the sender.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// What kind of refusal.
    pub code: ErrorCode,
    /// Message for the sender.
    pub message: String,
}

impl Refusal {
    /// A refusal with `code`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// Wrong types, missing fields, out-of-range numbers, unknown events.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Invalid, message)
    }

    /// Not allowed (another member's profile, an event before joining).
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    /// Larger than allowed.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::TooLarge, message)
    }

    /// The client dialect's `exception` code (an HTTP status).
    pub fn status(&self) -> u16 {
        self.code.http_status()
    }

    /// The service dialect's error code.
    pub fn code_name(&self) -> &'static str {
        self.code.as_str()
    }
}

impl From<ErrorBody> for Refusal {
    /// A service's error, passed on with its code and its message (written for clients).
    fn from(e: ErrorBody) -> Self {
        Self::new(e.code, e.message)
    }
}

#[cfg(test)]
mod tests {
    use p2piano_protocol::{ErrorBody, ErrorCode};
    use serde_json::Value;

    use super::Refusal;
    use crate::dialect::Dialect;
    use crate::http::error::ApiError;

    /// The payload of an encoded `42<ns>,[name, payload]` frame.
    fn payload(frame: &str) -> Value {
        let json = &frame[frame.find('[').unwrap()..];
        serde_json::from_str::<Vec<Value>>(json).unwrap()[1].clone()
    }

    /// Every code as each output says it: the client dialect's `exception` number, the
    /// service dialect's code (in an error event and in an ack), and the HTTP status.
    #[test]
    fn every_code_in_both_dialects_and_over_http() {
        let table = [
            (ErrorCode::NotFound, 404, "not_found"),
            (ErrorCode::Invalid, 400, "invalid"),
            (ErrorCode::Forbidden, 403, "forbidden"),
            (ErrorCode::Full, 409, "full"),
            (ErrorCode::Conflict, 409, "conflict"),
            (ErrorCode::Unavailable, 503, "unavailable"),
            (ErrorCode::RateLimited, 429, "rate_limited"),
            (ErrorCode::TooLarge, 413, "too_large"),
        ];
        assert_eq!(table.len(), ErrorCode::ALL.len());
        for (code, status, name) in table {
            let refusal = Refusal::from(ErrorBody::new(code, "m"));
            let client = Dialect::Client.error_frame("E", refusal.code, &refusal.message);
            assert_eq!(payload(&client)["code"], status, "{code:?}");
            let service = Dialect::Service.error_frame("e", refusal.code, &refusal.message);
            assert_eq!(payload(&service)["code"], name, "{code:?}");
            assert_eq!(refusal.code_name(), name);
            let http = ApiError::from(ErrorBody::new(code, "m"));
            assert_eq!(http.status().as_u16(), status, "{code:?}");
        }
    }
}
