//! The NATS bus backend (async-nats), used when the services run as separate processes.
//!
//! Besides translating types and errors, it closes two gaps between plain async-nats and the
//! in-process bus so that both behave the same:
//! - `subscribe` returns only once the server has the subscription (a round trip through the
//!   server, see [`barrier`]), so a publish from another connection right after it is seen;
//! - a subscription never yields the server's "no responders" status messages.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use async_nats::client::{PublishErrorKind, RequestErrorKind, SubscribeErrorKind};
use async_nats::connection::State;
use async_nats::{
    Client, ConnectErrorKind, Event, HeaderMap, HeaderName, HeaderValue, StatusCode, Subject,
};
use async_trait::async_trait;
use bytes::Bytes;
use futures::{Stream, StreamExt};

use crate::bus::BusKind;
use crate::error::BusError;
use crate::headers::Headers;
use crate::message::Message;
use crate::subscription::{Subscription, SubscriptionBackend};
use crate::transport::Transport;

/// How long a [`barrier`] waits for its round trip before giving up.
const BARRIER_TIMEOUT: Duration = Duration::from_secs(5);

/// The NATS backend: one client connection.
pub(crate) struct NatsTransport {
    client: Client,
    /// The servers connected to, for [`Transport::dedicated`].
    url: String,
    /// Messages the client dropped for a slow subscriber (counted from slow-consumer events).
    dropped: Arc<AtomicU64>,
    /// Whether the connection was made with `no_echo` (its own publishes never come back).
    no_echo: bool,
}

impl NatsTransport {
    /// Connects to `url` (a comma-separated list of servers is accepted) as client `name`.
    ///
    /// The first connection attempt is not retried, so a wrong URL fails start-up at once;
    /// once connected, the client reconnects forever and resubscribes by itself.
    /// With `no_echo`, the server does not deliver this connection's publishes to its own
    /// subscriptions. `dropped` is the counter of slow-consumer drops to add to (a fresh
    /// one for a new bus, the parent's for a handle made from one, so that the bus reports
    /// both).
    pub(crate) async fn connect(
        url: &str,
        name: &str,
        no_echo: bool,
        dropped: Option<Arc<AtomicU64>>,
    ) -> Result<Self, BusError> {
        let servers: Vec<&str> = url
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        if servers.is_empty() {
            return Err(BusError::other("empty NATS URL"));
        }
        let dropped = dropped.unwrap_or_default();
        let counter = Arc::clone(&dropped);
        let connection_name: Arc<str> = name.into();
        let mut options = async_nats::ConnectOptions::new();
        if no_echo {
            options = options.no_echo();
        }
        let client = options
            .name(name)
            .max_reconnects(None)
            .event_callback(move |event| {
                let counter = Arc::clone(&counter);
                let name = Arc::clone(&connection_name);
                async move { on_event(&name, &counter, event) }
            })
            .connect(servers)
            .await
            .map_err(|err| match err.kind() {
                ConnectErrorKind::ServerParse
                | ConnectErrorKind::Authentication
                | ConnectErrorKind::AuthorizationViolation
                | ConnectErrorKind::Tls => BusError::other(err),
                ConnectErrorKind::Dns
                | ConnectErrorKind::TimedOut
                | ConnectErrorKind::Io
                | ConnectErrorKind::MaxReconnects => BusError::disconnected(err),
            })?;
        Ok(Self {
            client,
            url: url.to_owned(),
            dropped,
            no_echo,
        })
    }
}

/// Logs connection events and counts slow-consumer drops.
fn on_event(name: &str, dropped: &AtomicU64, event: Event) {
    match event {
        Event::Connected => tracing::info!(connection = name, "nats connected"),
        Event::Disconnected => tracing::warn!(connection = name, "nats disconnected"),
        Event::SlowConsumer(sid) => {
            let total = dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if total.is_power_of_two() {
                tracing::warn!(
                    connection = name,
                    sid,
                    dropped = total,
                    "slow consumer: subscription buffer full, message dropped"
                );
            }
        }
        Event::ServerError(err) => tracing::warn!(connection = name, %err, "nats server error"),
        Event::ClientError(err) => tracing::warn!(connection = name, %err, "nats client error"),
        other => tracing::info!(connection = name, event = %other, "nats event"),
    }
}

/// Waits until the server has processed everything this client sent before the call.
/// async-nats' `flush` only writes to the socket, which does not tell that a `SUB` is in
/// effect yet.
async fn barrier(client: &Client, no_echo: bool) -> Result<(), BusError> {
    if no_echo {
        barrier_no_echo(client).await
    } else {
        barrier_echo(client).await
    }
}

