//! What this replica knows of the connection and edge records without reading the KV: an
//! index of each bucket, kept up to date by a watch.
//!
//! The index answers "which sockets does edge X hold" (a dead edge's sockets, found without
//! scanning every record), "is edge X dead, since when", and "what does presence believe edge
//! X holds" (a digest per edge, compared with the one in the edge's heartbeat). It is a
//! cache: every decision that changes a record still reads the record and writes it with
//! compare-and-set, so an index that is a moment behind (or names a record that expired)
//! costs a wasted read, never a wrong write.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use p2piano_protocol::presence::{DIGEST_BUCKETS, EdgeDigest, digest_bucket, digest_of};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::kv::{Change, KvBucket, Watched};
use crate::records::{ConnRecord, ConnState, EdgeRecord, decode};

/// A connection record as the index keeps it: the record and the revision that wrote it,
/// which a compare-and-set can name without reading the record first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Indexed {
    /// The record.
    pub record: ConnRecord,
    /// The revision that wrote it.
    pub revision: u64,
}

/// The sockets of one edge in the index, with the digest of the live ones.
#[derive(Debug)]
struct EdgeConns {
    /// Keys of the records on this edge.
    keys: HashSet<String>,
    /// XOR of [`digest_of`] of the conn ids of the live records, by [`digest_bucket`].
    digest: [u64; DIGEST_BUCKETS],
    /// When each digest bucket last changed.
    changed: [Instant; DIGEST_BUCKETS],
}

impl EdgeConns {
    fn new(now: Instant) -> Self {
        Self {
            keys: HashSet::new(),
            digest: [0; DIGEST_BUCKETS],
            changed: [now; DIGEST_BUCKETS],
        }
    }

    fn flip(&mut self, conn_id: &str, now: Instant) {
        let h = digest_of(conn_id);
        let b = digest_bucket(h);
        self.digest[b] ^= h;
        self.changed[b] = now;
    }
}

#[derive(Debug, Default)]
struct Conns {
    records: HashMap<String, Indexed>,
    by_edge: HashMap<String, EdgeConns>,
    /// The highest revision applied.
    latest: u64,
    /// Whether the watch has delivered everything the bucket held when it started: then a
    /// key not in `records` is (almost certainly) absent from the bucket.
    current: bool,
}

impl Conns {
    fn remove(&mut self, key: &str, now: Instant) {
        let Some(old) = self.records.remove(key) else {
            return;
        };
        let old = old.record;
        if let Some(edge) = self.by_edge.get_mut(&old.edge_id) {
            edge.keys.remove(key);
            if old.state == ConnState::Live {
                edge.flip(&old.conn_id, now);
            }
            if edge.keys.is_empty() {
                self.by_edge.remove(&old.edge_id);
            }
        }
    }

    fn insert(&mut self, key: String, record: Indexed, now: Instant) {
        let r = &record.record;
        let edge = self
            .by_edge
            .entry(r.edge_id.clone())
            .or_insert_with(|| EdgeConns::new(now));
        edge.keys.insert(key.clone());
        if r.state == ConnState::Live {
            edge.flip(&r.conn_id, now);
        }
        self.records.insert(key, record);
    }

    /// Applies a value (or its absence) for `key` at `revision`; an older revision than the
    /// one held is ignored (a replica's own write may be applied before the watch brings it).
    fn set(&mut self, key: &str, record: Option<ConnRecord>, revision: u64, now: Instant) {
        self.latest = self.latest.max(revision);
        if self
            .records
            .get(key)
            .is_some_and(|held| held.revision >= revision)
        {
            return;
        }
        self.remove(key, now);
        if let Some(record) = record {
            self.insert(key.to_owned(), Indexed { record, revision }, now);
        }
    }
}

/// The index of the connections and edges buckets.
#[derive(Debug)]
pub struct Index {
    conns: Mutex<Conns>,
    edges: Mutex<HashMap<String, EdgeRecord>>,
    /// When the connections watch last started (its first changes are the bucket's
    /// contents, so digests mean something only a little after this).
    conns_since: Mutex<Option<Instant>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Default for Index {
    fn default() -> Self {
        Self::new()
    }
}

impl Index {
    /// An empty index.
    pub fn new() -> Self {
        Self {
            conns: Mutex::new(Conns::default()),
            edges: Mutex::new(HashMap::new()),
            conns_since: Mutex::new(None),
        }
    }

    /// Applies one change of the connections bucket.
    pub fn apply_conn(&self, change: Change) {
        let record = change
            .value
            .as_deref()
            .and_then(|v| decode::<ConnRecord>(&change.key, v));
        lock(&self.conns).set(&change.key, record, change.revision, Instant::now());
    }

    /// Records a write of this replica (a record, or `None` for a delete, at `revision`),
    /// so that its next decision on the key needs no read.
    pub fn wrote_conn(&self, key: &str, record: Option<ConnRecord>, revision: u64) {
        lock(&self.conns).set(key, record, revision, Instant::now());
    }

