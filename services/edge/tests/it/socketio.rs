//! The Socket.IO surface end to end: two edges and the split services over real NATS and the
//! MongoDB-wire server (and the same in process), driven by a raw Engine.IO client.

use crate::support;

use serde_json::{Value, json};
use support::client::Got;
use support::{Cluster, Mode, SioClient};

#[p2piano_testkit::both_modes(
    nats = Cluster::start(Mode::Nats).await,
    in_process = Cluster::start(Mode::InProcess).await,
)]
mod cases {
    use super::*;

    pub async fn join_is_seen_across_edges_and_notes_flow(c: Cluster) {
        let (cookie_a, code) = c.session_with_room(0).await;
        let cookie_b = c.session_for(1, &code).await;
        let (mut a, wa) = c.web(0, &cookie_a, &code).await;
        let me_a = wa["userId"].as_str().unwrap().to_owned();
        assert_eq!(wa["room"]["roomId"], code);
        assert!(wa["room"]["users"][&me_a].is_object());
        assert!(
            !cookie_a.contains(&me_a),
            "the public id is not the session secret"
        );
        let (mut b, wb) = c.web(1, &cookie_b, &code).await;
        let me_b = wb["userId"].as_str().unwrap().to_owned();
        assert_eq!(wb["room"]["users"].as_object().unwrap().len(), 2);
        let seen = a.expect("USER_CONNECT").await;
        assert_eq!(seen["userId"], me_b);
        assert_eq!(seen["room"]["users"].as_object().unwrap().len(), 2);

        a.emit(
            "KEY_DOWN",
            json!({"note": 60, "velocity": 100, "targetUserIds": [me_b]}),
        )
        .await;
        let note = b.expect("KEY_DOWN").await;
        assert_eq!(note, json!({"note": 60, "velocity": 100, "userId": me_a}));
        b.emit(
            "SIGNAL",
            json!({"userId": me_a, "signalData": {"type": "offer", "sdp": "v=0"}}),
        )
        .await;
        let sig = a.expect("SIGNAL").await;
        assert_eq!(
            sig,
            json!({"signalData": {"type": "offer", "sdp": "v=0"}, "userId": me_b})
        );
        b.emit(
            "USER_UPDATE",
            json!({"displayName": "Bee", "color": "#abcdef", "instrument": "SYNTH"}),
        )
        .await;
        for s in [&mut a, &mut b] {
            let up = s.expect("USER_UPDATE").await;
            assert_eq!(up["userId"], me_b);
            assert_eq!(up["room"]["users"][&me_b]["displayName"], "Bee");
        }
    }

    pub async fn order_holds_for_a_thousand_notes(c: Cluster) {
        let (cookie_a, code) = c.session_with_room(0).await;
        let cookie_b = c.session_for(1, &code).await;
        let (mut a, _) = c.web(0, &cookie_a, &code).await;
        let (mut b, wb) = c.web(1, &cookie_b, &code).await;
        let me_b = wb["userId"].as_str().unwrap().to_owned();
        a.expect("USER_CONNECT").await;
        for i in 0..1000u32 {
            let (name, payload) = if i % 2 == 0 {
                (
                    "KEY_DOWN",
                    json!({"note": i % 128, "velocity": (i / 128) % 128, "targetUserIds": [me_b]}),
                )
            } else {
                ("KEY_UP", json!({"note": i % 128, "targetUserIds": [me_b]}))
            };
            a.emit(name, payload).await;
        }
        for i in 0..1000u32 {
            let want = if i % 2 == 0 { "KEY_DOWN" } else { "KEY_UP" };
            let got = b.expect(want).await;
            assert_eq!(got["note"], i % 128, "event {i} out of order");
            if i % 2 == 0 {
                assert_eq!(got["velocity"], (i / 128) % 128);
            }
        }
    }

    pub async fn target_outside_the_room_gets_nothing(c: Cluster) {
        let (cookie_a, code) = c.session_with_room(0).await;
        let (cookie_x, other) = c.session_with_room(1).await;
        let (mut a, _) = c.web(0, &cookie_a, &code).await;
        let (mut x, wx) = c.web(1, &cookie_x, &other).await;
        let outsider = wx["userId"].as_str().unwrap().to_owned();
        a.emit(
            "KEY_DOWN",
            json!({"note": 1, "velocity": 1, "targetUserIds": [outsider]}),
        )
        .await;
        a.emit(
            "SIGNAL",
            json!({"userId": outsider, "signalData": {"type": "offer"}}),
        )
        .await;
        // Dropped quietly, as the original does (the web client logs every exception as an
        // error): the next exception is the one for a bad note sent after them.
        a.emit("KEY_DOWN", json!({"note": 1, "targetUserIds": [outsider]}))
            .await;
        let e = a.expect("exception").await;
        assert_eq!(
            (
                e["status"].as_str(),
                e["code"].as_u64(),
                e["event"].as_str()
            ),
            (Some("error"), Some(400), Some("KEY_DOWN"))
        );
        // Nothing reached the outsider: its next event is one we send it from its own room.
        let cookie_y = c.session_for(1, &other).await;
        let (_y, _) = c.web(1, &cookie_y, &other).await;
        assert_eq!(x.expect("USER_CONNECT").await["room"]["roomId"], other);
    }

