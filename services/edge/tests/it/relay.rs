//! Every relayed event of both dialects reaches exactly its targets with the payload
//! docs/protocol.md gives, across two edges (and in process), and the two dialects meet in one
//! room: settings changes, moving between rooms, events crossing from one dialect to the
//! other.

use crate::support;

use serde_json::json;
use support::client::Got;
use support::{Cluster, Mode, SioClient, web};

#[p2piano_testkit::both_modes(
    nats = Cluster::start(Mode::Nats).await,
    in_process = Cluster::start(Mode::InProcess).await,
)]
mod cases {
    use super::*;

    pub async fn every_client_event_reaches_only_its_targets(c: Cluster) {
        let (cookie_a, code) = c.session_with_room(0).await;
        let (mut a, a_id) = web(&c, 0, &cookie_a, &code).await;
        let (mut b, b_id) = web(&c, 1, &c.session_for(1, &code).await, &code).await;
        let (mut x, x_id) = web(&c, 0, &c.session_for(0, &code).await, &code).await;
        assert_eq!(a.expect("USER_CONNECT").await["userId"], b_id);
        assert_eq!(a.expect("USER_CONNECT").await["userId"], x_id);
        assert_eq!(b.expect("USER_CONNECT").await["userId"], x_id);
        let cases = [
            (
                "KEY_DOWN",
                json!({"note": 60, "velocity": 99}),
                json!({"note": 60, "velocity": 99}),
            ),
            ("KEY_UP", json!({"note": 60}), json!({"note": 60})),
            ("SUSTAIN_DOWN", json!({}), json!({})),
            ("SUSTAIN_UP", json!({}), json!({})),
            (
                "METRONOME_TICK",
                json!({"type": "accent"}),
                json!({"type": "accent"}),
            ),
            // The web client of July 2025's metronome controls.
            ("METRONOME_START", json!({}), json!({})),
            ("METRONOME_STOP", json!({}), json!({})),
            ("SET_BPM", json!({"bpm": 132}), json!({"bpm": 132})),
            (
                "LATENCY_PING",
                json!({"id": 7, "sentAt": 123.5}),
                json!({"id": 7, "sentAt": 123.5}),
            ),
            (
                "LATENCY_PONG",
                json!({"id": 7, "sentAt": 123.5}),
                json!({"id": 7, "sentAt": 123.5}),
            ),
            (
                "AUTOMERGE_PROTOCOL",
                json!({"syncMessage": [0, 1, 255], "docId": "d"}),
                json!({"syncMessage": [0, 1, 255], "docId": "d"}),
            ),
        ];
        for (name, sent, received) in cases {
            // Only b is targeted; the server overwrites any userId the client put in.
            let mut payload = sent.clone();
            payload["targetUserIds"] = json!([b_id]);
            payload["userId"] = json!(x_id);
            a.emit(name, payload).await;
            let mut want = received.clone();
            want["userId"] = json!(a_id);
            assert_eq!(b.next().await, Got::Event(name.to_owned(), want), "{name}");
        }
        // x was never targeted and a never targeted itself: the next thing either sees is an
        // event sent to it now.
        b.emit("KEY_UP", json!({"note": 1, "targetUserIds": [x_id, a_id]}))
            .await;
        assert_eq!(
            x.next().await,
            Got::Event("KEY_UP".into(), json!({"note": 1, "userId": b_id}))
        );
        assert_eq!(
            a.next().await,
            Got::Event("KEY_UP".into(), json!({"note": 1, "userId": b_id}))
        );
        // Nothing comes back to its sender, even when it targets itself (the web client lists
        // itself among its peers after a reload): b gets the note, and the next thing a sees is
        // b's answer, which b sends only once it has the note.
        a.emit("KEY_UP", json!({"note": 2, "targetUserIds": [a_id, b_id]}))
            .await;
        a.emit("KEY_UP", json!({"note": 4, "targetUserIds": [a_id]}))
            .await;
        a.emit("KEY_UP", json!({"note": 5, "targetUserIds": [b_id]}))
            .await;
        for note in [2, 5] {
            assert_eq!(
                b.next().await,
                Got::Event("KEY_UP".into(), json!({"note": note, "userId": a_id}))
            );
        }
        b.emit("KEY_UP", json!({"note": 3, "targetUserIds": [a_id]}))
            .await;
        assert_eq!(
            a.next().await,
            Got::Event("KEY_UP".into(), json!({"note": 3, "userId": b_id}))
        );
        // A signal reaches its one target, with the sender's id.
        x.emit(
            "SIGNAL",
            json!({"userId": b_id, "signalData": {"renegotiate": true}}),
        )
        .await;
        assert_eq!(
            b.next().await,
            Got::Event(
                "SIGNAL".into(),
                json!({"signalData": {"renegotiate": true}, "userId": x_id})
            )
        );
        // An own USER_UPDATE reaches everyone, the sender included.
        x.emit("USER_UPDATE", json!({"userId": x_id, "displayName": "Xena", "color": "#0f0", "instrument": "ELECTRIC_BASS"}))
            .await;
        for s in [&mut a, &mut b, &mut x] {
            let up = s.expect("USER_UPDATE").await;
            assert_eq!(up["userId"], x_id);
            let user = &up["room"]["users"][&x_id];
            assert_eq!(
                (user["displayName"].as_str(), user["instrument"].as_str()),
                (Some("Xena"), Some("ELECTRIC_BASS"))
            );
        }
    }

