//! Fuzz target `client_event`: the client dialect's event validator
//! (`events::client::parse`) on an arbitrary event name and payload. The input is
//! `name \n json`; a payload that is not JSON is passed as a string. Beyond "never panics":
//! a relay has at most 50 targets and carries no `targetUserIds`, and a relayed event is
//! small enough to have come in one 64 KiB frame.

#![no_main]

use libfuzzer_sys::fuzz_target;
use p2piano_edge::events::{Action, MAX_TARGETS, client};
use p2piano_edge::protocol::UserId;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (name, payload) = text.split_once('\n').unwrap_or((&text, ""));
    let value: Value =
        serde_json::from_str(payload).unwrap_or_else(|_| Value::String(payload.to_owned()));
    let me = UserId::parse("00000000-0000-4000-8000-000000000001").unwrap();
    for payload in [Some(value.clone()), None] {
        match client::parse(name, payload, &me) {
            Ok(Action::Relay { to, data, .. }) => {
                assert!(to.as_ref().is_none_or(|t| t.len() <= MAX_TARGETS));
                assert!(data.get("targetUserIds").is_none(), "{data}");
            }
            Ok(_) => {}
            Err(refusal) => {
                assert!([400, 403, 413].contains(&refusal.status()), "{refusal:?}");
                assert!(!refusal.message.is_empty());
            }
        }
    }
});
