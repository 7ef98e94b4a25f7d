//! Behaviour of the presence key-value abstraction.
//!
//! One suite of cases, each generic over `Arc<dyn KvBucket>`, is instantiated twice: on
//! JetStream (the test binary's shared `nats-server`, one bucket per test) and in memory,
//! so that `p2piano all` and a deployment behave the same. Expiry and the JetStream-only
//! cases (NATS restart, dead server, concurrent opening) follow. Tests wait on conditions,
//! never on fixed sleeps.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use p2piano_presence::kv::{BucketConfig, Entry, KvBucket, KvError, MemoryBucket, open_jetstream};
use p2piano_testkit::{NatsServer, wait_until_within};
use tokio::time::Instant;

/// Operation timeout for the JetStream buckets of the suite: generous, the suite is about
/// semantics, not latency.
const TIMEOUT: Duration = Duration::from_secs(5);

/// A fresh bucket configuration with a unique name.
fn config(max_age: Option<Duration>) -> BucketConfig {
    BucketConfig {
        name: p2piano_testkit::unique_name("kv"),
        max_age,
        replicas: 1,
        description: "p2piano kv behaviour test".to_owned(),
    }
}

/// A new bucket on the shared test `nats-server`.
async fn jetstream_bucket(max_age: Option<Duration>) -> Arc<dyn KvBucket> {
    let client = async_nats::connect(p2piano_testkit::nats_url())
        .await
        .expect("connect to the test nats-server");
    open_jetstream(client, config(max_age), TIMEOUT)
        .await
        .expect("open a JetStream bucket")
}

/// A new in-memory bucket.
fn memory_bucket(max_age: Option<Duration>) -> Arc<dyn KvBucket> {
    Arc::new(MemoryBucket::new(config(max_age)))
}

/// `Bytes` from a string, for brevity.
fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// `keys()`, sorted.
async fn sorted_keys(kv: &Arc<dyn KvBucket>) -> Vec<String> {
    let mut keys = kv.keys().await.expect("keys");
    keys.sort();
    keys
}

/// Panics unless `result` is `Err(WrongRevision)`.
#[track_caller]
fn assert_wrong_revision<T: std::fmt::Debug>(result: Result<T, KvError>) {
    assert!(
        matches!(result, Err(KvError::WrongRevision)),
        "expected WrongRevision, got {result:?}"
    );
}

/// Panics unless `result` is `Err(Invalid)`.
#[track_caller]
fn assert_invalid<T: std::fmt::Debug>(result: Result<T, KvError>) {
    assert!(
        matches!(result, Err(KvError::Invalid(_))),
        "expected Invalid, got {result:?}"
    );
}

// ---------------------------------------------------------------------------------------
// The suite.
// ---------------------------------------------------------------------------------------

async fn get_absent(kv: Arc<dyn KvBucket>) {
    assert_eq!(kv.get("nobody").await.unwrap(), None);
    assert!(kv.keys().await.unwrap().is_empty());
}

async fn create_then_get(kv: Arc<dyn KvBucket>) {
    let revision = kv.create("s/1", b("one")).await.unwrap();
    assert!(revision >= 1);
    assert_eq!(
        kv.get("s/1").await.unwrap(),
        Some(Entry {
            key: "s/1".to_owned(),
            value: b("one"),
            revision,
        })
    );
}

async fn create_twice_loses(kv: Arc<dyn KvBucket>) {
    let revision = kv.create("k", b("first")).await.unwrap();
    assert_wrong_revision(kv.create("k", b("second")).await);
    let entry = kv.get("k").await.unwrap().unwrap();
    assert_eq!((entry.value, entry.revision), (b("first"), revision));
}

async fn update_with_right_revision(kv: Arc<dyn KvBucket>) {
    let first = kv.create("k", b("v1")).await.unwrap();
    let second = kv.update("k", b("v2"), first).await.unwrap();
    assert!(second > first);
    let entry = kv.get("k").await.unwrap().unwrap();
    assert_eq!((entry.value, entry.revision), (b("v2"), second));
    let third = kv.update("k", b("v3"), second).await.unwrap();
    assert!(third > second);
}

