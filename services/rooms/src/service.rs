//! The rooms service on the bus: `<prefix>.rpc.rooms.*` in queue group `rooms`.
//!
//! The serving loop is the shared one ([`p2piano_rpc::serve`]): requests handled
//! concurrently (bounded), each in its own task; a malformed request gets `invalid`, never
//! a crash or a silent drop; on shutdown the subscription is drained and what was received
//! is answered. What is the rooms service's own is here: after a committed change the
//! membership event is published before the reply, so a caller that has the reply knows
//! the event is already on its way; and the periodic sweep of idle empty rooms.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use p2piano_bus::{Bus, BusError, Headers, Subscription};
use p2piano_protocol::{Call, ErrorBody, MembersEvent, RoomsOp, Subjects};
use p2piano_rpc::{Answer, ServeLimits, answer, decode, encode_reply};
use tokio_util::sync::CancellationToken;

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
    pub async fn serve(self, shutdown: CancellationToken) {
        let sweeper = tokio::spawn(sweep(
            self.handler.clone(),
            self.sweep_every,
            shutdown.clone(),
        ));
        let limits = ServeLimits {
            max_in_flight: MAX_IN_FLIGHT,
            drain_timeout: self.drain_timeout,
        };
        p2piano_rpc::serve(self.handler, self.subscription, limits, shutdown.clone()).await;
        // The loop also ends when the bus closes the subscription: stop the sweep then too.
        shutdown.cancel();
        let _ = sweeper.await;
        tracing::info!("rooms service stopped");
    }
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

impl p2piano_rpc::Handler for Handler {
    type Op = RoomsOp;
    const SPAN: &'static str = "rooms.rpc";

    fn bus(&self) -> &Bus {
        &self.bus
    }

    fn op_of(&self, subject: &str) -> Option<RoomsOp> {
        self.subjects.rooms_op_of(subject)
    }

    fn op_name(op: RoomsOp) -> &'static str {
        op.as_str()
    }

    async fn run(&self, op: RoomsOp, payload: Bytes) -> Answer {
        let rooms = &self.rooms;
        match op {
            RoomsOp::Create => answer(&payload, |req| rooms.create(req)).await,
            RoomsOp::Get => answer(&payload, |req| rooms.get(req)).await,
            RoomsOp::Update => self.change(&payload, |req| rooms.update(req)).await,
            RoomsOp::Join => self.change(&payload, |req| rooms.join(req)).await,
            RoomsOp::Leave => self.change(&payload, |req| rooms.leave(req)).await,
            RoomsOp::UpdateUser => self.change(&payload, |req| rooms.update_user(req)).await,
        }
    }

    fn finished(&self, op: &'static str, outcome: &'static str, elapsed: Duration) {
        self.metrics
            .requests
            .get_or_create(&RequestLabels {
                op: op.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
        self.metrics
            .duration
            .get_or_create(&OpLabel { op: op.to_owned() })
            .observe(elapsed.as_secs_f64());
    }
}

impl Handler {
    /// Runs a request that may change a membership, and publishes its events before the
    /// reply is encoded (and so before the caller can have it).
    async fn change<C, F, Fut>(&self, payload: &[u8], handle: F) -> Answer
    where
        C: Call,
        F: FnOnce(C) -> Fut,
        Fut: Future<Output = Result<Outcome<C::Reply>, ErrorBody>>,
    {
        let result = match decode::<C>(payload) {
            Ok(req) => handle(req).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(outcome) => {
                for event in &outcome.events {
                    self.publish_event(event).await;
                }
                encode_reply(Ok(outcome.reply))
            }
            Err(e) => encode_reply::<()>(Err(e)),
        }
    }

    async fn publish_event(&self, event: &MembersEvent) {
        let subject = self.subjects.room_members(&event.room.code);
        let body = match serde_json::to_vec(event) {
            Ok(body) => Bytes::from(body),
            Err(e) => {
                self.metrics.event_failures.inc();
                tracing::error!(error = %e, subject, "membership event not encodable");
                return;
            }
        };
        // The current span's trace context, so that the event continues the caller's trace.
        let mut headers = Headers::new();
        p2piano_telemetry::inject_context(&mut headers);
        match self.bus.publish_with_headers(&subject, headers, body).await {
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
