//! Binary packets: a `5`/`6` text packet whose JSON holds placeholders, then its
//! attachments as binary WebSocket frames.

use std::fmt::Write as _;

use bytes::Bytes;
use serde_json::Value;

use super::encode::{event_guess, push_event_array, push_namespace};
use super::{FrameError, SioPacket};

/// Collects the attachments of one binary event or ack: the packet, whose JSON holds
/// `{"_placeholder":true,"num":i}` where each attachment goes, then exactly `n` binary
/// frames.
///
/// The socket task keeps one while attachments are due (at most one at a time: Socket.IO
/// sends the attachments right after their packet) and feeds it every binary frame. The
/// placeholders are checked when the packet arrives, not after the frames, so a bad packet
/// is refused before anything is buffered. They stay in the JSON: the edge relays binary
/// payloads as they came (see [`encode_binary_event`]) rather than splicing bytes into
/// JSON.
#[derive(Debug)]
pub struct BinaryAssembly {
    /// The packet, until the last attachment hands it back.
    packet: Option<SioPacket>,
    /// The attachments so far, in order.
    frames: Vec<Bytes>,
    /// How many attachments the packet announced.
    expected: usize,
}

impl BinaryAssembly {
    /// Starts collecting for a binary packet (from [`super::parse_socketio`]).
    ///
    /// Refuses, all fatally: a non-binary packet or one announcing no attachments
    /// ([`FrameError::BadAttachmentCount`]: Socket.IO never sends `50-`), more than
    /// `max_attachments` (the edge allows 4; [`FrameError::TooManyAttachments`]), and
    /// placeholders that do not reference every attachment `0..n` exactly once
    /// ([`FrameError::BadPlaceholder`]).
    pub fn new(packet: SioPacket, max_attachments: usize) -> Result<Self, FrameError> {
        let expected = packet.attachments;
        if !packet.kind.is_binary() || expected == 0 {
            return Err(FrameError::BadAttachmentCount);
        }
        if expected > max_attachments {
            return Err(FrameError::TooManyAttachments);
        }
        check_placeholders(packet.data.as_ref(), expected)?;
        Ok(BinaryAssembly {
            packet: Some(packet),
            frames: Vec::with_capacity(expected),
            expected,
        })
    }

    /// How many attachments are still due, for the caller's bookkeeping and logs.
    pub fn remaining(&self) -> usize {
        if self.packet.is_none() {
            0
        } else {
            self.expected - self.frames.len()
        }
    }

    /// Adds the next binary frame. Returns the packet and its attachments, in order, when
    /// this was the last one; `None` while more are due. A frame after the last one is
    /// [`FrameError::UnexpectedBinary`] (fatal).
    pub fn push(&mut self, frame: Bytes) -> Result<Option<(SioPacket, Vec<Bytes>)>, FrameError> {
        if self.packet.is_none() || self.frames.len() >= self.expected {
            return Err(FrameError::UnexpectedBinary);
        }
        self.frames.push(frame);
        if self.frames.len() < self.expected {
            return Ok(None);
        }
        let packet = self.packet.take().ok_or(FrameError::UnexpectedBinary)?;
        Ok(Some((packet, std::mem::take(&mut self.frames))))
    }
}

/// Checks that the placeholders in `data` reference each of `0..n` exactly once.
///
/// A placeholder is an object whose `_placeholder` is `true`, as socket.io-parser reads
/// it; its `num` must then be an integer in range. Walks with an explicit stack, so that
/// even a hand-built, deeply nested value cannot overflow the call stack.
fn check_placeholders(data: Option<&Value>, n: usize) -> Result<(), FrameError> {
    // n is at most max_attachments, which is small.
    let mut seen = vec![false; n];
    let mut found = 0;
    let mut stack: Vec<&Value> = data.into_iter().collect();
    while let Some(value) = stack.pop() {
        match value {
            Value::Array(items) => stack.extend(items),
            Value::Object(map) if map.get("_placeholder") == Some(&Value::Bool(true)) => {
                let num = map
                    .get("num")
                    .and_then(Value::as_u64)
                    .and_then(|i| usize::try_from(i).ok());
                let slot = num
                    .and_then(|i| seen.get_mut(i))
                    .ok_or(FrameError::BadPlaceholder)?;
                if *slot {
                    return Err(FrameError::BadPlaceholder);
                }
                *slot = true;
                found += 1;
            }
            Value::Object(map) => stack.extend(map.values()),
            _ => {}
        }
    }
    if found == n {
        Ok(())
    } else {
        Err(FrameError::BadPlaceholder)
    }
}

/// A binary event relayed as it came: `45<n>-/api,["NAME",...]` (`45<n>-[...]` for the
/// default namespace), then the `n` attachments as binary frames, in order.
///
/// The arguments must already hold one placeholder per attachment, as received; this does
/// not rewrite them. With no attachments it writes a plain `42` event, since `450-` is not
/// something Socket.IO sends (and [`BinaryAssembly`] refuses it).
pub fn encode_binary_event(
    ns: &str,
    name: &str,
    args: &[&Value],
    attachments: Vec<Bytes>,
) -> (String, Vec<Bytes>) {
    let mut out = String::with_capacity(8 + ns.len() + event_guess(name, args));
    out.push('4');
    if attachments.is_empty() {
        out.push('2');
    } else {
        let _ = write!(out, "5{}-", attachments.len());
    }
    push_namespace(&mut out, ns);
    push_event_array(&mut out, name, args);
    (out, attachments)
}
