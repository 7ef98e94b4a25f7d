//! Fuzz target `instrument`: `Instrument::parse` on arbitrary text, and deserialization from
//! a JSON string. Only the client's three names are accepted, by both.

#![no_main]

use libfuzzer_sys::fuzz_target;
use p2piano_edge::protocol::Instrument;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let parsed = Instrument::parse(&text);
    assert_eq!(
        parsed.is_ok(),
        Instrument::NAMES.contains(&text.as_ref()),
        "{text:?}"
    );
    let json = serde_json::to_string(&text).unwrap();
    let from_json: Result<Instrument, _> = serde_json::from_str(&json);
    assert_eq!(from_json.ok(), parsed.ok());
});
