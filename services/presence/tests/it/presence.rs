//! Presence behaviour on both deployments (NATS + JetStream KV + MongoDB-wire server, and
//! in process): sessions, replacement, grace, leave, stale disconnects, dead edges, replicas
//! and restarts.
//!
//! "Nothing happened" is shown by a marker: a later departure whose leave must be the next
//! event, since a leave that was going to happen would have come first.

use crate::support;

use std::time::{Duration, Instant};

use futures::StreamExt;
use p2piano_protocol::presence::{EdgeControl, SessionInfo};
use p2piano_protocol::{ErrorCode, PresenceOp, Reply, SessionId};
use serde_json::{Value, json};
use support::{Harness, Mode};

#[p2piano_testkit::both_modes(
    nats = Harness::start(Mode::Nats).await,
    in_process = Harness::start(Mode::InProcess).await,
)]
mod cases {
    use super::*;

    pub async fn sessions_are_created_and_found(h: Harness) {
        let s = h.session().await;
        assert_eq!(s.session_id.expose().len(), 32);
        let info: SessionInfo = h
            .presence_ok(
                PresenceOp::SessionGet,
                json!({"sessionId": s.session_id.expose()}),
            )
            .await;
        assert_eq!(info.user_id, s.user_id);
        assert_eq!(info.created_at, s.created_at);
        let other = h.session().await;
        assert_ne!(other.user_id, s.user_id);
        assert_ne!(other.session_id, s.session_id);
        let unknown = SessionId::random();
        assert_eq!(
            h.presence_err(
                PresenceOp::SessionGet,
                json!({"sessionId": unknown.expose()})
            )
            .await,
            ErrorCode::NotFound
        );
        // The secret is stored only as its digest.
        assert!(
            h.buckets
                .sessions
                .get(s.session_id.expose())
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            h.buckets
                .sessions
                .get(&p2piano_presence::keys::session_key(&s.session_id))
                .await
                .unwrap()
                .is_some()
        );
    }

    pub async fn replace_tells_the_old_edge_and_leaves_nobody(h: Harness) {
        let room = h.room().await;
        let (e1, e2) = (h.edge("edge-a").await, h.edge("edge-b").await);
        let mut control = e1.control().await.unwrap();
        let mut events = h.events().await;
        let s = h.session().await;
        let first = h.connect_and_join(&s, "edge-a", "c1", &room).await;
        assert_eq!(first["reconnect"], false);
        assert!(first.get("replaced").is_none());
        let _joined = events.next().await;

        let second: Value = h
            .presence_ok(
                PresenceOp::Connect,
                json!({"sessionId": s.session_id.expose(), "edgeId": "edge-b", "connId": "c2", "roomCode": room.code}),
            )
            .await;
        assert_eq!(second["reconnect"], true);
        assert_eq!(
            second["replaced"],
            json!({"edgeId": "edge-a", "connId": "c1"})
        );
        let ctl = tokio::time::timeout(support::WAIT, control.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            ctl,
            EdgeControl::Replace {
                conn_id: "c1".into()
            }
        );
        // The old socket's disconnect, arriving after the replacement, is stale.
        assert!(!h.disconnect(&s, "edge-a", "c1").await);

        // Marker: another member leaves; that must be the first `left` anyone sees.
        let marker = h.session().await;
        h.connect_and_join(&marker, "edge-b", "m1", &room).await;
        assert!(h.disconnect(&marker, "edge-b", "m1").await);
        let left = events.next_left().await;
        assert_eq!(left.user_id.as_ref(), Some(&marker.user_id));
        assert!(h.members_of(&room).await.contains(&s.user_id.to_string()));
        drop(e2);
    }

    pub async fn reconnect_within_grace_is_not_a_leave(h: Harness) {
        let room = h.room().await;
        let mut events = h.events().await;
        let s = h.session().await;
        let first = h.connect_and_join(&s, "edge-a", "c1", &room).await;
        let pid = first["pid"].as_str().expect("a page id").to_owned();
        assert!(h.disconnect(&s, "edge-a", "c1").await);
        // The same page comes back (it presents its page id, as socket.io-client does).
        let back: Value = h
            .presence_ok(
                PresenceOp::Connect,
                json!({"sessionId": s.session_id.expose(), "edgeId": "edge-b", "connId": "c2", "roomCode": room.code, "pid": pid}),
            )
            .await;
        assert_eq!(back["reconnect"], true, "the edge announces no join");
        assert_eq!(back["pid"], pid.as_str(), "the page keeps its id");
        assert!(back.get("replaced").is_none(), "nothing live to replace");

        let marker = h.session().await;
        h.connect_and_join(&marker, "edge-a", "m1", &room).await;
        assert!(h.disconnect(&marker, "edge-a", "m1").await);
        let left = events.next_left().await;
        assert_eq!(
            left.user_id.as_ref(),
            Some(&marker.user_id),
            "the reconnected member did not leave"
        );
        assert!(h.members_of(&room).await.contains(&s.user_id.to_string()));
    }

