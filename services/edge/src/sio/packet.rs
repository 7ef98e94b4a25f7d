//! Socket.IO v5 packets: the text inside an Engine.IO `4` message.
//!
//! Wire form, as socket.io-parser writes it:
//! `type [attachments "-"] ["/" namespace ","] [ack id digits] [JSON]`, where the type is
//! one digit `0`..=`6`, the attachment count appears for binary packets (`5`, `6`) only,
//! the namespace runs from `/` to the first `,` (or to the end), and the default namespace
//! `/` is written without that part.

use serde_json::Value;

use super::{FrameError, MAX_ACK_ID, MAX_DEPTH, MAX_NAMESPACE_LEN};

/// The Socket.IO packet type, the first digit of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SioKind {
    /// `0`: join a namespace (client, with optional auth object) or its acceptance
    /// (server, with `{"sid"}`).
    Connect,
    /// `1`: leave a namespace.
    Disconnect,
    /// `2`: an event `["NAME", args...]`, with an ack id when the sender wants an answer.
    Event,
    /// `3`: the answer to an event that carried an ack id: `id[args...]`.
    Ack,
    /// `4`: a refused namespace connect (server to client only).
    ConnectError,
    /// `5`: an event with binary attachments that follow as binary frames.
    BinaryEvent,
    /// `6`: an ack with binary attachments that follow as binary frames.
    BinaryAck,
}

impl SioKind {
    /// The kind for a type digit, `None` for anything else: the parser's first step.
    pub fn from_digit(c: char) -> Option<Self> {
        Some(match c {
            '0' => SioKind::Connect,
            '1' => SioKind::Disconnect,
            '2' => SioKind::Event,
            '3' => SioKind::Ack,
            '4' => SioKind::ConnectError,
            '5' => SioKind::BinaryEvent,
            '6' => SioKind::BinaryAck,
            _ => return None,
        })
    }

    /// The type digit written on the wire, for encoders and logs.
    pub fn digit(self) -> char {
        match self {
            SioKind::Connect => '0',
            SioKind::Disconnect => '1',
            SioKind::Event => '2',
            SioKind::Ack => '3',
            SioKind::ConnectError => '4',
            SioKind::BinaryEvent => '5',
            SioKind::BinaryAck => '6',
        }
    }

    /// Whether binary attachments follow this packet (`5`, `6`), which is when the
    /// `<n>-` count is part of the packet and [`super::BinaryAssembly`] is needed.
    pub fn is_binary(self) -> bool {
        matches!(self, SioKind::BinaryEvent | SioKind::BinaryAck)
    }
}

/// One parsed Socket.IO packet. Its JSON is parsed once, here, and its shape already
/// checked against the type (see [`parse_socketio`]), so handlers only read it.
#[derive(Debug, Clone, PartialEq)]
pub struct SioPacket {
    /// The packet type.
    pub kind: SioKind,
    /// The namespace, `/` when the packet has none (e.g. `/api`): which dialect it is for.
    pub namespace: String,
    /// For binary packets, the announced number of binary frames that follow; 0 otherwise.
    pub attachments: usize,
    /// The ack id: on an event, the sender wants an answer with this id; on an ack, the
    /// event it answers.
    pub ack_id: Option<u64>,
    /// The JSON data, if any: an event's `["NAME", ...]`, a connect's auth object, an
    /// ack's arguments.
    pub data: Option<Value>,
}

/// An event's payload split into its name and arguments, from `["NAME", arg0, ...]`:
/// handlers dispatch on the name and read the arguments (one, in both dialects).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The event name, the array's first element.
    pub name: String,
    /// The remaining elements, moved out of the array without copying.
    pub args: Vec<Value>,
}

