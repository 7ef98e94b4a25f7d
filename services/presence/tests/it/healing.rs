//! Membership that stays true: an edge wrongly declared dead (a pause) is taken back, and
//! the members announced as left meanwhile are put back when it re-asserts its sockets; a
//! socket presence lost track of is found by the digest in the heartbeats; and the KV
//! round trips of a connect and a disconnect stay at one each.

use crate::support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use p2piano_edge::presence_link::EdgeVitals;
use p2piano_protocol::presence::{
    EdgeControl, HeldSocket, ResyncReply, SessionCreated, digest_bucket, digest_of,
};
use p2piano_protocol::{MembersEventKind, PresenceOp, RoomCode};
use serde_json::{Value, json};
use support::{Harness, Mode};
use tokio_util::sync::CancellationToken;

#[p2piano_testkit::both_modes(
    nats = Harness::start(Mode::Nats).await,
    in_process = Harness::start(Mode::InProcess).await,
)]
mod cases {
    use super::*;

    /// An edge silent past the timeout (a pause) is declared dead, then heard again before its
    /// grace period ends: it is alive again, asked to re-assert its sockets, and none of its
    /// members is announced as left.
    pub async fn a_false_death_ends_when_the_edge_is_heard_again(h: Harness) {
        let room = h.room().await;
        let link = h.edge("edge-paused").await;
        let mut control = link.control().await.unwrap();
        let beats = beating(&link);
        let mut events = h.events().await;
        let (a, b) = two_members_on(&h, "edge-paused", &room).await;
        metric_at_least(&h, "p2piano_presence_edges_alive", 1.0).await;
        // The edge stops being heard, long enough to be declared dead...
        beats.kill();
        metric_at_least(&h, "p2piano_presence_edges_dead_total", 1.0).await;
        // ... and is heard again (the process resumed), with the generation it had.
        let _beats = beating(&link);
        let (generation, _, buckets) = next_resync(&mut control).await;
        assert_eq!(
            (generation, buckets),
            (1, None),
            "asked to re-assert everything"
        );
        metric_at_least(&h, "p2piano_presence_edges_revived_total", 1.0).await;
        // A marker leaves after the dead edge's grace would have ended: it is the first leave.
        let marker = h.session().await;
        h.connect_and_join(&marker, "edge-alive", "m1", &room).await;
        assert!(h.disconnect(&marker, "edge-alive", "m1").await);
        assert_eq!(
            events.next_left().await.user_id.as_ref(),
            Some(&marker.user_id)
        );
        let members = h.members_of(&room).await;
        for s in [&a, &b] {
            assert!(members.contains(&s.user_id.to_string()), "{members:?}");
        }
        // Their records are live: a lost transport now starts a grace period as usual.
        assert!(h.disconnect(&a, "edge-paused", "c1").await);
    }

