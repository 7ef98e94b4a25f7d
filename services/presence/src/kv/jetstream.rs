//! The JetStream KV bucket used in a deployment.

use std::error::Error as StdError;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::context::{
    GetStreamError, GetStreamErrorKind, KeyValueErrorKind, PublishError, PublishErrorKind,
};
use async_nats::jetstream::kv::{
    self, EntryErrorKind, Operation, Store, UpdateError, UpdateErrorKind,
};
use async_nats::jetstream::stream::{self, DiscardPolicy, StorageType};
use async_nats::jetstream::{self as js, ErrorCode};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use super::{
    BucketConfig, Change, Changes, Entry, KvBucket, KvError, Watched, validate_bucket, validate_key,
};

/// How often `create` starts over when the key changes under it between its steps (see
/// [`JetStreamBucket::create`]); after that the racing writers are considered to win.
const CREATE_ATTEMPTS: usize = 3;

/// Opens (creating if missing) a JetStream KV bucket, file storage, history 1.
///
/// Presence replicas keep their state here so they can be restarted or scaled freely;
/// file storage is what makes it survive a NATS restart, and history 1 because only the
/// current value matters (revisions still come from the stream sequence). Each step of
/// opening, and every later operation, is bounded by `timeout` and fails with
/// [`KvError::Unavailable`] beyond it; `timeout` is also set as the JetStream context's
/// request and ack timeout.
///
/// If the bucket exists it is used as it is: a different `max_age` or replica count in
/// `config` is logged as a warning, not applied. When two replicas create the bucket at
/// the same moment, the loser's create fails (or succeeds, for an identical config) and it
/// opens the winner's bucket.
///
/// # Errors
///
/// [`KvError::Invalid`] for a bucket name outside `[A-Za-z0-9_-]+` (or a stream named
/// `KV_<name>` that is not a KV bucket), [`KvError::Unavailable`] if JetStream cannot be
/// reached or refuses to create the bucket.
pub async fn open_jetstream(
    client: async_nats::Client,
    config: BucketConfig,
    timeout: Duration,
) -> Result<Arc<dyn KvBucket>, KvError> {
    validate_bucket(&config.name)?;
    let mut context = js::new(client);
    context.set_timeout(timeout);
    let name = config.name.as_str();

    let store = match bounded(timeout, "open bucket", name, existing(&context, name)).await? {
        Some(store) => store,
        None => {
            let create = async {
                context
                    .create_stream(kv_stream_config(&config))
                    .await
                    .map_err(|err| unavailable("create bucket", name, &err))
            };
            // Creating a stream that exists with an identical config succeeds; with another
            // config (another replica won the race with other settings) it fails, and the
            // winner's bucket is used. Either way the bucket is opened afresh.
            let created = bounded(timeout, "create bucket", name, create).await;
            match bounded(timeout, "open bucket", name, existing(&context, name)).await? {
                Some(store) => store,
                None => {
                    return Err(created.err().unwrap_or_else(|| {
                        KvError::Unavailable(format!(
                            "open bucket {name:?}: deleted right after its creation"
                        ))
                    }));
                }
            }
        }
    };

    let actual = &store.stream.cached_info().config;
    let wanted_age = config.max_age.unwrap_or_default();
    if actual.max_age != wanted_age || actual.num_replicas != config.replicas.max(1) {
        tracing::warn!(
            bucket = name,
            existing_max_age = ?actual.max_age,
            configured_max_age = ?wanted_age,
            existing_replicas = actual.num_replicas,
            configured_replicas = config.replicas,
            "KV bucket exists with other settings; using it as it is"
        );
    }
    Ok(Arc::new(JetStreamBucket { store, timeout }))
}

/// The stream behind a KV bucket, as async-nats' `create_key_value` would configure it
/// (so that other KV clients, e.g. the `nats` CLI, see a normal bucket), with history 1
/// and file storage.
///
/// Created with `create_stream` rather than `create_key_value` because the latter first
/// asks for the account info, whose reply async-nats 0.51 cannot parse from servers before
/// 2.10 (e.g. the 2.9 that Debian ships); the stream API itself works with 2.9 and later.
fn kv_stream_config(config: &BucketConfig) -> stream::Config {
    stream::Config {
        name: format!("KV_{}", config.name),
        description: Some(config.description.clone()),
        subjects: vec![format!("$KV.{}.>", config.name)],
        max_messages_per_subject: 1,
        max_age: config.max_age.unwrap_or_default(),
        storage: StorageType::File,
        num_replicas: config.replicas.max(1),
        allow_rollup: true,
        deny_delete: true,
        deny_purge: false,
        allow_direct: true,
        discard: DiscardPolicy::New,
        ..Default::default()
    }
}

/// Opens the bucket if it exists (`None` if JetStream says the stream does not).
async fn existing(context: &js::Context, name: &str) -> Result<Option<Store>, KvError> {
    match context.get_key_value(name).await {
        Ok(store) => Ok(Some(store)),
        Err(err) if err.kind() == KeyValueErrorKind::InvalidStoreName => Err(KvError::Invalid(
            format!("bucket name {name:?} (or stream KV_{name} is not a KV bucket)"),
        )),
        Err(err) if stream_not_found(&err) => Ok(None),
        Err(err) => Err(unavailable("open bucket", name, &err)),
    }
}

