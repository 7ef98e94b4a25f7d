//! The `Bus` handle every service uses, whichever backend is behind it.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::error::BusError;
use crate::headers::Headers;
use crate::memory::InProcess;
use crate::message::{Local, Message};
use crate::nats::NatsTransport;
use crate::subject;
use crate::subscription::Subscription;
use crate::transport::Transport;

/// Which backend a [`Bus`] runs on, e.g. for the first log line of `p2piano all` or to pick
/// the matching store implementation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BusKind {
    /// A NATS server, for separate processes and horizontal scaling.
    Nats,
    /// Channels inside one process, for `p2piano all` with zero setup.
    InProcess,
}

/// A cheap-to-clone handle on the message bus: NATS in production, in-process for
/// `p2piano all`.
///
/// Both backends have the same observable semantics (subjects and wildcards, queue groups,
/// per-publisher order, request/reply errors, slow-consumer drops), so the same service code
/// runs on either. Subjects, queue groups and headers are validated here, identically for both.
/// Clones share one connection (NATS) or one set of subscriptions (in-process).
#[derive(Clone)]
pub struct Bus {
    transport: Arc<dyn Transport>,
}

impl Bus {
    /// Connects to NATS at `url` (comma-separated for several servers) with client connection
    /// name `name` (shown by the server's monitoring, so use the service name).
    ///
    /// Fails at once with [`Disconnected`](crate::BusErrorKind::Disconnected) if the server
    /// is unreachable, so a misconfigured service stops at start-up; once connected, the
    /// client reconnects without limit and restores its subscriptions by itself.
    #[tracing::instrument(level = "debug", skip_all, fields(url = %url, name = %name))]
    pub async fn connect_nats(url: &str, name: &str) -> Result<Bus, BusError> {
        let transport = NatsTransport::connect(url, name, false, None).await?;
        Ok(Bus {
            transport: Arc::new(transport),
        })
    }

    /// A fresh in-process bus; clone it to give every service of `p2piano all` the same bus.
    pub fn in_process() -> Bus {
        Bus {
            transport: Arc::new(InProcess::default()),
        }
    }

    /// A handle on the same bus for work that must not wait for this one's runtime: on NATS
    /// a connection of its own (named `name`), whose I/O runs on the runtime this is called
    /// on; in process a clone (delivery needs no task there). Liveness (heartbeats sent and
    /// judged) uses one on a thread of its own, so that a saturated main runtime cannot
    /// delay it into a false death.
    pub async fn dedicated(&self, name: &str) -> Result<Bus, BusError> {
        Ok(match self.transport.dedicated(name).await? {
            Some(transport) => Bus { transport },
            None => self.clone(),
        })
    }

    /// A handle on the same bus whose own publishes are never delivered to its own
    /// subscriptions (NATS `no_echo`): on NATS a connection of its own named `name`, in
    /// process a handle with an identity of its own. An edge publishes its rooms' relays and
    /// subscribes to its rooms through one, and hands each relay to its local sockets
    /// itself: a note then crosses NATS once, to the other edges, instead of also coming
    /// back to the edge that sent it. Its slow-consumer drops count in this bus's
    /// [`dropped_messages`](Self::dropped_messages).
    pub async fn no_echo(&self, name: &str) -> Result<Bus, BusError> {
        Ok(Bus {
            transport: self.transport.no_echo(name).await?,
        })
    }

    /// Which backend this bus runs on.
    pub fn kind(&self) -> BusKind {
        self.transport.kind()
    }

    /// Publishes `payload` to `subject` (no wildcards), to every matching subscriber.
    /// Fire-and-forget: returns once the message is handed to the backend.
    #[tracing::instrument(level = "debug", skip_all, fields(subject = %subject))]
    pub async fn publish(&self, subject: &str, payload: Bytes) -> Result<(), BusError> {
        subject::validate_publish(subject)?;
        self.transport
            .publish(subject, None, Headers::new(), payload)
            .await
    }

    /// Publishes with headers, e.g. to carry `traceparent` from one service to the next.
    #[tracing::instrument(level = "debug", skip_all, fields(subject = %subject))]
    pub async fn publish_with_headers(
        &self,
        subject: &str,
        headers: Headers,
        payload: Bytes,
    ) -> Result<(), BusError> {
        subject::validate_publish(subject)?;
        headers.validate()?;
        self.transport
            .publish(subject, None, headers, payload)
            .await
    }

