//! The backend-neutral subscription handle.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use async_trait::async_trait;
use futures::stream::{FusedStream, Stream, StreamExt};

use crate::error::BusError;
use crate::message::Message;

/// What a backend's subscription must provide; [`Subscription`] adds the common end-of-stream
/// rules on top so both backends behave the same.
#[async_trait]
pub(crate) trait SubscriptionBackend: Stream<Item = Message> + Send + Unpin {
    /// Stops new messages; the stream yields what is buffered, then ends by itself.
    async fn drain(&mut self) -> Result<(), BusError>;
    /// Stops new messages at once (buffered ones are discarded by [`Subscription`]).
    async fn unsubscribe(&mut self) -> Result<(), BusError>;
}

/// A stream of messages for one subscription (`futures::Stream<Item = Message>`).
///
/// Messages from one publisher arrive in publish order. A subscriber that falls behind by more
/// than 65,536 messages loses the newest ones (NATS slow-consumer semantics) rather than
/// blocking the publisher or other subscribers. Dropping a `Subscription` unsubscribes it.
pub struct Subscription {
    subject: String,
    inner: Box<dyn SubscriptionBackend>,
    ended: bool,
}

impl Subscription {
    /// Wraps a backend subscription on `subject`.
    pub(crate) fn new(subject: &str, inner: Box<dyn SubscriptionBackend>) -> Self {
        Self {
            subject: subject.to_owned(),
            inner,
            ended: false,
        }
    }

    /// The subject (pattern) this subscription was made with, for logs.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// Stop receiving new messages; messages already delivered to this subscription are still
    /// yielded by the stream, which then ends (`None`). Used for graceful shutdown, so that
    /// work already accepted is finished rather than lost.
    #[tracing::instrument(level = "debug", skip_all, fields(subject = %self.subject))]
    pub async fn drain(&mut self) -> Result<(), BusError> {
        if self.ended {
            return Ok(());
        }
        self.inner.drain().await
    }

    /// Stop at once: the stream ends now, discarding anything buffered. Used when the
    /// messages are no longer wanted (e.g. the last local member left a room).
    #[tracing::instrument(level = "debug", skip_all, fields(subject = %self.subject))]
    pub async fn unsubscribe(&mut self) -> Result<(), BusError> {
        if self.ended {
            return Ok(());
        }
        self.ended = true;
        self.inner.unsubscribe().await
    }
}

impl Stream for Subscription {
    type Item = Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let polled = self.inner.poll_next_unpin(cx);
        if let Poll::Ready(None) = polled {
            self.ended = true;
        }
        polled
    }
}

impl FusedStream for Subscription {
    fn is_terminated(&self) -> bool {
        self.ended
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("subject", &self.subject)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}
