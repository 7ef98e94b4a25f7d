//! A small key-value abstraction with compare-and-set on revisions.
//!
//! Presence keeps sessions, connections and edges in a key-value store so that its
//! replicas are stateless and a restart loses nothing. In a deployment that store is a
//! NATS JetStream KV bucket ([`open_jetstream`]); `p2piano all` uses [`MemoryBucket`],
//! which has the same semantics. Two presence replicas must never both act on one
//! departure, so every write that depends on what was read is a compare-and-set on the
//! entry's revision ([`KvBucket::create`], [`KvBucket::update`], [`KvBucket::delete`] with
//! an expected revision): exactly one of several racing writers wins, the others get
//! [`KvError::WrongRevision`] and must re-read.
//!
//! # Semantics shared by both implementations
//!
//! * Revisions are bucket-wide and strictly increasing (JetStream's stream sequence):
//!   every write, including a delete, takes the next one; a revision is never `0`.
//! * A key is *live* once written, until deleted or expired. Deleted and expired keys are
//!   absent everywhere: `get` returns `None`, `keys` omits them, `create` succeeds.
//! * `max_age` (if set and non-zero) expires an entry that long after its last write; a
//!   `put`/`update` therefore refreshes it.
//! * Keys and bucket names are checked the same way by both implementations before
//!   anything is sent (see [`KvError::Invalid`]).

mod counted;
mod jetstream;
mod memory;

use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;

pub use counted::{CountedBucket, KvOpLabels};
pub use jetstream::open_jetstream;
pub use memory::MemoryBucket;

/// One stored value and the revision that wrote it.
///
/// The revision is what a later [`KvBucket::update`] or [`KvBucket::delete`] passes as
/// `expected`, so that the write only happens if nobody wrote the key in between.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The key, as given to the operation that read it.
    pub key: String,
    /// The stored bytes (the store does not interpret them).
    pub value: Bytes,
    /// The bucket-wide revision of the write that stored this value (never 0).
    pub revision: u64,
}

/// One change of a bucket as [`KvBucket::watch`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The key that changed.
    pub key: String,
    /// The value written, or `None` when the key was deleted or purged.
    pub value: Option<Bytes>,
    /// The revision of the change.
    pub revision: u64,
}

/// What a watch yields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Watched {
    /// A value as it was when the watch started, or a later change.
    Change(Change),
    /// Every value the bucket held when the watch started has been delivered: from here
    /// on, a key the watcher has not seen is absent (up to changes still on their way).
    Current,
}

/// What a watch yields: changes, or a failure after which the watch must be started again
/// (the watcher has missed changes, so whatever it built from them is to be rebuilt).
pub type Changes = BoxStream<'static, Result<Watched, KvError>>;

/// Why a key-value operation failed.
///
/// Callers branch on the variant: `WrongRevision` means "someone else won, re-read",
/// `Unavailable` is worth a retry later (or an `unavailable` reply), `Invalid` is a bug or
/// bad input and will never succeed as is.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    /// Compare-and-set lost: `create` found a live value, or `update`/`delete` found another
    /// revision (or no value).
    #[error("revision mismatch")]
    WrongRevision,
    /// NATS/JetStream cannot be reached or did not answer in time.
    ///
    /// Also used for any other failure reported by the server, which a retry may or may
    /// not fix; the message says which.
    #[error("kv unavailable: {0}")]
    Unavailable(String),
    /// Key or bucket name not acceptable.
    ///
    /// Also returned by the JetStream bucket when a value is larger than the server's
    /// `max_payload` (retrying cannot help there either).
    #[error("invalid kv key or bucket: {0}")]
    Invalid(String),
}

/// Settings of one bucket.
///
/// Passed to [`open_jetstream`] and [`MemoryBucket::new`] so that both modes are
/// configured the same way.
#[derive(Clone, Debug)]
pub struct BucketConfig {
    /// The bucket name, `[A-Za-z0-9_-]+` (JetStream's rule; the stream is `KV_<name>`).
    pub name: String,
    /// Entries expire this long after their last write; `None` or zero keeps them forever.
    ///
    /// JetStream applies it to the whole bucket, and only when it creates the bucket: an
    /// existing bucket keeps the `max_age` it was created with.
    pub max_age: Option<Duration>,
    /// Number of JetStream replicas (1 on a single server, e.g. in tests; 3 in a cluster).
    /// Ignored by the memory bucket.
    pub replicas: usize,
    /// Human-readable description stored with the JetStream bucket, for operators.
    pub description: String,
}

/// A key-value bucket with compare-and-set on revisions.
///
/// Object-safe so that the service holds an `Arc<dyn KvBucket>` and runs unchanged on
/// JetStream and in memory. All methods validate the key first ([`KvError::Invalid`]).
#[async_trait::async_trait]
pub trait KvBucket: Send + Sync + 'static {
    /// The live value (None if never written, deleted, purged or expired).
    ///
    /// Its revision is what to pass to a following `update`/`delete`.
    async fn get(&self, key: &str) -> Result<Option<Entry>, KvError>;
    /// Writes only if there is no live value; returns the new revision.
    ///
    /// A deleted or expired key counts as absent. Loses with [`KvError::WrongRevision`]
    /// if the key is live, so of several racing creators exactly one wins.
    async fn create(&self, key: &str, value: Bytes) -> Result<u64, KvError>;
    /// Writes only if the live value's revision is `expected`; returns the new revision.
    ///
    /// [`KvError::WrongRevision`] if the key was written, deleted or expired since
    /// `expected` was read, or never existed.
    async fn update(&self, key: &str, value: Bytes, expected: u64) -> Result<u64, KvError>;
    /// Writes unconditionally; returns the new revision.
    ///
    /// For data that has a single writer or where the last write may simply win.
    async fn put(&self, key: &str, value: Bytes) -> Result<u64, KvError>;
    /// Deletes; with `Some(rev)` only if the live value's revision is `rev` (else
    /// WrongRevision). Deleting an absent key with None is Ok.
    ///
    /// The conditional form lets exactly one replica clean up a departure.
    async fn delete(&self, key: &str, expected: Option<u64>) -> Result<(), KvError>;
    /// Every live key (order unspecified).
    ///
    /// Reads the whole bucket; meant for sweeps and start-up, not for hot paths.
    async fn keys(&self) -> Result<Vec<String>, KvError>;
    /// The current value of every live key (as changes, order unspecified), then
    /// [`Watched::Current`], then every change as it is made, in revision order.
    ///
    /// How a replica keeps an index of the bucket in memory without reading it again.
    /// Expiry by `max_age` is not reported (JetStream removes such values silently), so an
    /// index built from a watch may name keys that are gone; readers check the value
    /// itself before acting on it.
    async fn watch(&self) -> Result<Changes, KvError>;
}

/// Checks a key against what JetStream KV accepts: non-empty, only `[A-Za-z0-9_=/.-]`,
/// not starting or ending with `.`, no `..` (an empty subject token).
///
/// Both implementations call this so that a key that works in memory also works on
/// JetStream.
pub(crate) fn validate_key(key: &str) -> Result<(), KvError> {
    let ok = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'=' | b'/' | b'.' | b'-'))
        && !key.starts_with('.')
        && !key.ends_with('.')
        && !key.contains("..");
    if ok {
        Ok(())
    } else {
        Err(KvError::Invalid(format!("key {key:?}")))
    }
}

/// Checks a bucket name against JetStream's rule, `[A-Za-z0-9_-]+`.
pub(crate) fn validate_bucket(name: &str) -> Result<(), KvError> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(KvError::Invalid(format!("bucket name {name:?}")))
    }
}