    pub async fn leave_after_grace(h: Harness) {
        let room = h.room().await;
        let mut events = h.events().await;
        let s = h.session().await;
        h.connect_and_join(&s, "edge-a", "c1", &room).await;
        let started = Instant::now();
        assert!(h.disconnect(&s, "edge-a", "c1").await);
        let left = events.next_left().await;
        assert!(
            started.elapsed() >= Duration::from_millis(400),
            "not before the grace period ended"
        );
        assert_eq!(left.user_id.as_ref(), Some(&s.user_id));
        assert!(
            h.members_of(&room).await.is_empty(),
            "membership gone from the store"
        );
        // The socket record is gone too; a later connect is a fresh join.
        let again: Value = h
            .presence_ok(
                PresenceOp::Connect,
                json!({"sessionId": s.session_id.expose(), "edgeId": "edge-a", "connId": "c9", "roomCode": room.code}),
            )
            .await;
        assert_eq!(again["reconnect"], false);
    }

    pub async fn stale_disconnect_is_ignored(h: Harness) {
        let room = h.room().await;
        let mut events = h.events().await;
        let s = h.session().await;
        h.connect_and_join(&s, "edge-a", "c1", &room).await;
        h.connect_and_join(&s, "edge-a", "c2", &room).await;
        assert!(!h.disconnect(&s, "edge-a", "c1").await, "c1 was replaced");
        assert!(
            !h.disconnect(&s, "edge-b", "c2").await,
            "right socket id, wrong edge"
        );
        let marker = h.session().await;
        h.connect_and_join(&marker, "edge-a", "m1", &room).await;
        assert!(h.disconnect(&marker, "edge-a", "m1").await);
        assert_eq!(
            events.next_left().await.user_id.as_ref(),
            Some(&marker.user_id)
        );
        assert!(h.members_of(&room).await.contains(&s.user_id.to_string()));
    }

    pub async fn moving_to_another_room_leaves_the_old_one(h: Harness) {
        let (r1, r2) = (h.room().await, h.room().await);
        let mut events = h.events().await;
        let s = h.session().await;
        h.connect_and_join(&s, "edge-a", "c1", &r1).await;
        let moved = h.connect_and_join(&s, "edge-a", "c2", &r2).await;
        assert_eq!(moved["reconnect"], false, "a new room is a new join");
        let left = events.next_left().await;
        assert_eq!(
            (left.user_id.as_ref(), &left.room.code),
            (Some(&s.user_id), &r1.code)
        );
        assert!(h.members_of(&r1).await.is_empty());
    }

    /// A service-dialect client reconnects without a room, then rejoins the one it was in:
    /// neither step is a leave, and the rejoin is a reconnect.
    pub async fn connect_without_room_keeps_the_membership(h: Harness) {
        let room = h.room().await;
        let mut events = h.events().await;
        let s = h.session().await;
        let pid = h.connect_and_join(&s, "edge-a", "c1", &room).await["pid"].clone();
        assert!(h.disconnect(&s, "edge-a", "c1").await);
        let bare: Value = h
            .presence_ok(
                PresenceOp::Connect,
                json!({"sessionId": s.session_id.expose(), "edgeId": "edge-b", "connId": "c2", "pid": pid}),
            )
            .await;
        assert_eq!(bare["reconnect"], false);
        assert_eq!(bare["pid"], pid);
        let rejoined: Value = h
            .presence_ok(
                PresenceOp::Connect,
                json!({"sessionId": s.session_id.expose(), "edgeId": "edge-b", "connId": "c2", "roomCode": room.code, "pid": pid}),
            )
            .await;
        assert_eq!(rejoined["reconnect"], true);
        let marker = h.session().await;
        h.connect_and_join(&marker, "edge-a", "m1", &room).await;
        assert!(h.disconnect(&marker, "edge-a", "m1").await);
        assert_eq!(
            events.next_left().await.user_id.as_ref(),
            Some(&marker.user_id)
        );
        assert!(h.members_of(&room).await.contains(&s.user_id.to_string()));
    }

