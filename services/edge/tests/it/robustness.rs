//! Bad input, slow consumers and drains: the failure paths of the Socket.IO gateway, on two
//! edges over real NATS and the MongoDB-wire server and (where one edge suffices) in process.

use crate::support;

use std::time::Duration;

use p2piano_edge::SocketSettings;
use serde_json::{Value, json};
use support::client::Got;
use support::{Cluster, Mode, SioClient};

#[p2piano_testkit::both_modes(
    nats = Mode::Nats,
    in_process = Mode::InProcess,
)]
mod cases {
    use super::*;

    pub async fn silent_clients_are_dropped(mode: Mode) {
        let c = Cluster::start_with(mode, quick_timers()).await;
        let (cookie, code) = c.session_with_room(0).await;
        // The open packet announces the timers the edge enforces.
        let mut s = SioClient::open(c.edge(0), "", &[]).await.unwrap();
        assert_eq!(
            (
                s.open["pingInterval"].as_u64(),
                s.open["pingTimeout"].as_u64()
            ),
            (Some(150), Some(600))
        );
        assert_eq!(s.open["maxPayload"].as_u64(), Some(64 * 1024));
        // A socket that never connects to a namespace is closed at the connect deadline.
        let (_, close) = s.until_closed_ignoring_pings().await;
        assert_eq!(close, Some(1000));
        assert_eq!(
            support::metric(c.admin(0), "p2piano_edge_connect_timeouts_total").await,
            1.0,
            "the connect deadline is counted"
        );
        // A member that stops answering pings is closed after interval + timeout, and leaves.
        let (mut listener, _) = member(&c, 1, &code).await;
        let (mut mute, mute_id) = member_with(&c, 0, &cookie, &code, None).await;
        assert_eq!(listener.expect("USER_CONNECT").await["userId"], mute_id);
        // The listener reads (and so answers pings) all the while, and is still there to hear
        // the leave.
        let ((pings, close), gone) = tokio::join!(
            mute.until_closed_ignoring_pings(),
            listener.expect("USER_DISCONNECT")
        );
        assert!(pings >= 1, "the edge pinged before giving up");
        assert_eq!(close, Some(1000));
        assert_eq!(gone["userId"], mute_id);
    }

    /// The silence deadline moves with every frame heard, pongs included: a member that
    /// only answers pings stays for many times the silence window (interval + timeout,
    /// 750 ms here) and still hears the room.
    pub async fn clients_that_answer_pings_stay(mode: Mode) {
        let c = Cluster::start_with(mode, quick_timers()).await;
        let (_, code) = c.session_with_room(0).await;
        let (mut quiet, _) = member(&c, 0, &code).await;
        // 16 pings at 150 ms: 2.4 s, over three silence windows.
        assert!(quiet.answer_pings(16).await, "closed while answering pings");
        let (_, late_id) = member(&c, 1, &code).await;
        assert_eq!(quiet.expect("USER_CONNECT").await["userId"], late_id);
    }

    /// A socket that leaves its namespace has the connect deadline again, though it keeps
    /// answering pings and its silence deadline is far off.
    pub async fn leaving_the_namespace_starts_the_connect_deadline_again(mode: Mode) {
        let settings = SocketSettings {
            ping_interval: Duration::from_millis(150),
            ping_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_millis(400),
            ..SocketSettings::default()
        };
        let c = Cluster::start_with(mode, settings).await;
        let (_, code) = c.session_with_room(0).await;
        let (mut left, _) = member(&c, 0, &code).await;
        // Connected past the first connect deadline, so that the socket's timer is then
        // set to the silence deadline.
        assert!(left.answer_pings(4).await, "connected sockets stay");
        left.send_raw("41/api,").await;
        // A deadline, not a pause: the connect deadline (400 ms) closes the socket long
        // before its silence deadline (5.15 s) would.
        let answered = tokio::time::timeout(Duration::from_secs(3), left.answer_pings(usize::MAX))
            .await
            .expect("closed at the connect deadline, not at the silence deadline");
        assert!(!answered, "the socket closed before its pings ran out");
        assert_eq!(
            support::metric(c.admin(0), "p2piano_edge_connect_timeouts_total").await,
            1.0
        );
    }