/// A bucket on JetStream: keys are subjects `$KV.<bucket>.<key>` of the stream
/// `KV_<bucket>`, revisions are stream sequences.
struct JetStreamBucket {
    /// The async-nats handle.
    store: Store,
    /// Upper bound for every operation.
    timeout: Duration,
}

impl JetStreamBucket {
    /// Runs `op` on `key` within this bucket's timeout.
    async fn bounded<T>(
        &self,
        op: &str,
        key: &str,
        fut: impl Future<Output = Result<T, KvError>>,
    ) -> Result<T, KvError> {
        bounded(self.timeout, op, key, fut).await
    }
}

#[async_trait::async_trait]
impl KvBucket for JetStreamBucket {
    async fn get(&self, key: &str) -> Result<Option<Entry>, KvError> {
        validate_key(key)?;
        let entry = self
            .bounded("get", key, async {
                self.store.entry(key).await.map_err(|err| match err.kind() {
                    EntryErrorKind::InvalidKey => KvError::Invalid(format!("key {key:?}")),
                    _ => unavailable("get", key, &err),
                })
            })
            .await?;
        // The last message of a deleted or purged key is its marker: absent.
        Ok(entry
            .filter(|entry| entry.operation == Operation::Put)
            .map(|entry| Entry {
                key: key.to_owned(),
                value: entry.value,
                revision: entry.revision,
            }))
    }

    /// Not async-nats' `Store::create`: that one turns *any* failure of its first attempt
    /// into `AlreadyExists` once it finds a live value, so a timed-out create that did land
    /// would look like a lost race. Here only a revision mismatch leads on.
    async fn create(&self, key: &str, value: Bytes) -> Result<u64, KvError> {
        validate_key(key)?;
        self.bounded("create", key, async {
            for _ in 0..CREATE_ATTEMPTS {
                // Expected last sequence 0: nothing stored for this key (never written, or
                // expired by max_age, which leaves no marker).
                match self.store.update(key, value.clone(), 0).await {
                    Ok(revision) => return Ok(revision),
                    Err(err) => match map_update_error("create", key, err) {
                        KvError::WrongRevision => {}
                        other => return Err(other),
                    },
                }
                // Something is stored: a live value (lost) or a delete marker, which
                // counts as absent; write over the marker, still compare-and-set.
                let last = self
                    .store
                    .entry(key)
                    .await
                    .map_err(|err| match err.kind() {
                        EntryErrorKind::InvalidKey => KvError::Invalid(format!("key {key:?}")),
                        _ => unavailable("create", key, &err),
                    })?;
                match last {
                    Some(entry) if entry.operation == Operation::Put => {
                        return Err(KvError::WrongRevision);
                    }
                    Some(marker) => {
                        match self.store.update(key, value.clone(), marker.revision).await {
                            Ok(revision) => return Ok(revision),
                            Err(err) => match map_update_error("create", key, err) {
                                // Written or deleted again meanwhile: look again.
                                KvError::WrongRevision => {}
                                other => return Err(other),
                            },
                        }
                    }
                    // Expired or purged between the two requests: try again from scratch.
                    None => {}
                }
            }
            Err(KvError::WrongRevision)
        })
        .await
    }

    async fn update(&self, key: &str, value: Bytes, expected: u64) -> Result<u64, KvError> {
        validate_key(key)?;
        if expected == 0 {
            // Revisions start at 1, so no live value has revision 0; JetStream would read
            // an expected last sequence 0 as "create".
            return Err(KvError::WrongRevision);
        }
        self.bounded("update", key, async {
            self.store
                .update(key, value, expected)
                .await
                .map_err(|err| map_update_error("update", key, err))
        })
        .await
    }

    async fn put(&self, key: &str, value: Bytes) -> Result<u64, KvError> {
        validate_key(key)?;
        self.bounded("put", key, async {
            self.store.put(key, value).await.map_err(|err| {
                if err.kind() == kv::PutErrorKind::InvalidKey {
                    KvError::Invalid(format!("key {key:?}"))
                } else if has_publish_kind(&err, PublishErrorKind::MaxPayloadExceeded) {
                    KvError::Invalid(format!("value for key {key:?}: {err}"))
                } else {
                    unavailable("put", key, &err)
                }
            })
        })
        .await
    }

    async fn delete(&self, key: &str, expected: Option<u64>) -> Result<(), KvError> {
        validate_key(key)?;
        if expected == Some(0) {
            // As in `update`: 0 is never a live revision, and JetStream would accept it for
            // an absent key.
            return Err(KvError::WrongRevision);
        }
        self.bounded("delete", key, async {
            self.store
                .delete_expect_revision(key, expected)
                .await
                .map_err(|err| map_update_error("delete", key, err))
        })
        .await
    }

