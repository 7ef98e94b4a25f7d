//! The edge's side of the presence contract, as a library the edge calls: heartbeats on
//! `<prefix>.edge.<id>.heartbeat` and the control messages presence sends on
//! `<prefix>.edge.<id>.control`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use p2piano_bus::{Bus, BusError};
use p2piano_protocol::presence::{EdgeControl, Heartbeat};
use p2piano_protocol::{Subjects, Timestamp};
use tokio_util::sync::CancellationToken;

/// One edge's link to presence.
#[derive(Clone, Debug)]
pub struct EdgeLink {
    bus: Bus,
    subjects: Subjects,
    edge_id: String,
}

impl EdgeLink {
    /// The link of edge `edge_id` (a subject token).
    pub fn new(bus: Bus, subjects: Subjects, edge_id: impl Into<String>) -> Self {
        Self {
            bus,
            subjects,
            edge_id: edge_id.into(),
        }
    }

    /// This edge's id.
    pub fn edge_id(&self) -> &str {
        &self.edge_id
    }

    /// Sends one heartbeat now.
    pub async fn beat(&self, connections: u64, stopping: bool) -> Result<(), BusError> {
        let hb = Heartbeat {
            edge_id: self.edge_id.clone(),
            connections,
            at: Timestamp::now(),
            stopping,
        };
        let body = Bytes::from(serde_json::to_vec(&hb).unwrap_or_default());
        self.bus
            .publish(&self.subjects.edge_heartbeat(&self.edge_id), body)
            .await
    }

    /// Sends a heartbeat at once and then every `every`, reading the socket count from
    /// `connections`, until `shutdown`; then one last heartbeat saying the edge is stopping,
    /// so presence moves its sockets to grace without waiting for the timeout. Runs in its
    /// own task so that no amount of client traffic delays it.
    pub fn spawn_heartbeats(
        &self,
        every: Duration,
        connections: Arc<AtomicU64>,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let link = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tick.tick() => {
                        if let Err(e) = link.beat(connections.load(Ordering::Relaxed), false).await {
                            tracing::warn!(error = %e, "heartbeat not sent");
                        }
                    }
                }
            }
            if let Err(e) = link.beat(connections.load(Ordering::Relaxed), true).await {
                tracing::warn!(error = %e, "stopping heartbeat not sent");
            }
            let _ = link.bus.flush().await;
        })
    }

    /// The control messages for this edge; malformed ones are logged and skipped.
    pub async fn control(
        &self,
    ) -> Result<impl Stream<Item = EdgeControl> + Send + Unpin + use<>, BusError> {
        let sub = self
            .bus
            .subscribe(&self.subjects.edge_control(&self.edge_id))
            .await?;
        Ok(sub.filter_map(|msg| {
            let parsed = serde_json::from_slice::<EdgeControl>(&msg.payload);
            if let Err(e) = &parsed {
                tracing::warn!(error = %e, "malformed edge control ignored");
            }
            futures::future::ready(parsed.ok())
        }))
    }
}
