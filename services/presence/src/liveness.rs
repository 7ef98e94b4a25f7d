//! Edge liveness: every replica hears every edge's heartbeat; an edge silent for the
//! timeout (or one that says it is stopping) is declared dead by exactly one replica — the
//! one whose compare-and-set on the edge's record wins — and each of its sockets goes
//! through the disconnect path (grace, then leave).

use std::sync::Arc;

use futures::StreamExt;
use p2piano_protocol::presence::Heartbeat;

use crate::kv::KvError;
use crate::presence::Presence;
use crate::records::{EdgeRecord, decode, encode};

/// Sockets of a dead edge moved to their grace period at once.
const EDGE_GONE_IN_FLIGHT: usize = 64;

impl Presence {
    /// Records a heartbeat. A stopping edge is treated as gone at once.
    #[tracing::instrument(skip_all, fields(edge_id = %hb.edge_id))]
    pub async fn heartbeat(self: &Arc<Self>, hb: Heartbeat) {
        if hb.stopping {
            self.forget_edge(&hb.edge_id);
            self.edge_gone(&hb.edge_id).await;
            return;
        }
        let first = self
            .last_heard
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(hb.edge_id.clone(), tokio::time::Instant::now())
            .is_none();
        if first {
            self.mark_alive(&hb.edge_id).await;
        }
        self.update_alive_gauge();
    }

    /// Makes sure the edge's record says alive (it may have been declared dead after a
    /// network partition and come back).
    async fn mark_alive(&self, edge_id: &str) {
        let record = EdgeRecord {
            alive: true,
            since: self.now(),
        };
        let result = match self.buckets.edges.get(edge_id).await {
            Ok(None) => self
                .buckets
                .edges
                .create(edge_id, encode(&record))
                .await
                .map(|_| ()),
            Ok(Some(e)) => match decode::<EdgeRecord>(edge_id, &e.value) {
                Some(r) if r.alive => Ok(()),
                _ => self
                    .buckets
                    .edges
                    .update(edge_id, encode(&record), e.revision)
                    .await
                    .map(|_| ()),
            },
            Err(e) => Err(e),
        };
        match result {
            Ok(()) | Err(KvError::WrongRevision) => {}
            Err(e) => tracing::warn!(error = %e, edge_id, "could not record edge as alive"),
        }
    }

    /// The edges not heard from within the timeout, forgotten locally; the caller runs
    /// [`Presence::edge_gone`] for each.
    pub(crate) fn silent_edges(&self) -> Vec<String> {
        let now = tokio::time::Instant::now();
        let silent: Vec<String> = {
            let mut heard = self.last_heard.lock().unwrap_or_else(|e| e.into_inner());
            // Cut off from the bus, this replica hears nobody: that silence says nothing
            // about the edges (a NATS restart would otherwise declare every edge dead and
            // announce all their members as left). Every known edge counts as heard now, so
            // that once the bus is back each has a whole timeout to be heard again.
            if !self.bus.is_connected() {
                for at in heard.values_mut() {
                    *at = now;
                }
                return Vec::new();
            }
            let silent: Vec<String> = heard
                .iter()
                .filter(|(_, at)| now.duration_since(**at) >= self.settings.edge_timeout)
                .map(|(id, _)| id.clone())
                .collect();
            for id in &silent {
                heard.remove(id);
            }
            silent
        };
        self.update_alive_gauge();
        for edge in &silent {
            tracing::warn!(edge_id = %edge, "edge silent past the timeout");
        }
        silent
    }

    /// Starts watching the edges recorded as alive, as if just heard: after a restart, an
    /// edge that died meanwhile is declared dead one timeout later.
    pub(crate) async fn adopt_known_edges(&self) {
        let Ok(keys) = self.buckets.edges.keys().await else {
            return;
        };
        let now = tokio::time::Instant::now();
        for edge in keys {
            let alive = matches!(
                self.buckets.edges.get(&edge).await,
                Ok(Some(e)) if decode::<EdgeRecord>(&edge, &e.value).is_some_and(|r| r.alive)
            );
            if alive {
                self.last_heard
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(edge)
                    .or_insert(now);
            }
        }
        self.update_alive_gauge();
    }

    fn forget_edge(&self, edge_id: &str) {
        self.last_heard
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(edge_id);
        self.update_alive_gauge();
    }

    fn update_alive_gauge(&self) {
        let n = self
            .last_heard
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len();
        self.metrics
            .edges_alive
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Claims the edge's death (one replica wins) and moves each of its sockets to grace.
    #[tracing::instrument(skip_all, fields(edge_id = %edge_id))]
    pub(crate) async fn edge_gone(self: &Arc<Self>, edge_id: &str) {
        let dead = EdgeRecord {
            alive: false,
            since: self.now(),
        };
        let record = self.buckets.edges.get(edge_id).await;
        // Heard from again since it was found silent (the read above may have waited out a
        // bus outage): alive after all.
        if self
            .last_heard
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(edge_id)
        {
            return;
        }
        let claimed = match record {
            Ok(None) => self.buckets.edges.create(edge_id, encode(&dead)).await,
            Ok(Some(e)) => match decode::<EdgeRecord>(edge_id, &e.value) {
                Some(r) if !r.alive => return,
                _ => {
                    self.buckets
                        .edges
                        .update(edge_id, encode(&dead), e.revision)
                        .await
                }
            },
            Err(e) => Err(e),
        };
        match claimed {
            Ok(_) => {}
            Err(KvError::WrongRevision) => return,
            Err(e) => {
                tracing::warn!(error = %e, "could not declare the edge dead; will retry");
                // Hear it again as if just now, so the next check retries after a timeout.
                self.last_heard
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(edge_id.to_owned(), tokio::time::Instant::now());
                return;
            }
        }
        self.metrics.edges_dead.inc();
        let keys = match self.buckets.connections.keys().await {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(error = %e, "could not list the dead edge's sockets");
                return;
            }
        };
        // Many at a time: one after the other, 5,000 sockets took ~27 s (a KV read each),
        // far past the 10 s in which a dead edge's members must be announced as left.
        let moved = futures::stream::iter(keys)
            .map(|key| async move { self.start_grace(&key, |r| r.edge_id == edge_id).await })
            .buffer_unordered(EDGE_GONE_IN_FLIGHT)
            .fold(0u64, |moved, result| async move {
                match result {
                    Ok(true) => moved + 1,
                    Ok(false) => moved,
                    Err(e) => {
                        tracing::warn!(error = %e, "socket of a dead edge not moved to grace");
                        moved
                    }
                }
            })
            .await;
        tracing::info!(
            sockets = moved,
            "dead edge's sockets entered the grace period"
        );
    }
}
