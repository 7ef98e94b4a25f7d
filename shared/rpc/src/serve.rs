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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use p2piano_protocol::rpc::GetRoom;
    use p2piano_protocol::{RoomCode, RoomsOp, Subjects};
    use tokio::sync::watch;

    use super::*;
    use crate::{CallError, RpcClient};

    /// Answers every `get` with `not_found` once the test lets it through, counting how
    /// many requests are being handled at once.
    struct Gated {
        bus: Bus,
        subjects: Subjects,
        gate: Arc<Semaphore>,
        running: AtomicUsize,
        most: AtomicUsize,
        started: watch::Sender<usize>,
    }

    impl Handler for Gated {
        type Op = RoomsOp;
        const SPAN: &'static str = "test.rpc";

        fn bus(&self) -> &Bus {
            &self.bus
        }

        fn op_of(&self, subject: &str) -> Option<RoomsOp> {
            self.subjects.rooms_op_of(subject)
        }

        fn op_name(op: RoomsOp) -> &'static str {
            op.as_str()
        }

        async fn run(&self, _op: RoomsOp, _payload: Bytes) -> Answer {
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            self.started.send_modify(|n| *n += 1);
            self.gate.acquire().await.expect("gate open").forget();
            self.running.fetch_sub(1, Ordering::SeqCst);
            encode_reply::<()>(Err(ErrorBody::new(ErrorCode::NotFound, "no such room")))
        }

        fn finished(&self, _op: &'static str, _outcome: &'static str, _elapsed: Duration) {}
    }

    struct Setup {
        handler: Arc<Gated>,
        client: RpcClient,
        started: watch::Receiver<usize>,
        shutdown: CancellationToken,
        served: tokio::task::JoinHandle<()>,
    }

    async fn start(max_in_flight: usize) -> Setup {
        let bus = Bus::in_process();
        let subjects = Subjects::new("t").unwrap();
        let subscription = bus
            .queue_subscribe(&subjects.rooms_rpc_all(), "rooms")
            .await
            .unwrap();
        let (started_tx, started) = watch::channel(0);
        let handler = Arc::new(Gated {
            bus: bus.clone(),
            subjects: subjects.clone(),
            gate: Arc::new(Semaphore::new(0)),
            running: AtomicUsize::new(0),
            most: AtomicUsize::new(0),
            started: started_tx,
        });
        let shutdown = CancellationToken::new();
        let limits = ServeLimits {
            max_in_flight,
            drain_timeout: Duration::from_secs(30),
        };
        let served = tokio::spawn(serve(
            handler.clone(),
            subscription,
            limits,
            shutdown.clone(),
        ));
        Setup {
            handler,
            client: RpcClient::new(bus, subjects, Duration::from_secs(30)),
            started,
            shutdown,
            served,
        }
    }

    fn ask(client: &RpcClient) -> tokio::task::JoinHandle<Result<(), CallError>> {
        let client = client.clone();
        tokio::spawn(async move {
            let req = GetRoom {
                code: RoomCode::parse("abcde").unwrap(),
            };
            client.call(&req).await.map(|_| ())
        })
    }

    #[tokio::test]
    async fn no_more_than_the_bound_run_at_once() {
        let mut s = start(2).await;
        let calls: Vec<_> = (0..5).map(|_| ask(&s.client)).collect();
        s.started.wait_for(|n| *n >= 2).await.unwrap();
        for expected in 3..=5 {
            s.handler.gate.add_permits(1);
            s.started.wait_for(|n| *n >= expected).await.unwrap();
        }
        s.handler.gate.add_permits(2);
        for call in calls {
            let answer = call.await.unwrap();
            assert!(
                matches!(&answer, Err(CallError::Refused(e)) if e.code == ErrorCode::NotFound),
                "{answer:?}"
            );
        }
        assert_eq!(s.handler.most.load(Ordering::SeqCst), 2);
        s.shutdown.cancel();
        s.served.await.unwrap();
    }

    #[tokio::test]
    async fn a_stop_answers_what_was_received() {
        let mut s = start(8).await;
        let calls: Vec<_> = (0..3).map(|_| ask(&s.client)).collect();
        s.started.wait_for(|n| *n == 3).await.unwrap();
        s.shutdown.cancel();
        s.handler.gate.add_permits(3);
        for call in calls {
            let answer = call.await.unwrap();
            assert!(
                matches!(&answer, Err(CallError::Refused(e)) if e.code == ErrorCode::NotFound),
                "a request received before the stop is answered: {answer:?}"
            );
        }
        s.served.await.unwrap();
        let late = ask(&s.client).await.unwrap();
        assert!(
            matches!(late, Err(CallError::Unreachable { .. })),
            "nobody serves after the stop: {late:?}"
        );
    }
}
