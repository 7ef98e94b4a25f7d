//! The message type both backends deliver.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

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
    /// The body, JSON in this project. Empty when the message carries a [`Local`] value
    /// instead (see [`Bus::publish_value`](crate::Bus::publish_value)).
    pub payload: Bytes,
    /// The published value itself, when it did not leave the process (in-process bus and
    /// [`Bus::publish_value`](crate::Bus::publish_value)); `None` off NATS.
    pub local: Option<Local>,
}

/// A value handed from publisher to subscribers inside one process, shared rather than
/// serialized: on the in-process bus a relayed note is never turned into JSON and parsed
/// back. Read it with [`Message::value`].
#[derive(Clone)]
pub struct Local(pub(crate) Arc<dyn Any + Send + Sync>);

impl fmt::Debug for Local {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Local(..)")
    }
}

impl Message {
    /// The message's value as a `T`: the publisher's own value when it was handed over in
    /// process, otherwise the JSON payload parsed. Fails when the payload is not a `T`
    /// (or a local value is of another type).
    pub fn value<T>(&self) -> Result<Arc<T>, serde_json::Error>
    where
        T: serde::de::DeserializeOwned + Send + Sync + 'static,
    {
        match &self.local {
            Some(Local(value)) => Arc::clone(value).downcast::<T>().map_err(|_| {
                <serde_json::Error as serde::de::Error>::custom("local value of another type")
            }),
            None => serde_json::from_slice(&self.payload).map(Arc::new),
        }
    }
}