    pub async fn bad_sessions_and_origins_are_refused(c: Cluster) {
        let (cookie, code) = c.session_with_room(0).await;
        // Tampered signature.
        let mut tampered = cookie.clone();
        let last = tampered.pop().unwrap();
        tampered.push(if last == 'A' { 'B' } else { 'A' });
        let mut s = SioClient::open(
            c.edge(0),
            &format!("roomId={code}"),
            &[("Cookie", &tampered)],
        )
        .await
        .unwrap();
        match s.connect("/api", None).await {
            Got::ConnectError(v) => assert_eq!(v["message"], "Session required"),
            other => panic!("tampered cookie accepted: {other:?}"),
        }
        // No session at all.
        let mut s = SioClient::open(c.edge(0), &format!("roomId={code}"), &[])
            .await
            .unwrap();
        assert!(matches!(
            s.connect("/api", None).await,
            Got::ConnectError(_)
        ));
        // Unknown room.
        let mut s = SioClient::open(c.edge(0), "roomId=zzzzz", &[("Cookie", &cookie)])
            .await
            .unwrap();
        match s.connect("/api", None).await {
            Got::ConnectError(v) => assert_eq!(v["message"], "Room not found"),
            other => panic!("{other:?}"),
        }
        // A foreign page may not open a socket with the cookie; the allowed origin may.
        assert!(
            SioClient::open(
                c.edge(0),
                "",
                &[("Origin", "https://evil.example"), ("Cookie", &cookie)]
            )
            .await
            .is_err()
        );
        assert!(
            SioClient::open(c.edge(0), "", &[("Origin", "http://localhost:5173")])
                .await
                .is_ok()
        );
        // Polling and old protocol versions.
        let r = support::request(
            c.edge(0),
            "GET",
            "/socket.io/?EIO=4&transport=polling",
            &[],
            None,
        )
        .await;
        assert_eq!(
            (r.status, r.json()),
            (400, json!({"code": 0, "message": "Transport unknown"}))
        );
        let r = support::request(
            c.edge(0),
            "GET",
            "/socket.io/?EIO=3&transport=websocket",
            &[],
            None,
        )
        .await;
        assert_eq!(r.status, 400);
    }

    pub async fn second_socket_replaces_the_first_silently(c: Cluster) {
        let (cookie_a, code) = c.session_with_room(0).await;
        let cookie_b = c.session_for(1, &code).await;
        let (mut a1, wa) = c.web(0, &cookie_a, &code).await;
        let (mut b, _) = c.web(1, &cookie_b, &code).await;
        a1.expect("USER_CONNECT").await;
        let (mut a2, wa2) = c.web(1, &cookie_a, &code).await;
        assert_eq!(wa2["userId"], wa["userId"], "same session, same public id");
        assert_eq!(
            a1.next().await,
            Got::Event("NEWER_CONNECTION".into(), Value::Null)
        );
        assert_eq!(a1.next().await, Got::Disconnected);
        // b saw neither a leave nor a join: the next thing it gets is a note from a2.
        let me_b = b.open["sid"].clone();
        let _ = me_b;
        let target = b_user(&c, &code, &wa).await;
        a2.emit("KEY_UP", json!({"note": 5, "targetUserIds": [target]}))
            .await;
        assert_eq!(b.expect("KEY_UP").await["note"], 5);
    }

    pub async fn leave_arrives_after_the_grace_period(c: Cluster) {
        let (cookie_a, code) = c.session_with_room(0).await;
        let cookie_b = c.session_for(1, &code).await;
        let (a, wa) = c.web(0, &cookie_a, &code).await;
        let (mut b, _) = c.web(1, &cookie_b, &code).await;
        let started = std::time::Instant::now();
        a.close().await;
        let gone = b.expect("USER_DISCONNECT").await;
        assert_eq!(gone["userId"], wa["userId"]);
        assert!(
            started.elapsed() >= std::time::Duration::from_millis(600),
            "not before the grace period"
        );
        assert_eq!(gone["room"]["users"].as_object().unwrap().len(), 1);
    }

