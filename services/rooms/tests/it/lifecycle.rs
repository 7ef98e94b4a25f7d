//! The rooms service's life: idle expiry, restart, a dead MongoDB, replicas racing, the
//! admin HTTP surface, and drain on shutdown.

use crate::support;

use std::sync::Arc;
use std::time::Duration;

use mongodb::bson::doc;
use p2piano_bus::{Bus, BusErrorKind, Headers};
use p2piano_protocol::rpc::JoinReply;
use p2piano_protocol::{ErrorCode, Room, RoomsOp, Subjects};
use p2piano_rooms::store::MemoryStore;
use p2piano_rooms::{Application, Clock};
use serde_json::json;
use support::{Harness, Mode, Options, uid, wait_until};
use tokio_util::sync::CancellationToken;

#[tokio::test(start_paused = true)]
async fn idle_empty_room_expires_in_memory() {
    let store = Arc::new(MemoryStore::new());
    let h = Harness::start_with(
        Mode::InProcess,
        Options {
            clock: Clock::tokio(),
            idle_secs: 60,
            store: Some(store.clone()),
            ..Default::default()
        },
    )
    .await;
    let room: Room = h.ok(RoomsOp::Create, json!({"ownerId": uid()})).await;
    let a = uid();
    let _: JoinReply = h
        .ok(RoomsOp::Join, json!({"code": room.code, "userId": a}))
        .await;
    // Occupied rooms never expire, however long the session.
    tokio::time::advance(Duration::from_secs(3 * 3600)).await;
    let _: Room = h.ok(RoomsOp::Get, json!({"code": room.code})).await;
    let _: serde_json::Value = h
        .ok(RoomsOp::Leave, json!({"code": room.code, "userId": a}))
        .await;
    // Empty: the idle clock starts now.
    tokio::time::advance(Duration::from_secs(59)).await;
    let _: Room = h.ok(RoomsOp::Get, json!({"code": room.code})).await;
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(
        h.err(RoomsOp::Get, json!({"code": room.code})).await,
        ErrorCode::NotFound
    );
    assert_eq!(
        h.err(RoomsOp::Join, json!({"code": room.code, "userId": a}))
            .await,
        ErrorCode::NotFound
    );
    // The sweeper removes it from memory too.
    tokio::time::advance(Duration::from_secs(60)).await;
    wait_until("the sweeper purges the room", || async { store.is_empty() }).await;
}

#[tokio::test]
async fn idle_empty_room_expires_in_mongo() {
    let h = Harness::start_with(
        Mode::NatsMongo,
        Options {
            idle_secs: 1,
            ..Default::default()
        },
    )
    .await;
    let room: Room = h.ok(RoomsOp::Create, json!({"ownerId": uid()})).await;
    let client = mongodb::Client::with_uri_str(p2piano_testkit::mongo_uri())
        .await
        .unwrap();
    let rooms = client
        .database(&h.name)
        .collection::<mongodb::bson::Document>("rooms");
    let filter = doc! {"code": room.code.as_str()};
    let stored = rooms
        .find_one(filter.clone())
        .await
        .unwrap()
        .expect("room stored");
    assert!(
        stored.get_datetime("expireAt").is_ok(),
        "an empty room carries its expiry"
    );
    let indexes = rooms.list_index_names().await.unwrap();
    assert!(
        indexes.iter().any(|i| i.starts_with("expireAt")),
        "TTL index exists: {indexes:?}"
    );
    wait_until("the room to expire", || async {
        matches!(h.call(RoomsOp::Get, json!({"code": room.code})).await, p2piano_protocol::Reply::Error(e) if e.code == ErrorCode::NotFound)
    })
    .await;
    wait_until("the document to be deleted", || async {
        rooms.count_documents(filter.clone()).await.unwrap() == 0
    })
    .await;
}

#[tokio::test]
async fn joined_room_has_no_expiry_in_mongo() {
    let h = Harness::start_with(
        Mode::NatsMongo,
        Options {
            idle_secs: 1,
            ..Default::default()
        },
    )
    .await;
    let room: Room = h.ok(RoomsOp::Create, json!({"ownerId": uid()})).await;
    let _: JoinReply = h
        .ok(RoomsOp::Join, json!({"code": room.code, "userId": uid()}))
        .await;
    let client = mongodb::Client::with_uri_str(p2piano_testkit::mongo_uri())
        .await
        .unwrap();
    let rooms = client
        .database(&h.name)
        .collection::<mongodb::bson::Document>("rooms");
    let stored = rooms
        .find_one(doc! {"code": room.code.as_str()})
        .await
        .unwrap()
        .unwrap();
    assert!(
        !stored.contains_key("expireAt"),
        "occupied rooms are not scheduled for deletion"
    );
}

