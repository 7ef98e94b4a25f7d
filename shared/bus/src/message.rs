//! The message type both backends deliver.

use bytes::Bytes;

use crate::headers::Headers;

/// One message as received from a subscription or as a request's reply.
///
/// Backend-neutral, so that service code never sees an async-nats type: a responder answers a
/// request by publishing to [`reply`](Self::reply).
#[derive(Clone, Debug)]
pub struct Message {
    /// The concrete subject the message was published to (never a wildcard), e.g. to tell
    /// `room.<code>.members` from `room.<code>.relay` on a `room.<code>.>` subscription.
    pub subject: String,
    /// Where to send the answer, when the message is a request.
    pub reply: Option<String>,
    /// Headers such as `traceparent`; empty when none were sent.
    pub headers: Headers,
    /// The body, JSON in this project.
    pub payload: Bytes,
}
