//! The one serving loop of the services' RPCs: each request in its own task, at most
//! [`ServeLimits::max_in_flight`] at once (the next ones wait in the subscription: that is
//! the backpressure), in a server span whose parent is the caller's, answered with the
//! span's context in the reply's headers; on shutdown the subscription is drained, what was
//! received is answered, and the loop returns within the drain timeout.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use p2piano_bus::{Bus, Headers, Message, Subscription};
use p2piano_protocol::{ErrorBody, ErrorCode};
use p2piano_telemetry::prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::reply::{Answer, encode_reply};

/// One service's side of the loop: which operation a subject names, how to run it, and what
/// to count.
pub trait Handler: Send + Sync + 'static {
    /// The service's operations.
    type Op: Copy + Send + Sync + 'static;

    /// The exported name of the server span (`rooms.rpc`).
    const SPAN: &'static str;

    /// The bus the replies are sent on.
    fn bus(&self) -> &Bus;

    /// The operation a request's subject names, if any.
    fn op_of(&self, subject: &str) -> Option<Self::Op>;

    /// The operation's name, for spans and metric labels.
    fn op_name(op: Self::Op) -> &'static str;

    /// Runs one request: decode, handle, encode (see [`crate::answer`]). Anything to
    /// publish before the caller has its reply (a membership event) is published here.
    fn run(&self, op: Self::Op, payload: Bytes) -> impl Future<Output = Answer> + Send;

    /// A request was answered: its operation (`unknown` when the subject named none), its
    /// outcome (`ok` or the error code), and how long it took.
    fn finished(&self, op: &'static str, outcome: &'static str, elapsed: Duration);

    /// The gauge of requests being handled now, if the service exports one: a backlog
    /// shows there first.
    fn in_flight(&self) -> Option<Gauge> {
        None
    }
}

/// Bounds of the loop.
#[derive(Clone, Copy, Debug)]
pub struct ServeLimits {
    /// Requests handled at once.
    pub max_in_flight: usize,
    /// How long the drain may take to answer what was received.
    pub drain_timeout: Duration,
}

/// Serves `subscription` with `handler` until `shutdown` (or until the bus closes the
/// subscription), then drains it.
pub async fn serve<H: Handler>(
    handler: Arc<H>,
    mut subscription: Subscription,
    limits: ServeLimits,
    shutdown: CancellationToken,
) {
    let tracker = TaskTracker::new();
    let permits = Arc::new(Semaphore::new(limits.max_in_flight.max(1)));
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            msg = subscription.next() => match msg {
                Some(msg) => dispatch(&handler, &tracker, &permits, msg).await,
                None => {
                    tracing::warn!(service = H::SPAN, "subscription closed by the bus");
                    break;
                }
            },
        }
    }
    tracing::info!(service = H::SPAN, "draining");
    if let Err(e) = subscription.drain().await {
        tracing::warn!(error = %e, service = H::SPAN, "could not drain the subscription");
    }
    while let Some(msg) = subscription.next().await {
        dispatch(&handler, &tracker, &permits, msg).await;
    }
    tracker.close();
    if tokio::time::timeout(limits.drain_timeout, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(service = H::SPAN, "stopped with requests still in flight");
    }
}

/// Handles `msg` in its own task once a slot is free (waiting here is the backpressure).
async fn dispatch<H: Handler>(
    handler: &Arc<H>,
    tracker: &TaskTracker,
    permits: &Arc<Semaphore>,
    msg: Message,
) {
    let Ok(permit) = permits.clone().acquire_owned().await else {
        return;
    };
    let handler = handler.clone();
    let gauge = handler.in_flight();
    if let Some(g) = &gauge {
        g.inc();
    }
    tracker.spawn(async move {
        handle(&*handler, msg).await;
        if let Some(g) = &gauge {
            g.dec();
        }
        drop(permit);
    });
}

/// One request, from its subject to its reply.
async fn handle<H: Handler>(handler: &H, msg: Message) {
    let op = handler.op_of(&msg.subject);
    let op_name = op.map_or("unknown", H::op_name);
    let span = tracing::info_span!(
        "rpc.server",
        otel.name = H::SPAN,
        otel.kind = "server",
        op = op_name,
        outcome = tracing::field::Empty,
    );
    p2piano_telemetry::set_parent_from(&span, &msg.headers);
    async {
        let started = Instant::now();
        let Some(reply_to) = msg.reply.as_deref() else {
            tracing::warn!(subject = %msg.subject, "request without a reply subject ignored");
            return;
        };
        let (body, failed) = match op {
            Some(op) => handler.run(op, msg.payload.clone()).await,
            None => {
                encode_reply::<()>(Err(ErrorBody::new(ErrorCode::Invalid, "unknown operation")))
            }
        };
        let outcome = failed.map_or("ok", ErrorCode::as_str);
        tracing::Span::current().record("outcome", outcome);
        let mut headers = Headers::new();
        p2piano_telemetry::inject_context(&mut headers);
        if let Err(e) = handler
            .bus()
            .publish_with_headers(reply_to, headers, body)
            .await
        {
            tracing::warn!(error = %e, "could not send the reply");
        }
        handler.finished(op_name, outcome, started.elapsed());
    }
    .instrument(span)
    .await
}