#[tokio::test]
async fn restart_keeps_rooms_and_members() {
    let name = p2piano_testkit::unique_name("restart");
    let mut config = support::test_config(&name, &p2piano_testkit::mongo_uri());
    config.nats_url = Some(p2piano_testkit::nats_url());
    let client = Bus::connect_nats(&p2piano_testkit::nats_url(), "client")
        .await
        .unwrap();
    let subjects = Subjects::new(&name).unwrap();
    let call = |op: RoomsOp, body: serde_json::Value| {
        let client = client.clone();
        let subject = subjects.rooms_rpc(op);
        async move {
            let msg = client
                .request(
                    &subject,
                    Headers::new(),
                    serde_json::to_vec(&body).unwrap().into(),
                    support::WAIT,
                )
                .await?;
            Ok::<_, p2piano_bus::BusError>(
                serde_json::from_slice::<serde_json::Value>(&msg.payload).unwrap(),
            )
        }
    };

    let app = Application::build(&config)
        .await
        .expect("builds from configuration");
    let stop = CancellationToken::new();
    let run = tokio::spawn(app.run_until_stopped(stop.clone()));
    let created = call(RoomsOp::Create, json!({"ownerId": uid()}))
        .await
        .unwrap();
    let code = created["ok"]["code"].as_str().unwrap().to_owned();
    let (a, b) = (uid(), uid());
    for user in [&a, &b] {
        call(
            RoomsOp::Join,
            json!({"code": code, "userId": user, "displayName": "P"}),
        )
        .await
        .unwrap();
    }
    let before = call(RoomsOp::Get, json!({"code": code})).await.unwrap();
    stop.cancel();
    run.await.unwrap().unwrap();
    let err = call(RoomsOp::Get, json!({"code": code})).await.unwrap_err();
    assert_eq!(
        err.kind(),
        BusErrorKind::NoResponders,
        "stopped service unsubscribed"
    );

    let app = Application::build(&config).await.unwrap();
    let stop = CancellationToken::new();
    let run = tokio::spawn(app.run_until_stopped(stop.clone()));
    let after = call(RoomsOp::Get, json!({"code": code})).await.unwrap();
    assert_eq!(after, before, "rooms and members survive a restart");
    assert_eq!(after["ok"]["participants"].as_array().unwrap().len(), 2);
    stop.cancel();
    run.await.unwrap().unwrap();
}

#[tokio::test]
async fn mongo_down_gives_unavailable_and_recovers() {
    let mut mongo = p2piano_testkit::MongoServer::start().expect("private MongoDB-wire server");
    let h = Harness::start_with(
        Mode::NatsMongo,
        Options {
            mongo_uri: Some(mongo.uri()),
            ..Default::default()
        },
    )
    .await;
    let room: Room = h.ok(RoomsOp::Create, json!({"ownerId": uid()})).await;
    assert_eq!(h.admin_get("/health/ready").await.0, 200);

    mongo.stop();
    // A reply (not a bus timeout: `call` waits far longer than the store's bound) that says
    // `unavailable`, for reads and writes alike.
    assert_eq!(
        h.err(RoomsOp::Get, json!({"code": room.code})).await,
        ErrorCode::Unavailable
    );
    assert_eq!(
        h.err(RoomsOp::Create, json!({"ownerId": uid()})).await,
        ErrorCode::Unavailable
    );
    let (status, body) = h.admin_get("/health/ready").await;
    assert_eq!(status, 503);
    assert!(
        body.contains("mongodb"),
        "the reason names the dependency: {body}"
    );
    assert_eq!(h.admin_get("/health/live").await.0, 200, "still alive");

    mongo.restart().expect("MongoDB-wire server restarts");
    wait_until("readiness to recover", || async {
        h.admin_get("/health/ready").await.0 == 200
    })
    .await;
    let got: Room = h.ok(RoomsOp::Get, json!({"code": room.code})).await;
    assert_eq!(got, room);
}