    pub async fn rate_limit_answers_429_and_the_socket_survives(c: Cluster) {
        let (cookie_a, code) = c.session_with_room(0).await;
        let cookie_b = c.session_for(0, &code).await;
        let (mut a, _) = c.web(0, &cookie_a, &code).await;
        let (_b, wb) = c.web(0, &cookie_b, &code).await;
        a.expect("USER_CONNECT").await;
        let me_b = wb["userId"].as_str().unwrap().to_owned();
        // The budget, 1,000, and more than the bucket refills (100 a second) while they go out.
        for _ in 0..1_100 {
            a.emit("KEY_UP", json!({"note": 1, "targetUserIds": [me_b]}))
                .await;
        }
        let e = a.expect("exception").await;
        assert_eq!(
            (e["code"].as_u64(), e["event"].as_str()),
            (Some(429), Some("KEY_UP"))
        );
        // Still connected, other classes still allowed.
        a.emit("SIGNAL", json!({"userId": me_b, "signalData": {}}))
            .await;
        a.emit(
            "METRONOME_TICK",
            json!({"type": "x".repeat(17), "targetUserIds": []}),
        )
        .await;
        // Past the other refusals of the burst, the tick's own answer.
        let code = loop {
            let code = a.expect("exception").await["code"].clone();
            if code != 429 {
                break code;
            }
        };
        assert_eq!(code, 400);
    }

    pub async fn malformed_input_only_hurts_its_sender(c: Cluster) {
        let (cookie_a, code) = c.session_with_room(0).await;
        let cookie_b = c.session_for(0, &code).await;
        let (mut a, wa) = c.web(0, &cookie_a, &code).await;
        let (mut b, _) = c.web(0, &cookie_b, &code).await;
        a.expect("USER_CONNECT").await;
        // Wrong types and unknown events: an exception, the socket stays.
        a.emit(
            "KEY_DOWN",
            json!({"note": "sixty", "velocity": 1, "targetUserIds": []}),
        )
        .await;
        assert_eq!(a.expect("exception").await["code"], 400);
        a.emit("NO_SUCH_EVENT", json!({})).await;
        assert_eq!(a.expect("exception").await["code"], 400);
        a.emit("KEY_DOWN", json!("not an object")).await;
        assert_eq!(a.expect("exception").await["code"], 400);
        // Duplicate namespace connect.
        a.send_raw("40/api,").await;
        assert!(matches!(a.next().await, Got::ConnectError(_)));
        // Garbage that is not Socket.IO at all closes that socket only.
        a.send_raw("4X garbage").await;
        assert!(matches!(a.next().await, Got::Closed(_)));
        let gone = b.expect("USER_DISCONNECT").await;
        assert_eq!(gone["userId"], wa["userId"]);
    }

    pub async fn service_dialect_commands(c: Cluster) {
        let (cookie_a, code) = c.session_with_room(0).await;
        let cookie_b = c.session_for(1, &code).await;
        let mut a = SioClient::open(c.edge(0), "", &[("Cookie", &cookie_a)])
            .await
            .unwrap();
        assert!(matches!(a.connect("/", None).await, Got::Connected(_)));
        let mut b = SioClient::open(c.edge(1), "", &[("Cookie", &cookie_b)])
            .await
            .unwrap();
        assert!(matches!(b.connect("/", None).await, Got::Connected(_)));
        let ja = a
            .emit_ack("join-room", json!({"code": code, "displayName": "Ann"}), 1)
            .await;
        assert_eq!(ja["ok"], true);
        assert_eq!(ja["you"]["displayName"], "Ann");
        assert_eq!(ja["room"]["code"], code);
        let jb = b.emit_ack("join-room", json!({"code": code}), 1).await;
        let me_a = ja["you"]["id"].as_str().unwrap().to_owned();
        let me_b = jb["you"]["id"].as_str().unwrap().to_owned();
        let joined = a.expect("user-joined").await;
        assert_eq!(joined["user"]["id"], me_b);
        a.emit(
            "peer-message",
            json!({"type": "chat", "data": {"text": "hi"}}),
        )
        .await;
        assert_eq!(
            b.expect("peer-message").await,
            json!({"from": me_a, "type": "chat", "data": {"text": "hi"}})
        );
        let ack = b
            .emit_ack(
                "webrtc-signal",
                json!({"to": me_a, "signal": {"type": "answer"}}),
                2,
            )
            .await;
        assert_eq!(ack, json!({"ok": true}));
        assert_eq!(
            a.expect("webrtc-signal").await,
            json!({"from": me_b, "signal": {"type": "answer"}})
        );
        let bad = a.emit_ack("join-room", json!({"code": "NOPE!"}), 3).await;
        assert_eq!(bad["ok"], false);
        assert_eq!(bad["error"]["code"], "invalid");
        let up = b
            .emit_ack("user-update", json!({"instrument": "ELECTRIC_BASS"}), 4)
            .await;
        assert_eq!(up["user"]["instrument"], "ELECTRIC_BASS");
        assert_eq!(a.expect("user-updated").await["user"]["id"], me_b);
        assert_eq!(b.expect("user-updated").await["user"]["id"], me_b);
        // Errors without an ack id come as an `error` event.
        b.emit("peer-message", json!({"type": ""})).await;
        assert_eq!(b.expect("error").await["code"], "invalid");
        let left = b.emit_ack("leave-room", json!({}), 5).await;
        assert_eq!(left, json!({"ok": true}));
        assert_eq!(a.expect("user-left").await["userId"], me_b);
        // A second socket of a's session replaces the first at connect.
        let mut a2 = SioClient::open(c.edge(1), "", &[("Cookie", &cookie_a)])
            .await
            .unwrap();
        assert!(matches!(a2.connect("/", None).await, Got::Connected(_)));
        assert_eq!(
            a.next().await,
            Got::Event("session-replaced".into(), Value::Null)
        );
        assert_eq!(a.next().await, Got::Disconnected);
    }
}

