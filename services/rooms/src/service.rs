//! The rooms service on the bus: `<prefix>.rpc.rooms.*` in queue group `rooms`.
//!
//! Requests are handled concurrently (bounded), each in its own task; a malformed request
//! gets `invalid`, never a crash or a silent drop. After a committed change the membership
//! event is published before the reply, so a caller that has the reply knows the event is
//! already on its way. On shutdown the subscription is drained: no new requests are taken,
//! the ones already received are answered, then the service returns.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use p2piano_bus::{Bus, BusError, Headers, Message, Subscription};
use p2piano_protocol::{ErrorBody, ErrorCode, MembersEvent, Reply, RoomsOp, Subjects};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::metrics::{OpLabel, RequestLabels, RoomsMetrics};
use crate::rooms::{Outcome, Rooms};

/// Queue group of the rooms service: each request reaches one replica.
pub const QUEUE_GROUP: &str = "rooms";
/// Requests handled at once per replica; more wait in the subscription's buffer.
const MAX_IN_FLIGHT: usize = 1024;

/// The rooms service, subscribed and ready to serve.
pub struct RoomsService {
    handler: Arc<Handler>,
    subscription: Subscription,
    drain_timeout: Duration,
    sweep_every: Duration,
}

struct Handler {
    bus: Bus,
    subjects: Subjects,
    rooms: Rooms,
    metrics: RoomsMetrics,
}

impl RoomsService {
    /// Subscribes to the rooms RPC subjects (and flushes, so that once this returns a
    /// request sent by anyone reaches this replica).
    pub async fn subscribe(
        bus: Bus,
        subjects: Subjects,
        rooms: Rooms,
        metrics: RoomsMetrics,
        drain_timeout: Duration,
        idle: Duration,
    ) -> Result<Self, BusError> {
        let subscription = bus
            .queue_subscribe(&subjects.rooms_rpc_all(), QUEUE_GROUP)
            .await?;
        bus.flush().await?;
        // Sweep often enough that a room is gone within ~10% of its idle time, bounded to
        // once a second and at least once a minute.
        let sweep_every = (idle / 10).clamp(Duration::from_secs(1), Duration::from_secs(60));
        Ok(Self {
            handler: Arc::new(Handler {
                bus,
                subjects,
                rooms,
                metrics,
            }),
            subscription,
            drain_timeout,
            sweep_every,
        })
    }

    /// Serves requests until `shutdown` is cancelled or the bus closes the subscription,
    /// then drains: answers what was received, within the drain timeout.
    pub async fn serve(mut self, shutdown: CancellationToken) {
        let tracker = TaskTracker::new();
        let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        tracker.spawn(sweep(
            self.handler.clone(),
            self.sweep_every,
            shutdown.clone(),
        ));
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                msg = self.subscription.next() => match msg {
                    Some(msg) => dispatch(&self.handler, &tracker, &permits, msg).await,
                    None => {
                        tracing::warn!("rooms subscription closed by the bus");
                        break;
                    }
                },
            }
        }
        tracing::info!("rooms service draining");
        if let Err(e) = self.subscription.drain().await {
            tracing::warn!(error = %e, "could not drain the rooms subscription");
        }
        while let Some(msg) = self.subscription.next().await {
            dispatch(&self.handler, &tracker, &permits, msg).await;
        }
        tracker.close();
        if tokio::time::timeout(self.drain_timeout, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("rooms service stopped with requests still in flight");
        }
        tracing::info!("rooms service stopped");
    }
}

/// Handles `msg` in its own task once a slot is free (waiting here is the backpressure).
async fn dispatch(
    handler: &Arc<Handler>,
    tracker: &TaskTracker,
    permits: &Arc<Semaphore>,
    msg: Message,
) {
    let Ok(permit) = permits.clone().acquire_owned().await else {
        return;
    };
    let handler = handler.clone();
    tracker.spawn(async move {
        handler.handle(msg).await;
        drop(permit);
    });
}

/// Deletes idle empty rooms periodically (both stores; MongoDB's TTL index also does).
async fn sweep(handler: Arc<Handler>, every: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => match handler.rooms.purge_expired().await {
                Ok(0) => {}
                Ok(n) => {
                    handler.metrics.expired.inc_by(n);
                    tracing::info!(rooms = n, "expired idle rooms deleted");
                }
                Err(e) => tracing::debug!(error = %e, "expiry sweep failed"),
            },
        }
    }
}