async fn update_with_stale_revision(kv: Arc<dyn KvBucket>) {
    let first = kv.create("k", b("v1")).await.unwrap();
    let second = kv.update("k", b("v2"), first).await.unwrap();
    assert_wrong_revision(kv.update("k", b("stale"), first).await);
    let entry = kv.get("k").await.unwrap().unwrap();
    assert_eq!((entry.value, entry.revision), (b("v2"), second));
}

async fn update_of_absent_key(kv: Arc<dyn KvBucket>) {
    // 0 included: JetStream itself would read an expected revision 0 as "create".
    for expected in [0, 1, 2, 1_000_000] {
        assert_wrong_revision(kv.update("absent", b("v"), expected).await);
    }
    // A revision that does exist, but for another key.
    let other = kv.put("other", b("v")).await.unwrap();
    assert_wrong_revision(kv.update("absent", b("v"), other).await);
    assert_eq!(kv.get("absent").await.unwrap(), None);
}

async fn put_is_unconditional(kv: Arc<dyn KvBucket>) {
    let first = kv.put("k", b("v1")).await.unwrap();
    let second = kv.put("k", b("v2")).await.unwrap();
    assert!(second > first);
    let entry = kv.get("k").await.unwrap().unwrap();
    assert_eq!((entry.value, entry.revision), (b("v2"), second));
    // Over a created key, and an empty value is a value.
    let created = kv.create("c", b("v")).await.unwrap();
    let put = kv.put("c", Bytes::new()).await.unwrap();
    assert!(put > created);
    let entry = kv.get("c").await.unwrap().unwrap();
    assert_eq!((entry.value, entry.revision), (Bytes::new(), put));
}

async fn delete_with_wrong_revision(kv: Arc<dyn KvBucket>) {
    let first = kv.create("k", b("v1")).await.unwrap();
    let second = kv.update("k", b("v2"), first).await.unwrap();
    assert_wrong_revision(kv.delete("k", Some(first)).await);
    assert_wrong_revision(kv.delete("k", Some(0)).await);
    assert_wrong_revision(kv.delete("k", Some(second + 1000)).await);
    let entry = kv.get("k").await.unwrap().unwrap();
    assert_eq!((entry.value, entry.revision), (b("v2"), second));
}

async fn delete_with_right_revision(kv: Arc<dyn KvBucket>) {
    let revision = kv.create("k", b("v")).await.unwrap();
    kv.delete("k", Some(revision)).await.unwrap();
    assert_eq!(kv.get("k").await.unwrap(), None);
    // Gone: the same delete, or an update with the old revision, now loses.
    assert_wrong_revision(kv.delete("k", Some(revision)).await);
    assert_wrong_revision(kv.update("k", b("again"), revision).await);
    assert_eq!(kv.get("k").await.unwrap(), None);
}

async fn delete_absent(kv: Arc<dyn KvBucket>) {
    kv.delete("never", None).await.unwrap();
    assert_wrong_revision(kv.delete("never2", Some(1)).await);
    let revision = kv.put("k", b("v")).await.unwrap();
    kv.delete("k", None).await.unwrap();
    kv.delete("k", None).await.unwrap();
    assert_eq!(kv.get("k").await.unwrap(), None);
    assert!(kv.keys().await.unwrap().is_empty());
    assert_wrong_revision(kv.update("k", b("v"), revision).await);
}

async fn create_after_delete(kv: Arc<dyn KvBucket>) {
    let first = kv.create("k", b("v1")).await.unwrap();
    kv.delete("k", None).await.unwrap();
    let second = kv.create("k", b("v2")).await.unwrap();
    assert!(second > first);
    let entry = kv.get("k").await.unwrap().unwrap();
    assert_eq!((entry.value, entry.revision), (b("v2"), second));
    // Live again: a second create loses, CAS works on the new revision.
    assert_wrong_revision(kv.create("k", b("v3")).await);
    kv.delete("k", Some(second)).await.unwrap();
    let third = kv.create("k", b("v4")).await.unwrap();
    assert!(third > second);
    // A key deleted without ever existing can be created too.
    kv.delete("fresh", None).await.unwrap();
    kv.create("fresh", b("v")).await.unwrap();
}