    /// The watch of the connections bucket has delivered its starting contents.
    fn conns_current(&self) {
        lock(&self.conns).current = true;
    }

    /// What the index knows of `key`: `Some(Some(_))` a record, `Some(None)` no record (the
    /// watch is current and has none), `None` unknown (read the bucket).
    pub fn lookup(&self, key: &str) -> Option<Option<Indexed>> {
        let conns = lock(&self.conns);
        match conns.records.get(key) {
            Some(r) => Some(Some(r.clone())),
            None if conns.current => Some(None),
            None => None,
        }
    }

    /// Applies one change of the edges bucket.
    pub fn apply_edge(&self, change: Change) {
        let record = change
            .value
            .as_deref()
            .and_then(|v| decode::<EdgeRecord>(&change.key, v));
        let mut edges = lock(&self.edges);
        match record {
            Some(r) => {
                edges.insert(change.key, r);
            }
            None => {
                edges.remove(&change.key);
            }
        }
    }

    /// Records a write this replica just made, so that its own later decisions see it
    /// before the watch brings it back.
    pub fn wrote_edge(&self, edge_id: &str, record: EdgeRecord) {
        lock(&self.edges).insert(edge_id.to_owned(), record);
    }

    fn reset_conns(&self) {
        *lock(&self.conns) = Conns::default();
        *lock(&self.conns_since) = Some(Instant::now());
    }

    fn reset_edges(&self) {
        lock(&self.edges).clear();
    }

