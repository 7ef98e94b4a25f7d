//! The presence state machine's handle: buckets, index, clock, settings, and the local
//! timers that end grace periods on time.
//!
//! Exactly one leave per departure, with any number of replicas, comes from compare-and-set
//! on KV revisions: every transition of a session's connection record (live → grace →
//! leaving → gone) is a write that names the revision it read, so when two replicas race,
//! one write wins and the loser re-reads. Only the replica whose grace → leaving write won
//! calls rooms `leave`. If it dies before finishing, the record stays `leaving`, and after
//! a stale bound another replica claims it the same way and retries (rooms' `leave` is
//! idempotent, so a retried call cannot announce twice).
//!
//! The revision a write names usually comes from the [`Index`] (kept from a watch of the
//! bucket), so that a connect or a disconnect is one KV round trip; a lost compare-and-set
//! reads the record and tries again.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use p2piano_bus::Bus;
use p2piano_clock::Clock;
use p2piano_protocol::{ErrorBody, ErrorCode, Subjects, Timestamp};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::index::Index;
use crate::kv::{CountedBucket, KvBucket, KvError};
use crate::metrics::PresenceMetrics;
use crate::records::{ConnRecord, ConnState, decode, encode};
use crate::rooms_client::RoomsClient;

/// How many times a compare-and-set is retried after losing a race.
pub(crate) const CAS_ATTEMPTS: usize = 16;

/// Timing settings of presence.
#[derive(Clone, Debug)]
pub struct Settings {
    /// A closed socket's session leaves its room this long after, unless it comes back.
    pub grace: Duration,
    /// Sessions expire after this long unused.
    pub session_ttl: Duration,
    /// An edge silent this long is dead.
    pub edge_timeout: Duration,
    /// Bound on rooms requests; a `leaving` claim older than twice this is taken over.
    pub request_timeout: Duration,
    /// An edge in this process (`p2piano all`): never judged by its heartbeats, since it
    /// cannot die without this presence dying too, and a busy process delays both alike.
    pub local_edge: Option<String>,
}

impl Settings {
    /// A session is rewritten (refreshing its expiry) when its last refresh is older than
    /// this: 1/24 of the TTL (an hour for the default day), so a busy client costs one KV
    /// write an hour, not one per request, and a session lives between 23/24 and 1 TTL
    /// after its last use.
    pub fn refresh_every(&self) -> Duration {
        self.session_ttl / 24
    }

    /// Age after which a `leaving` claim is considered abandoned.
    pub fn stale_leaving(&self) -> Duration {
        self.request_timeout * 2
    }

    /// How often every replica scans its index for grace periods it has no timer for (ones
    /// started by a replica that then died, or before a restart), for abandoned leaves and
    /// for dead edges whose sockets are due.
    pub fn sweep_every(&self) -> Duration {
        self.grace
            .clamp(Duration::from_millis(200), Duration::from_secs(5))
    }
}

/// The KV buckets presence works on.
#[derive(Clone)]
pub struct Buckets {
    /// Sessions by hashed secret.
    pub sessions: Arc<dyn KvBucket>,
    /// Current socket of each session, by hashed secret.
    pub connections: Arc<dyn KvBucket>,
    /// Known edges, by edge id.
    pub edges: Arc<dyn KvBucket>,
}

/// Presence: shared by the RPC handlers, the liveness judge and the timers.
pub struct Presence {
    pub(crate) buckets: Buckets,
    pub(crate) bus: Bus,
    pub(crate) subjects: Subjects,
    pub(crate) rooms: RoomsClient,
    pub(crate) clock: Clock,
    pub(crate) settings: Settings,
    pub(crate) metrics: PresenceMetrics,
    pub(crate) index: Arc<Index>,
    /// Keys (and `edge:<id>` for dead edges) with a timer running in this replica.
    scheduled: Arc<Mutex<HashSet<String>>>,
    /// Last heartbeat heard from each edge, in this replica (kept by the judge).
    pub(crate) last_heard: Mutex<HashMap<String, tokio::time::Instant>>,
    /// When this replica last asked each edge to re-assert its sockets.
    pub(crate) resync_asked: Mutex<HashMap<String, tokio::time::Instant>>,
    /// Heartbeats in a row whose digest disagreed with the index, by edge.
    pub(crate) digest_misses: Mutex<HashMap<String, u32>>,
    timers: TaskTracker,
    stop: CancellationToken,
}

impl Presence {
    /// Presence over `buckets` (counted in `metrics`), calling rooms through `bus`. The
    /// index starts empty; [`Presence::start_index`] keeps it up to date.
    pub fn new(
        buckets: Buckets,
        bus: Bus,
        subjects: Subjects,
        clock: Clock,
        settings: Settings,
        metrics: PresenceMetrics,
    ) -> Arc<Self> {
        let rooms = RoomsClient::new(bus.clone(), subjects.clone(), settings.request_timeout);
        let ops = metrics.kv_ops.clone();
        let buckets = Buckets {
            sessions: CountedBucket::wrap(buckets.sessions, "sessions", ops.clone()),
            connections: CountedBucket::wrap(buckets.connections, "connections", ops.clone()),
            edges: CountedBucket::wrap(buckets.edges, "edges", ops),
        };
        Arc::new(Self {
            buckets,
            bus,
            subjects,
            rooms,
            clock,
            settings,
            metrics,
            index: Arc::new(Index::new()),
            scheduled: Arc::new(Mutex::new(HashSet::new())),
            last_heard: Mutex::new(HashMap::new()),
            resync_asked: Mutex::new(HashMap::new()),
            digest_misses: Mutex::new(HashMap::new()),
            timers: TaskTracker::new(),
            stop: CancellationToken::new(),
        })
    }