async fn keys_lists_live_keys_only(kv: Arc<dyn KvBucket>) {
    for key in ["a", "b", "c", "d"] {
        kv.put(key, b(key)).await.unwrap();
    }
    kv.put("a", b("again")).await.unwrap();
    kv.delete("b", None).await.unwrap();
    let d = kv.get("d").await.unwrap().unwrap().revision;
    kv.delete("d", Some(d)).await.unwrap();
    kv.delete("never", None).await.unwrap();
    assert_eq!(sorted_keys(&kv).await, ["a", "c"]);
    kv.create("b", b("back")).await.unwrap();
    assert_eq!(sorted_keys(&kv).await, ["a", "b", "c"]);
}

async fn invalid_keys_rejected(kv: Arc<dyn KvBucket>) {
    for key in ["", "a b", ".a", "a.", "a..b", "a*", "a>", "é", "a\nb"] {
        assert_invalid(kv.get(key).await);
        assert_invalid(kv.create(key, b("v")).await);
        assert_invalid(kv.update(key, b("v"), 1).await);
        assert_invalid(kv.put(key, b("v")).await);
        assert_invalid(kv.delete(key, None).await);
        assert_invalid(kv.delete(key, Some(1)).await);
    }
    assert!(kv.keys().await.unwrap().is_empty());
}

async fn valid_key_syntax_accepted(kv: Arc<dyn KvBucket>) {
    let keys = [
        "session.abc",
        "edge/e-1",
        "k=v",
        "A_Z-09",
        "a.b.c/d=e-f_g",
        "-",
        "=",
    ];
    for key in keys {
        let revision = kv.create(key, b(key)).await.unwrap();
        let entry = kv.get(key).await.unwrap().unwrap();
        assert_eq!(
            (entry.key.as_str(), entry.value, entry.revision),
            (key, b(key), revision)
        );
    }
    let mut expected: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    expected.sort();
    assert_eq!(sorted_keys(&kv).await, expected);
}

async fn revisions_are_bucket_wide(kv: Arc<dyn KvBucket>) {
    let a = kv.put("a", b("1")).await.unwrap();
    let b_rev = kv.create("b", b("1")).await.unwrap();
    kv.delete("a", None).await.unwrap();
    let c = kv.put("c", b("1")).await.unwrap();
    let b2 = kv.update("b", b("2"), b_rev).await.unwrap();
    assert!(a < b_rev && b_rev < c && c < b2, "{a} {b_rev} {c} {b2}");
    // The delete took a revision of its own, as a JetStream delete marker does.
    assert!(c > b_rev + 1, "{b_rev} {c}");
}

async fn cas_race_has_one_winner(kv: Arc<dyn KvBucket>) {
    const RACERS: usize = 10;
    kv.create("race", b("start")).await.unwrap();
    let barrier = Arc::new(tokio::sync::Barrier::new(RACERS));
    let racers: Vec<_> = (0..RACERS)
        .map(|i| {
            let kv = kv.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                let seen = kv.get("race").await.unwrap().unwrap();
                // Everybody has read the same revision before anybody writes.
                barrier.wait().await;
                let value = Bytes::from(format!("racer {i}"));
                (value.clone(), kv.update("race", value, seen.revision).await)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for racer in racers {
        let (value, result) = racer.await.unwrap();
        match result {
            Ok(revision) => winners.push((value, revision)),
            Err(KvError::WrongRevision) => {}
            Err(other) => panic!("unexpected error in the race: {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one update must win: {winners:?}");
    let (value, revision) = winners.pop().unwrap();
    let entry = kv.get("race").await.unwrap().unwrap();
    assert_eq!((entry.value, entry.revision), (value, revision));
}

/// Runs every listed case on a fresh JetStream bucket and on a fresh memory bucket.
macro_rules! on_both {
    ($($case:ident),* $(,)?) => {
        mod jetstream {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::jetstream_bucket(None).await).await;
                }
            )*
        }
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::memory_bucket(None)).await;
                }
            )*
        }
    };
}

on_both!(
    get_absent,
    create_then_get,
    create_twice_loses,
    update_with_right_revision,
    update_with_stale_revision,
    update_of_absent_key,
    put_is_unconditional,
    delete_with_wrong_revision,
    delete_with_right_revision,
    delete_absent,
    create_after_delete,
    keys_lists_live_keys_only,
    invalid_keys_rejected,
    valid_key_syntax_accepted,
    revisions_are_bucket_wide,
    cas_race_has_one_winner,
);

// ---------------------------------------------------------------------------------------
// Bucket names.
// ---------------------------------------------------------------------------------------

