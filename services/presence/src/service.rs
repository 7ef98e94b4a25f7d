//! Presence on the bus: the RPCs on `<prefix>.rpc.presence.*` (queue group `presence`),
//! the verdicts of the liveness judge (which hears every edge's heartbeats on a thread of
//! its own, see [`crate::judge`]), and the periodic sweep.
//!
//! The RPCs are served by the shared loop ([`p2piano_rpc::serve`]), bounded to
//! [`MAX_IN_FLIGHT`] at once; the verdicts and the sweep run beside it and stop with it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use p2piano_bus::{Bus, BusError, Subscription};
use p2piano_protocol::{PresenceOp, Subjects};
use p2piano_rpc::{Answer, ServeLimits, answer};
use p2piano_telemetry::prometheus_client::metrics::gauge::Gauge;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

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

    /// Serves until `shutdown`, then drains the RPC subscription and answers what was
    /// received, and stops the grace timers.
    pub async fn serve(self, shutdown: CancellationToken) {
        let (verdicts_tx, verdicts) = mpsc::unbounded_channel();
        // The judge stops with the service: on shutdown, or however this future ends (its
        // runtime dropped included).
        let judge_stop = shutdown.child_token();
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
        let background = TaskTracker::new();
        background.spawn(keep(
            self.presence.clone(),
            verdicts,
            background.clone(),
            judge_stop.clone(),
        ));
        let limits = ServeLimits {
            max_in_flight: MAX_IN_FLIGHT,
            drain_timeout: self.drain_timeout,
        };
        let handler = Arc::new(Handler(self.presence.clone()));
        p2piano_rpc::serve(handler, self.rpc, limits, shutdown).await;
        judge_stop.cancel();
        if let Some(judge) = judge {
            let _ = tokio::task::spawn_blocking(move || judge.join()).await;
        }
        background.close();
        if tokio::time::timeout(self.drain_timeout, background.wait())
            .await
            .is_err()
        {
            tracing::warn!("presence stopped with verdicts still being applied");
        }
        self.presence.stop_timers().await;
        tracing::info!("presence service stopped");
    }
}

/// Lanes the judge's verdicts are applied on. One edge's verdicts always go to the same
/// lane, which applies them one after the other, in the order the judge heard them; the
/// lanes let different edges' verdicts proceed side by side.
const VERDICT_LANES: usize = 8;

/// Applies the judge's verdicts and runs the periodic sweep until `stop`, each in a task of
/// `tasks` (which the service waits for when it stops).
///
/// One edge's verdicts must not overtake each other: applied at once, an edge's first
/// heartbeat could write its record as alive after its stopping heartbeat (sent right
/// after) found no record to mark dead, and the edge would stay alive in the record with
/// nobody left to hear it, its sockets never leaving.
async fn keep(
    presence: Arc<Presence>,
    mut verdicts: mpsc::UnboundedReceiver<Verdict>,
    tasks: TaskTracker,
    stop: CancellationToken,
) {
    let lanes: Vec<mpsc::UnboundedSender<Verdict>> = (0..VERDICT_LANES)
        .map(|_| {
            let (tx, rx) = mpsc::unbounded_channel();
            tasks.spawn(apply_in_order(presence.clone(), rx, stop.clone()));
            tx
        })
        .collect();
    let mut sweep = tokio::time::interval(presence.settings.sweep_every());
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            Some(verdict) = verdicts.recv() => {
                let _ = lanes[lane_of(verdict.edge_id())].send(verdict);
            }
            _ = sweep.tick() => {
                let presence = presence.clone();
                tasks.spawn(async move { presence.sweep().await });
            }
        }
    }
}

/// The lane of edge `edge_id`'s verdicts.
fn lane_of(edge_id: &str) -> usize {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(edge_id) as usize % VERDICT_LANES
}