    /// A socket of the same session without the page id of the one in its grace period is
    /// another page (a reload): presence tells the edge to renew the membership, which rooms
    /// announces as a leave and a join. The grace period's own end then announces nothing more.
    pub async fn a_new_page_ends_the_membership_in_grace(h: Harness) {
        let room = h.room().await;
        let mut events = h.events().await;
        let s = h.session().await;
        let first = h.connect_and_join(&s, "edge-a", "c1", &room).await;
        assert!(h.disconnect(&s, "edge-a", "c1").await);
        for claimed in [json!(null), json!("not-the-page-id")] {
            let mut req = json!({"sessionId": s.session_id.expose(), "edgeId": "edge-b", "connId": "c2", "roomCode": room.code});
            if !claimed.is_null() {
                req["pid"] = claimed;
            }
            let reply: Value = h.presence_ok(PresenceOp::Connect, req).await;
            assert_eq!(reply["reconnect"], false, "a new page is not a reconnect");
            assert_eq!(reply["renew"], true, "the edge is to renew the membership");
            assert_ne!(reply["pid"], first["pid"], "a new page gets a new page id");
            // The edge joins for the new page with `renew`: a leave, then a join, announced.
            let _: p2piano_protocol::rpc::JoinReply = h
                .rooms_ok(
                    p2piano_protocol::RoomsOp::Join,
                    json!({"code": room.code, "userId": s.user_id, "renew": true}),
                )
                .await;
            let left = events.next_left().await;
            assert_eq!(left.user_id.as_ref(), Some(&s.user_id), "the old page left");
            assert!(h.members_of(&room).await.contains(&s.user_id.to_string()));
            assert!(h.disconnect(&s, "edge-b", "c2").await);
        }
        // The last page's grace period ends with its leave (about when a marker's does); then a
        // second marker's leave is the next event: the grace periods that new pages cut short
        // announced nothing more.
        let marker = h.session().await;
        h.connect_and_join(&marker, "edge-a", "m1", &room).await;
        assert!(h.disconnect(&marker, "edge-a", "m1").await);
        let mut two = vec![
            events.next_left().await.user_id.unwrap(),
            events.next_left().await.user_id.unwrap(),
        ];
        two.sort();
        let mut expected = vec![s.user_id.clone(), marker.user_id.clone()];
        expected.sort();
        assert_eq!(two, expected);
        let last = h.session().await;
        h.connect_and_join(&last, "edge-a", "m2", &room).await;
        assert!(h.disconnect(&last, "edge-a", "m2").await);
        let left = events.next_left().await;
        assert_eq!(left.user_id.as_ref(), Some(&last.user_id));
    }

    /// `disconnect` with `leave` (the page closed its socket): the member leaves at once, no
    /// grace period; from a stale socket it changes nothing.
    pub async fn a_page_that_went_away_leaves_at_once(h: Harness) {
        let room = h.room().await;
        let mut events = h.events().await;
        let (s, t) = (h.session().await, h.session().await);
        h.connect_and_join(&s, "edge-a", "c1", &room).await;
        h.connect_and_join(&t, "edge-a", "t1", &room).await;
        // t's second socket replaces the first; the first one's leave is stale.
        h.connect_and_join(&t, "edge-b", "t2", &room).await;
        let stale: Value = h
            .presence_ok(
                PresenceOp::Disconnect,
                json!({"sessionId": t.session_id.expose(), "edgeId": "edge-a", "connId": "t1", "leave": true}),
            )
            .await;
        assert_eq!(stale, json!({"graceStarted": false, "left": false}));
        let gone: Value = h
            .presence_ok(
                PresenceOp::Disconnect,
                json!({"sessionId": s.session_id.expose(), "edgeId": "edge-a", "connId": "c1", "leave": true}),
            )
            .await;
        assert_eq!(gone, json!({"graceStarted": false, "left": true}));
        // Already gone when presence answers: the leave did not wait for a grace period.
        assert_eq!(h.members_of(&room).await, vec![t.user_id.to_string()]);
        let left = events.next_left().await;
        assert_eq!(
            left.user_id.as_ref(),
            Some(&s.user_id),
            "not t: its leave was stale"
        );
        // Nothing of s is left in presence: a new socket of s is a plain first connect.
        let again: Value = h
            .presence_ok(
                PresenceOp::Connect,
                json!({"sessionId": s.session_id.expose(), "edgeId": "edge-a", "connId": "c3", "roomCode": room.code}),
            )
            .await;
        assert_eq!(again["reconnect"], false);
        assert!(again.get("replaced").is_none());
    }