const BAD_BUCKETS: [&str; 5] = ["", "a.b", "a b", "a*", "a/b"];

#[tokio::test]
async fn memory_invalid_bucket_name() {
    for name in BAD_BUCKETS {
        let kv = MemoryBucket::new(BucketConfig {
            name: name.to_owned(),
            ..config(None)
        });
        assert_invalid(kv.get("k").await);
        assert_invalid(kv.put("k", b("v")).await);
        assert_invalid(kv.keys().await);
    }
}

#[tokio::test]
async fn jetstream_invalid_bucket_name() {
    let client = async_nats::connect(p2piano_testkit::nats_url())
        .await
        .unwrap();
    for name in BAD_BUCKETS {
        let config = BucketConfig {
            name: name.to_owned(),
            ..config(None)
        };
        assert_invalid(
            open_jetstream(client.clone(), config, TIMEOUT)
                .await
                .map(|_| ()),
        );
    }
}

// ---------------------------------------------------------------------------------------
// Expiry (max_age).
// ---------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn memory_max_age_expiry() {
    let kv = memory_bucket(Some(Duration::from_secs(10)));
    let a = kv.create("a", b("a")).await.unwrap();
    kv.put("b", b("b1")).await.unwrap();

    tokio::time::advance(Duration::from_secs(6)).await;
    // A write refreshes the entry's age.
    let b2 = kv.put("b", b("b2")).await.unwrap();
    assert_eq!(kv.get("a").await.unwrap().unwrap().revision, a);

    tokio::time::advance(Duration::from_secs(5)).await;
    // a is 11 s old: gone everywhere. b is 5 s old.
    assert_eq!(kv.get("a").await.unwrap(), None);
    assert_eq!(sorted_keys(&kv).await, ["b"]);
    assert_wrong_revision(kv.update("a", b("late"), a).await);
    assert_wrong_revision(kv.delete("a", Some(a)).await);
    let a2 = kv.create("a", b("a2")).await.unwrap();
    assert!(a2 > b2);
    assert_eq!(kv.get("b").await.unwrap().unwrap().revision, b2);

    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(kv.get("a").await.unwrap(), None);
    assert_eq!(kv.get("b").await.unwrap(), None);
    assert!(kv.keys().await.unwrap().is_empty());
    kv.create("b", b("b3")).await.unwrap();
    assert_eq!(sorted_keys(&kv).await, ["b"]);
}

