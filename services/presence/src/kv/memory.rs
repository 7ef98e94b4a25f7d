//! The in-memory bucket used by `p2piano all`.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio::time::Instant;

use super::{
    BucketConfig, Change, Changes, Entry, KvBucket, KvError, Watched, validate_bucket, validate_key,
};

/// Changes a watcher may fall behind by before its watch fails (and is started again).
const WATCH_BACKLOG: usize = 1 << 16;

/// An in-memory bucket with the same semantics as the JetStream one.
///
/// `p2piano all` runs without NATS, yet the presence code must behave exactly as in a
/// deployment, so this keeps JetStream's rules: revisions are bucket-wide and increase on
/// every write including deletes (like a stream sequence), and entries older than
/// `max_age` since their last write are absent everywhere. Time is measured with
/// `tokio::time::Instant`, so tests can drive expiry with paused time.
///
/// State sits behind one `std::sync::Mutex` that is never held across an `.await`.
/// Expired entries are dropped lazily: when touched, and by a sweep of the whole map at
/// most once per `max_age`.
///
/// A bucket name JetStream would refuse makes every operation return
/// [`KvError::Invalid`], as [`open_jetstream`](super::open_jetstream) would.
#[derive(Debug)]
pub struct MemoryBucket {
    /// Set when the configured bucket name is invalid; returned by every operation.
    name_error: Option<String>,
    /// Expiry after the last write; `None` keeps entries forever.
    max_age: Option<Duration>,
    /// Entries and the revision counter.
    state: Mutex<State>,
}

/// Mutable part of a [`MemoryBucket`].
#[derive(Debug)]
struct State {
    /// Live (or expired but not yet dropped) entries by key.
    entries: HashMap<String, Slot>,
    /// The revision the next write gets; starts at 1 like a stream sequence.
    next_revision: u64,
    /// When the next sweep of expired entries is due.
    next_sweep: Instant,
    /// Every write and delete, for watchers.
    changes: tokio::sync::broadcast::Sender<Change>,
}

/// One stored value.
#[derive(Debug)]
struct Slot {
    /// The stored bytes.
    value: Bytes,
    /// Revision of the write that stored them.
    revision: u64,
    /// When they were written, for `max_age`.
    written_at: Instant,
}

impl MemoryBucket {
    /// Creates an empty bucket with `config`'s `max_age` (`replicas` and `description`
    /// have no meaning in memory).
    pub fn new(config: BucketConfig) -> Self {
        MemoryBucket {
            name_error: validate_bucket(&config.name).err().map(|e| match e {
                KvError::Invalid(msg) => msg,
                other => other.to_string(),
            }),
            max_age: config.max_age.filter(|age| !age.is_zero()),
            state: Mutex::new(State {
                entries: HashMap::new(),
                next_revision: 1,
                next_sweep: Instant::now(),
                changes: tokio::sync::broadcast::channel(WATCH_BACKLOG).0,
            }),
        }
    }

    /// Validates the bucket name and `key`, then locks the state and drops expired
    /// entries (the one that `key` names always, all of them when a sweep is due).
    fn lock_for(&self, key: Option<&str>) -> Result<(MutexGuard<'_, State>, Instant), KvError> {
        if let Some(msg) = &self.name_error {
            return Err(KvError::Invalid(msg.clone()));
        }
        if let Some(key) = key {
            validate_key(key)?;
        }
        // The state is consistent after every statement, so a panic elsewhere while the
        // lock was held leaves nothing half-done: recover from poisoning.
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if let Some(max_age) = self.max_age {
            if now >= state.next_sweep {
                state
                    .entries
                    .retain(|_, slot| now.duration_since(slot.written_at) < max_age);
                state.next_sweep = now + max_age;
            } else if let Some(key) = key {
                let expired = state
                    .entries
                    .get(key)
                    .is_some_and(|slot| now.duration_since(slot.written_at) >= max_age);
                if expired {
                    state.entries.remove(key);
                }
            }
        }
        Ok((state, now))
    }
}