fn parse<T: DeserializeOwned>(payload: &[u8]) -> Result<T, ErrorBody> {
    serde_json::from_slice(payload)
        .map_err(|e| ErrorBody::new(ErrorCode::Invalid, format!("malformed request: {e}")))
}

fn encode<T: Serialize>(reply: &Reply<T>) -> Bytes {
    // Serializing our own reply types cannot fail (string keys, no non-finite floats).
    Bytes::from(serde_json::to_vec(reply).unwrap_or_default())
}

/// The reply bytes, the error code if it failed, and the events to publish.
type Handled = (Bytes, Option<ErrorCode>, Vec<MembersEvent>);

fn reply_of<T: Serialize>(r: Result<T, ErrorBody>) -> Handled {
    let code = r.as_ref().err().map(|e| e.code);
    (encode(&Reply::from(r)), code, Vec::new())
}

fn reply_with_event<T: Serialize>(r: Result<Outcome<T>, ErrorBody>) -> Handled {
    match r {
        Ok(o) => (encode(&Reply::Ok(o.reply)), None, o.events),
        Err(e) => (
            encode(&Reply::<()>::Error(e.clone())),
            Some(e.code),
            Vec::new(),
        ),
    }
}

impl Handler {
    async fn handle(&self, msg: Message) {
        let op = self.subjects.rooms_op_of(&msg.subject);
        let op_name = op.map_or("unknown", RoomsOp::as_str);
        let span = tracing::info_span!(
            "rooms.rpc",
            otel.kind = "server",
            op = op_name,
            outcome = tracing::field::Empty
        );
        p2piano_telemetry::set_parent_from(&span, &msg.headers);
        async {
            let started = Instant::now();
            let Some(reply_to) = msg.reply.as_deref() else {
                tracing::warn!(subject = %msg.subject, "rooms request without a reply subject ignored");
                return;
            };
            let (body, failed, events) = match op {
                Some(op) => self
                    .run(op, &msg.payload)
                    .await
                    .unwrap_or_else(|e| reply_of::<()>(Err(e))),
                None => reply_of::<()>(Err(ErrorBody::new(ErrorCode::Invalid, "unknown rooms operation"))),
            };
            for event in &events {
                self.publish_event(event).await;
            }
            let outcome = failed.map_or("ok", ErrorCode::as_str);
            tracing::Span::current().record("outcome", outcome);
            if let Err(e) = self.bus.publish_with_headers(reply_to, trace_headers(), body).await {
                tracing::warn!(error = %e, "could not send rooms reply");
            }
            self.metrics
                .requests
                .get_or_create(&RequestLabels { op: op_name.to_owned(), outcome: outcome.to_owned() })
                .inc();
            self.metrics
                .duration
                .get_or_create(&OpLabel { op: op_name.to_owned() })
                .observe(started.elapsed().as_secs_f64());
        }
        .instrument(span)
        .await
    }

    /// Parses and runs one request; a parse error is the `Err` the caller turns into a reply.
    async fn run(&self, op: RoomsOp, payload: &[u8]) -> Result<Handled, ErrorBody> {
        let rooms = &self.rooms;
        Ok(match op {
            RoomsOp::Create => reply_of(rooms.create(parse(payload)?).await),
            RoomsOp::Get => reply_of(rooms.get(parse(payload)?).await),
            RoomsOp::Update => reply_with_event(rooms.update(parse(payload)?).await),
            RoomsOp::Join => reply_with_event(rooms.join(parse(payload)?).await),
            RoomsOp::Leave => reply_with_event(rooms.leave(parse(payload)?).await),
            RoomsOp::UpdateUser => reply_with_event(rooms.update_user(parse(payload)?).await),
        })
    }

    async fn publish_event(&self, event: &MembersEvent) {
        let subject = self.subjects.room_members(&event.room.code);
        let body = Bytes::from(serde_json::to_vec(event).unwrap_or_default());
        match self
            .bus
            .publish_with_headers(&subject, trace_headers(), body)
            .await
        {
            Ok(()) => {
                self.metrics.events.inc();
            }
            Err(e) => {
                self.metrics.event_failures.inc();
                tracing::warn!(error = %e, subject, "could not publish membership event");
            }
        }
    }
}

/// Headers carrying the current span's trace context, so that the membership event and the
/// reply continue the caller's trace.
fn trace_headers() -> Headers {
    let mut headers = Headers::new();
    p2piano_telemetry::inject_context(&mut headers);
    headers
}