    async fn keys(&self) -> Result<Vec<String>, KvError> {
        self.bounded("keys", "*", async {
            // Last message per subject, headers only; async-nats skips delete/purge markers.
            let keys = self
                .store
                .keys()
                .await
                .map_err(|err| unavailable("keys", "*", &err))?;
            keys.try_collect()
                .await
                .map_err(|err| unavailable("keys", "*", &err))
        })
        .await
    }

    /// An ordered consumer on the bucket's stream, last value per key first (JetStream's
    /// `LastPerSubject`), then every new message. `Current` comes after the first entry that
    /// leaves nothing pending, or first of all when the stream held nothing.
    async fn watch(&self) -> Result<Changes, KvError> {
        let (empty, watch) = self
            .bounded("watch", ">", async {
                let info = self
                    .store
                    .stream
                    .get_info()
                    .await
                    .map_err(|err| unavailable("watch", ">", &err))?;
                let watch = self
                    .store
                    .watch_with_history(">")
                    .await
                    .map_err(|err| unavailable("watch", ">", &err))?;
                Ok((info.state.messages == 0, watch))
            })
            .await?;
        let mut current_sent = empty;
        let entries = watch.flat_map(move |entry| {
            let out: Vec<Result<Watched, KvError>> = match entry {
                Err(err) => vec![Err(unavailable("watch", ">", &err))],
                Ok(entry) => {
                    let caught_up = !current_sent && entry.seen_current;
                    current_sent |= caught_up;
                    let change = Watched::Change(Change {
                        value: (entry.operation == Operation::Put).then_some(entry.value),
                        key: entry.key,
                        revision: entry.revision,
                    });
                    if caught_up {
                        vec![Ok(change), Ok(Watched::Current)]
                    } else {
                        vec![Ok(change)]
                    }
                }
            };
            futures::stream::iter(out)
        });
        let first = futures::stream::iter(empty.then_some(Ok(Watched::Current)));
        Ok(Box::pin(first.chain(entries)))
    }
}

/// Runs `fut`, failing with [`KvError::Unavailable`] if it takes longer than `timeout`.
async fn bounded<T>(
    timeout: Duration,
    op: &str,
    key: &str,
    fut: impl Future<Output = Result<T, KvError>>,
) -> Result<T, KvError> {
    tokio::time::timeout(timeout, fut)
        .await
        .unwrap_or_else(|_| {
            Err(KvError::Unavailable(format!(
                "{op} {key:?}: no answer within {timeout:?}"
            )))
        })
}

/// Maps an error of a conditional write (update, delete, the steps of create).
fn map_update_error(op: &str, key: &str, err: UpdateError) -> KvError {
    if err.kind() == UpdateErrorKind::WrongLastRevision || wrong_last_sequence(&err) {
        KvError::WrongRevision
    } else if err.kind() == UpdateErrorKind::InvalidKey {
        KvError::Invalid(format!("key {key:?}"))
    } else if has_publish_kind(&err, PublishErrorKind::MaxPayloadExceeded) {
        KvError::Invalid(format!("value for key {key:?}: {err}"))
    } else {
        unavailable(op, key, &err)
    }
}

/// A [`KvError::Unavailable`] naming the operation, the key and the cause.
fn unavailable(op: &str, key: &str, err: &dyn StdError) -> KvError {
    KvError::Unavailable(format!("{op} {key:?}: {}", error_chain(err)))
}

/// `err` and its sources, joined with ": " (async-nats' `Display` already includes the
/// first source, so repeated text is skipped).
fn error_chain(err: &dyn StdError) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// `err` and its sources, outermost first.
fn chain<'a>(
    err: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(Some(err), |e| (*e).source())
}

/// Whether the chain holds JetStream's "wrong last sequence" (API error 10071), however
/// async-nats wrapped it.
fn wrong_last_sequence(err: &(dyn StdError + 'static)) -> bool {
    has_publish_kind(err, PublishErrorKind::WrongLastSequence)
        || chain(err).any(|e| {
            e.downcast_ref::<js::Error>()
                .is_some_and(|api| api.error_code() == ErrorCode::STREAM_WRONG_LAST_SEQUENCE)
        })
}

/// Whether the chain holds a JetStream publish error of `kind`.
fn has_publish_kind(err: &(dyn StdError + 'static), kind: PublishErrorKind) -> bool {
    chain(err).any(|e| {
        e.downcast_ref::<PublishError>()
            .is_some_and(|publish| publish.kind() == kind)
    })
}

/// Whether the chain says the stream does not exist (API error 10059).
fn stream_not_found(err: &(dyn StdError + 'static)) -> bool {
    chain(err).any(|e| {
        e.downcast_ref::<GetStreamError>()
            .is_some_and(|get| match get.kind() {
                GetStreamErrorKind::JetStream(api) => {
                    api.error_code() == ErrorCode::STREAM_NOT_FOUND
                }
                _ => false,
            })
            || e.downcast_ref::<js::Error>()
                .is_some_and(|api| api.error_code() == ErrorCode::STREAM_NOT_FOUND)
    })
}
