//! Validation of client events, one module per dialect, into dialect-neutral actions that
//! the socket carries out (relay, signal, profile update, join, leave).

pub mod client;
pub mod service;

use p2piano_protocol::{Color, DisplayName, Instrument, RoomCode, UserId};
use serde_json::Value;

use crate::socket::limits::Class;

/// Most targets one event may name.
pub const MAX_TARGETS: usize = 50;
/// Largest signal payload, serialized.
pub const MAX_SIGNAL_BYTES: usize = 16 * 1024;
/// Largest latency probe payload, serialized.
pub const MAX_LATENCY_BYTES: usize = 1024;
/// Most entries of a CRDT sync message.
pub const MAX_SYNC_MESSAGE: usize = 32 * 1024;
/// Longest metronome tick type.
pub const MAX_TICK_TYPE: usize = 16;
/// Longest service-dialect message type.
pub const MAX_PEER_TYPE: usize = 32;
/// Largest service-dialect peer message payload, serialized.
pub const MAX_PEER_DATA_BYTES: usize = 32 * 1024;

/// Every event name a client may send, in either dialect. Metrics and spans name events
/// from this list only (anything else is `unknown`), so that a client sending made-up names
/// cannot create new series.
pub const KNOWN_EVENTS: [&str; 15] = [
    // client dialect (namespace `/api`)
    "KEY_DOWN",
    "KEY_UP",
    "SUSTAIN_DOWN",
    "SUSTAIN_UP",
    "METRONOME_TICK",
    "LATENCY_PING",
    "LATENCY_PONG",
    "AUTOMERGE_PROTOCOL",
    "SIGNAL",
    "USER_UPDATE",
    // service dialect (namespace `/`)
    "join-room",
    "leave-room",
    "user-update",
    "webrtc-signal",
    "peer-message",
];

/// `name` as one of [`KNOWN_EVENTS`], or `unknown`.
pub fn known_event(name: &str) -> &'static str {
    KNOWN_EVENTS
        .iter()
        .find(|known| **known == name)
        .copied()
        .unwrap_or("unknown")
}

/// What a valid event asks for.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Relay `data` as `event` to `to` (every other member when `None`).
    Relay {
        /// Rate-limit class.
        class: Class,
        /// Event name.
        event: String,
        /// Targets.
        to: Option<Vec<UserId>>,
        /// Payload without routing fields.
        data: Value,
    },
    /// Relay a WebRTC signal to one member.
    Signal {
        /// The target.
        to: UserId,
        /// Opaque signal data.
        signal: Value,
    },
    /// Change the sender's own name, colour or instrument.
    UpdateUser {
        /// New name.
        display_name: Option<DisplayName>,
        /// New colour.
        color: Option<Color>,
        /// New instrument.
        instrument: Option<Instrument>,
    },
    /// Join a room (service dialect).
    Join {
        /// Room code.
        code: RoomCode,
        /// Name to show.
        display_name: Option<DisplayName>,
        /// Instrument.
        instrument: Option<Instrument>,
    },
    /// Leave the room (service dialect).
    Leave,
}

impl Action {
    /// The rate-limit class of the action.
    pub fn class(&self) -> Class {
        match self {
            Action::Relay { class, .. } => *class,
            Action::Signal { .. } => Class::Signal,
            Action::UpdateUser { .. } => Class::UserUpdate,
            Action::Join { .. } | Action::Leave => Class::Other,
        }
    }
}

/// Why an event was refused: an HTTP-style status (client dialect) and an error code
/// (service dialect) with a message for the sender.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// 400, 403, 413, 429 or 500.
    pub status: u16,
    /// Message for the sender.
    pub message: String,
}

impl Refusal {
    /// 400: wrong types, missing fields, out-of-range numbers, unknown events.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self {
            status: 400,
            message: message.into(),
        }
    }

    /// 403: not allowed (another member's profile, a target outside the room).
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self {
            status: 403,
            message: message.into(),
        }
    }

    /// 413: larger than allowed.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self {
            status: 413,
            message: message.into(),
        }
    }

    /// The service dialect's error code for this status.
    pub fn code(&self) -> &'static str {
        match self.status {
            403 => "forbidden",
            404 => "not_found",
            409 => "conflict",
            413 => "too_large",
            429 => "rate_limited",
            503 => "unavailable",
            _ => "invalid",
        }
    }
}

/// Size of a value once serialized (for payload limits).
pub fn json_len(v: &Value) -> usize {
    serde_json::to_vec(v).map(|b| b.len()).unwrap_or(usize::MAX)
}

/// Parses a list of 0–50 user ids.
pub fn parse_targets(v: Option<&Value>, field: &str) -> Result<Vec<UserId>, Refusal> {
    let bad = || {
        Refusal::invalid(format!(
            "{field} must be a list of up to {MAX_TARGETS} user ids"
        ))
    };
    let list = v.and_then(Value::as_array).ok_or_else(bad)?;
    if list.len() > MAX_TARGETS {
        return Err(bad());
    }
    list.iter()
        .map(|t| {
            t.as_str()
                .and_then(|s| UserId::parse(s).ok())
                .ok_or_else(bad)
        })
        .collect()
}

/// Parses an optional display name field.
pub fn opt_display_name(v: Option<&Value>) -> Result<Option<DisplayName>, Refusal> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => DisplayName::parse(s)
            .map(Some)
            .map_err(|e| Refusal::invalid(e.to_string())),
        Some(_) => Err(Refusal::invalid("displayName must be a string")),
    }
}

/// Parses an optional colour field.
pub fn opt_color(v: Option<&Value>) -> Result<Option<Color>, Refusal> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Color::parse(s)
            .map(Some)
            .map_err(|e| Refusal::invalid(e.to_string())),
        Some(_) => Err(Refusal::invalid("color must be a string")),
    }
}

/// Parses an optional instrument field.
pub fn opt_instrument(v: Option<&Value>) -> Result<Option<Instrument>, Refusal> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Instrument::parse(s)
            .map(Some)
            .map_err(|e| Refusal::invalid(e.to_string())),
        Some(_) => Err(Refusal::invalid("instrument must be a string")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialect::CLIENT_RELAY_EVENTS;

    #[test]
    fn event_names_are_bounded() {
        for relayed in CLIENT_RELAY_EVENTS {
            assert_eq!(known_event(relayed), relayed);
        }
        assert_eq!(known_event("join-room"), "join-room");
        assert_eq!(known_event("EXPLODE"), "unknown");
        assert_eq!(known_event(&"x".repeat(1000)), "unknown");
    }
}