#[tokio::test(start_paused = true)]
async fn memory_zero_max_age_never_expires() {
    let kv = memory_bucket(Some(Duration::ZERO));
    kv.put("a", b("a")).await.unwrap();
    tokio::time::advance(Duration::from_secs(365 * 24 * 3600)).await;
    assert!(kv.get("a").await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_max_age_expiry() {
    let max_age = Duration::from_secs(1);
    let kv = jetstream_bucket(Some(max_age)).await;
    let revision = kv.create("a", b("a")).await.unwrap();
    let written = Instant::now();
    wait_until_within("the entry to expire", Duration::from_secs(30), || {
        let kv = kv.clone();
        async move { kv.get("a").await.unwrap().is_none() }
    })
    .await;
    let elapsed = written.elapsed();
    eprintln!("JetStream max_age {max_age:?}: entry gone {elapsed:?} after its write was acked");
    // Never early (the ack arrives after the server stamped the message, hence the slack).
    assert!(
        elapsed >= max_age - Duration::from_millis(200),
        "{elapsed:?}"
    );
    assert!(kv.keys().await.unwrap().is_empty());
    assert_wrong_revision(kv.update("a", b("late"), revision).await);
    assert_wrong_revision(kv.delete("a", Some(revision)).await);
    let again = kv.create("a", b("again")).await.unwrap();
    assert!(again > revision);
    assert_eq!(kv.get("a").await.unwrap().unwrap().value, b("again"));
}

// ---------------------------------------------------------------------------------------
// JetStream only.
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_survives_nats_restart() {
    let mut server = NatsServer::start().expect("start a private nats-server");
    let client = async_nats::connect(server.url()).await.unwrap();
    let kv = open_jetstream(client, config(None), TIMEOUT).await.unwrap();
    let a = kv.create("a", b("alpha")).await.unwrap();
    let bb = kv.put("b", b("beta")).await.unwrap();
    kv.put("gone", b("x")).await.unwrap();
    kv.delete("gone", None).await.unwrap();

    tokio::task::block_in_place(|| {
        server.stop();
        server.restart().expect("restart the nats-server");
    });
    // The client reconnects by itself; the bucket handle is reused as is.
    wait_until_within(
        "the bucket to answer again",
        Duration::from_secs(30),
        || {
            let kv = kv.clone();
            async move { kv.get("a").await.is_ok() }
        },
    )
    .await;

    let entry = |key: &str, value: &str, revision| Entry {
        key: key.to_owned(),
        value: b(value),
        revision,
    };
    assert_eq!(kv.get("a").await.unwrap(), Some(entry("a", "alpha", a)));
    assert_eq!(kv.get("b").await.unwrap(), Some(entry("b", "beta", bb)));
    assert_eq!(kv.get("gone").await.unwrap(), None);
    assert_eq!(sorted_keys(&kv).await, ["a", "b"]);
    // Revisions and CAS carry on where they were.
    assert_wrong_revision(kv.create("b", b("other")).await);
    let a2 = kv.update("a", b("alpha2"), a).await.unwrap();
    assert!(a2 > bb);
    kv.create("gone", b("back")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_dead_server_is_unavailable() {
    let timeout = Duration::from_millis(500);
    // Unavailable must come about this soon; the slack only absorbs scheduling noise.
    let bound = timeout + Duration::from_secs(2);
    let mut server = NatsServer::start().expect("start a private nats-server");
    let client = async_nats::connect(server.url()).await.unwrap();
    let kv = open_jetstream(client.clone(), config(None), timeout)
        .await
        .unwrap();
    let revision = kv.put("a", b("v")).await.unwrap();
    tokio::task::block_in_place(|| server.stop());

    macro_rules! unavailable {
        ($what:literal, $op:expr) => {{
            let started = Instant::now();
            let result = $op.await;
            let took = started.elapsed();
            assert!(
                matches!(result, Err(KvError::Unavailable(_))),
                "{}: expected Unavailable, got {result:?}",
                $what
            );
            assert!(took <= bound, "{}: took {took:?}", $what);
        }};
    }
    unavailable!("get", kv.get("a"));
    unavailable!("create", kv.create("b", b("v")));
    unavailable!("update", kv.update("a", b("v2"), revision));
    unavailable!("put", kv.put("a", b("v3")));
    unavailable!("delete", kv.delete("a", Some(revision)));
    unavailable!("keys", kv.keys());
    unavailable!(
        "open",
        open_jetstream(client.clone(), config(None), timeout).map_ok_unit()
    );
    // Key validation needs no server.
    assert_invalid(kv.get("a b").await);
}

/// Lets the `unavailable!` macro treat `open_jetstream` like the other operations.
trait MapOkUnit {
    /// The same future, with the `Ok` value dropped (an `Arc<dyn KvBucket>` is not
    /// `Debug`).
    fn map_ok_unit(self) -> impl Future<Output = Result<(), KvError>>;
}

impl<F, T> MapOkUnit for F
where
    F: Future<Output = Result<T, KvError>>,
{
    async fn map_ok_unit(self) -> Result<(), KvError> {
        self.await.map(|_| ())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jetstream_concurrent_open_of_one_bucket() {
    let config = config(Some(Duration::from_secs(3600)));
    let client = async_nats::connect(p2piano_testkit::nats_url())
        .await
        .unwrap();
    let openers: Vec<_> = (0..8)
        .map(|_| tokio::spawn(open_jetstream(client.clone(), config.clone(), TIMEOUT)))
        .collect();
    let mut buckets = Vec::new();
    for opener in openers {
        buckets.push(
            opener
                .await
                .unwrap()
                .expect("every replica opens the bucket"),
        );
    }
    let revision = buckets[0].create("shared", b("v")).await.unwrap();
    for kv in &buckets {
        assert_eq!(kv.get("shared").await.unwrap().unwrap().revision, revision);
    }
    // Reopening with other settings uses the existing bucket (and logs a warning).
    let other = BucketConfig {
        max_age: None,
        ..config.clone()
    };
    let reopened = open_jetstream(client, other, TIMEOUT).await.unwrap();
    assert_eq!(
        reopened.get("shared").await.unwrap().unwrap().revision,
        revision
    );
}