/// The [`barrier`] of a connection that receives its own publishes: publishes to a private
/// inbox and waits for the message to come back.
async fn barrier_echo(client: &Client) -> Result<(), BusError> {
    let inbox = client.new_inbox();
    let mut echo = client
        .subscribe(Subject::from(inbox.as_str()))
        .await
        .map_err(BusError::disconnected)?;
    client
        .publish(Subject::from(inbox.as_str()), Bytes::new())
        .await
        .map_err(BusError::disconnected)?;
    match tokio::time::timeout(BARRIER_TIMEOUT, echo.next()).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(BusError::disconnected("client closed")),
        Err(_) => Err(BusError::timeout()),
    }
}

/// The [`barrier`] of a `no_echo` connection, whose own publishes never come back: a request
/// to a subject nobody listens on, which the server answers with "no responders" once it
/// has processed everything sent before it.
async fn barrier_no_echo(client: &Client) -> Result<(), BusError> {
    let nobody = client.new_inbox();
    let request = client.request(Subject::from(nobody.as_str()), Bytes::new());
    match tokio::time::timeout(BARRIER_TIMEOUT, request).await {
        Ok(Err(e)) if e.kind() == RequestErrorKind::NoResponders => Ok(()),
        Ok(Ok(_)) => Err(BusError::other("a reply from a subject nobody listens on")),
        Ok(Err(e)) => Err(request_error(e)),
        Err(_) => Err(BusError::timeout()),
    }
}

/// Converts validated headers; `None` when empty, so no header block is sent.
fn to_header_map(headers: &Headers) -> Result<Option<HeaderMap>, BusError> {
    if headers.is_empty() {
        return Ok(None);
    }
    let mut map = HeaderMap::new();
    for (name, value) in headers.iter() {
        let name: HeaderName = name.parse().map_err(BusError::other)?;
        let value: HeaderValue = value.parse().map_err(BusError::other)?;
        map.insert(name, value);
    }
    Ok(Some(map))
}

/// Converts received headers, keeping the last value of a repeated name.
fn from_header_map(map: &HeaderMap) -> Headers {
    let mut headers = Headers::new();
    for (name, values) in map.iter() {
        if let Some(value) = values.last() {
            headers.insert(name.to_string(), value.as_str());
        }
    }
    headers
}

fn from_nats(message: async_nats::Message) -> Message {
    Message {
        subject: message.subject.to_string(),
        reply: message.reply.map(|r| r.to_string()),
        headers: message
            .headers
            .as_ref()
            .map(from_header_map)
            .unwrap_or_default(),
        payload: message.payload,
        local: None,
    }
}

fn publish_error(err: async_nats::PublishError) -> BusError {
    match err.kind() {
        PublishErrorKind::InvalidSubject => BusError::invalid_subject(err),
        PublishErrorKind::MaxPayloadExceeded => BusError::other(err),
        PublishErrorKind::Send => BusError::disconnected(err),
    }
}

fn subscribe_error(err: async_nats::SubscribeError) -> BusError {
    match err.kind() {
        SubscribeErrorKind::InvalidSubject | SubscribeErrorKind::InvalidQueueName => {
            BusError::invalid_subject(err)
        }
        SubscribeErrorKind::Other => BusError::disconnected(err),
    }
}

fn request_error(err: async_nats::RequestError) -> BusError {
    match err.kind() {
        RequestErrorKind::TimedOut => BusError::with_source(crate::BusErrorKind::Timeout, err),
        RequestErrorKind::NoResponders => {
            BusError::with_source(crate::BusErrorKind::NoResponders, err)
        }
        RequestErrorKind::InvalidSubject => BusError::invalid_subject(err),
        RequestErrorKind::MaxPayloadExceeded | RequestErrorKind::Other => BusError::other(err),
    }
}

#[async_trait]
impl Transport for NatsTransport {
    fn kind(&self) -> BusKind {
        BusKind::Nats
    }

    async fn publish(
        &self,
        subject: &str,
        reply: Option<&str>,
        headers: Headers,
        payload: Bytes,
    ) -> Result<(), BusError> {
        let subject = Subject::from(subject);
        let result = match (reply.map(Subject::from), to_header_map(&headers)?) {
            (None, None) => self.client.publish(subject, payload).await,
            (None, Some(map)) => {
                self.client
                    .publish_with_headers(subject, map, payload)
                    .await
            }
            (Some(reply), None) => {
                self.client
                    .publish_with_reply(subject, reply, payload)
                    .await
            }
            (Some(reply), Some(map)) => {
                self.client
                    .publish_with_reply_and_headers(subject, reply, map, payload)
                    .await
            }
        };
        result.map_err(publish_error)
    }

