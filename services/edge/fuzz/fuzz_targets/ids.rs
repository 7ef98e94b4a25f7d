//! Fuzz target `ids`: `UserId::parse` (public ids, UUIDs) and `SessionId::parse` (secrets,
//! 32 lower-case hex digits) on arbitrary text. Accepted values parse again to themselves;
//! a session id is exactly 32 lower-case hex digits.

#![no_main]

use libfuzzer_sys::fuzz_target;
use p2piano_edge::protocol::{SessionId, UserId};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(user) = UserId::parse(&text) {
        assert_eq!(UserId::parse(user.as_str()).as_ref(), Ok(&user));
        assert_eq!(user.as_str().len(), 36, "{user}");
    }
    if let Ok(session) = SessionId::parse(&text) {
        let s = session.expose();
        assert_eq!(s.len(), 32, "{s}");
        assert!(
            s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "{s}"
        );
    }
});
