//! The session secret travels nowhere but the presence RPCs: a wiretap on every subject of the
//! deployment (and on the reply inboxes) during a whole session's life sees it only in
//! requests to `<prefix>.rpc.presence.*`, and never in what members receive.

use crate::support;

use futures::StreamExt;
use p2piano_bus::Bus;
use serde_json::json;
use support::client::Got;
use support::{Cluster, Mode, SioClient};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_secret_stays_between_edge_and_presence() {
    let c = Cluster::start(Mode::Nats).await;
    let tap = Bus::connect_nats(&p2piano_testkit::nats_url(), "wiretap")
        .await
        .unwrap();
    let mut ours = tap.subscribe(&format!("{}.>", c.name)).await.unwrap();
    let mut inboxes = tap.subscribe("_INBOX.>").await.unwrap();
    tap.flush().await.unwrap();

    let (cookie_a, code) = c.session_with_room(0).await;
    let cookie_b = c.session_for(1, &code).await;
    let secrets: Vec<String> = [&cookie_a, &cookie_b]
        .iter()
        .map(|c| {
            c.trim_start_matches("sessionId=")
                .split('.')
                .next()
                .unwrap()
                .to_owned()
        })
        .collect();
    let mut seen_by_members = String::new();
    let mut a = SioClient::open(
        c.edge(0),
        &format!("roomId={code}"),
        &[("Cookie", &cookie_a)],
    )
    .await
    .unwrap();
    assert!(matches!(a.connect("/api", None).await, Got::Connected(_)));
    let wa = a.expect("ROOM_JOIN").await;
    let mut b = SioClient::open(c.edge(1), "", &[("Cookie", &cookie_b)])
        .await
        .unwrap();
    assert!(matches!(b.connect("/", None).await, Got::Connected(_)));
    let jb = b.emit_ack("join-room", json!({"code": code}), 1).await;
    let b_id = jb["you"]["id"].as_str().unwrap().to_owned();
    let joined = a.expect("USER_CONNECT").await;
    a.emit("USER_UPDATE", json!({"displayName": "A"})).await;
    let up_a = a.expect("USER_UPDATE").await;
    let up_b = b.expect("user-updated").await;
    a.emit(
        "SIGNAL",
        json!({"userId": b_id, "signalData": {"type": "offer", "sdp": "v=0"}}),
    )
    .await;
    let sig = b.expect("webrtc-signal").await;
    let left = b.emit_ack("leave-room", json!({}), 2).await;
    let gone = a.expect("USER_DISCONNECT").await;
    for v in [&wa, &jb, &joined, &up_a, &up_b, &sig, &left, &gone] {
        seen_by_members.push_str(&v.to_string());
    }
    tap.flush().await.unwrap();
    // Everything published so far has reached the tap once this marker comes back.
    tap.publish(&format!("{}.wiretap.end", c.name), "end".into())
        .await
        .unwrap();

    let mut presence_requests = 0;
    let mut presence_inboxes = std::collections::HashSet::new();
    while let Some(msg) = ours.next().await {
        if msg.subject.ends_with(".wiretap.end") {
            break;
        }
        let body = String::from_utf8_lossy(&msg.payload);
        let carries = secrets.iter().any(|s| body.contains(s.as_str()));
        let is_presence_rpc = msg
            .subject
            .starts_with(&format!("{}.rpc.presence.", c.name));
        assert!(
            !carries || is_presence_rpc,
            "secret on {}: {body}",
            msg.subject
        );
        presence_requests += usize::from(carries);
        if is_presence_rpc && let Some(reply) = msg.reply {
            presence_inboxes.insert(reply);
        }
    }
    assert!(
        presence_requests >= 4,
        "the tap saw the presence requests ({presence_requests})"
    );
    // Replies (to inboxes) carry it only when they answer a presence request
    // (`session_create` returns the new secret to the edge that asked). The inbox tap is
    // drained without waiting: everything it will get was flushed before the marker.
    let mut replies = 0;
    while let Some(Some(msg)) = futures::FutureExt::now_or_never(inboxes.next()) {
        replies += 1;
        let body = String::from_utf8_lossy(&msg.payload);
        let carries = secrets.iter().any(|s| body.contains(s.as_str()));
        assert!(
            !carries || presence_inboxes.contains(&msg.subject),
            "secret in a reply on {}: {body}",
            msg.subject
        );
    }
    assert!(replies > 0, "the tap saw the replies");
    for s in &secrets {
        assert!(
            !seen_by_members.contains(s.as_str()),
            "a member received a session secret"
        );
    }
}
