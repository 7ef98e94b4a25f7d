//! Unit tests of the codec: every packet form the edge meets (the frames of docs/protocol.md
//! and of the original service's transcript), round trips, malformed input, and random
//! input that must never panic.

use serde_json::{Value, json};

use super::*;

/// Parses a whole text frame as the socket task does: Engine.IO, then Socket.IO.
pub(super) fn frame(text: &str) -> Result<SioPacket, FrameError> {
    match parse_engine(text)? {
        EioPacket::Message(inner) => parse_socketio(inner),
        other => panic!("not a message: {other:?}"),
    }
}

pub(super) fn packet(
    kind: SioKind,
    ns: &str,
    ack_id: Option<u64>,
    data: Option<Value>,
) -> SioPacket {
    SioPacket {
        kind,
        namespace: ns.to_owned(),
        attachments: 0,
        ack_id,
        data,
    }
}

// ---- Engine.IO ----

#[test]
fn engine_packet_types() {
    let open = r#"0{"sid":"abc","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#;
    assert_eq!(parse_engine(open), Ok(EioPacket::Open));
    assert_eq!(parse_engine("1"), Ok(EioPacket::Close));
    assert_eq!(parse_engine("2"), Ok(EioPacket::Ping("")));
    assert_eq!(parse_engine("2probe"), Ok(EioPacket::Ping("probe")));
    assert_eq!(parse_engine("3"), Ok(EioPacket::Pong("")));
    assert_eq!(parse_engine("3probe"), Ok(EioPacket::Pong("probe")));
    assert_eq!(parse_engine("40/api,"), Ok(EioPacket::Message("0/api,")));
    assert_eq!(parse_engine("5"), Ok(EioPacket::Upgrade));
    assert_eq!(parse_engine("6"), Ok(EioPacket::Noop));
}

#[test]
fn engine_garbage() {
    assert_eq!(parse_engine(""), Err(FrameError::Empty));
    assert_eq!(parse_engine("9"), Err(FrameError::UnknownEngineType('9')));
    assert_eq!(
        parse_engine("bAAAA"),
        Err(FrameError::UnknownEngineType('b'))
    );
    assert_eq!(parse_engine("é4"), Err(FrameError::UnknownEngineType('é')));
    assert_eq!(
        parse_engine("\u{1F3B9}"),
        Err(FrameError::UnknownEngineType('\u{1F3B9}'))
    );
    // "4" is an empty Engine.IO message, valid there; Socket.IO refuses it, fatally.
    assert_eq!(parse_engine("4"), Ok(EioPacket::Message("")));
    assert_eq!(frame("4"), Err(FrameError::Empty));
    assert!(FrameError::Empty.is_fatal());
    assert!(FrameError::UnknownEngineType('9').is_fatal());
}

#[test]
fn engine_encoders() {
    assert_eq!(
        encode_open("abc", 25000, 20000, 1_000_000),
        r#"0{"sid":"abc","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#
    );
    let open = encode_open("a\"b", 1, 2, 3);
    let body: Value = serde_json::from_str(&open[1..]).unwrap();
    assert_eq!(body["sid"], "a\"b");
    assert_eq!(PING, "2");
    assert_eq!(parse_engine(PING), Ok(EioPacket::Ping("")));
    assert_eq!(encode_pong(""), "3");
    assert_eq!(encode_pong("probe"), "3probe");
}

// ---- Socket.IO: the forms of docs/protocol.md and the transcript ----

