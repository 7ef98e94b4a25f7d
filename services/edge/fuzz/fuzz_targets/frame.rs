//! Fuzz target `frame`: arbitrary bytes through every parser of the edge's frame codec.
//!
//! The input is a text frame, optionally followed by binary frames, each introduced by a
//! NUL byte: `text \0 bin0 \0 bin1 ...`. Beyond "never panics", it checks what the socket
//! task relies on: an event re-encodes to an equal event, and a binary assembly completes
//! after exactly the announced number of frames and refuses one more.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use p2piano_edge::sio::{
    self, BinaryAssembly, EioPacket, FrameError, SioKind, SioPacket, parse_engine, parse_socketio,
};

fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|&b| b == 0);
    let text = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let binaries: Vec<Bytes> = parts.map(Bytes::copy_from_slice).collect();

    match parse_engine(&text) {
        Ok(EioPacket::Message(inner)) => socketio(inner, &binaries),
        Ok(EioPacket::Ping(probe)) => {
            assert_eq!(parse_engine(&sio::encode_pong(probe)), Ok(EioPacket::Pong(probe)));
        }
        _ => {}
    }
    // The Socket.IO parser on its own, without the Engine.IO prefix.
    socketio(&text, &binaries);
});

fn socketio(text: &str, binaries: &[Bytes]) {
    let packet = match parse_socketio(text) {
        Ok(packet) => packet,
        Err(e) => {
            let _ = e.is_fatal();
            return;
        }
    };
    if packet.kind.is_binary() {
        assemble(packet, binaries);
    } else if packet.kind == SioKind::Event {
        round_trip(packet);
    }
}

/// A parsed event, encoded again by the server's encoder, parses to the same event.
fn round_trip(packet: SioPacket) {
    let ns = packet.namespace.clone();
    let (event, ack) = packet.into_event().expect("a parsed event splits");
    let args: Vec<&serde_json::Value> = event.args.iter().collect();
    let text = match ack {
        Some(id) => sio::encode_event_with_ack(&ns, id, &event.name, &args),
        None => sio::encode_event(&ns, &event.name, &args),
    };
    let Ok(EioPacket::Message(inner)) = parse_engine(&text) else { panic!("not a message: {text}") };
    let again = parse_socketio(inner).expect("a re-encoded event parses");
    assert_eq!(again.namespace, ns);
    let (event2, ack2) = again.into_event().expect("a re-encoded event splits");
    assert_eq!((event2.name.as_str(), event2.args.len(), ack2), (event.name.as_str(), event.args.len(), ack));
}

/// An assembly completes on exactly the n-th frame and refuses the one after.
fn assemble(packet: SioPacket, binaries: &[Bytes]) {
    let n = packet.attachments;
    let Ok(mut asm) = BinaryAssembly::new(packet, 4) else { return };
    assert!((1..=4).contains(&n));
    for (i, frame) in binaries.iter().enumerate() {
        match asm.push(frame.clone()) {
            Ok(None) => assert!(i + 1 < n),
            Ok(Some((done, frames))) => {
                assert_eq!((i + 1, frames.len()), (n, n));
                if done.kind == SioKind::BinaryEvent {
                    let _ = done.into_event().expect("a binary event splits");
                }
            }
            Err(e) => {
                assert_eq!(e, FrameError::UnexpectedBinary);
                assert!(i >= n);
            }
        }
    }
}
