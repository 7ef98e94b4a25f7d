//! Message headers: an ordered string map, carried as NATS headers on the wire.
//!
//! The services use them for W3C trace context (`traceparent`) so that one client event is one
//! trace across edge → NATS → rooms → edge.

use std::collections::BTreeMap;

use crate::error::BusError;

/// Message headers (e.g. W3C `traceparent`): an ordered map of `String` to `String`.
///
/// One value per name (a later [`insert`](Self::insert) replaces the earlier value), ordered by
/// name so that equality and debug output are deterministic. Names must be non-empty printable
/// ASCII without `:`, and values must not contain CR or LF (the NATS wire format); publishing
/// other headers fails with [`BusErrorKind::Other`](crate::BusErrorKind::Other). NATS trims
/// leading and trailing whitespace from values, and so does the in-process bus.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers(BTreeMap<String, String>);

impl Headers {
    /// An empty header set, the usual starting point before adding trace context.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets header `name` to `value`, replacing any earlier value, so that callers can build
    /// headers without caring whether a name is already present.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.0.insert(name.into(), value.into());
    }

    /// The value of header `name`, if present (names are case-sensitive, as in NATS).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// All headers as `(name, value)` pairs in name order, e.g. to inject into a propagator.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Whether there are no headers; lets the NATS backend skip the header block entirely.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many headers there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Checks that every name and value can be carried on the NATS wire, so that both backends
    /// reject the same headers (async-nats would panic on them otherwise).
    pub(crate) fn validate(&self) -> Result<(), BusError> {
        for (name, value) in &self.0 {
            if name.is_empty() || name.chars().any(|c| !c.is_ascii_graphic() || c == ':') {
                return Err(BusError::other(format!(
                    "invalid header name {name:?}: must be non-empty printable ASCII without ':'"
                )));
            }
            if value.contains(['\r', '\n']) {
                return Err(BusError::other(format!(
                    "invalid value for header {name:?}: must not contain CR or LF"
                )));
            }
        }
        Ok(())
    }

    /// The same headers with values trimmed, as a NATS receiver would see them.
    pub(crate) fn trimmed(self) -> Self {
        if self.0.values().all(|v| v.trim() == v) {
            return self;
        }
        Self(
            self.0
                .into_iter()
                .map(|(k, v)| {
                    let t = v.trim();
                    let v = if t.len() == v.len() { v } else { t.to_owned() };
                    (k, v)
                })
                .collect(),
        )
    }

    /// Rough size on the NATS wire (`NATS/1.0\r\n` + `name: value\r\n`... + `\r\n`), used by
    /// the in-process bus to enforce the same payload limit as a default nats-server.
    pub(crate) fn wire_len(&self) -> usize {
        if self.is_empty() {
            return 0;
        }
        10 + self
            .0
            .iter()
            .map(|(k, v)| k.len() + v.len() + 4)
            .sum::<usize>()
            + 2
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Headers {
    /// Builds headers from pairs, so `Headers::from_iter([("traceparent", tp)])` is one line.
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BusErrorKind;

    #[test]
    fn insert_get_iter() {
        let mut h = Headers::new();
        assert!(h.is_empty());
        h.insert("b", "2");
        h.insert("a", "1");
        h.insert("b", "3");
        assert_eq!(h.len(), 2);
        assert_eq!(h.get("b"), Some("3"));
        assert_eq!(h.get("B"), None);
        assert_eq!(h.iter().collect::<Vec<_>>(), vec![("a", "1"), ("b", "3")]);
        assert_eq!(h, Headers::from_iter([("a", "1"), ("b", "3")]));
    }

    #[test]
    fn validation() {
        assert!(
            Headers::from_iter([("traceparent", "00-ab-cd-01")])
                .validate()
                .is_ok()
        );
        for bad in [
            ("", "v"),
            ("a b", "v"),
            ("a:b", "v"),
            ("é", "v"),
            ("k", "x\ny"),
        ] {
            let err = Headers::from_iter([bad]).validate().unwrap_err();
            assert_eq!(err.kind(), BusErrorKind::Other, "{bad:?}");
        }
    }

    #[test]
    fn trimming_matches_nats() {
        let h = Headers::from_iter([("a", " x "), ("b", "y")]).trimmed();
        assert_eq!(h.get("a"), Some("x"));
        assert_eq!(h.get("b"), Some("y"));
    }
}
