//! The internal interface each backend implements behind [`Bus`](crate::Bus).
//!
//! Subjects, reply subjects, queue groups and headers are validated by `Bus` before they get
//! here, so backends only move messages.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::bus::BusKind;
use crate::error::BusError;
use crate::headers::Headers;
use crate::message::{Local, Message};
use crate::subscription::Subscription;

/// One bus backend (NATS or in-process).
#[async_trait]
pub(crate) trait Transport: Send + Sync {
    /// Which backend this is.
    fn kind(&self) -> BusKind;

    /// Publishes one message, with a reply subject when `reply` is given.
    async fn publish(
        &self,
        subject: &str,
        reply: Option<&str>,
        headers: Headers,
        payload: Bytes,
    ) -> Result<(), BusError>;

    /// Publishes a value as it is, for subscribers in this process. Only called on backends
    /// whose [`kind`](Self::kind) is in-process; the others are handed serialized payloads.
    async fn publish_local(
        &self,
        _subject: &str,
        _headers: Headers,
        _value: Local,
    ) -> Result<(), BusError> {
        Err(BusError::other("this bus does not carry values"))
    }

    /// Subscribes to a pattern, as a member of queue `group` when given. When this returns,
    /// the subscription receives everything published afterwards, from any connection.
    async fn subscribe(&self, subject: &str, group: Option<&str>)
    -> Result<Subscription, BusError>;

    /// Sends a request and waits at most `timeout` for the first reply.
    async fn request(
        &self,
        subject: &str,
        headers: Headers,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Message, BusError>;

    /// Waits until everything published so far has reached the server.
    async fn flush(&self) -> Result<(), BusError>;

    /// Whether the connection is up now.
    fn is_connected(&self) -> bool;

    /// The NATS client, when there is one.
    fn nats_client(&self) -> Option<async_nats::Client>;

    /// Messages dropped so far because a subscriber of this handle could not keep up.
    fn dropped_messages(&self) -> u64;

    /// Another handle on the same bus with a connection of its own (NATS), driven by the
    /// runtime this is called on; the in-process bus returns `None` (its clones already
    /// need no runtime of their own).
    async fn dedicated(&self, name: &str) -> Result<Option<Arc<dyn Transport>>, BusError>;

    /// Another handle on the same bus whose publishes are not delivered to its own
    /// subscriptions.
    async fn no_echo(&self, name: &str) -> Result<Arc<dyn Transport>, BusError>;
}