    /// The edge comes back after its grace period ended and its members were announced as
    /// left: re-asserting its sockets puts them back in the room (announced as joins) and makes
    /// their records live.
    pub async fn members_left_by_a_false_death_are_put_back(h: Harness) {
        let room = h.room().await;
        let link = h.edge("edge-frozen").await;
        let beats = beating(&link);
        let mut events = h.events().await;
        let (a, b) = two_members_on(&h, "edge-frozen", &room).await;
        metric_at_least(&h, "p2piano_presence_edges_alive", 1.0).await;
        beats.kill();
        let mut left = vec![
            events.next_left().await.user_id.unwrap(),
            events.next_left().await.user_id.unwrap(),
        ];
        left.sort();
        let mut both = vec![a.user_id.clone(), b.user_id.clone()];
        both.sort();
        assert_eq!(left, both);
        assert!(h.members_of(&room).await.is_empty());
        // The edge resumes; asked, it re-asserts the two sockets it still holds.
        let vitals = Arc::new(EdgeVitals::default());
        let mut control = link.control().await.unwrap();
        let _beats =
            link.spawn_heartbeats(Duration::from_millis(100), vitals, CancellationToken::new());
        let (_, before, buckets) = next_resync(&mut control).await;
        let reply: ResyncReply = h
            .presence_ok(
                PresenceOp::Resync,
                json!({
                    "edgeId": "edge-frozen", "before": before, "buckets": buckets,
                    "sockets": [held(&a, "c1", &room.code), held(&b, "c2", &room.code)],
                    "held": ["c1", "c2"],
                }),
            )
            .await;
        assert_eq!((reply.restored, reply.rejoined, reply.retired), (2, 2, 0));
        assert!(reply.stale.is_empty());
        let mut joined = Vec::new();
        while joined.len() < 2 {
            let e = events.next().await;
            if e.kind == MembersEventKind::Joined {
                joined.push(e.user_id.unwrap());
            }
        }
        joined.sort();
        assert_eq!(joined, both, "announced back");
        let mut members = h.members_of(&room).await;
        members.sort();
        assert_eq!(
            members,
            both.iter().map(|u| u.to_string()).collect::<Vec<_>>()
        );
        // Re-asserting again changes nothing.
        let again: ResyncReply = h
            .presence_ok(
                PresenceOp::Resync,
                json!({"edgeId": "edge-frozen", "before": before, "sockets": [held(&a, "c1", &room.code)]}),
            )
            .await;
        assert_eq!(again, ResyncReply::default());
        assert!(
            h.disconnect(&a, "edge-frozen", "c1").await,
            "a live record again"
        );
    }

    /// Records of live sockets that the edge no longer holds (their disconnect went astray)
    /// enter their grace period when the edge's list says so; a socket whose session has moved
    /// to another socket meanwhile is reported as stale.
    pub async fn resync_retires_what_the_edge_no_longer_holds(h: Harness) {
        let room = h.room().await;
        let mut events = h.events().await;
        let (a, b, c) = (h.session().await, h.session().await, h.session().await);
        h.connect_and_join(&a, "edge-x", "c1", &room).await;
        h.connect_and_join(&b, "edge-x", "c2", &room).await;
        h.connect_and_join(&c, "edge-x", "c3", &room).await;
        // c's session moved to another socket, on another edge.
        h.connect_and_join(&c, "edge-y", "c9", &room).await;
        let reply: ResyncReply = h
            .presence_ok(
                PresenceOp::Resync,
                json!({
                    "edgeId": "edge-x", "before": u64::MAX,
                    "sockets": [held(&a, "c1", &room.code), held(&c, "c3", &room.code)],
                    "held": ["c1", "c3"],
                }),
            )
            .await;
        assert_eq!(reply.retired, 1, "b's record: the edge no longer holds c2");
        assert_eq!(reply.stale, vec!["c3".to_owned()]);
        assert_eq!(
            events.next_left().await.user_id.as_ref(),
            Some(&b.user_id),
            "b leaves when its grace period ends"
        );
        let members = h.members_of(&room).await;
        assert!(members.contains(&a.user_id.to_string()));
        assert!(members.contains(&c.user_id.to_string()));
    }

    /// A live record the edge does not report in its heartbeat's digest (its socket is gone,
    /// and presence never heard): once both sides have been unchanged for a while, presence
    /// asks the edge to re-assert that digest bucket; the edge's (empty) answer retires it.
    pub async fn a_digest_that_disagrees_asks_for_the_edge_sockets(h: Harness) {
        let room = h.room().await;
        let mut events = h.events().await;
        let ghost = h.session().await;
        h.connect_and_join(&ghost, "edge-d", "gone1", &room).await;
        let link = h.edge("edge-d").await;
        let mut control = link.control().await.unwrap();
        // The edge holds nothing: its digest is empty.
        let _beats = beating(&link);
        let (_, before, buckets) = next_resync(&mut control).await;
        let bucket = digest_bucket(digest_of("gone1")) as u8;
        assert_eq!(buckets, Some(vec![bucket]), "just the bucket that differs");
        let reply: ResyncReply = h
            .presence_ok(
                PresenceOp::Resync,
                json!({"edgeId": "edge-d", "before": before, "buckets": buckets, "sockets": [], "held": []}),
            )
            .await;
        assert_eq!(reply.retired, 1);
        assert_eq!(
            events.next_left().await.user_id.as_ref(),
            Some(&ghost.user_id)
        );
    }

