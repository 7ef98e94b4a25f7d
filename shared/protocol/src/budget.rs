//! A session's event budgets as they travel between edges, through presence.
//!
//! Each edge keeps the token buckets of the sessions it holds (docs/protocol.md, "Limits").
//! A session that closes its socket on one edge after spending its budget and connects to
//! another would find a full budget there; so when a socket closes with a budget worth
//! remembering (much of a class spent, an abuse streak, a cool-down), the edge sends a
//! [`BudgetSnapshot`] with its `disconnect`, presence keeps it in the session's record, and
//! the next `session_get` (which every socket's handshake makes) hands it to whichever edge
//! the session comes back to. Presence stores and returns the snapshot without reading it.
//!
//! Times are durations before `at`, the wall-clock instant the snapshot was taken, so that
//! edges need agree only on the wall clock, not on any process's monotonic clock.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Timestamp;

/// The most classes a snapshot may name (an edge has seven; the bound keeps a record small
/// whatever a newer edge sends).
pub const MAX_CLASSES: usize = 16;

/// How long a snapshot is worth keeping: the longest budget period (30 s) with margin. An
/// older one is dropped by presence (the budgets would be full again by now), unless it
/// carries a cool-down still running.
pub const SNAPSHOT_TTL_MS: i64 = 60_000;

/// A session's budgets when its socket closed on some edge.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BudgetSnapshot {
    /// When it was taken (the edge's wall clock).
    pub at: Timestamp,
    /// Thousandths of an event spent below a full bucket, by class name (`keyDown`,
    /// `keyUp`, `pedal`, `crdt`, `userUpdate`, `signal`, `other`). A class not named was
    /// full.
    #[serde(default, deserialize_with = "bounded_classes")]
    pub spent: BTreeMap<String, u64>,
    /// How long the session had been exceeding its limits at `at`, in ms (an abuse streak
    /// that a reconnect must not reset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exceeding_ms: Option<u64>,
    /// How long before `at` the session's last event was refused, in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused_ms_ago: Option<u64>,
    /// Until when the session is refused new sockets, after it was disconnected for abuse.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cool_down_until: Option<Timestamp>,
}

impl BudgetSnapshot {
    /// Whether the snapshot still says something at `now`: taken within
    /// [`SNAPSHOT_TTL_MS`], or with a cool-down still running.
    pub fn is_relevant(&self, now: Timestamp) -> bool {
        now.millis() - self.at.millis() < SNAPSHOT_TTL_MS
            || self.cool_down_until.is_some_and(|t| t > now)
    }
}

fn bounded_classes<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, u64>, D::Error> {
    let map = BTreeMap::<String, u64>::deserialize(d)?;
    if map.len() > MAX_CLASSES || map.keys().any(|k| k.len() > 32) {
        return Err(serde::de::Error::custom(
            "too many or too long budget classes",
        ));
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_ages() {
        let at = Timestamp::from_millis(1_000_000);
        let s = BudgetSnapshot {
            at,
            spent: [("keyDown".to_owned(), 900_000)].into(),
            exceeding_ms: Some(2_000),
            refused_ms_ago: Some(10),
            cool_down_until: None,
        };
        let text = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<BudgetSnapshot>(&text).unwrap(), s);
        assert!(s.is_relevant(at.plus(std::time::Duration::from_secs(59))));
        assert!(!s.is_relevant(at.plus(std::time::Duration::from_secs(60))));
        let cooling = BudgetSnapshot {
            cool_down_until: Some(at.plus(std::time::Duration::from_secs(90))),
            ..s
        };
        assert!(cooling.is_relevant(at.plus(std::time::Duration::from_secs(80))));
    }

    #[test]
    fn refuses_an_oversized_class_table() {
        let spent: BTreeMap<String, u64> = (0..17).map(|i| (format!("c{i}"), 1)).collect();
        let text = serde_json::json!({"at": "2026-01-01T00:00:00.000Z", "spent": spent});
        assert!(serde_json::from_value::<BudgetSnapshot>(text).is_err());
    }
}
