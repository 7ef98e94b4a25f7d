//! Validation of client events, one module per dialect, into dialect-neutral actions that
//! the socket carries out (relay, signal, profile update, join, leave).

pub mod client;
mod refusal;
pub mod service;
mod table;

pub use refusal::Refusal;
pub use table::{Event, Handling, known_event};

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
/// Slowest metronome tempo a `SET_BPM` may set (beats per minute).
pub const MIN_BPM: u64 = 1;
/// Fastest metronome tempo a `SET_BPM` may set: far above any music, low enough that a
/// client cannot make its peers tick thousands of times a second.
pub const MAX_BPM: u64 = 999;
/// Longest service-dialect message type.
pub const MAX_PEER_TYPE: usize = 32;
/// Largest service-dialect peer message payload, serialized.
pub const MAX_PEER_DATA_BYTES: usize = 32 * 1024;

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

/// Whether `v`, serialized, takes at most `max` bytes: counted as it is written, without
/// building the text, and stopping at the first byte over.
pub fn json_fits(v: &Value, max: usize) -> bool {
    struct Counter {
        left: usize,
    }
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.left = self
                .left
                .checked_sub(buf.len())
                .ok_or_else(|| std::io::Error::other("over the limit"))?;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    serde_json::to_writer(&mut Counter { left: max }, v).is_ok()
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

/// A WebRTC signal: the target's user id in field `target` (described as `target_is` in
/// the refusal), the signal object in field `data`, at most [`MAX_SIGNAL_BYTES`]. The
/// dialects name the fields differently and nothing else.
pub fn signal(
    obj: &mut serde_json::Map<String, Value>,
    target: &str,
    target_is: &str,
    data: &str,
) -> Result<Action, Refusal> {
    let to = obj
        .get(target)
        .and_then(Value::as_str)
        .and_then(|s| UserId::parse(s).ok())
        .ok_or_else(|| Refusal::invalid(format!("{target} must be {target_is}")))?;
    let signal = obj
        .remove(data)
        .filter(Value::is_object)
        .ok_or_else(|| Refusal::invalid(format!("{data} must be an object")))?;
    if !json_fits(&signal, MAX_SIGNAL_BYTES) {
        return Err(Refusal::too_large(format!(
            "{data} must be at most {MAX_SIGNAL_BYTES} bytes"
        )));
    }
    Ok(Action::Signal { to, signal })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sizes_are_measured_without_the_text() {
        let v = json!({"sdp": "x".repeat(100)});
        let len = serde_json::to_vec(&v).unwrap().len();
        assert!(json_fits(&v, len));
        assert!(!json_fits(&v, len - 1));
        assert!(json_fits(&json!(null), 4));
        assert!(!json_fits(&json!(null), 3));
    }

    #[test]
    fn signals_are_read_the_same_way_in_both_dialects() {
        let me = UserId::parse("11111111-1111-4111-8111-111111111111").unwrap();
        let to = "22222222-2222-4222-8222-222222222222";
        let big = "x".repeat(MAX_SIGNAL_BYTES);
        let cases = [
            (
                client::parse(
                    "SIGNAL",
                    Some(json!({"userId": to, "signalData": {"sdp": "v=0"}})),
                    &me,
                ),
                service::parse(
                    "webrtc-signal",
                    Some(json!({"to": to, "signal": {"sdp": "v=0"}})),
                ),
                None,
            ),
            (
                client::parse(
                    "SIGNAL",
                    Some(json!({"userId": "nobody", "signalData": {}})),
                    &me,
                ),
                service::parse("webrtc-signal", Some(json!({"to": 7, "signal": {}}))),
                Some((
                    "userId must be the target's user id",
                    "to must be a user id",
                )),
            ),
            (
                client::parse(
                    "SIGNAL",
                    Some(json!({"userId": to, "signalData": "sdp"})),
                    &me,
                ),
                service::parse("webrtc-signal", Some(json!({"to": to}))),
                Some(("signalData must be an object", "signal must be an object")),
            ),
        ];
        for (web, svc, refused) in cases {
            match refused {
                None => {
                    for action in [web, svc] {
                        match action {
                            Ok(Action::Signal { to: target, signal }) => {
                                assert_eq!(target.as_str(), to);
                                assert_eq!(signal, json!({"sdp": "v=0"}));
                            }
                            other => panic!("{other:?}"),
                        }
                    }
                }
                Some((web_says, svc_says)) => {
                    assert_eq!(web.unwrap_err().message, web_says);
                    assert_eq!(svc.unwrap_err().message, svc_says);
                }
            }
        }
        let oversize = service::parse(
            "webrtc-signal",
            Some(json!({"to": to, "signal": {"sdp": big}})),
        );
        let refusal = oversize.unwrap_err();
        assert_eq!(refusal.code, p2piano_protocol::ErrorCode::TooLarge);
        assert_eq!(
            refusal.message,
            format!("signal must be at most {MAX_SIGNAL_BYTES} bytes")
        );
    }
}
