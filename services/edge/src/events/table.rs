//! The one table of client events: every event a client may send, in either dialect, with
//! its budget class and what the edge does with it. The validators (`client.rs`,
//! `service.rs`), the relay frames (`dialect.rs`) and the metrics' event labels all read
//! this table, so that an event added here is known everywhere at once.

use crate::dialect::Dialect;
use crate::socket::limits::Class;

/// What the edge does with a valid event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handling {
    /// Relayed to the room (or to the listed targets) as the sender sent it, validated
    /// field by field (client dialect).
    Relay,
    /// A WebRTC signal for one member.
    Signal,
    /// A change of the sender's own profile.
    UpdateUser,
    /// A room join (service dialect).
    Join,
    /// A room leave (service dialect).
    Leave,
    /// A service-dialect relay of any type; client-dialect types in it are held to the
    /// client dialect's rules, since web clients receive them.
    PeerMessage,
}

/// Every event a client may send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Event {
    /// `KEY_DOWN {note, velocity}`.
    KeyDown,
    /// `KEY_UP {note}`.
    KeyUp,
    /// `SUSTAIN_DOWN`.
    SustainDown,
    /// `SUSTAIN_UP`.
    SustainUp,
    /// `METRONOME_TICK {type}`.
    MetronomeTick,
    /// `METRONOME_START` (the web client of July 2025).
    MetronomeStart,
    /// `METRONOME_STOP` (likewise).
    MetronomeStop,
    /// `SET_BPM {bpm}` (likewise).
    SetBpm,
    /// `LATENCY_PING {pingTime, peerId}`.
    LatencyPing,
    /// `LATENCY_PONG`.
    LatencyPong,
    /// `AUTOMERGE_PROTOCOL {syncMessage}`.
    AutomergeProtocol,
    /// `SIGNAL {userId, signalData}`.
    Signal,
    /// `USER_UPDATE {displayName?, color?, instrument?}`.
    UserUpdate,
    /// `join-room {code, displayName?, instrument?}`.
    JoinRoom,
    /// `leave-room`.
    LeaveRoom,
    /// `user-update {displayName?, color?, instrument?}`.
    ServiceUserUpdate,
    /// `webrtc-signal {to, signal}`.
    WebrtcSignal,
    /// `peer-message {type, to?, data}`.
    PeerMessage,
}

impl Event {
    /// Every event, client dialect first.
    pub const ALL: [Event; 18] = [
        Event::KeyDown,
        Event::KeyUp,
        Event::SustainDown,
        Event::SustainUp,
        Event::MetronomeTick,
        Event::MetronomeStart,
        Event::MetronomeStop,
        Event::SetBpm,
        Event::LatencyPing,
        Event::LatencyPong,
        Event::AutomergeProtocol,
        Event::Signal,
        Event::UserUpdate,
        Event::JoinRoom,
        Event::LeaveRoom,
        Event::ServiceUserUpdate,
        Event::WebrtcSignal,
        Event::PeerMessage,
    ];

    /// The row of the table: name on the wire, dialect, budget class, handling.
    const fn row(self) -> (&'static str, Dialect, Class, Handling) {
        use Dialect::{Client, Service};
        match self {
            Event::KeyDown => ("KEY_DOWN", Client, Class::KeyDown, Handling::Relay),
            Event::KeyUp => ("KEY_UP", Client, Class::KeyUp, Handling::Relay),
            Event::SustainDown => ("SUSTAIN_DOWN", Client, Class::Pedal, Handling::Relay),
            Event::SustainUp => ("SUSTAIN_UP", Client, Class::Pedal, Handling::Relay),
            Event::MetronomeTick => ("METRONOME_TICK", Client, Class::Other, Handling::Relay),
            Event::MetronomeStart => ("METRONOME_START", Client, Class::Other, Handling::Relay),
            Event::MetronomeStop => ("METRONOME_STOP", Client, Class::Other, Handling::Relay),
            Event::SetBpm => ("SET_BPM", Client, Class::Other, Handling::Relay),
            Event::LatencyPing => ("LATENCY_PING", Client, Class::Other, Handling::Relay),
            Event::LatencyPong => ("LATENCY_PONG", Client, Class::Other, Handling::Relay),
            Event::AutomergeProtocol => {
                ("AUTOMERGE_PROTOCOL", Client, Class::Crdt, Handling::Relay)
            }
            Event::Signal => ("SIGNAL", Client, Class::Signal, Handling::Signal),
            Event::UserUpdate => (
                "USER_UPDATE",
                Client,
                Class::UserUpdate,
                Handling::UpdateUser,
            ),
            Event::JoinRoom => ("join-room", Service, Class::Other, Handling::Join),
            Event::LeaveRoom => ("leave-room", Service, Class::Other, Handling::Leave),
            Event::ServiceUserUpdate => (
                "user-update",
                Service,
                Class::UserUpdate,
                Handling::UpdateUser,
            ),
            Event::WebrtcSignal => ("webrtc-signal", Service, Class::Signal, Handling::Signal),
            Event::PeerMessage => ("peer-message", Service, Class::Other, Handling::PeerMessage),
        }
    }

    /// The name on the wire.
    pub const fn name(self) -> &'static str {
        self.row().0
    }

    /// The dialect that sends it.
    pub const fn dialect(self) -> Dialect {
        self.row().1
    }

    /// The budget it is counted against (a `peer-message` carrying a client-dialect type
    /// is counted as that type).
    pub const fn class(self) -> Class {
        self.row().2
    }

    /// What the edge does with it.
    pub const fn handling(self) -> Handling {
        self.row().3
    }

    /// The event `name` of `dialect`, if there is one.
    pub fn of(dialect: Dialect, name: &str) -> Option<Event> {
        Self::ALL
            .into_iter()
            .find(|e| e.dialect() == dialect && e.name() == name)
    }

    /// The client-dialect event `name` that is relayed between players, if it is one: the
    /// only events a web client receives from another player besides `SIGNAL`.
    pub fn client_relay(name: &str) -> Option<Event> {
        Self::of(Dialect::Client, name).filter(|e| e.handling() == Handling::Relay)
    }
}

/// `name` as the name of a known event of either dialect, or `unknown`: metrics and spans
/// name events this way only, so that a client sending made-up names cannot create new
/// series.
pub fn known_event(name: &str) -> &'static str {
    Event::ALL
        .into_iter()
        .map(Event::name)
        .find(|known| *known == name)
        .unwrap_or("unknown")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_bounded() {
        for e in Event::ALL {
            assert_eq!(Event::of(e.dialect(), e.name()), Some(e));
            assert_eq!(known_event(e.name()), e.name());
        }
        assert_eq!(known_event("EXPLODE"), "unknown");
        assert_eq!(known_event(&"x".repeat(1000)), "unknown");
        assert_eq!(Event::of(Dialect::Service, "KEY_DOWN"), None);
        assert_eq!(Event::client_relay("SET_BPM"), Some(Event::SetBpm));
        assert_eq!(Event::client_relay("SIGNAL"), None);
    }
}
