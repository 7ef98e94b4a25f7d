//! Decoding requests and encoding replies, the same way for every operation.

use std::future::Future;

use bytes::Bytes;
use p2piano_protocol::{Call, ErrorBody, ErrorCode, Reply};
use serde::Serialize;

/// An encoded reply and, when it is an error, its code (for the outcome label).
pub type Answer = (Bytes, Option<ErrorCode>);

/// The request in `payload`, or `invalid` with serde's reason.
pub fn decode<C: Call>(payload: &[u8]) -> Result<C, ErrorBody> {
    serde_json::from_slice(payload)
        .map_err(|e| ErrorBody::new(ErrorCode::Invalid, format!("malformed request: {e}")))
}

/// The reply envelope of `result`. Our reply types have string keys and no floats, so they
/// always serialize; were one ever not to, the caller gets an `unavailable` error (and the
/// cause is logged) rather than an empty body it could not read.
pub fn encode_reply<T: Serialize>(result: Result<T, ErrorBody>) -> Answer {
    let code = result.as_ref().err().map(|e| e.code);
    match serde_json::to_vec(&Reply::from(result)) {
        Ok(body) => (Bytes::from(body), code),
        Err(e) => {
            tracing::error!(error = %e, "reply not encodable");
            let fallback = Reply::<()>::Error(ErrorBody::new(
                ErrorCode::Unavailable,
                "internal error, try again",
            ));
            let body = serde_json::to_vec(&fallback).unwrap_or_else(|_| {
                br#"{"error":{"code":"unavailable","message":"internal error"}}"#.to_vec()
            });
            (Bytes::from(body), Some(ErrorCode::Unavailable))
        }
    }
}

/// Decodes `payload` as a `C`, runs `handle` on it and encodes what it answers.
pub async fn answer<C, F, Fut>(payload: &[u8], handle: F) -> Answer
where
    C: Call,
    F: FnOnce(C) -> Fut,
    Fut: Future<Output = Result<C::Reply, ErrorBody>>,
{
    match decode::<C>(payload) {
        Ok(req) => encode_reply(handle(req).await),
        Err(e) => encode_reply::<()>(Err(e)),
    }
}

#[cfg(test)]
mod tests {
    use p2piano_protocol::rpc::GetRoom;
    use p2piano_protocol::{Room, RoomCode};

    use super::*;

    #[tokio::test]
    async fn requests_are_decoded_and_replies_encoded() {
        let (body, code) = answer::<GetRoom, _, _>(br#"{"code":"abcde"}"#, |req| async move {
            assert_eq!(req.code, RoomCode::parse("abcde").unwrap());
            Err::<Room, _>(ErrorBody::new(ErrorCode::NotFound, "no such room"))
        })
        .await;
        assert_eq!(code, Some(ErrorCode::NotFound));
        assert_eq!(
            &body[..],
            br#"{"error":{"code":"not_found","message":"no such room"}}"#
        );
        let (body, code) = answer::<GetRoom, _, _>(b"{}", |_| async {
            unreachable!("a malformed request is not handled")
        })
        .await;
        assert_eq!(code, Some(ErrorCode::Invalid));
        assert!(
            std::str::from_utf8(&body)
                .unwrap()
                .contains("malformed request")
        );
    }
}