    pub async fn protocol_violations_close_only_the_offending_socket(mode: Mode) {
        let c = Cluster::start(mode).await;
        let (_, code) = c.session_with_room(0).await;
        let (mut listener, listener_id) = member(&c, 1, &code).await;
        let (mut checker, checker_id) = member(&c, 0, &code).await;
        assert_eq!(listener.expect("USER_CONNECT").await["userId"], checker_id);
        let oversize = format!(
            "42/api,[\"LATENCY_PING\",{{\"x\":\"{}\"}}]",
            "y".repeat(70 * 1024)
        );
        let cases: Vec<(&str, Vec<Sent>, u16)> = vec![
            (
                "unknown Socket.IO packet type",
                vec![Sent::Text("4X garbage".into())],
                1002,
            ),
            (
                "unknown Engine.IO packet type",
                vec![Sent::Text("9".into())],
                1002,
            ),
            (
                "open packet from a client",
                vec![Sent::Text("0".into())],
                1002,
            ),
            (
                "text frame while attachments are due",
                vec![
                    Sent::Text(r#"451-/api,["KEY_DOWN",{"_placeholder":true,"num":0}]"#.into()),
                    Sent::Text(r#"42/api,["KEY_UP",{}]"#.into()),
                ],
                1002,
            ),
            (
                "binary frame without a packet",
                vec![Sent::Binary(vec![1, 2, 3])],
                1002,
            ),
            (
                "attachment bomb",
                vec![Sent::Text(
                    r#"459-/api,["KEY_DOWN",{"_placeholder":true,"num":0}]"#.into(),
                )],
                1002,
            ),
            ("oversize frame", vec![Sent::Text(oversize)], 1009),
            (
                "text that is not UTF-8",
                vec![Sent::NotUtf8(b"42\xff\xfe".to_vec())],
                1007,
            ),
        ];
        let violations = cases.len() + 1;
        for (i, (what, frames, close)) in cases.into_iter().enumerate() {
            let (mut bad, bad_id) = member(&c, 0, &code).await;
            assert_eq!(listener.expect("USER_CONNECT").await["userId"], bad_id);
            for frame in frames {
                match frame {
                    Sent::Text(text) => bad.send_raw(&text).await,
                    Sent::Binary(bytes) => bad.send_binary(bytes).await,
                    Sent::NotUtf8(bytes) => bad.send_invalid_text(bytes).await,
                }
            }
            assert_eq!(bad.next().await, Got::Closed(Some(close)), "{what}");
            // The offender leaves (after the grace period); the others play on.
            assert_eq!(
                listener.expect("USER_DISCONNECT").await["userId"],
                bad_id,
                "{what}"
            );
            checker
                .emit(
                    "KEY_DOWN",
                    json!({"note": i, "velocity": 1, "targetUserIds": [listener_id]}),
                )
                .await;
            assert_eq!(
                listener.expect("KEY_DOWN").await["note"],
                i as u64,
                "{what}"
            );
        }
        // An event before any namespace connect is a violation too (and was never a member).
        let cookie = c.session_for(0, &code).await;
        let mut early = SioClient::open(c.edge(0), "", &[("Cookie", &cookie)])
            .await
            .unwrap();
        early
            .send_raw(r#"42/api,["KEY_UP",{"note":1,"targetUserIds":[]}]"#)
            .await;
        assert_eq!(early.next().await, Got::Closed(Some(1002)));
        // Every close was a security event, with its reason, in the log and the metric.
        assert_eq!(
            support::metric(
                c.admin(0),
                "p2piano_edge_security_events_total{kind=\"protocol_violation\"}"
            )
            .await,
            violations as f64
        );
        checker
            .emit(
                "KEY_UP",
                json!({"note": 100, "targetUserIds": [listener_id]}),
            )
            .await;
        assert_eq!(listener.expect("KEY_UP").await["note"], 100);
    }

    pub async fn bad_events_are_refused_and_the_socket_stays(mode: Mode) {
        let c = Cluster::start(mode).await;
        let (_, code) = c.session_with_room(0).await;
        let (mut listener, listener_id) = member(&c, 1, &code).await;
        let (mut s, _) = member(&c, 0, &code).await;
        let deep = format!("{}1{}", "[".repeat(40), "]".repeat(40));
        let refused = [
            "42/api,[not json".to_owned(),
            r#"42/api,{"not":"an array"}"#.to_owned(),
            format!(r#"42/api,["KEY_DOWN",{deep}]"#),
            r#"42/api,["SIGNAL",{"userId":"not-a-uuid","signalData":{}}]"#.to_owned(),
            r#"42/api,["AUTOMERGE_PROTOCOL",{"syncMessage":"abc","targetUserIds":[]}]"#.to_owned(),
        ];
        for (i, frame) in refused.iter().enumerate() {
            s.send_raw(frame).await;
            let e = match s.next().await {
                Got::Event(n, p) if n == "exception" => p,
                other => panic!("frame {i} ({frame:.60}): expected an exception, got {other:?}"),
            };
            assert_eq!(
                (e["status"].as_str(), e["code"].as_u64()),
                (Some("error"), Some(400)),
                "frame {i}: {e}"
            );
            s.emit(
                "KEY_DOWN",
                json!({"note": i, "velocity": 2, "targetUserIds": [listener_id]}),
            )
            .await;
            assert_eq!(
                next_skipping_membership(&mut listener, "KEY_DOWN").await["note"],
                i as u64,
                "frame {i}"
            );
        }
        // A complete binary event is understood, and refused: no event carries binary data.
        s.send_raw(r#"451-/api,["KEY_DOWN",{"_placeholder":true,"num":0}]"#)
            .await;
        s.send_binary(vec![0, 1, 2]).await;
        let e = s.expect("exception").await;
        assert_eq!(
            (e["code"].as_u64(), e["event"].as_str()),
            (Some(400), Some("KEY_DOWN"))
        );
        // Another namespace: a connect error, nothing else.
        s.send_raw("40/admin,").await;
        assert_eq!(
            s.raw().await.as_deref(),
            Some(r#"44/admin,{"message":"Invalid namespace"}"#)
        );
        s.emit("KEY_UP", json!({"note": 9, "targetUserIds": [listener_id]}))
            .await;
        assert_eq!(
            next_skipping_membership(&mut listener, "KEY_UP").await["note"],
            9
        );
    }

    pub async fn slow_consumer_does_not_slow_the_room(mode: Mode) {
        // A short queue, so that a client that stops reading reaches the policy with 100 events.
        let settings = SocketSettings {
            outbox_capacity: 16,
            ..SocketSettings::default()
        };
        let c = Cluster::start_with(mode, settings).await;
        let (_, code) = c.session_with_room(0).await;
        let (mut fast, fast_id) = member(&c, 0, &code).await;
        let slow_cookie = c.session_for(0, &code).await;
        // The slow client reads nothing after its welcome, through a 4 KiB receive buffer. It
        // shares an edge (and so the room's delivery task) with the fast one: if delivery ever
        // waited for the slow queue, the fast member would stall with it.
        let (_slow, slow_id) = member_with(&c, 0, &slow_cookie, &code, Some(4096)).await;
        let (mut sender, _) = member(&c, 0, &code).await;
        let before = dropped(c.admin(0)).await;
        // 100 CRDT messages of ~60 KB (the CRDT budget is 100 per 10 s): 6 MB for each receiver.
        let sync: Vec<u8> = vec![255; 15_000];
        // In lockstep with the fast member, so that its own queue never holds more than one
        // frame: what is measured is only whether the slow one holds it up.
        for seq in 0..100u64 {
            let payload =
                json!({"syncMessage": sync, "seq": seq, "targetUserIds": [fast_id, slow_id]});
            sender.emit("AUTOMERGE_PROTOCOL", payload).await;
            let got = next_skipping_membership(&mut fast, "AUTOMERGE_PROTOCOL").await;
            assert_eq!(
                got["seq"], seq,
                "the fast member gets every message, in order"
            );
            assert_eq!(got["syncMessage"].as_array().map(Vec::len), Some(15_000));
        }
        let after = dropped(c.admin(0)).await;
        assert!(
            after > before,
            "the slow member's queue overflowed and its messages were dropped ({before} -> {after})"
        );
    }
}

/// A web-client socket of a new session in `code` on edge `i`, with its public user id.
async fn member(c: &Cluster, i: usize, code: &str) -> (SioClient, String) {
    let cookie = c.session_for(i, code).await;
    member_with(c, i, &cookie, code, None).await
}

async fn member_with(
    c: &Cluster,
    i: usize,
    cookie: &str,
    code: &str,
    recv_buffer: Option<u32>,
) -> (SioClient, String) {
    let mut s = SioClient::open_with_recv_buffer(
        c.edge(i),
        &format!("roomId={code}&displayName=P"),
        &[("Cookie", cookie)],
        recv_buffer,
    )
    .await
    .expect("socket opens");
    match s.connect("/api", None).await {
        Got::Connected(_) => {}
        other => panic!("connect failed: {other:?}"),
    }
    let welcome = s.expect("ROOM_JOIN").await;
    let me = welcome["userId"].as_str().unwrap().to_owned();
    (s, me)
}

/// The next event named `name`, passing over membership events (sockets of the test come and
/// go around the listener).
async fn next_skipping_membership(s: &mut SioClient, name: &str) -> Value {
    loop {
        match s.next().await {
            Got::Event(n, p) if n == name => return p,
            Got::Event(n, _) if n == "USER_CONNECT" || n == "USER_DISCONNECT" => continue,
            other => panic!("expected {name}, got {other:?}"),
        }
    }
}

/// Short Engine.IO timers, so that the deadlines pass in well under a second; the connect
/// deadline (400 ms) comes before the ping deadline (interval + timeout, 750 ms), so that a
/// socket that never connects is closed by the first.
fn quick_timers() -> SocketSettings {
    SocketSettings {
        ping_interval: Duration::from_millis(150),
        ping_timeout: Duration::from_millis(600),
        connect_timeout: Duration::from_millis(400),
        ..SocketSettings::default()
    }
}

/// A frame to send.
enum Sent {
    Text(String),
    Binary(Vec<u8>),
    /// A text frame whose bytes are not UTF-8.
    NotUtf8(Vec<u8>),
}

/// The `p2piano_edge_dropped_total` of the edge whose admin port is `port`.
async fn dropped(port: u16) -> u64 {
    let r = support::request(port, "GET", "/metrics", &[], None).await;
    r.body
        .lines()
        .find_map(|l| l.strip_prefix("p2piano_edge_dropped_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no dropped counter in:\n{}", r.body))
}

/// SIGTERM of an edge (here: its shutdown token): its clients' sockets are closed at the
/// transport (1012, not a Socket.IO disconnect, so they reconnect), a client that comes back
/// on the other edge within the grace period is announced to nobody, and the edge stops well
/// within 30 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_moves_clients_without_leave_or_join() {
    let mut c = Cluster::start(Mode::Nats).await;
    let (cookie_a, code) = c.session_with_room(0).await;
    let (mut a, a_id) = member_with(&c, 0, &cookie_a, &code, None).await;
    let cookie_m = c.session_for(1, &code).await;
    let (mut moving, m_id) = member_with(&c, 1, &cookie_m, &code, None).await;
    assert_eq!(a.expect("USER_CONNECT").await["userId"], m_id);
    let edge_b = c.edge(1);
    let port_a = c.edge(0);
    let pid = moving
        .pid
        .clone()
        .expect("the connect reply carries a page id");
    let client = async {
        let closed = moving.next().await;
        // The client reconnects at once, to the edge that stays, as the same page (it
        // presents its page id, as socket.io-client does).
        let mut s = SioClient::open(
            port_a,
            &format!("roomId={code}&displayName=P"),
            &[("Cookie", &cookie_m)],
        )
        .await
        .unwrap();
        assert!(matches!(
            s.connect("/api", Some(json!({"pid": pid, "offset": null})))
                .await,
            Got::Connected(_)
        ));
        assert_eq!(s.expect("ROOM_JOIN").await["userId"], m_id);
        (closed, s)
    };
    let started = std::time::Instant::now();
    let ((closed, mut back), ()) = tokio::join!(client, async {
        tokio::time::timeout(Duration::from_secs(30), c.stop_edge(1))
            .await
            .expect("the edge stops within 30 s")
    });
    assert_eq!(
        closed,
        Got::Closed(Some(1012)),
        "a transport close, not a Socket.IO disconnect"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", edge_b)).is_err(),
        "the drained edge no longer listens"
    );
    // Proving that no leave is announced needs time to pass: the grace period (600 ms in the
    // test configuration) must end before we look, so this one wait is on the clock.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    back.emit(
        "KEY_DOWN",
        json!({"note": 42, "velocity": 3, "targetUserIds": [a_id]}),
    )
    .await;
    // The next thing `a` sees is the note: no USER_DISCONNECT, no USER_CONNECT in between.
    assert_eq!(
        a.next().await,
        Got::Event(
            "KEY_DOWN".into(),
            json!({"note": 42, "velocity": 3, "userId": m_id})
        )
    );
}
