//! The room store behaviour suite, run against MongoDB (the MongoDB-wire server) and the
//! memory store, and the rules that need direct store access: forced duplicate codes and
//! concurrent joins.

use crate::support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use p2piano_protocol::rpc::{CreateRoom, JoinRoom};
use p2piano_protocol::{
    DisplayName, ErrorCode, Instrument, Room, RoomCode, RoomSettings, Timestamp, UserId,
};
use p2piano_rooms::Clock;
use p2piano_rooms::rooms::{CodeSource, Rooms};
use p2piano_rooms::store::{RoomStore, StoreError, StoredRoom, UserProfile};

macro_rules! both_stores {
    ($($case:ident),* $(,)?) => {
        mod mongo {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let db = p2piano_testkit::unique_name("store");
                let store = super::support::mongo_store(&p2piano_testkit::mongo_uri(), &db).await;
                super::$case(store).await
            })*
        }
        mod memory {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                super::$case(std::sync::Arc::new(p2piano_rooms::store::MemoryStore::new())).await
            })*
        }
    };
}

both_stores!(
    insert_find_and_duplicates,
    replace_checks_revision,
    expired_rooms_are_invisible_and_purged,
    profiles_round_trip,
    forced_duplicate_codes_are_retried,
    concurrent_joins_fill_exactly_to_the_limit,
);

fn room(code: &str, revision: u64) -> StoredRoom {
    let now = Timestamp::now();
    StoredRoom {
        room: Room {
            code: RoomCode::parse(code).unwrap(),
            created_at: now,
            last_activity: now,
            owner_id: UserId::random(),
            participants: vec![],
            settings: RoomSettings::default(),
            revision,
        },
        expire_at: None,
    }
}

async fn insert_find_and_duplicates(store: Arc<impl RoomStore>) {
    let r = room("abcde", 1);
    store.insert(&r).await.unwrap();
    assert_eq!(
        store.find(&r.room.code, Timestamp::now()).await.unwrap(),
        Some(r.clone())
    );
    assert!(matches!(
        store.insert(&room("abcde", 1)).await,
        Err(StoreError::Duplicate)
    ));
    let missing = RoomCode::parse("zzzzz").unwrap();
    assert_eq!(store.find(&missing, Timestamp::now()).await.unwrap(), None);
}

async fn replace_checks_revision(store: Arc<impl RoomStore>) {
    let r = room("bcdef", 1);
    store.insert(&r).await.unwrap();
    let mut next = r.clone();
    next.room.revision = 2;
    next.room.settings.locked = true;
    assert!(
        !store.replace(&next, 5).await.unwrap(),
        "wrong expected revision"
    );
    assert!(store.replace(&next, 1).await.unwrap());
    assert!(
        !store.replace(&next, 1).await.unwrap(),
        "revision 1 is gone"
    );
    let got = store
        .find(&r.room.code, Timestamp::now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, next);
    let mut ghost = room("cdefg", 2);
    ghost.room.revision = 2;
    assert!(!store.replace(&ghost, 1).await.unwrap(), "absent room");
}

async fn expired_rooms_are_invisible_and_purged(store: Arc<impl RoomStore>) {
    let now = Timestamp::now();
    let mut old = room("defgh", 1);
    old.expire_at = Some(now.plus(Duration::from_secs(60)));
    store.insert(&old).await.unwrap();
    let live = room("efghj", 1);
    store.insert(&live).await.unwrap();
    assert!(store.find(&old.room.code, now).await.unwrap().is_some());
    let later = now.plus(Duration::from_secs(61));
    assert_eq!(store.find(&old.room.code, later).await.unwrap(), None);
    assert_eq!(store.purge_expired(later).await.unwrap(), 1);
    assert!(
        store.find(&live.room.code, later).await.unwrap().is_some(),
        "rooms without expiry stay"
    );
    // The code is free again.
    store.insert(&room("defgh", 1)).await.unwrap();
}