    /// The KV operations one connect and one disconnect cost, from the metrics.
    pub async fn a_connect_and_a_disconnect_are_one_round_trip_each(h: Harness) {
        let ops = |bucket: &'static str| {
            let h = &h;
            async move {
                h.metric(
                    &h.presence_admin(),
                    &format!("p2piano_presence_kv_ops_total{{bucket=\"{bucket}\""),
                )
                .await
            }
        };
        let room = h.room().await;
        // One socket first, so that the index has caught up with the bucket.
        let warm = h.session().await;
        h.connect_and_join(&warm, "edge-k", "w1", &room).await;
        let s = h.session().await;
        let connect = json!({
            "sessionId": s.session_id.expose(), "edgeId": "edge-k", "connId": "k1",
            "roomCode": room.code, "userId": s.user_id,
        });
        let (sessions, connections) = (ops("sessions").await, ops("connections").await);
        let reply: Value = h.presence_ok(PresenceOp::Connect, &connect).await;
        assert_eq!(reply["reconnect"], false);
        assert_eq!(ops("sessions").await - sessions, 0.0, "no session read");
        assert_eq!(ops("connections").await - connections, 1.0, "one create");
        let connections = ops("connections").await;
        assert!(h.disconnect(&s, "edge-k", "k1").await);
        assert_eq!(ops("connections").await - connections, 1.0, "one update");
        // Back within the grace period as the same page: one update again.
        let connections = ops("connections").await;
        let mut back = connect.clone();
        back["connId"] = json!("k2");
        back["pid"] = reply["pid"].clone();
        let again: Value = h.presence_ok(PresenceOp::Connect, &back).await;
        assert_eq!(again["reconnect"], true);
        assert_eq!(ops("connections").await - connections, 1.0, "one update");
    }
}

/// Waits until the presence metric `series` reaches `at_least`.
async fn metric_at_least(h: &Harness, series: &str, at_least: f64) {
    let deadline = Instant::now() + support::WAIT;
    while h.metric(&h.presence_admin(), series).await < at_least {
        assert!(
            Instant::now() < deadline,
            "{series} never reached {at_least}"
        );
        // Polling interval of this wait for a condition, not a wait for time to pass.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What an edge would re-assert for a socket of session `s` in `room`.
fn held(s: &SessionCreated, conn: &str, room: &RoomCode) -> HeldSocket {
    HeldSocket {
        session_id: s.session_id.clone(),
        conn_id: conn.into(),
        user_id: s.user_id.clone(),
        room_code: Some(room.clone()),
        pid: None,
    }
}

/// The next control message for an edge that is a `Resync`.
async fn next_resync(
    control: &mut (impl futures::Stream<Item = EdgeControl> + Unpin),
) -> (u64, u64, Option<Vec<u8>>) {
    loop {
        match tokio::time::timeout(support::WAIT, control.next())
            .await
            .expect("a control message in time")
            .expect("control stream open")
        {
            EdgeControl::Resync {
                generation,
                before,
                buckets,
            } => return (generation, before, buckets),
            EdgeControl::Replace { .. } => continue,
        }
    }
}

/// Heartbeats of `link` every 100 ms, empty vitals, until killed.
fn beating(
    link: &p2piano_edge::presence_link::EdgeLink,
) -> p2piano_edge::presence_link::Heartbeats {
    link.spawn_heartbeats(
        Duration::from_millis(100),
        Default::default(),
        CancellationToken::new(),
    )
}

/// Two new sessions with sockets `c1` and `c2` on `edge`, joined to `room`.
async fn two_members_on(
    h: &Harness,
    edge: &str,
    room: &p2piano_protocol::Room,
) -> (SessionCreated, SessionCreated) {
    let (a, b) = (h.session().await, h.session().await);
    h.connect_and_join(&a, edge, "c1", room).await;
    h.connect_and_join(&b, edge, "c2", room).await;
    (a, b)
}
