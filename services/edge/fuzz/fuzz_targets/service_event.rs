//! Fuzz target `service_event`: the service dialect's command validator
//! (`events::service::parse`) on an arbitrary command name and payload (`name \n json`; a
//! payload that is not JSON is passed as a string). It never panics, a relay has at most
//! 50 targets, and a refusal is a 4xx with a message.

#![no_main]

use libfuzzer_sys::fuzz_target;
use p2piano_edge::events::{Action, MAX_TARGETS, service};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (name, payload) = text.split_once('\n').unwrap_or((&text, ""));
    let value: Value =
        serde_json::from_str(payload).unwrap_or_else(|_| Value::String(payload.to_owned()));
    for payload in [Some(value.clone()), None] {
        match service::parse(name, payload) {
            Ok(Action::Relay { to, .. }) => {
                assert!(to.as_ref().is_none_or(|t| t.len() <= MAX_TARGETS));
            }
            Ok(_) => {}
            Err(refusal) => {
                assert!((400..500).contains(&refusal.status()), "{refusal:?}");
                assert!(!refusal.message.is_empty());
            }
        }
    }
});