    async fn subscribe(
        &self,
        subject: &str,
        group: Option<&str>,
    ) -> Result<Subscription, BusError> {
        let nats_subject = Subject::from(subject);
        let subscriber = match group {
            None => self.client.subscribe(nats_subject).await,
            Some(group) => {
                self.client
                    .queue_subscribe(nats_subject, group.to_owned())
                    .await
            }
        }
        .map_err(subscribe_error)?;
        // While disconnected the SUB waits in the client and is sent on reconnect; there is
        // nothing to wait for then.
        if self.is_connected()
            && let Err(err) = barrier(&self.client, self.no_echo).await
        {
            tracing::debug!(%err, subject, "subscription barrier failed; continuing");
        }
        let backend = NatsSubscription {
            client: self.client.clone(),
            inner: subscriber,
            no_echo: self.no_echo,
        };
        Ok(Subscription::new(subject, Box::new(backend)))
    }

    async fn request(
        &self,
        subject: &str,
        headers: Headers,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Message, BusError> {
        let mut request = async_nats::Request::new()
            .payload(payload)
            .timeout(Some(timeout));
        if let Some(map) = to_header_map(&headers)? {
            request = request.headers(map);
        }
        // async-nats starts its timeout only once the request is queued, which can wait while
        // reconnecting; bound the whole call.
        let sent = self.client.send_request(Subject::from(subject), request);
        match tokio::time::timeout(timeout, sent).await {
            Ok(Ok(reply)) => Ok(from_nats(reply)),
            Ok(Err(err)) => Err(request_error(err)),
            Err(_) => Err(BusError::timeout()),
        }
    }

    async fn flush(&self) -> Result<(), BusError> {
        if !self.is_connected() {
            return Err(BusError::disconnected("not connected to the NATS server"));
        }
        self.client.flush().await.map_err(BusError::disconnected)?;
        barrier(&self.client, self.no_echo).await
    }

    fn is_connected(&self) -> bool {
        self.client.connection_state() == State::Connected
    }

    fn nats_client(&self) -> Option<Client> {
        Some(self.client.clone())
    }

    fn dropped_messages(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    async fn dedicated(&self, name: &str) -> Result<Option<Arc<dyn Transport>>, BusError> {
        let transport = NatsTransport::connect(&self.url, name, false, None).await?;
        Ok(Some(Arc::new(transport)))
    }

    async fn no_echo(&self, name: &str) -> Result<Arc<dyn Transport>, BusError> {
        let dropped = Some(Arc::clone(&self.dropped));
        let transport = NatsTransport::connect(&self.url, name, true, dropped).await?;
        Ok(Arc::new(transport))
    }
}

/// A NATS subscription, converting messages to the bus type.
struct NatsSubscription {
    client: Client,
    inner: async_nats::Subscriber,
    /// Whether its connection is `no_echo` (which [`barrier`] it needs).
    no_echo: bool,
}

#[async_trait]
impl SubscriptionBackend for NatsSubscription {
    async fn drain(&mut self) -> Result<(), BusError> {
        // First make sure whatever the server already routed to us is in the buffer, then stop
        // the subscription and close the channel: the stream yields the buffer and ends, even
        // if the connection drops now (async-nats' own `drain` would wait for a reconnect).
        // async-nats offers no way to send UNSUB while still accepting what the server routes
        // until it has processed it, so a message routed in the one round trip between the
        // barrier and the UNSUB is not delivered; its requester sees a timeout.
        if self.client.connection_state() == State::Connected
            && let Err(err) = barrier(&self.client, self.no_echo).await
        {
            tracing::debug!(%err, "drain barrier failed; continuing");
        }
        self.unsubscribe().await
    }

    async fn unsubscribe(&mut self) -> Result<(), BusError> {
        self.inner
            .unsubscribe()
            .await
            .map_err(BusError::disconnected)?;
        // Wait until the server has processed the UNSUB (it handles one connection's commands
        // in order), so that once this returns nothing more is routed here: a request sent
        // afterwards gets "no responders" at once instead of vanishing into a timeout.
        if self.client.connection_state() == State::Connected
            && let Err(err) = barrier(&self.client, self.no_echo).await
        {
            tracing::debug!(%err, "unsubscribe barrier failed; continuing");
        }
        Ok(())
    }
}

impl Stream for NatsSubscription {
    type Item = Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        loop {
            match self.inner.poll_next_unpin(cx) {
                // The server answers a message published with a reply subject but without
                // subscribers by sending a 503 status to that reply subject. The in-process
                // bus sends nothing then, and neither should a plain subscription.
                Poll::Ready(Some(msg)) if msg.status == Some(StatusCode::NO_RESPONDERS) => {
                    continue;
                }
                Poll::Ready(Some(msg)) => return Poll::Ready(Some(from_nats(msg))),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip() {
        let headers = Headers::from_iter([("traceparent", "00-1-2-01"), ("X-Other", "v")]);
        let map = to_header_map(&headers).unwrap().unwrap();
        assert_eq!(from_header_map(&map), headers);
        assert!(to_header_map(&Headers::new()).unwrap().is_none());
    }
}
