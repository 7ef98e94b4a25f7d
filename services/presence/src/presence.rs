//! The presence state machine's handle: buckets, clock, settings, and the local timers that
//! end grace periods on time.
//!
//! Exactly one leave per departure, with any number of replicas, comes from compare-and-set
//! on KV revisions: every transition of a session's connection record (live → grace →
//! leaving → gone) is a write that names the revision it read, so when two replicas race,
//! one write wins and the loser re-reads. Only the replica whose grace → leaving write won
//! calls rooms `leave`. If it dies before finishing, the record stays `leaving`, and after
//! a stale bound another replica claims it the same way and retries (rooms' `leave` is
//! idempotent, so a retried call cannot announce twice).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use p2piano_bus::Bus;
use p2piano_protocol::{Clock, ErrorBody, ErrorCode, Subjects, Timestamp};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::kv::{KvBucket, KvError};
use crate::metrics::PresenceMetrics;
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

    /// How often every replica scans for grace periods it has no timer for (ones started by
    /// a replica that then died, or before a restart) and for abandoned leaves.
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

/// Presence: shared by the RPC handlers, the heartbeat listener and the timers.
pub struct Presence {
    pub(crate) buckets: Buckets,
    pub(crate) bus: Bus,
    pub(crate) subjects: Subjects,
    pub(crate) rooms: RoomsClient,
    pub(crate) clock: Clock,
    pub(crate) settings: Settings,
    pub(crate) metrics: PresenceMetrics,
    /// Keys with a grace timer running in this replica.
    scheduled: Mutex<HashSet<String>>,
    /// Last heartbeat heard from each edge, in this replica.
    pub(crate) last_heard: Mutex<HashMap<String, tokio::time::Instant>>,
    timers: TaskTracker,
    stop_timers: CancellationToken,
}

impl Presence {
    /// Presence over `buckets`, calling rooms through `bus`.
    pub fn new(
        buckets: Buckets,
        bus: Bus,
        subjects: Subjects,
        clock: Clock,
        settings: Settings,
        metrics: PresenceMetrics,
    ) -> Arc<Self> {
        let rooms = RoomsClient::new(bus.clone(), subjects.clone(), settings.request_timeout);
        Arc::new(Self {
            buckets,
            bus,
            subjects,
            rooms,
            clock,
            settings,
            metrics,
            scheduled: Mutex::new(HashSet::new()),
            last_heard: Mutex::new(HashMap::new()),
            timers: TaskTracker::new(),
            stop_timers: CancellationToken::new(),
        })
    }

    /// The current wall-clock time (shared meaning across replicas).
    pub(crate) fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Runs `key`'s grace expiry at `until`, unless a timer for it already runs here.
    pub(crate) fn schedule(self: &Arc<Self>, key: String, until: Timestamp) {
        {
            let mut scheduled = self.scheduled.lock().unwrap_or_else(|e| e.into_inner());
            if !scheduled.insert(key.clone()) {
                return;
            }
        }
        let wait =
            Duration::from_millis(u64::try_from(until.millis() - self.now().millis()).unwrap_or(0));
        let me = self.clone();
        let stop = self.stop_timers.clone();
        self.timers.spawn(async move {
            let fired = tokio::select! {
                _ = stop.cancelled() => false,
                _ = tokio::time::sleep(wait) => true,
            };
            me.unschedule(&key);
            if fired {
                me.expire(&key).await;
            }
        });
    }

    fn unschedule(&self, key: &str) {
        self.scheduled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    /// Stops the local timers. Their grace periods are not lost: the records are in the KV,
    /// and the next replica to sweep (this one after a restart, or another) picks them up.
    pub async fn stop_timers(&self) {
        self.stop_timers.cancel();
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
