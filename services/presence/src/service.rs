//! Presence on the bus: the RPCs on `<prefix>.rpc.presence.*` (queue group `presence`),
//! the verdicts of the liveness judge (which hears every edge's heartbeats on a thread of
//! its own, see [`crate::judge`]), and the periodic sweep.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use p2piano_bus::{Bus, BusError, Headers, Message, Subscription};
use p2piano_protocol::{ErrorBody, ErrorCode, PresenceOp, Reply, Subjects};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::judge::{Verdict, spawn_judge};
use crate::metrics::RequestLabels;
use crate::presence::Presence;

/// Queue group of the presence RPCs: each request reaches one replica.
pub const QUEUE_GROUP: &str = "presence";

/// Most RPCs handled at once by one replica; past it, requests wait in the subscription
/// (and `p2piano_presence_rpc_in_flight` shows the backlog), rather than each taking a
/// share of an overloaded KV.
pub const MAX_IN_FLIGHT: usize = 512;

/// The presence service, subscribed and ready to serve.
pub struct PresenceService {
    presence: Arc<Presence>,
    bus: Bus,
    rpc: Subscription,
    heartbeat_every: Duration,
    drain_timeout: Duration,
}

impl PresenceService {
    /// Subscribes to the RPCs, starts the index, and adopts the edges and grace periods
    /// already recorded (a restart continues where the last run stopped).
    pub async fn subscribe(
        presence: Arc<Presence>,
        bus: &Bus,
        subjects: &Subjects,
        heartbeat_every: Duration,
        drain_timeout: Duration,
    ) -> Result<Self, BusError> {
        let rpc = bus
            .queue_subscribe(&subjects.presence_rpc_all(), QUEUE_GROUP)
            .await?;
        presence.start_index();
        presence.adopt_known_edges().await;
        Ok(Self {
            presence,
            bus: bus.clone(),
            rpc,
            heartbeat_every,
            drain_timeout,
        })
    }

    /// Serves until `shutdown`, then drains the RPC subscription and answers what was received.
    pub async fn serve(mut self, shutdown: CancellationToken) {
        let tracker = TaskTracker::new();
        let (verdicts_tx, mut verdicts) = mpsc::unbounded_channel();
        let judge_stop = CancellationToken::new();
        // Stops the judge however this future ends, dropped with its runtime included.
        let _judge_guard = judge_stop.clone().drop_guard();
        let judge = match spawn_judge(
            self.presence.clone(),
            self.bus.clone(),
            self.heartbeat_every / 2,
            verdicts_tx,
            judge_stop.clone(),
        ) {
            Ok(j) => Some(j),
            Err(e) => {
                tracing::error!(error = %e, "could not start the liveness judge");
                None
            }
        };
        let mut sweep = tokio::time::interval(self.presence.settings.sweep_every());
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let limit = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some(verdict) = verdicts.recv() => {
                    let presence = self.presence.clone();
                    match verdict {
                        Verdict::Heard(hb) => tracker.spawn(async move { presence.heartbeat(*hb).await }),
                        Verdict::Silent(edge) => tracker.spawn(async move { presence.edge_gone(&edge).await }),
                    };
                }
                msg = self.rpc.next() => match msg {
                    Some(msg) => {
                        // At the limit, wait here for a request to finish: the next ones
                        // stay queued in the subscription meanwhile.
                        let Ok(permit) = limit.clone().acquire_owned().await else { break };
                        let presence = self.presence.clone();
                        tracker.spawn(async move {
                            handle(presence, msg).await;
                            drop(permit);
                        });
                    }
                    None => {
                        tracing::warn!("presence subscription closed by the bus");
                        break;
                    }
                },
                _ = sweep.tick() => {
                    let presence = self.presence.clone();
                    tracker.spawn(async move { presence.sweep().await });
                }
            }
        }
        tracing::info!("presence service draining");
        judge_stop.cancel();
        if let Some(judge) = judge {
            let _ = tokio::task::spawn_blocking(move || judge.join()).await;
        }
        if let Err(e) = self.rpc.drain().await {
            tracing::warn!(error = %e, "could not drain the presence subscription");
        }
        while let Some(msg) = self.rpc.next().await {
            tracker.spawn(handle(self.presence.clone(), msg));
        }
        tracker.close();
        if tokio::time::timeout(self.drain_timeout, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("presence stopped with requests in flight");
        }
        self.presence.stop_timers().await;
        tracing::info!("presence service stopped");
    }
}

fn parse<T: DeserializeOwned>(payload: &[u8]) -> Result<T, ErrorBody> {
    serde_json::from_slice(payload)
        .map_err(|e| ErrorBody::new(ErrorCode::Invalid, format!("malformed request: {e}")))
}

fn encode<T: Serialize>(r: Result<T, ErrorBody>) -> (Bytes, Option<ErrorCode>) {
    let code = r.as_ref().err().map(|e| e.code);
    (
        Bytes::from(serde_json::to_vec(&Reply::from(r)).unwrap_or_default()),
        code,
    )
}

/// Parses and runs one request; a parse error is the `Err` the caller turns into a reply.
async fn run(
    p: &Arc<Presence>,
    op: PresenceOp,
    payload: &[u8],
) -> Result<(Bytes, Option<ErrorCode>), ErrorBody> {
    Ok(match op {
        PresenceOp::SessionCreate => encode(p.session_create(parse(payload)?).await),
        PresenceOp::SessionGet => encode(p.session_get(parse(payload)?).await),
        PresenceOp::Connect => encode(p.connect(parse(payload)?).await),
        PresenceOp::Disconnect => encode(p.disconnect(parse(payload)?).await),
        PresenceOp::Resync => encode(p.resync(parse(payload)?).await),
    })
}

async fn handle(presence: Arc<Presence>, msg: Message) {
    let op = presence.subjects.presence_op_of(&msg.subject);
    let op_name = op.map_or("unknown", PresenceOp::as_str);
    let span = tracing::info_span!("presence.rpc", otel.kind = "server", op = op_name);
    p2piano_telemetry::set_parent_from(&span, &msg.headers);
    presence.metrics.rpc_in_flight.inc();
    async {
        let started = Instant::now();
        let Some(reply_to) = msg.reply.as_deref() else {
            tracing::warn!(subject = %msg.subject, "presence request without a reply subject ignored");
            return;
        };
        let (body, failed) = match op {
            Some(op) => run(&presence, op, &msg.payload).await.unwrap_or_else(|e| encode::<()>(Err(e))),
            None => encode::<()>(Err(ErrorBody::new(ErrorCode::Invalid, "unknown presence operation"))),
        };
        if let Err(e) = presence.bus.publish_with_headers(reply_to, Headers::new(), body).await {
            tracing::warn!(error = %e, "could not send presence reply");
        }
        let outcome = failed.map_or("ok", ErrorCode::as_str);
        presence
            .metrics
            .requests
            .get_or_create(&RequestLabels { op: op_name.to_owned(), outcome: outcome.to_owned() })
            .inc();
        tracing::debug!(outcome, elapsed_ms = started.elapsed().as_millis() as u64, "presence request");
    }
    .instrument(span)
    .await;
    presence.metrics.rpc_in_flight.dec();
}
