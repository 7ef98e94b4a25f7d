//! Fuzz target `room_code`: `RoomCode::parse` on arbitrary text. A code it accepts is 5
//! characters of the alphabet, parses again to itself, and survives a JSON round trip; a
//! JSON string that is no code is refused by deserialization too.

#![no_main]

use libfuzzer_sys::fuzz_target;
use p2piano_edge::protocol::RoomCode;
use p2piano_edge::protocol::validate::{ROOM_CODE_ALPHABET, ROOM_CODE_LEN};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let parsed = RoomCode::parse(&text);
    if let Ok(code) = &parsed {
        let s = code.as_str();
        assert_eq!(s.chars().count(), ROOM_CODE_LEN, "{s:?}");
        assert!(s.chars().all(|c| ROOM_CODE_ALPHABET.contains(c)), "{s:?}");
        assert_eq!(RoomCode::parse(s).as_ref(), Ok(code));
    }
    let json = serde_json::to_string(&text).unwrap();
    let from_json: Result<RoomCode, _> = serde_json::from_str(&json);
    assert_eq!(from_json.ok(), parsed.ok());
});