/// One lane: applies its verdicts one at a time until `stop`. What queued up meanwhile
/// (the KV was slow, say) is applied as the latest verdict of each edge only: each says all
/// the judge knew of its edge then, so the older ones would only redo work with stale facts.
async fn apply_in_order(
    presence: Arc<Presence>,
    mut verdicts: mpsc::UnboundedReceiver<Verdict>,
    stop: CancellationToken,
) {
    let mut batch = Vec::new();
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            n = verdicts.recv_many(&mut batch, 1024) => if n == 0 {
                return;
            },
        }
        for verdict in latest_of_each_edge(std::mem::take(&mut batch)) {
            match verdict {
                Verdict::Heard(hb) => presence.heartbeat(*hb).await,
                Verdict::Silent(edge) => presence.edge_gone(&edge).await,
            }
        }
    }
}

/// The last verdict of each edge in `batch`, in the order they came.
fn latest_of_each_edge(batch: Vec<Verdict>) -> Vec<Verdict> {
    if batch.len() < 2 {
        return batch;
    }
    let mut last = std::collections::HashMap::new();
    for (i, v) in batch.iter().enumerate() {
        last.insert(v.edge_id().to_owned(), i);
    }
    batch
        .into_iter()
        .enumerate()
        .filter(|(i, v)| last.get(v.edge_id()) == Some(i))
        .map(|(_, v)| v)
        .collect()
}

/// The RPCs' side of presence for the shared serving loop.
struct Handler(Arc<Presence>);

impl p2piano_rpc::Handler for Handler {
    type Op = PresenceOp;
    const SPAN: &'static str = "presence.rpc";

    fn bus(&self) -> &Bus {
        &self.0.bus
    }

    fn op_of(&self, subject: &str) -> Option<PresenceOp> {
        self.0.subjects.presence_op_of(subject)
    }

    fn op_name(op: PresenceOp) -> &'static str {
        op.as_str()
    }

    async fn run(&self, op: PresenceOp, payload: Bytes) -> Answer {
        let p = &self.0;
        match op {
            PresenceOp::SessionCreate => answer(&payload, |req| p.session_create(req)).await,
            PresenceOp::SessionGet => answer(&payload, |req| p.session_get(req)).await,
            PresenceOp::Connect => answer(&payload, |req| p.connect(req)).await,
            PresenceOp::Disconnect => answer(&payload, |req| p.disconnect(req)).await,
            PresenceOp::Resync => answer(&payload, |req| p.resync(req)).await,
        }
    }

    fn finished(&self, op: &'static str, outcome: &'static str, _elapsed: Duration) {
        self.0
            .metrics
            .requests
            .get_or_create(&RequestLabels {
                op: op.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    fn in_flight(&self) -> Option<Gauge> {
        Some(self.0.metrics.rpc_in_flight.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p2piano_protocol::presence::Heartbeat;

    fn heard(edge: &str, stopping: bool) -> Verdict {
        Verdict::Heard(Box::new(Heartbeat {
            edge_id: edge.to_owned(),
            connections: 0,
            at: p2piano_protocol::Timestamp::now(),
            stopping,
            generation: 0,
            digest: None,
            mesh: None,
        }))
    }

    fn describe(v: &[Verdict]) -> Vec<String> {
        v.iter()
            .map(|v| match v {
                Verdict::Heard(hb) if hb.stopping => format!("{} stopping", hb.edge_id),
                Verdict::Heard(hb) => format!("{} heard", hb.edge_id),
                Verdict::Silent(e) => format!("{e} silent"),
            })
            .collect()
    }

    #[test]
    fn a_backlog_keeps_each_edges_latest_verdict_in_order() {
        let batch = vec![
            heard("a", false),
            heard("b", false),
            heard("a", false),
            Verdict::Silent("c".into()),
            heard("a", true),
            heard("c", false),
        ];
        assert_eq!(
            describe(&latest_of_each_edge(batch)),
            ["b heard", "a stopping", "c heard"]
        );
    }

    #[test]
    fn an_edge_keeps_its_lane() {
        let lane = lane_of("edge-1");
        assert!(lane < VERDICT_LANES);
        assert_eq!(lane_of("edge-1"), lane);
        let lanes: std::collections::HashSet<usize> =
            (0..64).map(|i| lane_of(&format!("edge-{i}"))).collect();
        assert!(lanes.len() > 1, "every edge on one lane");
    }
}