    /// The keys of the records on `edge_id`.
    pub fn keys_on(&self, edge_id: &str) -> Vec<String> {
        lock(&self.conns)
            .by_edge
            .get(edge_id)
            .map(|e| e.keys.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// How many records are on `edge_id`.
    pub fn count_on(&self, edge_id: &str) -> usize {
        lock(&self.conns)
            .by_edge
            .get(edge_id)
            .map_or(0, |e| e.keys.len())
    }

    /// The indexed record of `key`.
    pub fn conn(&self, key: &str) -> Option<Indexed> {
        lock(&self.conns).records.get(key).cloned()
    }

    /// Every indexed record (for the sweep).
    pub fn all_conns(&self) -> Vec<(String, Indexed)> {
        lock(&self.conns)
            .records
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// The keys on `edge_id` of live records written at or before `revision` whose conn id
    /// is in one of `buckets` (all when `None`) and not in `held` (sockets the edge says it
    /// no longer has).
    pub fn orphans(
        &self,
        edge_id: &str,
        revision: u64,
        buckets: Option<&[u8]>,
        held: &HashSet<&str>,
    ) -> Vec<String> {
        let in_buckets = |conn_id: &str| {
            buckets.is_none_or(|b| b.contains(&(digest_bucket(digest_of(conn_id)) as u8)))
        };
        let conns = lock(&self.conns);
        let Some(edge) = conns.by_edge.get(edge_id) else {
            return Vec::new();
        };
        edge.keys
            .iter()
            .filter(|k| {
                conns.records.get(*k).is_some_and(|r| {
                    r.record.state == ConnState::Live
                        && r.revision <= revision
                        && in_buckets(&r.record.conn_id)
                        && !held.contains(r.record.conn_id.as_str())
                })
            })
            .cloned()
            .collect()
    }

    /// The highest revision of the connections bucket applied so far.
    pub fn latest_revision(&self) -> u64 {
        lock(&self.conns).latest
    }

    /// The digest of the live records on `edge_id`, each bucket with how long it has been
    /// unchanged; `None` while the watch is starting (its digests are not yet complete).
    pub fn digest(&self, edge_id: &str, settle: Duration) -> Option<EdgeDigest> {
        let since = (*lock(&self.conns_since))?;
        let now = Instant::now();
        if now.duration_since(since) < settle {
            return None;
        }
        let conns = lock(&self.conns);
        Some(match conns.by_edge.get(edge_id) {
            Some(e) => EdgeDigest {
                buckets: e.digest,
                stable_ms: e
                    .changed
                    .map(|t| u32::try_from(now.duration_since(t).as_millis()).unwrap_or(u32::MAX)),
            },
            None => EdgeDigest {
                buckets: [0; DIGEST_BUCKETS],
                stable_ms: [u32::try_from(now.duration_since(since).as_millis())
                    .unwrap_or(u32::MAX); DIGEST_BUCKETS],
            },
        })
    }

    /// The record of edge `edge_id`, as last seen.
    pub fn edge(&self, edge_id: &str) -> Option<EdgeRecord> {
        lock(&self.edges).get(edge_id).cloned()
    }

    /// Every known edge record.
    pub fn edges(&self) -> Vec<(String, EdgeRecord)> {
        lock(&self.edges)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// Keeps `index` up to date from watches of the two buckets until `stop`: a watch that
/// fails is started again after a pause, and its index rebuilt from the bucket's contents.
pub fn spawn_watchers(
    index: Arc<Index>,
    connections: Arc<dyn KvBucket>,
    edges: Arc<dyn KvBucket>,
    stop: CancellationToken,
) {
    let conns = index.clone();
    tokio::spawn(keep_watching(
        "connections",
        connections,
        move |w| match w {
            Watched::Change(c) => conns.apply_conn(c),
            Watched::Current => conns.conns_current(),
        },
        {
            let index = index.clone();
            move || index.reset_conns()
        },
        stop.clone(),
    ));
    let edges_index = index.clone();
    tokio::spawn(keep_watching(
        "edges",
        edges,
        move |w| {
            if let Watched::Change(c) = w {
                edges_index.apply_edge(c)
            }
        },
        move || index.reset_edges(),
        stop,
    ));
}

/// Watches `bucket`, applying each change, until `stop`; starts over (after `reset`) when
/// the watch fails or ends.
async fn keep_watching(
    name: &'static str,
    bucket: Arc<dyn KvBucket>,
    apply: impl Fn(Watched),
    reset: impl Fn(),
    stop: CancellationToken,
) {
    loop {
        let watch = tokio::select! {
            _ = stop.cancelled() => return,
            w = bucket.watch() => w,
        };
        match watch {
            Ok(mut changes) => {
                reset();
                loop {
                    let next = tokio::select! {
                        _ = stop.cancelled() => return,
                        n = changes.next() => n,
                    };
                    match next {
                        Some(Ok(change)) => apply(change),
                        Some(Err(e)) => {
                            tracing::warn!(bucket = name, error = %e, "index watch failed; starting again");
                            break;
                        }
                        None => {
                            tracing::warn!(bucket = name, "index watch ended; starting again");
                            break;
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(bucket = name, error = %e, "index watch not started"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use p2piano_protocol::{Timestamp, UserId};

    fn change(key: &str, edge: &str, conn: &str, state: ConnState, revision: u64) -> Change {
        let record = ConnRecord {
            user_id: UserId::random(),
            edge_id: edge.into(),
            conn_id: conn.into(),
            room_code: None,
            pid: None,
            state,
        };
        Change {
            key: key.into(),
            value: Some(Bytes::from(serde_json::to_vec(&record).unwrap())),
            revision,
        }
    }

    fn digest_xor(index: &Index, edge: &str) -> u64 {
        index
            .digest(edge, Duration::ZERO)
            .unwrap()
            .buckets
            .iter()
            .fold(0, |a, b| a ^ b)
    }

    #[tokio::test]
    async fn tracks_edges_digests_and_orphans() {
        let index = Index::new();
        index.reset_conns();
        index.apply_conn(change("k1", "e1", "c1", ConnState::Live, 1));
        index.apply_conn(change("k2", "e1", "c2", ConnState::Live, 2));
        index.apply_conn(change("k3", "e2", "c3", ConnState::Live, 3));
        let mut on_e1 = index.keys_on("e1");
        on_e1.sort();
        assert_eq!(on_e1, ["k1", "k2"]);
        assert_eq!(digest_xor(&index, "e1"), digest_of("c1") ^ digest_of("c2"));
        // k2 moves to grace (still on e1, no longer live); k1 moves to e2.
        let grace = ConnState::Grace {
            until: Timestamp::from_millis(1),
        };
        index.apply_conn(change("k2", "e1", "c2", grace, 4));
        index.apply_conn(change("k1", "e2", "c9", ConnState::Live, 5));
        assert_eq!(index.keys_on("e1"), ["k2"]);
        assert_eq!(digest_xor(&index, "e1"), 0);
        assert_eq!(digest_xor(&index, "e2"), digest_of("c3") ^ digest_of("c9"));
        // e2 holds only c9: c3 is an orphan, if written no later than the revision given.
        let held: HashSet<&str> = ["c9"].into_iter().collect();
        assert_eq!(index.orphans("e2", 5, None, &held), ["k3"]);
        assert!(index.orphans("e2", 2, None, &held).is_empty());
        let elsewhere = (digest_bucket(digest_of("c3")) as u8 + 1) % DIGEST_BUCKETS as u8;
        assert!(index.orphans("e2", 5, Some(&[elsewhere]), &held).is_empty());
        // Unknown until the watch is current; then a missing key is absent.
        assert_eq!(index.lookup("nobody"), None);
        index.conns_current();
        assert_eq!(index.lookup("nobody"), Some(None));
        // An older revision of a key does not overwrite a newer one.
        index.apply_conn(change("k1", "e3", "c8", ConnState::Live, 4));
        assert_eq!(index.keys_on("e3"), Vec::<String>::new());
        index.apply_conn(Change {
            key: "k3".into(),
            value: None,
            revision: 6,
        });
        assert_eq!(index.keys_on("e2"), ["k1"]);
        assert_eq!(index.latest_revision(), 6);
        assert_eq!(digest_xor(&index, "e2"), digest_of("c9"));
    }
}