    pub async fn dead_edge_members_are_left_in_time(h: Harness) {
        let room = h.room().await;
        let edge = h.edge("edge-doomed").await;
        let beats = edge.spawn_heartbeats(
            Duration::from_millis(100),
            Default::default(),
            tokio_util::sync::CancellationToken::new(),
        );
        let mut events = h.events().await;
        let (a, b) = (h.session().await, h.session().await);
        h.connect_and_join(&a, "edge-doomed", "c1", &room).await;
        h.connect_and_join(&b, "edge-doomed", "c2", &room).await;
        // Heard alive by presence before it dies.
        let presence_admin = h.presence_admin();
        let deadline = Instant::now() + support::WAIT;
        while h
            .metric(&presence_admin, "p2piano_presence_edges_alive")
            .await
            < 1.0
        {
            assert!(Instant::now() < deadline, "edge never seen alive");
            tokio::task::yield_now().await;
        }
        // Killed: no stopping heartbeat, just silence.
        beats.kill();
        let died = Instant::now();
        let mut gone = vec![
            events.next_left().await.user_id.unwrap(),
            events.next_left().await.user_id.unwrap(),
        ];
        gone.sort();
        let mut expected = vec![a.user_id.clone(), b.user_id.clone()];
        expected.sort();
        assert_eq!(gone, expected);
        // Edge timeout 400 ms + grace 400 ms, plus a check period and the leave round trips.
        let took = died.elapsed();
        assert!(
            took < Duration::from_secs(3),
            "members of a dead edge left after {took:?}"
        );
        assert!(h.members_of(&room).await.is_empty());
    }

    pub async fn stopping_edge_goes_to_grace_at_once(h: Harness) {
        let room = h.room().await;
        let edge = h.edge("edge-draining").await;
        let stop = tokio_util::sync::CancellationToken::new();
        let beats =
            edge.spawn_heartbeats(Duration::from_millis(100), Default::default(), stop.clone());
        let mut events = h.events().await;
        let (a, b) = (h.session().await, h.session().await);
        let pid = h.connect_and_join(&a, "edge-draining", "c1", &room).await["pid"].clone();
        h.connect_and_join(&b, "edge-draining", "c2", &room).await;
        stop.cancel();
        beats.finished().await;
        // a's page comes back on another edge within the grace period; b does not.
        let back: Value = h
            .presence_ok(
                PresenceOp::Connect,
                json!({"sessionId": a.session_id.expose(), "edgeId": "edge-other", "connId": "c3", "roomCode": room.code, "pid": pid}),
            )
            .await;
        assert_eq!(back["reconnect"], true);
        let left = events.next_left().await;
        assert_eq!(left.user_id.as_ref(), Some(&b.user_id));
        assert_eq!(h.members_of(&room).await, vec![a.user_id.to_string()]);
    }

    /// An edge that stops right after its first heartbeat is retired all the same: one
    /// edge's heartbeats are acted on in the order they were sent. Acted on at once, the
    /// first could write the edge's record as alive after the stopping one found no record
    /// to mark, and the edge stayed alive in the record with nobody left to hear it.
    pub async fn one_edges_heartbeats_are_acted_on_in_order(h: Harness) {
        const EDGES: usize = 16;
        let mut events = h.events().await;
        let vitals = Default::default();
        let mut edges = Vec::new();
        let mut expected = Vec::new();
        for i in 0..EDGES {
            let id = format!("edge-brief-{i}");
            let (room, s) = (h.room().await, h.session().await);
            h.connect_and_join(&s, &id, "c1", &room).await;
            expected.push(s.user_id.to_string());
            edges.push(h.edge(&id).await);
        }
        for edge in &edges {
            edge.beat_on(&h.bus, &vitals, false).await.unwrap();
            edge.beat_on(&h.bus, &vitals, true).await.unwrap();
        }
        let mut gone = Vec::new();
        while gone.len() < EDGES {
            gone.push(events.next_left().await.user_id.unwrap().to_string());
        }
        gone.sort();
        expected.sort();
        assert_eq!(gone, expected);
    }

