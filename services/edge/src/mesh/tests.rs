//! Two or three edges' registries and relay links in one process, over real loopback TCP;
//! the bus under each registry is an in-process one of its own, so that the links are the
//! only way between them.

use std::sync::Arc;
use std::time::Duration;

use p2piano_bus::{Bus, Headers};
use p2piano_protocol::relay::{Relay, RelayKind};
use p2piano_protocol::{RoomCode, Subjects, UserId};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::dialect::Dialect;
use crate::fanout::{LocalMember, Registry};
use crate::socket::outbox::{Outbox, outbox};

const SECRET: &[u8] = b"test-mesh-secret";

struct TestEdge {
    registry: Registry,
    mesh: Arc<Mesh>,
    metrics: EdgeMetrics,
    _stop: tokio_util::sync::DropGuard,
}

async fn edge_with(id: &str, secret: &[u8], settings: MeshSettings) -> TestEdge {
    let metrics = EdgeMetrics::new(&p2piano_telemetry::Metrics::new("test"));
    let registry = Registry::new(
        Bus::in_process(),
        Subjects::new("t").unwrap(),
        metrics.clone(),
    );
    let stop = CancellationToken::new();
    let identity = MeshIdentity {
        edge_id: id.into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        advertise: None,
        secret: secret.to_vec(),
    };
    let mesh = Mesh::start(
        identity,
        registry.index(),
        settings,
        metrics.clone(),
        stop.clone(),
    )
    .await
    .unwrap();
    registry.set_mesh(mesh.clone());
    TestEdge {
        registry,
        mesh,
        metrics,
        _stop: stop.drop_guard(),
    }
}

async fn edge(id: &str) -> TestEdge {
    edge_with(id, SECRET, MeshSettings::default()).await
}

/// Polls `cond` (every 10 ms) until it holds, failing after 10 s.
pub(super) async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn up(e: &TestEdge, peer: &str) -> bool {
    e.mesh
        .peers()
        .iter()
        .any(|(id, s)| id == peer && *s == LinkState::Up)
}

/// Introduces `a` and `b` to each other, as their heartbeats would, and waits for both
/// links.
async fn link(a: &TestEdge, b: &TestEdge) {
    a.mesh.heard(b.mesh.edge_id(), b.mesh.addr());
    b.mesh.heard(a.mesh.edge_id(), a.mesh.addr());
    until("links up", || {
        up(a, b.mesh.edge_id()) && up(b, a.mesh.edge_id())
    })
    .await;
}

fn code(s: &str) -> RoomCode {
    RoomCode::parse(s).unwrap()
}

fn user(n: u8) -> UserId {
    UserId::parse(&format!("00000000-0000-4000-8000-0000000000{n:02x}")).unwrap()
}

fn member(n: u8, out: &Outbox) -> LocalMember {
    LocalMember {
        conn_id: format!("conn-{n}").into(),
        user_id: user(n),
        dialect: Dialect::Client,
        outbox: out.clone(),
    }
}