/// The cases that need a grace period longer than any of their waits.
mod with_long_grace {
    use super::*;

    #[p2piano_testkit::both_modes(
        nats = long_grace(Mode::Nats).await,
        in_process = long_grace(Mode::InProcess).await,
    )]
    mod cases {
        use super::*;

        /// A page closes its socket (a close frame 1001 or 1000, an Engine.IO close packet, a
        /// Socket.IO disconnect): the others hear the leave at once, not after the grace period.
        pub async fn a_page_that_closes_leaves_at_once(c: Cluster) {
            let (cookie_a, code) = c.session_with_room(0).await;
            let (mut a, _) = c.web(0, &cookie_a, &code).await;
            let ways = [
                "close 1001",
                "close 1000",
                "Engine.IO close",
                "Socket.IO disconnect",
            ];
            for how in ways {
                let cookie = c.session_for(1, &code).await;
                let (mut b, wb) = c.web(1, &cookie, &code).await;
                assert_eq!(a.expect("USER_CONNECT").await["userId"], wb["userId"]);
                match how {
                    "close 1001" => b.close_with(1001).await,
                    "close 1000" => b.close_with(1000).await,
                    "Engine.IO close" => b.send_raw("1").await,
                    _ => b.send_raw("41/api,").await,
                }
                let gone = a.expect("USER_DISCONNECT").await;
                assert_eq!(gone["userId"], wb["userId"], "{how}");
                assert!(
                    gone["room"]["users"]
                        .get(wb["userId"].as_str().unwrap())
                        .is_none()
                );
            }
        }

        /// A reload: the old page's transport ends (with a close frame or without one), and a new
        /// page of the same session connects without the old page's id. The others hear a leave
        /// and then a join, so that they rebuild their links to it.
        pub async fn a_new_page_of_a_member_in_grace_is_a_leave_then_a_join(c: Cluster) {
            let (cookie_a, code) = c.session_with_room(0).await;
            let (mut a, _) = c.web(0, &cookie_a, &code).await;
            let cookie_b = c.session_for(1, &code).await;
            let (b, wb) = c.web(1, &cookie_b, &code).await;
            assert_eq!(a.expect("USER_CONNECT").await["userId"], wb["userId"]);
            closing_sockets(c.admin(1), 1, async { b.drop_transport() }).await;
            // The new page loads the room first: it does not see itself among the users.
            let r = support::request(
                c.edge(0),
                "GET",
                &format!("/api/room/{code}"),
                &[("Cookie", &cookie_b)],
                None,
            )
            .await;
            assert!(
                r.json()["users"]
                    .get(wb["userId"].as_str().unwrap())
                    .is_none(),
                "{}",
                r.body
            );
            let (mut b2, wb2) = c.web(0, &cookie_b, &code).await;
            assert_eq!(wb2["userId"], wb["userId"], "the same session");
            let gone = a.expect("USER_DISCONNECT").await;
            assert_eq!(gone["userId"], wb["userId"]);
            let back = a.expect("USER_CONNECT").await;
            assert_eq!(back["userId"], wb["userId"]);
            assert!(back["room"]["users"][wb["userId"].as_str().unwrap()].is_object());
            // The new page plays on.
            b2.emit(
                "KEY_UP",
                json!({"note": 7, "targetUserIds": [a_id(&c, &code, &wb).await]}),
            )
            .await;
            assert_eq!(a.expect("KEY_UP").await["note"], 7);
        }

        /// A transport lost without a close frame, or closed without a code (engine.io-client's
        /// own ping timeout), keeps the grace period; the same page (its page id) coming back
        /// within it is announced to nobody.
        pub async fn a_lost_transport_keeps_the_grace_and_the_same_page_returns_silently(
            c: Cluster,
        ) {
            let (cookie_a, code) = c.session_with_room(0).await;
            let (mut a, wa) = c.web(0, &cookie_a, &code).await;
            let cookie_b = c.session_for(1, &code).await;
            let (b, wb) = c.web(1, &cookie_b, &code).await;
            let pid = b.pid.clone().expect("a page id in the connect reply");
            let cookie_n = c.session_for(1, &code).await;
            let (n, wn) = c.web(1, &cookie_n, &code).await;
            let cookie_m = c.session_for(1, &code).await;
            let (m, wm) = c.web(1, &cookie_m, &code).await;
            for w in [&wb, &wn, &wm] {
                assert_eq!(a.expect("USER_CONNECT").await["userId"], w["userId"]);
            }
            closing_sockets(c.admin(1), 2, async {
                b.drop_transport();
                n.close().await;
            })
            .await;
            // b's page comes back, presenting its page id, on the other edge.
            let mut b2 = SioClient::open(
                c.edge(0),
                &format!("roomId={code}&displayName=Player"),
                &[("Cookie", &cookie_b)],
            )
            .await
            .unwrap();
            match b2
                .connect("/api", Some(json!({"pid": pid, "offset": null})))
                .await
            {
                Got::Connected(v) => {
                    assert_eq!(v["pid"], pid.as_str(), "the same page keeps its id")
                }
                other => panic!("{other:?}"),
            }
            assert_eq!(b2.expect("ROOM_JOIN").await["userId"], wb["userId"]);
            b2.emit(
                "KEY_UP",
                json!({"note": 9, "targetUserIds": [wa["userId"]]}),
            )
            .await;
            // The next event `a` sees is b's note; then, after m's page closes (a marker), m's
            // leave: neither b nor n was announced as leaving (or joining again).
            assert_eq!(
                a.next().await,
                Got::Event("KEY_UP".into(), json!({"note": 9, "userId": wb["userId"]}))
            );
            m.close_with(1001).await;
            let gone = a.expect("USER_DISCONNECT").await;
            assert_eq!(gone["userId"], wm["userId"]);
            let users = gone["room"]["users"].as_object().unwrap();
            assert!(
                users.contains_key(wn["userId"].as_str().unwrap()),
                "n is in its grace period"
            );
            assert!(users.contains_key(wb["userId"].as_str().unwrap()));
        }
    }
}