impl SioPacket {
    /// Splits an event (`2`, or a completed `5`) into its name and arguments, with the ack
    /// id the sender asked for.
    ///
    /// Fails with [`FrameError::NotAnEvent`] for other kinds and with
    /// [`FrameError::BadEventShape`] when the data is not `["NAME", ...]` (which
    /// [`parse_socketio`] has already refused, unless the packet was built by hand).
    pub fn into_event(self) -> Result<(Event, Option<u64>), FrameError> {
        if !matches!(self.kind, SioKind::Event | SioKind::BinaryEvent) {
            return Err(FrameError::NotAnEvent);
        }
        let Some(Value::Array(mut items)) = self.data else {
            return Err(FrameError::BadEventShape);
        };
        if !matches!(items.first(), Some(Value::String(_))) {
            return Err(FrameError::BadEventShape);
        }
        // Non-empty, as just checked; the remove shifts the (few) arguments in place.
        let Value::String(name) = items.remove(0) else {
            return Err(FrameError::BadEventShape);
        };
        Ok((Event { name, args: items }, self.ack_id))
    }
}

/// Parses the Socket.IO packet carried by an Engine.IO message.
///
/// Checks, beyond the syntax: the namespace is at most [`MAX_NAMESPACE_LEN`] characters
/// without control characters; the ack id is at most [`MAX_ACK_ID`], present only on
/// events and acks, and required on acks; the JSON nests at most [`MAX_DEPTH`] levels
/// (checked by a cheap scan before parsing) and fits the type: an event is
/// `["NAME", ...]`, a connect an optional object, a disconnect has none, an ack an array, a
/// connect error a string or object. Binary packets keep their placeholders: see
/// [`super::BinaryAssembly`].
///
/// For a plain event, a payload problem is [`FrameError::NotJson`],
/// [`FrameError::TooDeep`] or [`FrameError::BadEventShape`], which are not fatal; for every
/// other type it is the fatal [`FrameError::BadPayload`].
pub fn parse_socketio(text: &str) -> Result<SioPacket, FrameError> {
    let Some(first) = text.chars().next() else {
        return Err(FrameError::Empty);
    };
    let kind = SioKind::from_digit(first).ok_or(FrameError::UnknownSocketType(first))?;
    let bytes = text.as_bytes();
    // Every delimiter below is ASCII, so each index taken is on a character boundary.
    let mut pos = 1;

    let mut attachments = 0;
    if kind.is_binary() {
        let digits = count_digits(bytes, pos);
        if digits == 0 || bytes.get(pos + digits) != Some(&b'-') {
            return Err(FrameError::BadAttachmentCount);
        }
        attachments = parse_number(bytes, pos, digits)
            .and_then(|n| usize::try_from(n).ok())
            .ok_or(FrameError::BadAttachmentCount)?;
        pos += digits + 1;
    }

    let mut namespace = None;
    if bytes.get(pos) == Some(&b'/') {
        let end = bytes[pos..]
            .iter()
            .position(|&b| b == b',')
            .map_or(bytes.len(), |i| pos + i);
        let ns = text.get(pos..end).ok_or(FrameError::BadNamespace)?;
        check_namespace(ns)?;
        namespace = Some(ns);
        // Skip the ',' when there is one.
        pos = (end + 1).min(bytes.len());
    }

    let digits = count_digits(bytes, pos);
    let ack_id = if digits == 0 {
        None
    } else {
        let id = parse_number(bytes, pos, digits).filter(|&id| id <= MAX_ACK_ID);
        pos += digits;
        Some(id.ok_or(FrameError::BadAckId)?)
    };
    match kind {
        SioKind::Connect | SioKind::Disconnect | SioKind::ConnectError if ack_id.is_some() => {
            return Err(FrameError::BadAckId);
        }
        SioKind::Ack | SioKind::BinaryAck if ack_id.is_none() => return Err(FrameError::BadAckId),
        _ => {}
    }

    let rest = text.get(pos..).unwrap_or_default();
    let data = if rest.is_empty() {
        None
    } else {
        Some(parse_json(rest))
    };
    let data = check_payload(kind, data)?;

    Ok(SioPacket {
        kind,
        namespace: namespace.unwrap_or("/").to_owned(),
        attachments,
        ack_id,
        data,
    })
}

