//! Headers that can carry trace context.

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;

/// A string map of message headers (bus message headers, usually) that trace context can
/// be written to and read from. A small trait of our own: telemetry adapts the bus's header
/// type here, so that the bus, which only moves messages, knows nothing of tracing.
pub trait HeaderCarrier {
    /// Sets header `key` to `value`, replacing any previous value.
    fn set(&mut self, key: &str, value: String);
    /// The value of header `key`, if present.
    fn get(&self, key: &str) -> Option<&str>;
}

/// Bus headers carry trace context directly: `inject_context(&mut headers)` before
/// publishing, `set_parent_from(&span, &msg.headers)` on receipt, with no intermediate map
/// per message.
impl HeaderCarrier for p2piano_bus::Headers {
    fn set(&mut self, key: &str, value: String) {
        self.insert(key, value);
    }

    fn get(&self, key: &str) -> Option<&str> {
        p2piano_bus::Headers::get(self, key)
    }
}

impl HeaderCarrier for BTreeMap<String, String> {
    fn set(&mut self, key: &str, value: String) {
        self.insert(key.to_owned(), value);
    }

    fn get(&self, key: &str) -> Option<&str> {
        BTreeMap::get(self, key).map(String::as_str)
    }
}

impl<S: BuildHasher> HeaderCarrier for HashMap<String, String, S> {
    fn set(&mut self, key: &str, value: String) {
        self.insert(key.to_owned(), value);
    }

    fn get(&self, key: &str) -> Option<&str> {
        HashMap::get(self, key).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(carrier: &mut impl HeaderCarrier) {
        carrier.set("traceparent", "a".to_owned());
        carrier.set("traceparent", "b".to_owned());
        assert_eq!(carrier.get("traceparent"), Some("b"));
        assert_eq!(carrier.get("tracestate"), None);
    }

    #[test]
    fn maps_and_bus_headers_are_carriers() {
        round_trip(&mut BTreeMap::new());
        round_trip(&mut HashMap::new());
        round_trip(&mut p2piano_bus::Headers::new());
    }
}