    /// Starts the watches that keep the index up to date (until [`Presence::stop_timers`]).
    pub fn start_index(&self) {
        crate::index::spawn_watchers(
            self.index.clone(),
            self.buckets.connections.clone(),
            self.buckets.edges.clone(),
            self.stop.clone(),
        );
    }

    /// The current wall-clock time (shared meaning across replicas).
    pub(crate) fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Where a record stands, all things considered: a live socket on an edge that was
    /// declared dead is in its grace period, which ends a grace after the death.
    pub(crate) fn effective(&self, record: &ConnRecord) -> ConnState {
        if record.state == ConnState::Live
            && let Some(edge) = self.index.edge(&record.edge_id)
            && !edge.alive
        {
            return ConnState::Grace {
                until: edge.since.plus(self.settings.grace),
            };
        }
        record.state.clone()
    }

    /// The record of `key` and the revision that wrote it: from the index when it has one
    /// (`fresh` false), else (or when `fresh`, after a lost compare-and-set) from the KV. The
    /// index's "no record" is not trusted here: another replica may have written one that
    /// the watch has not brought yet (see [`Presence::conn_or_absent`]).
    pub(crate) async fn conn_of(
        &self,
        key: &str,
        fresh: bool,
    ) -> Result<Option<(u64, ConnRecord)>, KvError> {
        if !fresh && let Some(Some(known)) = self.index.lookup(key) {
            return Ok(Some((known.revision, known.record)));
        }
        self.read_conn(key).await
    }

    /// Like [`Presence::conn_of`], but the index's "no record" counts (a caller that then
    /// creates the record with compare-and-set, which fails if one exists after all).
    pub(crate) async fn conn_or_absent(
        &self,
        key: &str,
        fresh: bool,
    ) -> Result<Option<(u64, ConnRecord)>, KvError> {
        if !fresh && let Some(known) = self.index.lookup(key) {
            return Ok(known.map(|i| (i.revision, i.record)));
        }
        self.read_conn(key).await
    }

    /// Reads `key`'s record from the KV (and tells the index).
    async fn read_conn(&self, key: &str) -> Result<Option<(u64, ConnRecord)>, KvError> {
        let read = self
            .buckets
            .connections
            .get(key)
            .await?
            .and_then(|e| decode::<ConnRecord>(key, &e.value).map(|r| (e.revision, r)));
        if let Some((revision, record)) = &read {
            self.index.wrote_conn(key, Some(record.clone()), *revision);
        }
        Ok(read)
    }

    /// Writes `record` for `key` over revision `expected` (creates it when `None`), and
    /// tells the index.
    pub(crate) async fn write_conn(
        &self,
        key: &str,
        record: &ConnRecord,
        expected: Option<u64>,
    ) -> Result<u64, KvError> {
        let value = encode(record)?;
        let revision = match expected {
            None => self.buckets.connections.create(key, value).await?,
            Some(rev) => self.buckets.connections.update(key, value, rev).await?,
        };
        self.index.wrote_conn(key, Some(record.clone()), revision);
        Ok(revision)
    }

    /// Deletes `key` if its revision is still `expected`, and tells the index.
    pub(crate) async fn delete_conn(&self, key: &str, expected: u64) -> Result<(), KvError> {
        self.buckets.connections.delete(key, Some(expected)).await?;
        // A delete takes the next revision; any later one will do for the index.
        self.index.wrote_conn(key, None, expected + 1);
        Ok(())
    }

    /// Runs `key`'s grace expiry at `until`, unless a timer for it already runs here.
    pub(crate) fn schedule(self: &Arc<Self>, key: String, until: Timestamp) {
        let me = self.clone();
        self.after(key.clone(), until, async move { me.expire(&key).await });
    }

    /// Runs `work` at `until`, under `tag`, unless a timer with that tag already runs here.
    pub(crate) fn after(
        &self,
        tag: String,
        until: Timestamp,
        work: impl Future<Output = ()> + Send + 'static,
    ) {
        {
            let mut scheduled = self.scheduled.lock().unwrap_or_else(|e| e.into_inner());
            if !scheduled.insert(tag.clone()) {
                return;
            }
        }
        let wait =
            Duration::from_millis(u64::try_from(until.millis() - self.now().millis()).unwrap_or(0));
        let stop = self.stop.clone();
        let scheduled = self.scheduled.clone();
        self.timers.spawn(async move {
            let fired = tokio::select! {
                _ = stop.cancelled() => false,
                _ = tokio::time::sleep(wait) => true,
            };
            scheduled
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&tag);
            if fired {
                work.await;
            }
        });
    }

    /// Stops the local timers and the index watches. Their grace periods are not lost: the
    /// records are in the KV, and the next replica to sweep (this one after a restart, or
    /// another) picks them up.
    pub async fn stop_timers(&self) {
        self.stop.cancel();
        self.timers.close();
        self.timers.wait().await;
    }
}

impl From<KvError> for ErrorBody {
    fn from(e: KvError) -> Self {
        match e {
            KvError::Invalid(m) => ErrorBody::new(ErrorCode::Invalid, m),
            KvError::WrongRevision => {
                ErrorBody::new(ErrorCode::Conflict, "changed concurrently, try again")
            }
            KvError::Unavailable(detail) => {
                tracing::warn!(error = %detail, "presence store unavailable");
                ErrorBody::new(
                    ErrorCode::Unavailable,
                    "presence store unavailable, try again later",
                )
            }
        }
    }
}

/// The error for a compare-and-set that kept losing.
pub(crate) fn too_busy() -> ErrorBody {
    ErrorBody::new(
        ErrorCode::Conflict,
        "session is changing too fast, try again",
    )
}