impl State {
    /// Stores `value` under `key` with the next revision and returns that revision.
    fn write(&mut self, key: &str, value: Bytes, now: Instant) -> u64 {
        let revision = self.take_revision();
        // No watcher is not an error.
        let _ = self.changes.send(Change {
            key: key.to_owned(),
            value: Some(value.clone()),
            revision,
        });
        self.entries.insert(
            key.to_owned(),
            Slot {
                value,
                revision,
                written_at: now,
            },
        );
        revision
    }

    /// Consumes the next bucket-wide revision.
    fn take_revision(&mut self) -> u64 {
        let revision = self.next_revision;
        self.next_revision += 1;
        revision
    }

    /// The revision of `key`'s live value (expired ones were dropped by `lock_for`).
    fn live_revision(&self, key: &str) -> Option<u64> {
        self.entries.get(key).map(|slot| slot.revision)
    }
}

#[async_trait::async_trait]
impl KvBucket for MemoryBucket {
    async fn get(&self, key: &str) -> Result<Option<Entry>, KvError> {
        let (state, _) = self.lock_for(Some(key))?;
        Ok(state.entries.get(key).map(|slot| Entry {
            key: key.to_owned(),
            value: slot.value.clone(),
            revision: slot.revision,
        }))
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<u64, KvError> {
        let (mut state, now) = self.lock_for(Some(key))?;
        if state.live_revision(key).is_some() {
            return Err(KvError::WrongRevision);
        }
        Ok(state.write(key, value, now))
    }

    async fn update(&self, key: &str, value: Bytes, expected: u64) -> Result<u64, KvError> {
        let (mut state, now) = self.lock_for(Some(key))?;
        if state.live_revision(key) != Some(expected) {
            return Err(KvError::WrongRevision);
        }
        Ok(state.write(key, value, now))
    }

    async fn put(&self, key: &str, value: Bytes) -> Result<u64, KvError> {
        let (mut state, now) = self.lock_for(Some(key))?;
        Ok(state.write(key, value, now))
    }

    async fn delete(&self, key: &str, expected: Option<u64>) -> Result<(), KvError> {
        let (mut state, _) = self.lock_for(Some(key))?;
        if let Some(expected) = expected
            && state.live_revision(key) != Some(expected)
        {
            return Err(KvError::WrongRevision);
        }
        // JetStream writes a delete marker, which takes a stream sequence too.
        let revision = state.take_revision();
        if state.entries.remove(key).is_some() {
            let _ = state.changes.send(Change {
                key: key.to_owned(),
                value: None,
                revision,
            });
        }
        Ok(())
    }

    async fn keys(&self) -> Result<Vec<String>, KvError> {
        let (state, now) = self.lock_for(None)?;
        Ok(state
            .entries
            .iter()
            .filter(|(_, slot)| {
                self.max_age
                    .is_none_or(|age| now.duration_since(slot.written_at) < age)
            })
            .map(|(key, _)| key.clone())
            .collect())
    }

    async fn watch(&self) -> Result<Changes, KvError> {
        let (state, _) = self.lock_for(None)?;
        // Snapshot and subscription under one lock: no change falls between them.
        let mut current: Vec<Change> = state
            .entries
            .iter()
            .map(|(key, slot)| Change {
                key: key.clone(),
                value: Some(slot.value.clone()),
                revision: slot.revision,
            })
            .collect();
        current.sort_by_key(|c| c.revision);
        let rx = state.changes.subscribe();
        drop(state);
        let later = futures::stream::unfold(rx, |mut rx| async move {
            use tokio::sync::broadcast::error::RecvError;
            match rx.recv().await {
                Ok(change) => Some((Ok(Watched::Change(change)), rx)),
                Err(RecvError::Lagged(missed)) => Some((
                    Err(KvError::Unavailable(format!(
                        "watch fell behind by {missed} changes"
                    ))),
                    rx,
                )),
                Err(RecvError::Closed) => None,
            }
        });
        let current = current
            .into_iter()
            .map(|c| Ok(Watched::Change(c)))
            .chain(std::iter::once(Ok(Watched::Current)));
        Ok(Box::pin(futures::stream::iter(current).chain(later)))
    }
}
