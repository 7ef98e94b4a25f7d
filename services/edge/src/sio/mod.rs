//! The Engine.IO v4 / Socket.IO v5 frame codec: pure functions, no I/O.
//!
//! The edge speaks Socket.IO over WebSocket only, and one task per socket reads its frames
//! in order and hands each one here. So this module parses every frame exactly once,
//! borrows from the frame where it can, never panics whatever the internet sends (it is
//! fuzzed: `make fuzz`), and says precisely what was wrong, so that the caller can tell a
//! protocol violation (close the socket, [`FrameError::is_fatal`]) from a bad event payload
//! (answer the sender, keep the socket).
//!
//! A text frame goes through two layers:
//!
//! 1. [`parse_engine`]: the Engine.IO packet type (`0`..=`6`); a `4` message carries the
//!    Socket.IO packet text, borrowed from the frame;
//! 2. [`parse_socketio`]: `type [attachments "-"] ["/" namespace ","] [ack id] [JSON]`,
//!    giving a [`SioPacket`] whose JSON is parsed once; an event is then split into its
//!    name and arguments by [`SioPacket::into_event`].
//!
//! Binary WebSocket frames only ever appear as the attachments of a `5`/`6` packet, which
//! [`BinaryAssembly`] collects. The encoders (`encode_*`) write the exact text frames the
//! server sends, each into one `String`.
//!
//! This is hand-rolled on purpose rather than taken from a Socket.IO crate: the edge needs
//! only the WebSocket transport and a handful of packet forms, and owning the parser keeps
//! its limits (namespace length, nesting depth, attachments) and its error precision ours.

mod binary;
mod encode;
mod engine;
mod packet;

#[cfg(test)]
mod binary_tests;
#[cfg(test)]
mod encode_tests;
#[cfg(test)]
mod tests;

pub use binary::{BinaryAssembly, encode_binary_event};
pub use encode::{
    encode_ack, encode_client_relay, encode_connect, encode_connect_error, encode_disconnect,
    encode_event, encode_event_with_ack,
};
pub use engine::{EioPacket, PING, encode_open, encode_pong, parse_engine};
pub use packet::{Event, SioKind, SioPacket, parse_socketio};

/// The longest namespace accepted, in characters: ours are `/` and `/api`, so anything
/// long is garbage, and a bound keeps a hostile frame from costing a large allocation.
pub const MAX_NAMESPACE_LEN: usize = 64;

/// The largest ack id accepted: JavaScript's `Number.MAX_SAFE_INTEGER` (2^53 − 1), because
/// the client keeps ack ids as JavaScript numbers and a larger one could not be answered
/// exactly.
pub const MAX_ACK_ID: u64 = (1 << 53) - 1;

/// The deepest JSON nesting accepted (arrays and objects, the event's own array counting
/// as one level). Real payloads nest a few levels; refusing deep ones before parsing keeps
/// hostile input from costing recursion in the parser, in `Drop` and in every later walk.
pub const MAX_DEPTH: usize = 32;

/// What was wrong with a frame, precise enough for the caller to choose between closing
/// the socket ([`FrameError::is_fatal`]) and refusing one event to its sender.
///
/// The messages are safe to send back to a client: they name the rule, never the input.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum FrameError {
    /// The frame (or the Socket.IO part of a `4` message) is empty.
    #[error("empty packet")]
    Empty,
    /// The first character is not an Engine.IO packet type `0`..=`6`.
    #[error("unknown Engine.IO packet type {0:?}")]
    UnknownEngineType(char),
    /// The first character of a message is not a Socket.IO packet type `0`..=`6`.
    #[error("unknown Socket.IO packet type {0:?}")]
    UnknownSocketType(char),
    /// A binary packet (`5`/`6`) without a valid `<n>-` attachment count, or with none
    /// (`n` = 0), or a non-binary packet handed to [`BinaryAssembly`].
    #[error("bad attachment count")]
    BadAttachmentCount,
    /// A binary packet announcing more attachments than the edge accepts.
    #[error("too many binary attachments")]
    TooManyAttachments,
    /// The namespace is longer than [`MAX_NAMESPACE_LEN`] or contains a control character.
    #[error("bad namespace")]
    BadNamespace,
    /// The ack id is above [`MAX_ACK_ID`], present where no ack is possible (connect,
    /// disconnect, connect error) or missing from an ack.
    #[error("bad ack id")]
    BadAckId,
    /// The data of a packet other than a plain event is not what its type allows: connect
    /// takes an optional object, disconnect nothing, an ack an array, a connect error a
    /// string or an object, a binary event an event array. Fatal, unlike the event errors
    /// below: no event can be refused there, and for a binary packet the attachments that
    /// follow could no longer be told apart from stray frames.
    #[error("bad packet payload")]
    BadPayload,
    /// An event's data is not valid JSON.
    #[error("payload is not valid JSON")]
    NotJson,
    /// An event's data nests deeper than [`MAX_DEPTH`].
    #[error("payload nests too deeply")]
    TooDeep,
    /// An event's data is missing, or is not an array whose first element is a string
    /// (the event name).
    #[error("event must be an array starting with the event name")]
    BadEventShape,
    /// [`SioPacket::into_event`] on a packet that is not an event.
    #[error("not an event packet")]
    NotAnEvent,
    /// A binary frame beyond the announced attachments.
    #[error("unexpected binary frame")]
    UnexpectedBinary,
    /// The placeholders of a binary packet do not reference each attachment exactly once
    /// (`{"_placeholder":true,"num":i}` with `i` in `0..n`).
    #[error("bad binary placeholder")]
    BadPlaceholder,
}

impl FrameError {
    /// Whether the socket must be closed (the frame is not Socket.IO as we speak it), as
    /// opposed to the one event being refused to its sender while the socket stays up.
    ///
    /// Only a plain event (`2`) whose header parsed can be refused: its data being invalid
    /// JSON, too deep, or not `["NAME", ...]` is the sender's mistake about one event, and
    /// docs/protocol.md asks for an error to the sender only. Everything else leaves no packet
    /// to answer, or a stream whose next frames can no longer be trusted.
    pub fn is_fatal(&self) -> bool {
        !matches!(
            self,
            FrameError::NotJson | FrameError::TooDeep | FrameError::BadEventShape
        )
    }
}