/// A cluster whose grace period (60 s) outlasts every wait of a test ([`support::WAIT`]).
async fn long_grace(mode: Mode) -> Cluster {
    Cluster::start_configured(mode, Default::default(), |c| {
        c.leave_grace = std::time::Duration::from_secs(60);
    })
    .await
}

/// Closes sockets of the edge whose admin port is `port` with `close` and waits until the
/// edge has counted out `n` of them: a closed socket is counted out only after presence
/// has been told of it.
async fn closing_sockets(port: u16, n: u64, close: impl Future<Output = ()>) {
    let before = support::metric(port, "p2piano_edge_connections").await;
    close.await;
    let after = before - n as f64;
    p2piano_testkit::wait_until(&format!("{after} sockets on the edge"), || async {
        support::metric(port, "p2piano_edge_connections").await == after
    })
    .await;
}

/// The user id of the other member of a two-member room, as `wb`'s session sees the room.
async fn a_id(c: &Cluster, code: &str, wb: &Value) -> String {
    b_user(c, code, wb).await
}

/// The other member of a two-member room.
async fn b_user(c: &Cluster, code: &str, wa: &Value) -> String {
    let r = support::request(c.edge(0), "GET", &format!("/api/room/{code}"), &[], None).await;
    let users = r.json()["users"].as_object().unwrap().clone();
    users
        .keys()
        .find(|k| Some(k.as_str()) != wa["userId"].as_str())
        .unwrap()
        .clone()
}
