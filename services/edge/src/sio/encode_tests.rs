//! Unit tests of the codec's encoders: exact frames, JSON strings escaped as serde would,
//! and round trips through the parser.

use serde_json::{Value, json};

use super::tests::{frame, packet};
use super::*;

#[test]
fn encoders_exact() {
    let payload = json!({"userId": "u1", "room": {"roomId": "fxa3x"}});
    assert_eq!(
        encode_connect("/api", "abc", None),
        r#"40/api,{"sid":"abc"}"#
    );
    assert_eq!(encode_connect("/", "abc", None), r#"40{"sid":"abc"}"#);
    assert_eq!(
        encode_connect("/api", "abc", Some("p1")),
        r#"40/api,{"sid":"abc","pid":"p1"}"#
    );
    assert_eq!(
        encode_connect_error("/api", "Room not found"),
        r#"44/api,{"message":"Room not found"}"#
    );
    assert_eq!(encode_connect_error("/", "no"), r#"44{"message":"no"}"#);
    assert_eq!(encode_disconnect("/api"), "41/api,");
    assert_eq!(encode_disconnect("/"), "41");
    assert_eq!(
        encode_event("/api", "NEWER_CONNECTION", &[]),
        r#"42/api,["NEWER_CONNECTION"]"#
    );
    assert_eq!(
        encode_event("/api", "ROOM_JOIN", &[&payload]),
        r#"42/api,["ROOM_JOIN",{"userId":"u1","room":{"roomId":"fxa3x"}}]"#
    );
    assert_eq!(
        encode_event("/", "user-left", &[&json!({"userId": "u"})]),
        r#"42["user-left",{"userId":"u"}]"#
    );
    assert_eq!(
        encode_event_with_ack("/api", 7, "PING", &[&json!(1)]),
        r#"42/api,7["PING",1]"#
    );
    assert_eq!(encode_event_with_ack("/", 0, "x", &[]), r#"420["x"]"#);
    assert_eq!(
        encode_ack("/api", 7, &[&json!({"ok": true})]),
        r#"43/api,7[{"ok":true}]"#
    );
    assert_eq!(
        encode_ack("/", 7, &[&json!(1), &json!("b")]),
        r#"437[1,"b"]"#
    );
    assert_eq!(encode_ack("/", 7, &[]), "437[]");
}

#[test]
fn json_strings_escape_like_serde() {
    let mut all: String = (0u8..0x80).map(char::from).collect();
    all.push_str("é\u{2028}\u{1F3B9}\u{7f}");
    for s in [all.as_str(), "", "plain", "\"", "\\", "a\"b\\c\nd\u{0}"] {
        let mut out = String::new();
        encode::push_json_str(&mut out, s);
        assert_eq!(out, serde_json::to_string(s).unwrap());
    }
}

#[test]
fn round_trips() {
    let payload = json!({"note": 60, "velocity": 100, "userId": "ü\"\n", "x": [1.5, null, true]});
    for ns in ["/", "/api"] {
        let p = frame(&encode_event(ns, "KEY_DOWN", &[&payload])).unwrap();
        assert_eq!(
            (p.kind, p.namespace.as_str(), p.ack_id),
            (SioKind::Event, ns, None)
        );
        let (event, _) = p.into_event().unwrap();
        assert_eq!(
            event,
            Event {
                name: "KEY_DOWN".into(),
                args: vec![payload.clone()]
            }
        );

        let (event, ack) = frame(&encode_event_with_ack(
            ns,
            MAX_ACK_ID,
            "we\"ird\u{1}",
            &[&payload, &json!(2)],
        ))
        .unwrap()
        .into_event()
        .unwrap();
        assert_eq!(
            (event.name.as_str(), event.args.len(), ack),
            ("we\"ird\u{1}", 2, Some(MAX_ACK_ID))
        );

        let p = frame(&encode_ack(ns, 7, &[&payload])).unwrap();
        assert_eq!(p, packet(SioKind::Ack, ns, Some(7), Some(json!([payload]))));
        assert_eq!(
            frame(&encode_connect(ns, "s", Some("p"))).unwrap(),
            packet(
                SioKind::Connect,
                ns,
                None,
                Some(json!({"sid": "s", "pid": "p"}))
            )
        );
        let p = frame(&encode_connect_error(ns, "m")).unwrap();
        assert_eq!(
            p,
            packet(
                SioKind::ConnectError,
                ns,
                None,
                Some(json!({"message": "m"}))
            )
        );
        assert_eq!(
            frame(&encode_disconnect(ns)).unwrap(),
            packet(SioKind::Disconnect, ns, None, None)
        );
    }
}

/// The client relay encoder writes exactly what copying the map, inserting `userId` and
/// encoding the event would: key order, a `userId` replaced in place, escapes, nesting.
#[test]
fn client_relay_is_the_map_with_the_user_added() {
    let user = "u\"1\\é";
    for data in [
        json!({}),
        json!({"note": 60, "velocity": 100}),
        json!({"z": [1, {"b": null}], "a": "x\ny", "userId": "forged", "m": 1.5}),
    ] {
        let Value::Object(map) = &data else {
            unreachable!()
        };
        let mut copy = map.clone();
        copy.insert("userId".to_owned(), Value::String(user.to_owned()));
        let expected = encode_event("/api", "KEY_DOWN", &[&Value::Object(copy)]);
        assert_eq!(encode_client_relay("/api", "KEY_DOWN", map, user), expected);
    }
}
