//! Socket.IO encoders: the exact text frames the server sends, Engine.IO `4` included.
//!
//! Each encoder writes one `String`, sized up front, and serializes JSON straight into it.
//! Namespaces are the server's own (`/`, `/api`) and are written as given: the default
//! namespace `/` is omitted, any other is followed by `,` as socket.io-parser writes it.

use std::fmt::Write as _;

use serde_json::{Map, Value};

/// Room for the JSON of one argument before the string has to grow: relayed notes and
/// errors are well under this, room objects grow it once.
const ARG_GUESS: usize = 96;

/// Appends `s` as a JSON string literal, escaped as `serde_json` and `JSON.stringify` do,
/// without allocating.
pub(crate) fn push_json_str(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0x00..=0x1f => "",
            _ => continue,
        };
        // `i` is at an ASCII byte, so both slices end on character boundaries.
        out.push_str(s.get(start..i).unwrap_or_default());
        if escape.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(s.get(start..).unwrap_or_default());
    out.push('"');
}

/// Starts a frame: `4`, the Socket.IO type digit, and the namespace part.
fn start(kind: char, ns: &str, extra: usize) -> String {
    let mut out = String::with_capacity(2 + ns.len() + 1 + extra);
    out.push('4');
    out.push(kind);
    push_namespace(&mut out, ns);
    out
}

/// The namespace part: nothing for the default namespace, else `/name,`.
pub(crate) fn push_namespace(out: &mut String, ns: &str) {
    if !ns.is_empty() && ns != "/" {
        out.push_str(ns);
        out.push(',');
    }
}

/// Appends `["name",arg0,...]`.
pub(crate) fn push_event_array(out: &mut String, name: &str, args: &[&Value]) {
    out.push('[');
    push_json_str(out, name);
    for arg in args {
        out.push(',');
        // `Value`'s Display is its compact JSON; writing to a String cannot fail.
        let _ = write!(out, "{arg}");
    }
    out.push(']');
}

/// How much room an event array probably needs.
pub(crate) fn event_guess(name: &str, args: &[&Value]) -> usize {
    4 + name.len() + ARG_GUESS * args.len()
}

/// The server's answer to a namespace connect: `40/api,{"sid":"..."}`, or
/// `40{"sid":"..."}` for the default namespace. `sid` is the socket id the client reports;
/// `pid`, when given, is the page id of Socket.IO's connection state recovery, which
/// socket.io-client (4.6 and later) sends back as `{"pid","offset"}` in the namespace
/// connect of its next reconnection: `40/api,{"sid":"...","pid":"..."}`.
pub fn encode_connect(ns: &str, sid: &str, pid: Option<&str>) -> String {
    let mut out = start('0', ns, 22 + sid.len() + pid.map_or(0, str::len));
    out.push_str("{\"sid\":");
    push_json_str(&mut out, sid);
    if let Some(pid) = pid {
        out.push_str(",\"pid\":");
        push_json_str(&mut out, pid);
    }
    out.push('}');
    out
}

/// A refused namespace connect: `44/api,{"message":"..."}`. socket.io-client reports it as
/// `connect_error` with this message and does not retry.
pub fn encode_connect_error(ns: &str, message: &str) -> String {
    let mut out = start('4', ns, 16 + message.len());
    out.push_str("{\"message\":");
    push_json_str(&mut out, message);
    out.push('}');
    out
}

/// The server leaving a namespace: `41/api,`, or `41` for the default namespace. The
/// client will not reconnect after it, so it is for a replaced session, not for a move.
pub fn encode_disconnect(ns: &str) -> String {
    start('1', ns, 0)
}

/// An event: `42/api,["NAME",arg0,...]`; without arguments `42/api,["NAME"]`.
pub fn encode_event(ns: &str, name: &str, args: &[&Value]) -> String {
    let mut out = start('2', ns, event_guess(name, args));
    push_event_array(&mut out, name, args);
    out
}

/// A relayed event of the client dialect, `42/api,["NAME",{...,"userId":"..."}]`: the
/// sender's fields with the sender's user id added (replacing a `userId` field in place,
/// else last, as inserting into the map would), written straight from the relay's map
/// instead of from a copy of it with the id inserted.
pub fn encode_client_relay(ns: &str, name: &str, data: &Map<String, Value>, user: &str) -> String {
    let mut out = start('2', ns, 4 + name.len() + ARG_GUESS);
    out.push('[');
    push_json_str(&mut out, name);
    out.push_str(",{");
    let mut first = true;
    let mut user_written = false;
    for (key, value) in data {
        if !first {
            out.push(',');
        }
        first = false;
        push_json_str(&mut out, key);
        out.push(':');
        if key == "userId" {
            push_json_str(&mut out, user);
            user_written = true;
        } else {
            let _ = write!(out, "{value}");
        }
    }
    if !user_written {
        if !first {
            out.push(',');
        }
        out.push_str("\"userId\":");
        push_json_str(&mut out, user);
    }
    out.push_str("}]");
    out
}

/// An event that asks the client for an ack: `42/api,7["NAME",...]`; the client answers
/// with a `43` carrying the same id.
pub fn encode_event_with_ack(ns: &str, ack_id: u64, name: &str, args: &[&Value]) -> String {
    let mut out = start('2', ns, 20 + event_guess(name, args));
    let _ = write!(out, "{ack_id}");
    push_event_array(&mut out, name, args);
    out
}

/// The answer to a client's event that carried an ack id: `43/api,7[arg0,...]`.
pub fn encode_ack(ns: &str, ack_id: u64, args: &[&Value]) -> String {
    let mut out = start('3', ns, 22 + ARG_GUESS * args.len());
    let _ = write!(out, "{ack_id}");
    out.push('[');
    for (i, arg) in args.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{arg}");
    }
    out.push(']');
    out
}
