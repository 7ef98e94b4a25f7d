//! Relayed client events between edges, on `<prefix>.room.<code>.relay`.
//!
//! The sending edge has already validated the event and checked that every target is a
//! member of the room; each edge that receives the message delivers it to its own local
//! targets, encoding it once per dialect.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::validate::UserId;

/// What is relayed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RelayKind {
    /// A player event (notes, pedal, metronome, latency, CRDT sync, or a service-dialect
    /// `peer-message`).
    Event,
    /// WebRTC signaling for exactly one target.
    Signal,
}

/// A relayed event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Relay {
    /// Public id of the sender (set by the edge, never by the client).
    pub from: UserId,
    /// Who receives it. For events of the client dialect, the validated `targetUserIds`;
    /// `None` (a service-dialect `peer-message` without `to`) means every member but the sender.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Vec<UserId>>,
    /// Event or signal.
    pub kind: RelayKind,
    /// The event name (`KEY_DOWN`, ..., or the service dialect's free `type`).
    #[serde(rename = "type")]
    pub event: String,
    /// The payload without routing fields (`targetUserIds`, `userId`); for signals, the
    /// opaque signal data.
    pub data: Value,
}