    pub async fn oversize_and_foreign_payloads_are_refused_to_the_sender(c: Cluster) {
        let (cookie_a, code) = c.session_with_room(0).await;
        let (mut a, _) = web(&c, 0, &cookie_a, &code).await;
        let (mut b, b_id) = web(&c, 1, &c.session_for(1, &code).await, &code).await;
        a.expect("USER_CONNECT").await;
        let refusals = [
            (
                "SIGNAL",
                json!({"userId": b_id, "signalData": {"sdp": "x".repeat(17 * 1024)}}),
                413,
            ),
            (
                "LATENCY_PING",
                json!({"pad": "x".repeat(2000), "targetUserIds": [b_id]}),
                413,
            ),
            (
                "METRONOME_TICK",
                json!({"type": 5, "targetUserIds": [b_id]}),
                400,
            ),
            (
                "KEY_DOWN",
                json!({"note": 60, "velocity": 128, "targetUserIds": [b_id]}),
                400,
            ),
            (
                "KEY_DOWN",
                json!({"note": 60, "velocity": 1, "targetUserIds": vec![b_id.clone(); 51]}),
                400,
            ),
            ("USER_UPDATE", json!({"instrument": "KAZOO"}), 400),
            ("USER_UPDATE", json!({"displayName": " "}), 400),
            (
                "USER_UPDATE",
                json!({"userId": b_id, "displayName": "Hijack"}),
                403,
            ),
        ];
        for (name, payload, status) in refusals {
            a.emit(name, payload).await;
            let e = a.expect("exception").await;
            assert_eq!(
                (e["code"].as_u64(), e["event"].as_str()),
                (Some(status), Some(name)),
                "{e}"
            );
            assert!(
                e["message"].as_str().is_some_and(|m| !m.is_empty()) && e["timestamp"].is_string(),
                "{e}"
            );
        }
        // Targets outside the room are dropped without an error (the web client keeps
        // pinging players who left): the next exception is the one for a bad note sent after
        // them, and the members among the targets still get the event.
        let stranger = "00000000-0000-4000-8000-000000000000";
        let dropped_before =
            support::metric(c.admin(0), "p2piano_edge_dropped_targets_total").await;
        a.emit("SIGNAL", json!({"userId": stranger, "signalData": {}}))
            .await;
        a.emit(
            "LATENCY_PING",
            json!({"pingTime": 1, "targetUserIds": [stranger, b_id]}),
        )
        .await;
        a.emit("KEY_DOWN", json!({"note": 999, "targetUserIds": [b_id]}))
            .await;
        let e = a.expect("exception").await;
        assert_eq!(
            (e["code"].as_u64(), e["event"].as_str()),
            (Some(400), Some("KEY_DOWN")),
            "{e}"
        );
        assert_eq!(b.expect("LATENCY_PING").await["pingTime"], 1);
        let dropped = support::metric(c.admin(0), "p2piano_edge_dropped_targets_total").await;
        assert_eq!(
            dropped - dropped_before,
            2.0,
            "both dropped targets are counted"
        );
        // None of the refused events reached b, and b still hears a.
        a.emit("KEY_UP", json!({"note": 3, "targetUserIds": [b_id]}))
            .await;
        assert_eq!(b.expect("KEY_UP").await["note"], 3);
    }

