//! Edge liveness, the part that acts: what a heartbeat means, an edge's death, the end of
//! its grace period, and its revival.
//!
//! - An edge's **death** is one write: its record says `alive: false` from `since`, with a
//!   higher generation. Its sockets' records are not touched: a live socket on a dead edge
//!   counts as in its grace period until `since` + grace ([`Presence::effective`]), so a
//!   session that reconnects elsewhere meanwhile continues silently, and the death of an edge
//!   with 10,000 sockets costs what the death of an edge with one does.
//! - When that grace ends, the sockets still recorded on the edge (found in the index, not
//!   by reading every record) are retired as any grace period ends: a leave each.
//! - A dead edge **heard again** was not dead (a pause, CPU throttling, a partition): its
//!   record says alive again, which by itself takes its sockets out of their grace period,
//!   and the edge is asked to re-assert what it holds ([`crate::resync`]), which also puts
//!   back the members whose leave was already announced.
//!
//! Which edges are silent is judged elsewhere, on a thread of its own ([`crate::judge`]).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use p2piano_protocol::Timestamp;
use p2piano_protocol::presence::{DIGEST_SETTLE_MS, EdgeControl, Heartbeat};

use crate::kv::KvError;
use crate::presence::Presence;
use crate::records::{EdgeRecord, decode, encode};

/// Requests in flight at which this replica counts as behind (a quarter of what it handles
/// at once: beyond it, requests are waiting on the KV rather than being served).
const BEHIND_AT: i64 = (crate::service::MAX_IN_FLIGHT / 4) as i64;

/// The longest a dead edge's leaves wait for a backlog of requests to clear. Ghosts must
/// be gone 10 s after an edge dies, which is 2 s past the edge timeout and the grace period
/// with the defaults: the hold takes at most a quarter of that, and the leaves themselves
/// (625 of them took up to 1.2 s in the test build, with 4,375 reconnects going on) the rest.
const HOLD_AT_MOST: Duration = Duration::from_millis(500);

/// Sockets of a dead edge retired at once.
const EDGE_GONE_IN_FLIGHT: usize = 1024;

/// The shortest time between two requests to one edge to re-assert its sockets.
const RESYNC_EVERY: Duration = Duration::from_secs(3);

/// Heartbeats in a row with a digest that disagrees with the index before the edge is
/// asked to re-assert: the first may catch a change that one side has and the other not yet.
const DIGEST_MISSES: u32 = 2;