#[tokio::test]
async fn mongo_down_at_start_then_recovers() {
    let mut mongo = p2piano_testkit::MongoServer::start().unwrap();
    mongo.stop();
    let h = Harness::start_with(
        Mode::NatsMongo,
        Options {
            mongo_uri: Some(mongo.uri()),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(h.admin_get("/health/ready").await.0, 503);
    assert_eq!(
        h.err(RoomsOp::Create, json!({"ownerId": uid()})).await,
        ErrorCode::Unavailable
    );
    mongo.restart().unwrap();
    wait_until("readiness", || async {
        h.admin_get("/health/ready").await.0 == 200
    })
    .await;
    let _: Room = h.ok(RoomsOp::Create, json!({"ownerId": uid()})).await;
}

#[tokio::test]
async fn twenty_clients_two_replicas_race_for_sixteen_places() {
    let h = Harness::start(Mode::NatsMongo).await;
    // A second replica in the same queue group, on its own connection.
    let url = p2piano_testkit::nats_url();
    let replica = Harness::launch(
        Mode::NatsMongo,
        h.name.clone(),
        h.config.clone(),
        Bus::connect_nats(&url, "replica-2").await.unwrap(),
        Bus::connect_nats(&url, "unused").await.unwrap(),
        support::mongo_store(&p2piano_testkit::mongo_uri(), &h.name).await,
        Clock::system(),
    )
    .await;
    let room: Room = h
        .ok(
            RoomsOp::Create,
            json!({"ownerId": uid(), "settings": {"maxParticipants": 16}}),
        )
        .await;
    let join = h.subjects.rooms_rpc(RoomsOp::Join);
    let mut tasks = Vec::new();
    for i in 0..20 {
        let bus = Bus::connect_nats(&url, &format!("joiner-{i}"))
            .await
            .unwrap();
        let body = serde_json::to_vec(&json!({"code": room.code, "userId": uid()})).unwrap();
        let subject = join.clone();
        tasks.push(tokio::spawn(async move {
            let msg = bus
                .request(&subject, Headers::new(), body.into(), support::WAIT)
                .await
                .unwrap();
            serde_json::from_slice::<serde_json::Value>(&msg.payload).unwrap()
        }));
    }
    let mut joined = 0;
    let mut full = 0;
    for t in tasks {
        let reply = t.await.unwrap();
        if reply.get("ok").is_some() {
            joined += 1;
        } else if reply["error"]["code"] == "full" {
            full += 1;
        } else {
            panic!("unexpected reply {reply}");
        }
    }
    assert_eq!((joined, full), (16, 4));
    let stored: Room = h.ok(RoomsOp::Get, json!({"code": room.code})).await;
    assert_eq!(stored.participants.len(), 16);
    let mut colors: Vec<_> = stored
        .participants
        .iter()
        .map(|p| p.color.canonical())
        .collect();
    colors.sort();
    colors.dedup();
    assert_eq!(colors.len(), 16);
    drop(replica);
}

#[tokio::test]
async fn admin_surface_reports_health_and_metrics() {
    let h = Harness::start(Mode::InProcess).await;
    let (status, body) = h.admin_get("/health/live").await;
    assert_eq!((status, body.contains("ok")), (200, true));
    assert_eq!(h.admin_get("/health/ready").await.0, 200);
    let _: Room = h.ok(RoomsOp::Create, json!({"ownerId": uid()})).await;
    let _ = h.err(RoomsOp::Get, json!({"code": "zzzzz"})).await;
    let (status, metrics) = h.admin_get("/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains(r#"p2piano_rooms_requests_total{op="create",outcome="ok"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"p2piano_rooms_requests_total{op="get",outcome="not_found"} 1"#));
}

#[tokio::test]
async fn shutdown_drains_and_stops_answering() {
    let mut h = Harness::start(Mode::NatsMongo).await;
    let _: Room = h.ok(RoomsOp::Create, json!({"ownerId": uid()})).await;
    // Requests already received are answered: fire several, then stop at once.
    let mut pending = Vec::new();
    for _ in 0..20 {
        let bus = h.bus.clone();
        let subject = h.subjects.rooms_rpc(RoomsOp::Create);
        let body = serde_json::to_vec(&json!({"ownerId": uid()})).unwrap();
        pending.push(tokio::spawn(async move {
            bus.request(&subject, Headers::new(), body.into(), support::WAIT)
                .await
        }));
    }
    h.bus.flush().await.unwrap();
    h.stop().await;
    let mut answered = 0;
    for p in pending {
        match p.await.unwrap() {
            Ok(msg) => {
                let v: serde_json::Value = serde_json::from_slice(&msg.payload).unwrap();
                assert!(v.get("ok").is_some(), "{v}");
                answered += 1;
            }
            // Sent after the drain began: nobody is subscribed any more.
            Err(e) => assert_eq!(e.kind(), BusErrorKind::NoResponders),
        }
    }
    assert!(answered > 0);
    let err = h
        .bus
        .request(
            &h.subjects.rooms_rpc(RoomsOp::Get),
            Headers::new(),
            "{}".into(),
            support::WAIT,
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), BusErrorKind::NoResponders);
}
