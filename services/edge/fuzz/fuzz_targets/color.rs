//! Fuzz target `color`: `Color::parse` on arbitrary text. An accepted colour is `#rgb`,
//! `#rrggbb` or `#rrggbbaa`, and its canonical `#rrggbbaa` form parses to the same canonical
//! form.

#![no_main]

use libfuzzer_sys::fuzz_target;
use p2piano_edge::protocol::Color;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(color) = Color::parse(&text) {
        let s = color.as_str();
        assert!(s.starts_with('#') && [4, 7, 9].contains(&s.len()), "{s:?}");
        assert!(s[1..].bytes().all(|b| b.is_ascii_hexdigit()), "{s:?}");
        let canonical = color.canonical();
        assert_eq!(canonical.len(), 9, "{canonical}");
        let again = Color::parse(&canonical).expect("the canonical form parses");
        assert_eq!(again.canonical(), canonical);
    }
});