#[test]
fn connect_forms() {
    assert_eq!(
        frame("40/api,"),
        Ok(packet(SioKind::Connect, "/api", None, None))
    );
    assert_eq!(
        frame("40/api"),
        Ok(packet(SioKind::Connect, "/api", None, None))
    );
    assert_eq!(
        frame(r#"40/api,{"sessionId":"0b6c7a6e"}"#),
        Ok(packet(
            SioKind::Connect,
            "/api",
            None,
            Some(json!({"sessionId": "0b6c7a6e"}))
        ))
    );
    assert_eq!(
        frame(r#"40/api,{"sid":"xyz"}"#),
        Ok(packet(
            SioKind::Connect,
            "/api",
            None,
            Some(json!({"sid": "xyz"}))
        ))
    );
    assert_eq!(frame("40"), Ok(packet(SioKind::Connect, "/", None, None)));
    assert_eq!(
        frame(r#"40{"sessionId":"s"}"#),
        Ok(packet(
            SioKind::Connect,
            "/",
            None,
            Some(json!({"sessionId": "s"}))
        ))
    );
    assert_eq!(
        frame(r#"44/api,{"message":"Session required"}"#),
        Ok(packet(
            SioKind::ConnectError,
            "/api",
            None,
            Some(json!({"message": "Session required"}))
        ))
    );
    assert_eq!(
        frame("41/api,"),
        Ok(packet(SioKind::Disconnect, "/api", None, None))
    );
    assert_eq!(
        frame("41"),
        Ok(packet(SioKind::Disconnect, "/", None, None))
    );
}

#[test]
fn event_forms() {
    let p =
        frame(r#"42/api,["KEY_DOWN",{"note":60,"velocity":100,"targetUserIds":["u1"]}]"#).unwrap();
    assert_eq!(p.kind, SioKind::Event);
    assert_eq!(p.namespace, "/api");
    assert_eq!(p.ack_id, None);
    let (event, ack) = p.into_event().unwrap();
    assert_eq!(event.name, "KEY_DOWN");
    assert_eq!(
        event.args,
        vec![json!({"note": 60, "velocity": 100, "targetUserIds": ["u1"]})]
    );
    assert_eq!(ack, None);

    let p = frame(r#"42/api,7["USER_UPDATE",{"displayName":"x"}]"#).unwrap();
    assert_eq!(p.ack_id, Some(7));
    let (event, ack) = p.into_event().unwrap();
    assert_eq!((event.name.as_str(), ack), ("USER_UPDATE", Some(7)));

    let p = frame(r#"42["join-room",{"code":"fxa3x"}]"#).unwrap();
    assert_eq!(p.namespace, "/");
    let (event, ack) = p.into_event().unwrap();
    assert_eq!(
        event,
        Event {
            name: "join-room".into(),
            args: vec![json!({"code": "fxa3x"})]
        }
    );
    assert_eq!(ack, None);

    let (event, ack) = frame(r#"4212["leave-room",{}]"#)
        .unwrap()
        .into_event()
        .unwrap();
    assert_eq!(
        (event.name.as_str(), event.args.len(), ack),
        ("leave-room", 1, Some(12))
    );

    let (event, _) = frame(r#"42/api,["NEWER_CONNECTION"]"#)
        .unwrap()
        .into_event()
        .unwrap();
    assert_eq!(
        event,
        Event {
            name: "NEWER_CONNECTION".into(),
            args: vec![]
        }
    );

    let (event, _) = frame(r#"42["a",1,"two",null]"#)
        .unwrap()
        .into_event()
        .unwrap();
    assert_eq!(event.args, vec![json!(1), json!("two"), Value::Null]);
}

#[test]
fn ack_and_binary_forms() {
    assert_eq!(
        frame(r#"43/api,7[{"ok":true}]"#),
        Ok(packet(
            SioKind::Ack,
            "/api",
            Some(7),
            Some(json!([{"ok": true}]))
        ))
    );
    assert_eq!(
        frame("437[]"),
        Ok(packet(SioKind::Ack, "/", Some(7), Some(json!([]))))
    );

    let p = frame(r#"451-/api,["AUTOMERGE_PROTOCOL",{"_placeholder":true,"num":0}]"#).unwrap();
    assert_eq!(
        (p.kind, p.namespace.as_str(), p.attachments, p.ack_id),
        (SioKind::BinaryEvent, "/api", 1, None)
    );
    let p = frame(
        r#"452-3["peer-message",{"_placeholder":true,"num":1},{"_placeholder":true,"num":0}]"#,
    )
    .unwrap();
    assert_eq!(
        (p.kind, p.namespace.as_str(), p.attachments, p.ack_id),
        (SioKind::BinaryEvent, "/", 2, Some(3))
    );
    let p = frame(r#"461-/api,4[{"_placeholder":true,"num":0}]"#).unwrap();
    assert_eq!(
        (p.kind, p.attachments, p.ack_id),
        (SioKind::BinaryAck, 1, Some(4))
    );
}

#[test]
fn namespace_rules() {
    let ns64 = format!("/{}", "a".repeat(63));
    assert_eq!(frame(&format!("40{ns64},")).unwrap().namespace, ns64);
    assert_eq!(
        frame(&format!("40/{},", "a".repeat(64))),
        Err(FrameError::BadNamespace)
    );
    // Counted in characters, not bytes.
    let wide = format!("/{}", "é".repeat(63));
    assert_eq!(frame(&format!("40{wide},")).unwrap().namespace, wide);
    assert_eq!(frame("40/a\u{1}pi,"), Err(FrameError::BadNamespace));
    assert_eq!(frame("40/a\npi,"), Err(FrameError::BadNamespace));
    assert_eq!(frame("40/api\u{7f},"), Err(FrameError::BadNamespace));
    assert_eq!(frame("40/api\u{85},"), Err(FrameError::BadNamespace));
    // A namespace without a ',' runs to the end of the packet.
    assert_eq!(frame("42/api"), Err(FrameError::BadEventShape));
    assert_eq!(frame("41/,").unwrap().namespace, "/");
    assert!(FrameError::BadNamespace.is_fatal());
}

#[test]
fn ack_id_rules() {
    let max = frame(r#"42/api,9007199254740991["a"]"#).unwrap();
    assert_eq!(max.ack_id, Some(MAX_ACK_ID));
    assert_eq!(
        frame(r#"42/api,9007199254740992["a"]"#),
        Err(FrameError::BadAckId)
    );
    assert_eq!(
        frame(r#"42/api,99999999999999999999["a"]"#),
        Err(FrameError::BadAckId)
    );
    assert_eq!(
        frame(&format!("42/api,{}[\"a\"]", "9".repeat(10_000))),
        Err(FrameError::BadAckId)
    );
    assert_eq!(frame(r#"42/api,007["a"]"#).unwrap().ack_id, Some(7));
    assert_eq!(frame("40/api,1{}"), Err(FrameError::BadAckId));
    assert_eq!(frame("401"), Err(FrameError::BadAckId));
    assert_eq!(frame("41/api,3"), Err(FrameError::BadAckId));
    assert_eq!(
        frame(r#"44/api,1{"message":"x"}"#),
        Err(FrameError::BadAckId)
    );
    assert_eq!(frame("43/api,[]"), Err(FrameError::BadAckId));
    assert_eq!(
        frame(r#"461-[{"_placeholder":true,"num":0}]"#),
        Err(FrameError::BadAckId)
    );
    assert!(FrameError::BadAckId.is_fatal());
}

#[test]
fn malformed_socketio() {
    assert_eq!(parse_socketio(""), Err(FrameError::Empty));
    assert_eq!(frame("49"), Err(FrameError::UnknownSocketType('9')));
    assert_eq!(frame("4x"), Err(FrameError::UnknownSocketType('x')));
    assert_eq!(frame("4ü"), Err(FrameError::UnknownSocketType('ü')));
    // Event payload problems: refused to the sender, the socket stays.
    for (text, err) in [
        ("42/api", FrameError::BadEventShape),
        ("42/api,", FrameError::BadEventShape),
        ("42/api,7", FrameError::BadEventShape),
        ("42/api,[", FrameError::NotJson),
        ("42/api,[\"a\",]", FrameError::NotJson),
        ("42/api,[\"a\"] x", FrameError::NotJson),
        ("42/api,abc", FrameError::NotJson),
        ("42-[\"a\"]", FrameError::NotJson),
        ("42/api,{}", FrameError::BadEventShape),
        ("42/api,[1]", FrameError::BadEventShape),
        ("42/api,[]", FrameError::BadEventShape),
        ("42/api,\"a\"", FrameError::BadEventShape),
        ("42/api,[null,\"a\"]", FrameError::BadEventShape),
    ] {
        let got = frame(text);
        assert_eq!(got, Err(err.clone()), "{text}");
        assert!(!err.is_fatal(), "{text}");
    }
    // Everything else: the socket closes.
    for (text, err) in [
        ("45-/api,[]", FrameError::BadAttachmentCount),
        ("45", FrameError::BadAttachmentCount),
        ("451", FrameError::BadAttachmentCount),
        ("451/api,[\"a\"]", FrameError::BadAttachmentCount),
        (
            "4599999999999999999999-[\"a\"]",
            FrameError::BadAttachmentCount,
        ),
        ("451-/api,[]", FrameError::BadPayload),
        ("451-/api,{}", FrameError::BadPayload),
        ("451-/api,[", FrameError::BadPayload),
        ("451-/api,", FrameError::BadPayload),
        ("40/api,[1]", FrameError::BadPayload),
        ("40/api,\"s\"", FrameError::BadPayload),
        ("40/api,{bad", FrameError::BadPayload),
        ("41/api,{}", FrameError::BadPayload),
        ("43/api,7", FrameError::BadPayload),
        ("43/api,7{}", FrameError::BadPayload),
        ("44/api,", FrameError::BadPayload),
        ("44/api,[1]", FrameError::BadPayload),
    ] {
        let got = frame(text);
        assert_eq!(got, Err(err.clone()), "{text}");
        assert!(err.is_fatal(), "{text}");
    }
    assert_eq!(
        frame(r#"44/api,"refused""#).unwrap().data,
        Some(json!("refused"))
    );
}

#[test]
fn nesting_depth() {
    let nested = |depth: usize| {
        format!(
            "42[\"e\",{}{}]",
            "[".repeat(depth - 1),
            "]".repeat(depth - 1)
        )
    };
    // The event array is level 1.
    assert!(frame(&nested(MAX_DEPTH)).is_ok());
    assert_eq!(frame(&nested(MAX_DEPTH + 1)), Err(FrameError::TooDeep));
    assert_eq!(
        frame(&format!("42{}", "[".repeat(10_000))),
        Err(FrameError::TooDeep)
    );
    assert_eq!(
        frame(&format!("42/api,{}", "[".repeat(10_000))),
        Err(FrameError::TooDeep)
    );
    let objects = format!(
        "42[\"e\",{}1{}]",
        "{\"a\":".repeat(10_000),
        "}".repeat(10_000)
    );
    assert_eq!(frame(&objects), Err(FrameError::TooDeep));
    assert!(!FrameError::TooDeep.is_fatal());
    // Elsewhere too deep is a fatal payload error.
    assert_eq!(
        frame(&format!("40{}", "{\"a\":".repeat(100))),
        Err(FrameError::BadPayload)
    );
    // Brackets inside strings, escaped quotes included, do not count.
    let in_string = format!(
        "42[\"e\",\"{}\",\"\\\"{}\\\\\"]",
        "[".repeat(100),
        "{".repeat(100)
    );
    let (event, _) = frame(&in_string).unwrap().into_event().unwrap();
    assert_eq!(event.args.len(), 2);
    // Many openers side by side are not depth: more than the limit of them, never nested
    // more than two deep, pass the scan that the count sends them to.
    let siblings = format!("42[\"e\",[{}]]", vec!["{}"; MAX_DEPTH * 4].join(","));
    let (event, _) = frame(&siblings).unwrap().into_event().unwrap();
    assert_eq!(event.args[0].as_array().map(Vec::len), Some(MAX_DEPTH * 4));
    let mut deep = Value::Null;
    for _ in 0..MAX_DEPTH + 1 {
        deep = json!([deep]);
    }
    assert_eq!(
        frame(&encode_event("/", "e", &[&deep])),
        Err(FrameError::TooDeep)
    );
}

#[test]
fn into_event_refusals() {
    assert_eq!(
        packet(SioKind::Connect, "/", None, None).into_event(),
        Err(FrameError::NotAnEvent)
    );
    assert_eq!(
        packet(SioKind::Ack, "/", Some(1), Some(json!(["a"]))).into_event(),
        Err(FrameError::NotAnEvent)
    );
    assert_eq!(
        packet(SioKind::Event, "/", None, None).into_event(),
        Err(FrameError::BadEventShape)
    );
    assert_eq!(
        packet(SioKind::Event, "/", None, Some(json!([]))).into_event(),
        Err(FrameError::BadEventShape)
    );
    assert_eq!(
        packet(SioKind::Event, "/", None, Some(json!([1, "a"]))).into_event(),
        Err(FrameError::BadEventShape)
    );
    assert!(FrameError::NotAnEvent.is_fatal());
    assert!(!FrameError::BadEventShape.is_fatal());
}

#[test]
fn kind_digits() {
    for c in '0'..='6' {
        assert_eq!(SioKind::from_digit(c).map(SioKind::digit), Some(c));
    }
    assert_eq!(SioKind::from_digit('7'), None);
}