fn note(from: u8, n: u32) -> Relay {
    Relay {
        from: user(from),
        to: None,
        kind: RelayKind::Event,
        event: "KEY_DOWN".into(),
        data: json!({ "note": n }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attach_returns_only_once_the_edges_that_hold_the_room_relay_it_here() {
    let (a, b, c) = (edge("a").await, edge("b").await, edge("c").await);
    link(&a, &b).await;
    link(&a, &c).await;
    link(&b, &c).await;
    let room = code("abcde");
    a.registry.attach(&room).await.unwrap();
    let a_room = a.registry.room(&room).unwrap();
    assert!(a_room.peer_ids().is_empty(), "nobody else holds it yet");
    // No wait after the attach: by the time it returns, a relays the room to b, and b
    // to a (a's answer said it holds the room). c holds nothing and is told nothing back.
    b.registry.attach(&room).await.unwrap();
    assert_eq!(a_room.peer_ids(), ["b"]);
    assert_eq!(b.registry.room(&room).unwrap().peer_ids(), ["a"]);
    assert!(c.registry.room(&room).is_none());
    c.registry.attach(&room).await.unwrap();
    let mut peers = a_room.peer_ids();
    peers.sort();
    assert_eq!(peers, ["b", "c"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_cross_the_links_in_order_and_only_to_the_edges_that_hold_the_room() {
    let (a, b, c) = (edge("a").await, edge("b").await, edge("c").await);
    link(&a, &b).await;
    link(&a, &c).await;
    let (room, other) = (code("abcde"), code("bcdef"));
    let b_out = outbox(64);
    b.registry.attach(&room).await.unwrap();
    b.registry.room(&room).unwrap().add(member(2, &b_out));
    c.registry.attach(&other).await.unwrap();
    let a_room = a.registry.attach(&room).await.unwrap();
    for n in 0..20 {
        a.registry
            .relay(&a_room, note(1, n), Headers::new())
            .await
            .unwrap();
    }
    until("b has the 20 notes", || b_out.queued_texts().len() == 20).await;
    for (n, text) in b_out.queued_texts().iter().enumerate() {
        assert!(text.contains(&format!(r#""note":{n}"#)), "{n}: {text}");
    }
    assert!(c.registry.room(&room).is_none());
    assert_eq!(a_room.peer_ids(), ["b"], "c was never sent the room");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_is_redialed_and_its_sync_replaces_what_the_other_edge_knew() {
    let (a, b) = (edge("a").await, edge("b").await);
    link(&a, &b).await;
    let (kept, left) = (code("abcde"), code("bcdef"));
    for r in [&kept, &left] {
        a.registry.attach(r).await.unwrap();
        b.registry.attach(r).await.unwrap();
    }
    // b restarts under the same id on another port, holding only `kept`: a's link to the
    // old b fails, and the new b's sync says which rooms it holds now.
    drop(b);
    until("a's link to b is down", || !up(&a, "b")).await;
    let b2 = edge("b").await;
    b2.registry.attach(&kept).await.unwrap();
    link(&a, &b2).await;
    let kept_room = a.registry.room(&kept).unwrap();
    let left_room = a.registry.room(&left).unwrap();
    until("a relays only `kept` to the new b", || {
        kept_room.peer_ids() == ["b"] && left_room.peer_ids().is_empty()
    })
    .await;
    // And relays reach the new b over the redialed link.
    let out = outbox(8);
    b2.registry.room(&kept).unwrap().add(member(2, &out));
    a.registry
        .relay(&kept_room, note(1, 7), Headers::new())
        .await
        .unwrap();
    until("b has the note", || out.queued_texts().len() == 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_member_leaving_tells_the_other_edges() {
    let (a, b) = (edge("a").await, edge("b").await);
    link(&a, &b).await;
    let room = code("abcde");
    let a_room = a.registry.attach(&room).await.unwrap();
    b.registry.attach(&room).await.unwrap();
    assert_eq!(a_room.peer_ids(), ["b"]);
    b.registry.detach(&room, "conn-x").await;
    until("a stops relaying the room to b", || {
        a_room.peer_ids().is_empty()
    })
    .await;
    let b_peer = a.mesh.heard("b", b.mesh.addr()).unwrap();
    a.mesh.forget("b");
    assert!(a.mesh.peers().is_empty());
    // A late answer from a forgotten edge does not put it back into a room.
    a_room.add_peer(&b_peer);
    assert!(a_room.peer_ids().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dialer_without_the_secret_is_refused_and_relays_nothing() {
    let a = edge("a").await;
    let intruder = edge_with("x", b"wrong-secret", MeshSettings::default()).await;
    let room = code("abcde");
    let out = outbox(8);
    a.registry.attach(&room).await.unwrap();
    a.registry.room(&room).unwrap().add(member(2, &out));
    intruder.mesh.heard("a", a.mesh.addr());
    // Refused twice, and never up in between: a dialer is up only once welcomed, so a
    // wrong secret keeps it backing off rather than sending into closing connections.
    until("a refused the link twice", || {
        a.metrics.mesh_refused.get() >= 2
    })
    .await;
    assert_eq!(intruder.mesh.peers(), [("a".to_owned(), LinkState::New)]);
    assert_eq!(intruder.metrics.mesh_links.get(), 0);
    drop(intruder);
    assert!(a.mesh.peers().is_empty(), "a never learned of the intruder");
    assert!(a.registry.room(&room).unwrap().peer_ids().is_empty());
    let refused = a.metrics.mesh_refused.get();
    // Even a hand-written relay after a refused hello goes nowhere: the connection is
    // closed at the hello.
    let mut sock = tokio::net::TcpStream::connect(a.mesh.addr()).await.unwrap();
    let mut challenge = [0u8; 5 + wire::CHALLENGE_LEN];
    sock.read_exact(&mut challenge).await.unwrap();
    let forged = wire::hello(b"wrong-secret", &challenge[5..], "x", "127.0.0.1:1");
    let relay = wire::relay(&room, &Headers::new(), &note(1, 1)).unwrap();
    let _ = sock.write_all(&forged).await;
    let _ = sock.write_all(&relay).await;
    let mut rest = Vec::new();
    let _ = sock.read_to_end(&mut rest).await;
    assert!(rest.is_empty(), "nothing answered: {rest:?}");
    assert!(out.queued_texts().is_empty());
    assert!(a.metrics.mesh_refused.get() > refused);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dialer_that_never_says_hello_is_cut_off() {
    let a = edge_with(
        "a",
        SECRET,
        MeshSettings {
            handshake_timeout: Duration::from_millis(200),
            ..MeshSettings::default()
        },
    )
    .await;
    let mut sock = tokio::net::TcpStream::connect(a.mesh.addr()).await.unwrap();
    let mut rest = Vec::new();
    // The challenge, then the close: read_to_end returns only because a closed it.
    sock.read_to_end(&mut rest).await.unwrap();
    assert_eq!(rest.len(), 5 + wire::CHALLENGE_LEN);
    assert_eq!(a.metrics.mesh_refused.get(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_say_hello_cannot_pile_up() {
    let a = edge_with(
        "a",
        SECRET,
        MeshSettings {
            max_handshakes: 2,
            handshake_timeout: Duration::from_secs(30),
            ..MeshSettings::default()
        },
    )
    .await;
    // Two silent connections hold both handshake places: each got its challenge.
    let mut silent = Vec::new();
    for _ in 0..2 {
        let mut sock = tokio::net::TcpStream::connect(a.mesh.addr()).await.unwrap();
        let mut challenge = [0u8; 5 + wire::CHALLENGE_LEN];
        sock.read_exact(&mut challenge).await.unwrap();
        silent.push(sock);
    }
    // A third is closed at once, without a challenge (long before the 30 s timeout).
    let mut third = tokio::net::TcpStream::connect(a.mesh.addr()).await.unwrap();
    let mut rest = Vec::new();
    third.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty(), "{rest:?}");
    assert_eq!(a.metrics.mesh_refused.get(), 1);
    // Once a place is free, a real edge links as usual.
    drop(silent);
    let b = edge("b").await;
    link(&a, &b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_for_an_unreachable_edge_are_bounded_and_counted() {
    let a = edge_with(
        "a",
        SECRET,
        MeshSettings {
            queue: 4,
            ..MeshSettings::default()
        },
    )
    .await;
    // A port nobody listens on: the link stays down.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap().to_string();
    drop(closed);
    let room = code("abcde");
    let a_room = a.registry.attach(&room).await.unwrap();
    let ghost = a.mesh.heard("ghost", &addr).unwrap();
    a_room.add_peer(&ghost);
    for n in 0..10 {
        a.registry
            .relay(&a_room, note(1, n), Headers::new())
            .await
            .unwrap();
    }
    assert_eq!(a.metrics.mesh_dropped.get(), 6, "4 queued, 6 dropped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_unreachable_and_silent_past_the_limit_is_forgotten() {
    let a = edge_with(
        "a",
        SECRET,
        MeshSettings {
            forget_after: Duration::from_millis(300),
            ..MeshSettings::default()
        },
    )
    .await;
    let b = edge("b").await;
    link(&a, &b).await;
    let room = code("abcde");
    let a_room = a.registry.attach(&room).await.unwrap();
    b.registry.attach(&room).await.unwrap();
    assert_eq!(a_room.peer_ids(), ["b"]);
    drop(b);
    until("b forgotten", || a.mesh.peers().is_empty()).await;
    assert!(a_room.peer_ids().is_empty(), "no room relays to b any more");
}
