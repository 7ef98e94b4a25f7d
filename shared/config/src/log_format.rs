//! The log output format.

use serde::{Deserialize, Serialize};

/// How logs are written: readable text for people at a terminal, JSON lines for log
/// collectors in production.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (`text`).
    Text,
    /// One JSON object per line (`json`).
    Json,
}

impl LogFormat {
    /// Whether this is [`LogFormat::Json`], the flag telemetry initialisation takes.
    pub fn is_json(self) -> bool {
        self == LogFormat::Json
    }
}