    pub async fn dialects_meet_in_one_room(c: Cluster) {
        let (owner_cookie, code) = c.session_with_room(0).await;
        let (mut w, w_id) = web(&c, 0, &owner_cookie, &code).await;
        let s_cookie = c.session_for(1, &code).await;
        let mut s = service(&c, 1, &s_cookie).await;
        let joined = s
            .emit_ack("join-room", json!({"code": code, "displayName": "Svc"}), 1)
            .await;
        let s_id = joined["you"]["id"].as_str().unwrap().to_owned();
        assert_eq!(joined["room"]["participants"].as_array().unwrap().len(), 2);
        assert_eq!(w.expect("USER_CONNECT").await["userId"], s_id);
        // A player event sent as a peer-message reaches the web client as that event.
        s.emit(
            "peer-message",
            json!({"to": [w_id], "type": "KEY_DOWN", "data": {"note": 61, "velocity": 70}}),
        )
        .await;
        assert_eq!(
            w.next().await,
            Got::Event(
                "KEY_DOWN".into(),
                json!({"note": 61, "velocity": 70, "userId": s_id})
            )
        );
        // And a web client's event reaches the service socket as a peer-message.
        w.emit("KEY_UP", json!({"note": 61, "targetUserIds": [s_id]}))
            .await;
        assert_eq!(
            s.expect("peer-message").await,
            json!({"from": w_id, "type": "KEY_UP", "data": {"note": 61}})
        );
        // A peer-message type the web client does not know reaches service sockets only.
        let s2_cookie = c.session_for(0, &code).await;
        let mut s2 = service(&c, 0, &s2_cookie).await;
        let s2_id = s2.emit_ack("join-room", json!({"code": code}), 1).await["you"]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(w.expect("USER_CONNECT").await["userId"], s2_id);
        assert_eq!(s.expect("user-joined").await["user"]["id"], s2_id);
        s.emit("peer-message", json!({"type": "chat", "data": "hello"}))
            .await;
        assert_eq!(
            s2.expect("peer-message").await,
            json!({"from": s_id, "type": "chat", "data": "hello"})
        );
        // The owner changes the settings over HTTP: service sockets get room-updated.
        let r = support::request(
            c.edge(1),
            "PUT",
            &format!("/rooms/{code}"),
            &[("Cookie", &owner_cookie)],
            Some(r#"{"settings":{"name":"Late jam"}}"#),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        for sock in [&mut s, &mut s2] {
            assert_eq!(
                sock.expect("room-updated").await["room"]["settings"]["name"],
                "Late jam"
            );
        }
        // Joining another room leaves this one first: everyone here sees the leave.
        let (_, other) = c.session_with_room(1).await;
        let moved = s.emit_ack("join-room", json!({"code": other}), 2).await;
        assert_eq!(
            (moved["ok"].as_bool(), moved["room"]["code"].as_str()),
            (Some(true), Some(other.as_str()))
        );
        let gone = w.expect("USER_DISCONNECT").await;
        assert_eq!(gone["userId"], s_id);
        assert!(gone["room"]["users"].get(&s_id).is_none());
        assert_eq!(s2.expect("user-left").await["userId"], s_id);
        // Events to a member who moved away are dropped without an error: the next exception
        // is the one for the bad note sent after it.
        w.emit("KEY_UP", json!({"note": 1, "targetUserIds": [s_id]}))
            .await;
        w.emit("KEY_UP", json!({"note": -1, "targetUserIds": [s_id]}))
            .await;
        let e = w.expect("exception").await;
        assert_eq!(
            (e["code"].as_u64(), e["event"].as_str()),
            (Some(400), Some("KEY_UP")),
            "{e}"
        );
    }

    pub async fn service_dialect_errors_and_limits(c: Cluster) {
        let (cookie, code) = c.session_with_room(0).await;
        let mut s = service(&c, 0, &cookie).await;
        let refusal = |v: serde_json::Value| {
            (
                v["ok"].as_bool(),
                v["error"]["code"].as_str().map(str::to_owned),
            )
        };
        let no = |code: &str| (Some(false), Some(code.to_owned()));
        // Not in a room yet.
        assert_eq!(
            refusal(s.emit_ack("leave-room", json!({}), 1).await),
            no("invalid")
        );
        assert_eq!(
            refusal(
                s.emit_ack("peer-message", json!({"type": "chat", "data": 1}), 2)
                    .await
            ),
            no("forbidden")
        );
        // Unknown room, malformed commands.
        assert_eq!(
            refusal(s.emit_ack("join-room", json!({"code": "zzzzz"}), 3).await),
            no("not_found")
        );
        assert_eq!(
            refusal(
                s.emit_ack("join-room", json!({"code": code, "instrument": "KAZOO"}), 4)
                    .await
            ),
            no("invalid")
        );
        assert_eq!(
            refusal(s.emit_ack("no-such-command", json!({}), 5).await),
            no("invalid")
        );
        assert_eq!(
            s.emit_ack("join-room", json!({"code": code}), 6).await["ok"],
            true
        );
        // A full room is `full`, as the service said it, in the ack and in the error event.
        let body = json!({"settings": {"maxParticipants": 1}}).to_string();
        let r = support::request(
            c.edge(0),
            "PUT",
            &format!("/rooms/{code}"),
            &[("Cookie", &cookie), ("Content-Type", "application/json")],
            Some(&body),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let announced = s.expect("room-updated").await;
        assert_eq!(announced["room"]["settings"]["maxParticipants"], 1);
        let late = c.session_for(0, &code).await;
        let mut t = service(&c, 0, &late).await;
        assert_eq!(
            refusal(t.emit_ack("join-room", json!({"code": code}), 1).await),
            no("full")
        );
        t.emit("join-room", json!({"code": code})).await;
        assert_eq!(t.expect("error").await["code"], "full");
        assert_eq!(
            refusal(s.emit_ack("user-update", json!({"color": "red"}), 7).await),
            no("invalid")
        );
        let stranger = "00000000-0000-4000-8000-000000000000";
        assert_eq!(
            refusal(
                s.emit_ack("webrtc-signal", json!({"to": stranger, "signal": {}}), 8)
                    .await
            ),
            no("forbidden")
        );
        let big = json!({"to": stranger, "signal": {"sdp": "x".repeat(17 * 1024)}});
        assert_eq!(
            refusal(s.emit_ack("webrtc-signal", big, 9).await),
            no("too_large")
        );
        // The same limits as the client dialect: 200 other events per 10 s, then rate_limited,
        // and the socket stays.
        for i in 0..200u64 {
            s.emit("peer-message", json!({"type": "chat", "data": i}))
                .await;
        }
        assert_eq!(
            refusal(
                s.emit_ack("peer-message", json!({"type": "chat", "data": 200}), 10)
                    .await
            ),
            no("rate_limited")
        );
        s.emit("peer-message", json!({"type": "chat", "data": 201}))
            .await;
        assert_eq!(s.expect("error").await["code"], "rate_limited");
        assert_eq!(
            s.emit_ack("user-update", json!({"displayName": "Still here"}), 11)
                .await["ok"],
            true
        );
    }
}

/// A service-dialect socket of `cookie` on edge `i`, connected to `/`.
async fn service(c: &Cluster, i: usize, cookie: &str) -> SioClient {
    let mut s = SioClient::open(c.edge(i), "", &[("Cookie", cookie)])
        .await
        .expect("socket opens");
    assert!(matches!(s.connect("/", None).await, Got::Connected(_)));
    s
}