async fn profiles_round_trip(store: Arc<impl RoomStore>) {
    let id = UserId::random();
    assert_eq!(store.profile(&id).await.unwrap(), None);
    let mut p = UserProfile {
        id: id.clone(),
        display_name: DisplayName::parse("Dee").unwrap(),
        instrument: Instrument::Synth,
        joined_at: Timestamp::now(),
        last_room: RoomCode::parse("fghjk").unwrap(),
    };
    store.upsert_profile(&p).await.unwrap();
    assert_eq!(store.profile(&id).await.unwrap(), Some(p.clone()));
    p.display_name = DisplayName::parse("Dee 2").unwrap();
    store.upsert_profile(&p).await.unwrap();
    assert_eq!(store.profile(&id).await.unwrap(), Some(p));
}

/// A code source that replays `codes` in order, then repeats the last one.
fn scripted(codes: &[&str]) -> CodeSource {
    let codes: Vec<RoomCode> = codes.iter().map(|c| RoomCode::parse(c).unwrap()).collect();
    let next = AtomicUsize::new(0);
    Arc::new(move || {
        let i = next.fetch_add(1, Ordering::SeqCst).min(codes.len() - 1);
        codes[i].clone()
    })
}

async fn forced_duplicate_codes_are_retried(store: Arc<impl RoomStore>) {
    let owner = UserId::random();
    let rooms = Rooms::new(store.clone(), Clock::system(), Duration::from_secs(60))
        .with_code_source(scripted(&["ghjkm", "ghjkm", "ghjkm", "hjkmn"]));
    let create = || CreateRoom {
        owner_id: owner.clone(),
        settings: None,
    };
    let first = rooms.create(create()).await.unwrap();
    assert_eq!(first.code.as_str(), "ghjkm");
    let second = rooms.create(create()).await.unwrap();
    assert_eq!(
        second.code.as_str(),
        "hjkmn",
        "collisions retried with a new code"
    );
    // Every code taken: the caller gets `conflict`, not a hang or a crash.
    let stuck = Rooms::new(store, Clock::system(), Duration::from_secs(60))
        .with_code_source(scripted(&["ghjkm"]));
    assert_eq!(
        stuck.create(create()).await.unwrap_err().code,
        ErrorCode::Conflict
    );
}

async fn concurrent_joins_fill_exactly_to_the_limit(store: Arc<impl RoomStore>) {
    // Separate `Rooms` values per task stand in for separate replicas sharing one store;
    // the test over the bus (tests/concurrency.rs) does the same from separate connections.
    let rooms = Rooms::new(store.clone(), Clock::system(), Duration::from_secs(60));
    let settings = p2piano_protocol::SettingsPatch {
        max_participants: Some(16),
        ..Default::default()
    };
    let room = rooms
        .create(CreateRoom {
            owner_id: UserId::random(),
            settings: Some(settings),
        })
        .await
        .unwrap();
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let rooms = Rooms::new(store.clone(), Clock::system(), Duration::from_secs(60));
            let code = room.code.clone();
            tokio::spawn(async move {
                rooms
                    .join(JoinRoom {
                        code,
                        user_id: UserId::random(),
                        display_name: None,
                        instrument: None,
                        renew: false,
                        restore: false,
                    })
                    .await
            })
        })
        .collect();
    let mut joined = 0;
    let mut full = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(o) => {
                assert!(!o.reply.rejoined);
                joined += 1;
            }
            Err(e) if e.code == ErrorCode::Full => full += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!((joined, full), (16, 4));
    let stored = store
        .find(&room.code, Timestamp::now())
        .await
        .unwrap()
        .unwrap()
        .room;
    assert_eq!(stored.participants.len(), 16);
    let mut colors: Vec<_> = stored
        .participants
        .iter()
        .map(|p| p.color.canonical())
        .collect();
    colors.sort();
    colors.dedup();
    assert_eq!(colors.len(), 16, "colours unique while the palette lasts");
    let mut ids: Vec<_> = stored.participants.iter().map(|p| p.id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 16, "nobody doubled");
}