/// Checks the data against what the packet type allows, mapping every problem of a
/// non-event to [`FrameError::BadPayload`] (see [`FrameError::is_fatal`]).
fn check_payload(
    kind: SioKind,
    data: Option<Result<Value, FrameError>>,
) -> Result<Option<Value>, FrameError> {
    let fatal = |r: Result<Value, FrameError>| r.map_err(|_| FrameError::BadPayload);
    match kind {
        SioKind::Event => {
            let value = data.ok_or(FrameError::BadEventShape)??;
            if !is_event_array(&value) {
                return Err(FrameError::BadEventShape);
            }
            Ok(Some(value))
        }
        SioKind::BinaryEvent => match data.map(fatal).transpose()? {
            Some(value) if is_event_array(&value) => Ok(Some(value)),
            _ => Err(FrameError::BadPayload),
        },
        SioKind::Ack | SioKind::BinaryAck => match data.map(fatal).transpose()? {
            Some(value @ Value::Array(_)) => Ok(Some(value)),
            _ => Err(FrameError::BadPayload),
        },
        SioKind::Connect => match data.map(fatal).transpose()? {
            None => Ok(None),
            Some(value @ Value::Object(_)) => Ok(Some(value)),
            Some(_) => Err(FrameError::BadPayload),
        },
        SioKind::Disconnect => match data {
            None => Ok(None),
            Some(_) => Err(FrameError::BadPayload),
        },
        SioKind::ConnectError => match data.map(fatal).transpose()? {
            Some(value @ (Value::Object(_) | Value::String(_))) => Ok(Some(value)),
            _ => Err(FrameError::BadPayload),
        },
    }
}

/// Whether `value` is `["NAME", ...]`.
fn is_event_array(value: &Value) -> bool {
    matches!(value, Value::Array(items) if matches!(items.first(), Some(Value::String(_))))
}

/// A namespace is at most [`MAX_NAMESPACE_LEN`] characters, none of them a control
/// character (which no real namespace has and which would end up in logs).
fn check_namespace(ns: &str) -> Result<(), FrameError> {
    let mut count = 0;
    for c in ns.chars() {
        count += 1;
        if count > MAX_NAMESPACE_LEN || c.is_control() {
            return Err(FrameError::BadNamespace);
        }
    }
    Ok(())
}

/// How many ASCII digits start at `pos`.
fn count_digits(bytes: &[u8], pos: usize) -> usize {
    bytes
        .get(pos..)
        .map_or(0, |b| b.iter().take_while(|b| b.is_ascii_digit()).count())
}

/// The value of the `digits` ASCII digits at `pos`, `None` on overflow.
fn parse_number(bytes: &[u8], pos: usize, digits: usize) -> Option<u64> {
    bytes
        .get(pos..pos + digits)?
        .iter()
        .try_fold(0u64, |n, &b| {
            n.checked_mul(10)?
                .checked_add(u64::from(b.wrapping_sub(b'0')))
        })
}

/// Parses JSON data after refusing, by a scan, anything deeper than [`MAX_DEPTH`].
fn parse_json(text: &str) -> Result<Value, FrameError> {
    if nesting_exceeds(text.as_bytes(), MAX_DEPTH) {
        return Err(FrameError::TooDeep);
    }
    serde_json::from_str(text).map_err(|_| FrameError::NotJson)
}

/// Whether brackets and braces outside strings nest deeper than `max`.
///
/// The depth can never exceed the number of `[` and `{` bytes, and an event carries a
/// handful of them, so they are counted first: a count the compiler turns into vector
/// instructions, where the scan below goes byte by byte. At 60,000 deliveries/s the count
/// took `parse_socketio`'s own share of `p2piano all`'s CPU (the scan is inlined there) from
/// 1.64 % to 0.80 %. Only data with more openers than `max` is scanned.
///
/// The scan is one pass over the bytes, no allocation: it tracks whether it is inside a
/// string (and after a backslash there) so that brackets in strings do not count. It does
/// not validate; for malformed JSON its answer only decides which error is reported.
pub(crate) fn nesting_exceeds(bytes: &[u8], max: usize) -> bool {
    let openers: usize = bytes
        .iter()
        .map(|&b| usize::from(b == b'[' || b == b'{'))
        .sum();
    if openers <= max {
        return false;
    }
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in bytes {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}
