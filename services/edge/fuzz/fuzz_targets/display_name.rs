//! Fuzz target `display_name`: `DisplayName::parse` on arbitrary text. An accepted name is
//! 1–50 characters, trimmed, without control characters, and parses again to itself.

#![no_main]

use libfuzzer_sys::fuzz_target;
use p2piano_edge::protocol::DisplayName;
use p2piano_edge::protocol::validate::DISPLAY_NAME_MAX;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(name) = DisplayName::parse(&text) {
        let s = name.as_str();
        let n = s.chars().count();
        assert!((1..=DISPLAY_NAME_MAX).contains(&n), "{s:?}");
        assert_eq!(s, s.trim(), "{s:?}");
        assert!(!s.chars().any(char::is_control), "{s:?}");
        assert_eq!(DisplayName::parse(s).as_ref(), Ok(&name));
    }
});