impl Presence {
    /// A heartbeat, as the judge forwards it.
    #[tracing::instrument(skip_all, fields(edge_id = %hb.edge_id))]
    pub async fn heartbeat(self: &Arc<Self>, hb: Heartbeat) {
        if hb.stopping {
            self.edge_gone(&hb.edge_id).await;
            return;
        }
        let record = match self.index.edge(&hb.edge_id) {
            Some(r) => r,
            None => match self.edge_record(&hb.edge_id).await {
                Ok(Some((_, r))) => r,
                Ok(None) => {
                    self.write_edge(&hb.edge_id, None, true, 0).await;
                    return;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "edge record not read");
                    return;
                }
            },
        };
        if !record.alive {
            self.revive(&hb.edge_id).await;
        } else if hb.generation < record.generation {
            self.ask_resync(&hb.edge_id, record.generation, None).await;
        } else {
            self.check_digest(&hb, record.generation).await;
        }
    }

    /// The record of an edge, read from the KV, with its revision.
    async fn edge_record(&self, edge_id: &str) -> Result<Option<(u64, EdgeRecord)>, KvError> {
        Ok(self
            .buckets
            .edges
            .get(edge_id)
            .await?
            .and_then(|e| decode::<EdgeRecord>(edge_id, &e.value).map(|r| (e.revision, r))))
    }

    /// Writes an edge's record over `expected` (creates it when `None`); false when
    /// another replica wrote it first or the KV failed (logged).
    async fn write_edge(
        &self,
        edge_id: &str,
        expected: Option<u64>,
        alive: bool,
        generation: u64,
    ) -> bool {
        let record = EdgeRecord {
            alive,
            since: self.now(),
            generation,
        };
        let written = match (encode(&record), expected) {
            (Err(e), _) => Err(e),
            (Ok(value), None) => self.buckets.edges.create(edge_id, value).await,
            (Ok(value), Some(rev)) => self.buckets.edges.update(edge_id, value, rev).await,
        };
        match written {
            Ok(_) => {
                self.index.wrote_edge(edge_id, record);
                true
            }
            Err(KvError::WrongRevision) => false,
            Err(e) => {
                tracing::warn!(error = %e, edge_id, "could not write the edge's record");
                false
            }
        }
    }

    /// A dead edge was heard again: alive, and asked to re-assert its sockets.
    async fn revive(self: &Arc<Self>, edge_id: &str) {
        let Ok(Some((revision, record))) = self.edge_record(edge_id).await else {
            return;
        };
        if record.alive {
            self.index.wrote_edge(edge_id, record);
            return;
        }
        let dead_for = self.now().millis() - record.since.millis();
        if self
            .write_edge(edge_id, Some(revision), true, record.generation)
            .await
        {
            self.metrics.edges_revived.inc();
            tracing::warn!(
                edge_id,
                dead_for_ms = dead_for,
                sockets = self.index.count_on(edge_id),
                "an edge declared dead was heard again: its sockets are live again"
            );
        }
        self.ask_resync(edge_id, record.generation, None).await;
    }

    /// Asks an edge to re-assert its sockets (those of `buckets`, or all), unless this
    /// replica asked it very recently.
    pub(crate) async fn ask_resync(
        &self,
        edge_id: &str,
        generation: u64,
        buckets: Option<Vec<u8>>,
    ) {
        let now = tokio::time::Instant::now();
        {
            let mut asked = self.resync_asked.lock().unwrap_or_else(|e| e.into_inner());
            if asked
                .get(edge_id)
                .is_some_and(|at| now.duration_since(*at) < RESYNC_EVERY)
            {
                return;
            }
            asked.insert(edge_id.to_owned(), now);
        }
        self.metrics.resyncs_asked.inc();
        tracing::info!(
            edge_id,
            generation,
            ?buckets,
            "asking the edge to re-assert its sockets"
        );
        let control = EdgeControl::Resync {
            generation,
            before: self.index.latest_revision(),
            buckets,
        };
        self.send_control(edge_id, &control).await;
    }

    /// Compares the edge's digest with the index's, bucket by bucket where both have been
    /// unchanged for a while; a disagreement that lasts asks the edge to re-assert those
    /// buckets.
    async fn check_digest(&self, hb: &Heartbeat, generation: u64) {
        let (Some(theirs), Some(ours)) = (
            hb.digest.as_ref(),
            self.index
                .digest(&hb.edge_id, Duration::from_millis(DIGEST_SETTLE_MS.into())),
        ) else {
            return;
        };
        let differ: Vec<u8> = (0..theirs.buckets.len())
            .filter(|&b| {
                theirs.stable_ms[b] >= DIGEST_SETTLE_MS
                    && ours.stable_ms[b] >= DIGEST_SETTLE_MS
                    && theirs.buckets[b] != ours.buckets[b]
            })
            .map(|b| b as u8)
            .collect();
        let misses = {
            let mut misses = self.digest_misses.lock().unwrap_or_else(|e| e.into_inner());
            if differ.is_empty() {
                misses.remove(&hb.edge_id);
                return;
            }
            let n = misses.entry(hb.edge_id.clone()).or_insert(0);
            *n += 1;
            *n
        };
        if misses >= DIGEST_MISSES {
            self.metrics.digest_mismatches.inc();
            tracing::warn!(
                edge_id = %hb.edge_id,
                buckets = ?differ,
                "the edge's sockets and presence's records disagree"
            );
            self.ask_resync(&hb.edge_id, generation, Some(differ)).await;
        }
    }

    /// Whether this replica has a backlog of requests.
    pub(crate) fn behind(&self) -> bool {
        self.metrics.rpc_in_flight.get() >= BEHIND_AT
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
    }

    /// Claims the edge's death (one replica wins): one write, after which its sockets count
    /// as in their grace period; their leaves follow when it ends.
    #[tracing::instrument(skip_all, fields(edge_id = %edge_id))]
    pub(crate) async fn edge_gone(self: &Arc<Self>, edge_id: &str) {
        let record = self.edge_record(edge_id).await;
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
            Ok(None) => self.write_edge(edge_id, None, false, 1).await,
            Ok(Some((_, r))) if !r.alive => {
                self.index.wrote_edge(edge_id, r);
                return;
            }
            Ok(Some((rev, r))) => {
                self.write_edge(edge_id, Some(rev), false, r.generation + 1)
                    .await
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not declare the edge dead; will retry");
                // Hear it again as if just now, so the next check retries after a timeout.
                self.last_heard
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(edge_id.to_owned(), tokio::time::Instant::now());
                return;
            }
        };
        if !claimed {
            return;
        }
        self.metrics.edges_dead.inc();
        tracing::info!(
            sockets = self.index.count_on(edge_id),
            "dead edge's sockets entered the grace period"
        );
        self.expire_edge_later(edge_id, self.now());
    }

    /// Retires the sockets still recorded on dead edge `edge_id` when its grace ends (now,
    /// if it has), unless a timer for that already runs here.
    pub(crate) fn expire_edge_later(self: &Arc<Self>, edge_id: &str, now: Timestamp) {
        let Some(edge) = self.index.edge(edge_id).filter(|e| !e.alive) else {
            return;
        };
        let until = edge.since.plus(self.settings.grace).max(now);
        let me = self.clone();
        let id = edge_id.to_owned();
        self.after(format!("edge:{edge_id}"), until, async move {
            me.expire_edge(&id).await;
        });
    }

    /// The end of a dead edge's grace period: every socket still recorded on it, and still
    /// due, leaves (many at a time).
    #[tracing::instrument(skip_all, fields(edge_id = %edge_id))]
    async fn expire_edge(self: &Arc<Self>, edge_id: &str) {
        // Requests queueing here (a burst of reconnects at the limit of what this replica
        // handles at once) may be the very sessions coming back: their leaves would be
        // announced only because presence is behind. Hold the announcements while the
        // backlog lasts, for at most [`HOLD_AT_MOST`], and say so.
        let held_since = tokio::time::Instant::now();
        while self.behind() && held_since.elapsed() < HOLD_AT_MOST.min(self.settings.grace) {
            self.metrics.leaves_held.inc();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if held_since.elapsed() >= Duration::from_millis(100) {
            tracing::warn!(
                edge_id,
                held_ms = held_since.elapsed().as_millis() as u64,
                "a dead edge's leaves were held back while presence caught up with its requests"
            );
        }
        let keys = self.index.keys_on(edge_id);
        let found = keys.len();
        futures::stream::iter(keys)
            .for_each_concurrent(EDGE_GONE_IN_FLIGHT, |key| async move {
                self.expire(&key).await;
            })
            .await;
        tracing::info!(
            sockets = found,
            left = found.saturating_sub(self.index.count_on(edge_id)),
            "dead edge's grace period ended"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use p2piano_bus::Bus;
    use p2piano_clock::Clock;
    use p2piano_protocol::Subjects;
    use p2piano_telemetry::Metrics;
    use tokio::time::Instant;

    use super::{BEHIND_AT, HOLD_AT_MOST};
    use crate::kv::{BucketConfig, KvBucket, MemoryBucket};
    use crate::metrics::PresenceMetrics;
    use crate::presence::{Buckets, Presence, Settings};

    fn presence() -> Arc<Presence> {
        let bucket = |name: &str| -> Arc<dyn KvBucket> {
            Arc::new(MemoryBucket::new(BucketConfig {
                name: name.to_owned(),
                max_age: None,
                replicas: 1,
                description: String::new(),
            }))
        };
        let buckets = Buckets {
            sessions: bucket("s"),
            connections: bucket("c"),
            edges: bucket("e"),
        };
        let settings = Settings {
            grace: Duration::from_secs(5),
            session_ttl: Duration::from_secs(86_400),
            edge_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(1),
            local_edge: None,
        };
        Presence::new(
            buckets,
            Bus::in_process(),
            Subjects::new("hold").unwrap(),
            Clock::tokio(),
            settings,
            PresenceMetrics::new(&Metrics::new("p2piano")),
        )
    }

    /// A dead edge's leaves wait while this replica is behind on its requests (they may be
    /// the edge's sessions coming back elsewhere), for as long as the backlog lasts and
    /// never longer than [`HOLD_AT_MOST`]; when it is not behind, they do not wait at all.
    #[tokio::test(start_paused = true)]
    async fn a_dead_edges_leaves_wait_while_presence_is_behind() {
        let p = presence();
        let started = Instant::now();
        p.expire_edge("edge-x").await;
        assert_eq!(started.elapsed(), Duration::ZERO, "not behind: no hold");
        assert_eq!(p.metrics.leaves_held.get(), 0);

        p.metrics.rpc_in_flight.set(BEHIND_AT);
        let started = Instant::now();
        p.expire_edge("edge-x").await;
        let held = started.elapsed();
        assert!(
            held >= HOLD_AT_MOST && held < HOLD_AT_MOST + Duration::from_millis(100),
            "behind throughout: held {held:?}"
        );
        assert_eq!(p.metrics.leaves_held.get(), 5);

        // The backlog clears after 200 ms: the hold ends with it.
        let gauge = p.metrics.rpc_in_flight.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            gauge.set(0);
        });
        let started = Instant::now();
        p.expire_edge("edge-x").await;
        let held = started.elapsed();
        assert!(
            held >= Duration::from_millis(200) && held < Duration::from_millis(400),
            "held {held:?} for a 200 ms backlog"
        );
    }
}
