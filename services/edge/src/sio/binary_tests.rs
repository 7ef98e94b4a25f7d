//! Unit tests of binary packets and of random input: the assembly of attachments, its
//! refusals, the binary encoder, and thousands of random frames that must never panic.

use bytes::Bytes;
use serde_json::{Value, json};

use super::tests::frame;
use super::*;

// ---- Binary ----

fn placeholder(num: i64) -> Value {
    json!({"_placeholder": true, "num": num})
}

fn binary(data: Value, n: usize) -> SioPacket {
    SioPacket {
        kind: SioKind::BinaryEvent,
        namespace: "/api".into(),
        attachments: n,
        ack_id: None,
        data: Some(data),
    }
}

#[test]
fn binary_assembly_completes() {
    let p =
        frame(r#"451-/api,["AUTOMERGE_PROTOCOL",{"syncMessage":{"_placeholder":true,"num":0}}]"#)
            .unwrap();
    let mut asm = BinaryAssembly::new(p.clone(), 4).unwrap();
    assert_eq!(asm.remaining(), 1);
    let (done, frames) = asm.push(Bytes::from_static(b"\x00\x01")).unwrap().unwrap();
    assert_eq!(done, p);
    assert_eq!(frames, vec![Bytes::from_static(b"\x00\x01")]);
    assert_eq!(asm.remaining(), 0);
    assert_eq!(asm.push(Bytes::new()), Err(FrameError::UnexpectedBinary));

    let p = binary(
        json!(["e", [placeholder(1), {"deep": [placeholder(0)]}], placeholder(2)]),
        3,
    );
    let mut asm = BinaryAssembly::new(p, 4).unwrap();
    assert_eq!(asm.push(Bytes::from_static(b"a")), Ok(None));
    assert_eq!(asm.push(Bytes::from_static(b"b")), Ok(None));
    assert_eq!(asm.remaining(), 1);
    let (_, frames) = asm.push(Bytes::from_static(b"c")).unwrap().unwrap();
    assert_eq!(frames, [&b"a"[..], b"b", b"c"].map(Bytes::from_static));
    assert_eq!(
        asm.push(Bytes::from_static(b"d")),
        Err(FrameError::UnexpectedBinary)
    );
    assert!(FrameError::UnexpectedBinary.is_fatal());

    let ack = frame(r#"461-/api,4[{"_placeholder":true,"num":0}]"#).unwrap();
    let mut asm = BinaryAssembly::new(ack, 4).unwrap();
    assert!(asm.push(Bytes::from_static(b"x")).unwrap().is_some());
}

#[test]
fn binary_assembly_refusals() {
    let five = format!(
        "455-/api,[\"e\",{}]",
        (0..5)
            .map(|i| placeholder(i).to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    assert_eq!(
        BinaryAssembly::new(frame(&five).unwrap(), 4).err(),
        Some(FrameError::TooManyAttachments)
    );
    assert!(BinaryAssembly::new(frame(&five).unwrap(), 5).is_ok());
    let zero = frame(r#"450-/api,["e"]"#).unwrap();
    assert_eq!(
        BinaryAssembly::new(zero, 4).err(),
        Some(FrameError::BadAttachmentCount)
    );
    let plain = frame(r#"42/api,["e"]"#).unwrap();
    assert_eq!(
        BinaryAssembly::new(plain, 4).err(),
        Some(FrameError::BadAttachmentCount)
    );

    for (data, n) in [
        (json!(["e", placeholder(1)]), 1),                 // out of range
        (json!(["e", placeholder(-1)]), 1),                // negative
        (json!(["e", placeholder(0), placeholder(0)]), 2), // duplicated, 1 missing
        (json!(["e", placeholder(0)]), 2),                 // missing
        (
            json!(["e", [placeholder(1), placeholder(0)], placeholder(1)]),
            2,
        ), // duplicated
        (json!(["e"]), 1),                                 // none at all
        (json!(["e", {"_placeholder": true, "num": "0"}]), 1),
        (json!(["e", {"_placeholder": true, "num": 0.5}]), 1),
        (json!(["e", {"_placeholder": true}]), 1),
        (json!(["e", {"_placeholder": false, "num": 0}]), 1), // not a placeholder: missing
        (
            json!(["e", placeholder(0), placeholder(1), placeholder(4)]),
            4,
        ),
    ] {
        assert_eq!(
            BinaryAssembly::new(binary(data.clone(), n), 4).err(),
            Some(FrameError::BadPlaceholder),
            "{data}"
        );
    }
    assert!(FrameError::BadPlaceholder.is_fatal() && FrameError::TooManyAttachments.is_fatal());

    // A hand-built value far deeper than the parser allows does not overflow the stack.
    let mut deep = placeholder(0);
    for _ in 0..100_000 {
        deep = Value::Array(vec![deep]);
    }
    let p = binary(Value::Array(vec![json!("e"), deep]), 1);
    let mut asm = BinaryAssembly::new(p, 4).expect("a deep but valid packet");
    let (p, _) = asm.push(Bytes::new()).unwrap().unwrap();
    // Dropping that value would recurse in serde_json: take it apart iteratively.
    let mut stack: Vec<Value> = p.data.into_iter().collect();
    while let Some(value) = stack.pop() {
        if let Value::Array(items) = value {
            stack.extend(items);
        }
    }
}

#[test]
fn binary_encoder() {
    let (text, frames) = encode_binary_event(
        "/api",
        "AUTOMERGE_PROTOCOL",
        &[&placeholder(0)],
        vec![Bytes::from_static(b"z")],
    );
    assert_eq!(
        text,
        r#"451-/api,["AUTOMERGE_PROTOCOL",{"_placeholder":true,"num":0}]"#
    );
    assert_eq!(frames.len(), 1);
    let p = frame(&text).unwrap();
    let mut asm = BinaryAssembly::new(p, 4).unwrap();
    let (p, got) = asm.push(frames[0].clone()).unwrap().unwrap();
    assert_eq!(got, frames);
    let (event, _) = p.into_event().unwrap();
    assert_eq!(event.args, vec![placeholder(0)]);

    let two = [&placeholder(0), &placeholder(1)];
    let (text, _) = encode_binary_event("/", "m", &two, vec![Bytes::new(), Bytes::new()]);
    assert_eq!(
        text,
        r#"452-["m",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#
    );
    let (text, frames) = encode_binary_event("/api", "m", &[], vec![]);
    assert_eq!((text.as_str(), frames.len()), (r#"42/api,["m"]"#, 0));
}

// ---- No panic on anything ----

/// Runs every parser on one input, as the fuzz target does.
fn exercise(input: &[u8]) {
    let text = String::from_utf8_lossy(input);
    let _ = parse_engine(&text);
    for candidate in [text.as_ref(), text.get(1..).unwrap_or_default()] {
        if let Ok(p) = parse_socketio(candidate) {
            let _ = p.clone().into_event();
            if let Ok(mut asm) = BinaryAssembly::new(p, 4) {
                for i in 0..6 {
                    let _ = asm.push(Bytes::copy_from_slice(&input[..i.min(input.len())]));
                }
            }
        }
    }
}

#[test]
fn random_input_never_panics() {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    let mut rng = StdRng::seed_from_u64(0x5eed_1234);
    // Raw bytes.
    for _ in 0..2000 {
        let len = rng.random_range(0..64);
        let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        exercise(&bytes);
    }
    // Strings over the codec's own alphabet, which reach much deeper.
    const ALPHABET: &[&str] = &[
        "0",
        "1",
        "2",
        "3",
        "4",
        "5",
        "6",
        "9",
        "-",
        "/",
        ",",
        "[",
        "]",
        "{",
        "}",
        "\"",
        "\\",
        ":",
        "a",
        "api",
        "_placeholder",
        "true",
        "num",
        "é",
        "\u{1}",
        " ",
        "null",
    ];
    for _ in 0..5000 {
        let mut s = String::from("4");
        for _ in 0..rng.random_range(0..40) {
            s.push_str(ALPHABET[rng.random_range(0..ALPHABET.len())]);
        }
        exercise(s.as_bytes());
    }
    // Mutations of real frames.
    const INSERTS: &[u8] = b"[]{}\",-/0123456789";
    let seeds = [
        r#"42/api,7["KEY_DOWN",{"note":60,"velocity":100,"targetUserIds":["u"]}]"#,
        r#"452-/api,3["e",{"_placeholder":true,"num":1},{"_placeholder":true,"num":0}]"#,
        r#"40/api,{"sessionId":"s"}"#,
    ];
    for _ in 0..3000 {
        let mut bytes = seeds[rng.random_range(0..seeds.len())].as_bytes().to_vec();
        for _ in 0..rng.random_range(1..4) {
            let at = rng.random_range(0..bytes.len());
            match rng.random_range(0..3) {
                0 => bytes[at] = rng.random(),
                1 => {
                    bytes.remove(at);
                }
                _ => bytes.insert(at, INSERTS[rng.random_range(0..INSERTS.len())]),
            }
            if bytes.is_empty() {
                break;
            }
        }
        exercise(&bytes);
    }
}