    /// Publishes `value` with headers: on the in-process bus the value itself is handed to
    /// the subscribers ([`Message::local`], read with [`Message::value`]), never serialized;
    /// on NATS it is sent as JSON. Used for the relays of notes, the hottest path, so that
    /// `p2piano all` pays no JSON round trip per note. A local value skips the payload size
    /// limit, which only a serialized body has.
    #[tracing::instrument(level = "debug", skip_all, fields(subject = %subject))]
    pub async fn publish_value<T>(
        &self,
        subject: &str,
        headers: Headers,
        value: Arc<T>,
    ) -> Result<(), BusError>
    where
        T: serde::Serialize + Send + Sync + 'static,
    {
        subject::validate_publish(subject)?;
        headers.validate()?;
        if self.kind() == BusKind::InProcess {
            return self
                .transport
                .publish_local(subject, headers, Local(value))
                .await;
        }
        let payload = serde_json::to_vec(&*value).map_err(BusError::other)?;
        self.transport
            .publish(subject, None, headers, Bytes::from(payload))
            .await
    }

    /// Publish a message whose reply subject is `reply` (used to answer requests: `publish`
    /// to `msg.reply`; and to test requests by hand).
    #[tracing::instrument(level = "debug", skip_all, fields(subject = %subject, reply = %reply))]
    pub async fn publish_with_reply(
        &self,
        subject: &str,
        reply: &str,
        headers: Headers,
        payload: Bytes,
    ) -> Result<(), BusError> {
        subject::validate_publish(subject)?;
        subject::validate_publish(reply)?;
        headers.validate()?;
        self.transport
            .publish(subject, Some(reply), headers, payload)
            .await
    }

    /// Subscribes to `subject`, with NATS wildcards: `*` matches one token, `>` one or more
    /// trailing tokens. When this returns, every later publish that matches is received.
    #[tracing::instrument(level = "debug", skip_all, fields(subject = %subject))]
    pub async fn subscribe(&self, subject: &str) -> Result<Subscription, BusError> {
        subject::validate_subscribe(subject)?;
        self.transport.subscribe(subject, None).await
    }

    /// Subscribes as a member of queue group `group`: each message goes to ONE member of the
    /// group (per group), plus every plain subscriber. This is how service replicas share
    /// the requests of `rpc.*` subjects.
    #[tracing::instrument(level = "debug", skip_all, fields(subject = %subject, group = %group))]
    pub async fn queue_subscribe(
        &self,
        subject: &str,
        group: &str,
    ) -> Result<Subscription, BusError> {
        subject::validate_subscribe(subject)?;
        subject::validate_queue_group(group)?;
        self.transport.subscribe(subject, Some(group)).await
    }

    /// Request/reply with a timeout. NoResponders when nobody subscribes to the subject
    /// (immediately, not after the timeout), Timeout when nobody answered in time.
    ///
    /// Returns the first reply; responders answer by publishing to the request's
    /// [`Message::reply`].
    #[tracing::instrument(level = "debug", skip_all, fields(subject = %subject))]
    pub async fn request(
        &self,
        subject: &str,
        headers: Headers,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Message, BusError> {
        subject::validate_publish(subject)?;
        headers.validate()?;
        self.transport
            .request(subject, headers, payload, timeout)
            .await
    }

    /// Wait until everything published so far has been sent to the server (no-op in process).
    ///
    /// On NATS this is a round trip through the server, so when it returns the server has
    /// also routed those messages. Fails at once with
    /// [`Disconnected`](crate::BusErrorKind::Disconnected) while the connection is down.
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn flush(&self) -> Result<(), BusError> {
        self.transport.flush().await
    }

    /// Whether the connection is up now (always true in process). Used by /health/ready.
    pub fn is_connected(&self) -> bool {
        self.transport.is_connected()
    }

    /// The underlying NATS client, for JetStream use by the presence service. None in process.
    pub fn nats_client(&self) -> Option<async_nats::Client> {
        self.transport.nats_client()
    }

    /// How many messages were dropped so far because a subscriber on this bus (this NATS
    /// connection, or the whole in-process bus) fell 65,536 messages behind; exported as a
    /// drop metric, since a slow consumer loses messages rather than slowing everyone down.
    pub fn dropped_messages(&self) -> u64 {
        self.transport.dropped_messages()
    }
}

impl fmt::Debug for Bus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bus")
            .field("kind", &self.kind())
            .field("connected", &self.is_connected())
            .finish()
    }
}
