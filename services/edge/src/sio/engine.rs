//! Engine.IO v4: the outer packet of every WebSocket text frame.

use std::fmt::Write as _;

use super::FrameError;
use super::encode::push_json_str;

/// One Engine.IO v4 packet, read from one WebSocket text frame, borrowing from it.
///
/// The edge serves the WebSocket transport only, so there is no payload batching and no
/// base64 binary (`b...`): binary data arrives as binary WebSocket frames, which are
/// Socket.IO attachments (see [`super::BinaryAssembly`]) and never pass through here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EioPacket<'a> {
    /// `0`: the handshake. Only the server sends it; from a client it is a violation the
    /// caller decides about. Any data after the type is ignored.
    Open,
    /// `1`: the peer closes the Engine.IO session.
    Close,
    /// `2` plus an optional probe (usually empty), to be echoed in the pong.
    Ping(&'a str),
    /// `3` plus the probe of the ping it answers (usually empty): the client is alive.
    Pong(&'a str),
    /// `4`: a message; the text after the type is a Socket.IO packet for
    /// [`super::parse_socketio`]. It may be empty here: Engine.IO allows that, Socket.IO
    /// does not (it reports [`FrameError::Empty`]).
    Message(&'a str),
    /// `5`: the end of a transport upgrade; meaningless on a WebSocket-only server.
    Upgrade,
    /// `6`: does nothing (used by clients while upgrading).
    Noop,
}

/// Reads the Engine.IO packet of one WebSocket text frame.
///
/// Lenient where engine.io-parser is (data after `0`, `1`, `5`, `6` is ignored), strict
/// about the type: anything but `0`..=`6` is not Engine.IO and the socket should close.
pub fn parse_engine(frame: &str) -> Result<EioPacket<'_>, FrameError> {
    let Some(first) = frame.chars().next() else {
        return Err(FrameError::Empty);
    };
    // The type is one ASCII digit, so the rest starts at byte 1; for any other first
    // character we return before slicing.
    let rest = || frame.get(1..).unwrap_or_default();
    match first {
        '0' => Ok(EioPacket::Open),
        '1' => Ok(EioPacket::Close),
        '2' => Ok(EioPacket::Ping(rest())),
        '3' => Ok(EioPacket::Pong(rest())),
        '4' => Ok(EioPacket::Message(rest())),
        '5' => Ok(EioPacket::Upgrade),
        '6' => Ok(EioPacket::Noop),
        other => Err(FrameError::UnknownEngineType(other)),
    }
}

/// The server's ping, sent every ping interval; the client answers `3`.
pub const PING: &str = "2";

/// The handshake frame the server sends first on a new socket:
/// `0{"sid":"...","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}`.
///
/// `upgrades` is always empty: the socket already is a WebSocket and there is nothing to
/// upgrade to. The client takes the timings from here, so they must be the ones the edge
/// enforces.
pub fn encode_open(
    sid: &str,
    ping_interval_ms: u64,
    ping_timeout_ms: u64,
    max_payload: usize,
) -> String {
    let mut out = String::with_capacity(96 + sid.len());
    out.push_str("0{\"sid\":");
    push_json_str(&mut out, sid);
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        ",\"upgrades\":[],\"pingInterval\":{ping_interval_ms},\"pingTimeout\":{ping_timeout_ms},\"maxPayload\":{max_payload}}}"
    );
    out
}

/// The answer to a client's ping `2<probe>`: `3<probe>`, echoing the probe as
/// Engine.IO requires.
pub fn encode_pong(probe: &str) -> String {
    let mut out = String::with_capacity(1 + probe.len());
    out.push('3');
    out.push_str(probe);
    out
}
