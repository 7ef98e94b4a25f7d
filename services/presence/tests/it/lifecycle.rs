//! Presence across time and failures: session expiry, two replicas, a restart mid-grace,
//! a NATS restart, and the admin surface.

use crate::support;

use std::time::Duration;

use p2piano_clock::Clock;
use p2piano_presence::kv::{BucketConfig, open_jetstream};
use p2piano_protocol::presence::SessionInfo;
use p2piano_protocol::{ErrorCode, PresenceOp};
use serde_json::json;
use support::{Harness, Mode};

#[tokio::test(start_paused = true)]
async fn sessions_expire_when_idle_in_memory() {
    let h = Harness::start_with(Mode::InProcess, None, 3600, Clock::tokio()).await;
    let s = h.session().await;
    let get = json!({"sessionId": s.session_id.expose()});
    // Used every 50 minutes, a one-hour session lives on.
    for _ in 0..4 {
        tokio::time::advance(Duration::from_secs(50 * 60)).await;
        let info: SessionInfo = h.presence_ok(PresenceOp::SessionGet, &get).await;
        assert_eq!(info.user_id, s.user_id);
    }
    // Then unused for more than the TTL: gone.
    tokio::time::advance(Duration::from_secs(3601)).await;
    assert_eq!(
        h.presence_err(PresenceOp::SessionGet, &get).await,
        ErrorCode::NotFound
    );
}

#[tokio::test]
async fn sessions_expire_when_idle_in_jetstream() {
    let h = Harness::start_with(Mode::Nats, None, 1, Clock::system()).await;
    let s = h.session().await;
    let get = json!({"sessionId": s.session_id.expose()});
    let _: SessionInfo = h.presence_ok(PresenceOp::SessionGet, &get).await;
    // Watch the bucket itself (a session_get would refresh the session).
    let key = p2piano_presence::keys::session_key(&s.session_id);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while h.buckets.sessions.get(&key).await.unwrap().is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "session never expired"
        );
        // Poll interval of this wait-for-condition loop, not a wait for time to pass.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        h.presence_err(PresenceOp::SessionGet, &get).await,
        ErrorCode::NotFound
    );
}

/// Two replicas; every departure is announced exactly once. A marker departure after the
/// others shows that no late duplicate is still on its way.
async fn two_replicas_leave_exactly_once(mode: Mode) {
    let mut h = Harness::start(mode).await;
    h.add_presence().await;
    let room = h.room().await;
    let mut events = h.events().await;
    let sessions = [h.session().await, h.session().await, h.session().await];
    for (i, s) in sessions.iter().enumerate() {
        h.connect_and_join(s, "edge-a", &format!("c{i}"), &room)
            .await;
    }
    for (i, s) in sessions.iter().enumerate() {
        assert!(h.disconnect(s, "edge-a", &format!("c{i}")).await);
    }
    let mut left = Vec::new();
    for _ in 0..3 {
        left.push(events.next_left().await.user_id.unwrap());
    }
    let marker = h.session().await;
    h.connect_and_join(&marker, "edge-a", "m", &room).await;
    assert!(h.disconnect(&marker, "edge-a", "m").await);
    assert_eq!(
        events.next_left().await.user_id.as_ref(),
        Some(&marker.user_id)
    );
    // Rooms counts a request after publishing its event: wait for the count to get there.
    p2piano_testkit::wait_until("four rooms leaves counted", || async {
        h.rooms_leaves().await >= 4.0
    })
    .await;
    assert_eq!(
        h.rooms_leaves().await,
        4.0,
        "one rooms leave per departure, none twice"
    );
    let announced = h
        .metric(&h.presence_admin(), "p2piano_presence_leaves_total")
        .await;
    assert_eq!(announced, 4.0);
    for admin in h.presence_admin().into_iter().chain([h.rooms_admin()]) {
        let (_, body) = support::http_get(admin, "/metrics").await;
        assert!(
            body.contains("p2piano_bus_dropped_messages_total 0"),
            "every service exports the bus's drops: {body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_leave_exactly_once_nats() {
    two_replicas_leave_exactly_once(Mode::Nats).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_leave_exactly_once_in_process() {
    two_replicas_leave_exactly_once(Mode::InProcess).await;
}

/// Presence stops right after a disconnect and a new one starts: the grace period it
/// started still ends in exactly one leave.
async fn restart_mid_grace_still_leaves_once(mode: Mode) {
    let mut h = Harness::start(mode).await;
    let room = h.room().await;
    let mut events = h.events().await;
    let s = h.session().await;
    h.connect_and_join(&s, "edge-a", "c1", &room).await;
    assert!(h.disconnect(&s, "edge-a", "c1").await);
    h.stop_presence(0).await;
    h.add_presence().await;
    assert_eq!(events.next_left().await.user_id.as_ref(), Some(&s.user_id));
    let marker = h.session().await;
    h.connect_and_join(&marker, "edge-a", "m", &room).await;
    assert!(h.disconnect(&marker, "edge-a", "m").await);
    assert_eq!(
        events.next_left().await.user_id.as_ref(),
        Some(&marker.user_id)
    );
    // Rooms counts a request after publishing its event: wait for the count to get there.
    p2piano_testkit::wait_until("two rooms leaves counted", || async {
        h.rooms_leaves().await >= 2.0
    })
    .await;
    assert_eq!(h.rooms_leaves().await, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_mid_grace_still_leaves_once_nats() {
    restart_mid_grace_still_leaves_once(Mode::Nats).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_mid_grace_still_leaves_once_in_process() {
    restart_mid_grace_still_leaves_once(Mode::InProcess).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restart_keeps_sessions() {
    let mut nats = p2piano_testkit::NatsServer::start().expect("private nats-server");
    let h = Harness::start_with(Mode::Nats, Some(nats.url()), 86400, Clock::system()).await;
    let s = h.session().await;
    let get = json!({"sessionId": s.session_id.expose()});
    nats.stop();
    nats.restart().expect("nats-server restarts with its store");
    // Wait until everyone has reconnected and presence answers again.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let subject = h.subjects.presence_rpc(PresenceOp::SessionGet);
    let info: SessionInfo = loop {
        let attempt = h.bus.request(
            &subject,
            Default::default(),
            serde_json::to_vec(&get).unwrap().into(),
            Duration::from_millis(500),
        );
        if let Ok(msg) = attempt.await
            && let Ok(p2piano_protocol::Reply::Ok(info)) = serde_json::from_slice(&msg.payload)
        {
            break info;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "presence never came back"
        );
    };
    assert_eq!(info.user_id, s.user_id, "session survived the NATS restart");
    // The KV itself still has it, seen from a fresh connection.
    let client = async_nats::connect(nats.url()).await.unwrap();
    let sessions = open_jetstream(
        client,
        BucketConfig {
            name: format!("{}_sessions", h.name),
            max_age: Some(Duration::from_secs(86400)),
            replicas: 1,
            description: String::new(),
        },
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert!(
        sessions
            .get(&p2piano_presence::keys::session_key(&s.session_id))
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_surface_reports_health_and_metrics() {
    let h = Harness::start(Mode::Nats).await;
    let port = h.presence_admin()[0];
    assert_eq!(support::http_get(port, "/health/live").await.0, 200);
    assert_eq!(support::http_get(port, "/health/ready").await.0, 200);
    let _ = h.session().await;
    let (_, metrics) = support::http_get(port, "/metrics").await;
    assert!(
        metrics.contains(r#"p2piano_presence_requests_total{op="session_create",outcome="ok"} 1"#),
        "{metrics}"
    );
}