    pub async fn bad_input_gets_invalid(h: Harness) {
        let sid = SessionId::random();
        let cases = [
            (PresenceOp::SessionCreate, json!([1])),
            (PresenceOp::SessionGet, json!({})),
            (PresenceOp::SessionGet, json!({"sessionId": "short"})),
            (PresenceOp::SessionGet, json!({"sessionId": 42})),
            (
                PresenceOp::Connect,
                json!({"sessionId": sid.expose(), "edgeId": "e", "connId": "c", "roomCode": 5}),
            ),
            (
                PresenceOp::Connect,
                json!({"sessionId": sid.expose(), "edgeId": "e.x", "connId": "c", "roomCode": "fxa3x"}),
            ),
            (
                PresenceOp::Connect,
                json!({"sessionId": sid.expose(), "edgeId": "e", "connId": "c", "roomCode": "nope!"}),
            ),
            (
                PresenceOp::Disconnect,
                json!({"sessionId": sid.expose(), "edgeId": "e"}),
            ),
            (
                PresenceOp::Disconnect,
                json!({"sessionId": sid.expose(), "edgeId": "e", "connId": "x".repeat(65)}),
            ),
        ];
        for (op, body) in cases {
            assert_eq!(
                h.presence_err(op, &body).await,
                ErrorCode::Invalid,
                "{op:?} {body}"
            );
        }
        for raw in [&b"{not json"[..], b"", b"null"] {
            let r = h
                .raw(&h.subjects.presence_rpc(PresenceOp::Connect), raw.to_vec())
                .await;
            assert!(
                matches!(r, Reply::Error(ref e) if e.code == ErrorCode::Invalid),
                "{raw:?}"
            );
        }
        let unknown = format!("{}.rpc.presence.teleport", h.subjects.prefix());
        assert!(
            matches!(h.raw(&unknown, b"{}".to_vec()).await, Reply::Error(e) if e.code == ErrorCode::Invalid)
        );
        // Unknown session on connect: not_found, not a crash.
        assert_eq!(
            h.presence_err(
                PresenceOp::Connect,
                json!({"sessionId": sid.expose(), "edgeId": "e", "connId": "c", "roomCode": "fxa3x"})
            )
            .await,
            ErrorCode::NotFound
        );
        // Garbage heartbeats are ignored and the service keeps answering.
        let hb = h.subjects.edge_heartbeat("e1");
        h.bus.publish(&hb, "garbage".into()).await.unwrap();
        h.bus
            .publish(
                &hb,
                r#"{"edgeId":"other","connections":1,"at":"2026-01-01T00:00:00.000Z"}"#.into(),
            )
            .await
            .unwrap();
        let _ = h.session().await;
    }

    /// A closing socket's budgets, even in a stale disconnect (a replaced socket), are kept
    /// with the session and handed to the next `session_get`; an older snapshot does not
    /// overwrite a newer one, and another session gets none.
    pub async fn budgets_handed_on_are_kept_with_the_session(h: Harness) {
        let room = h.room().await;
        let s = h.session().await;
        h.connect_and_join(&s, "edge-a", "c1", &room).await;
        h.connect_and_join(&s, "edge-b", "c2", &room).await;
        let now = p2piano_protocol::Timestamp::now();
        let snapshot = |at: p2piano_protocol::Timestamp, spent: u64| json!({"at": at, "spent": {"keyDown": spent}, "exceedingMs": 1500});
        let reply: Value = h
            .presence_ok(
                PresenceOp::Disconnect,
                json!({"sessionId": s.session_id.expose(), "edgeId": "edge-a", "connId": "c1",
                       "budget": snapshot(now, 900_000)}),
            )
            .await;
        assert_eq!(reply["graceStarted"], false, "c1 was replaced: stale");
        let older = p2piano_protocol::Timestamp::from_millis(now.millis() - 5_000);
        let _: Value = h
            .presence_ok(
                PresenceOp::Disconnect,
                json!({"sessionId": s.session_id.expose(), "edgeId": "edge-a", "connId": "c0",
                       "budget": snapshot(older, 10_000)}),
            )
            .await;
        let info: SessionInfo = h
            .presence_ok(
                PresenceOp::SessionGet,
                json!({"sessionId": s.session_id.expose()}),
            )
            .await;
        let budget = info.budget.expect("the budget was kept");
        assert_eq!(budget.spent["keyDown"], 900_000);
        assert_eq!(budget.exceeding_ms, Some(1500));
        assert!(h.members_of(&room).await.contains(&s.user_id.to_string()));
        let other = h.session().await;
        let info: SessionInfo = h
            .presence_ok(
                PresenceOp::SessionGet,
                json!({"sessionId": other.session_id.expose()}),
            )
            .await;
        assert!(info.budget.is_none());
    }
}
