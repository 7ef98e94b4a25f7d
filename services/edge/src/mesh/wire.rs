//! The frames of a relay link. Every frame is a 4-byte big-endian length, then a kind
//! byte and its body; one link carries frames one way (the dialing edge's relays and
//! interest), and the answers to its interest come back on the same connection.
//!
//! A link opens with the listener's challenge (32 random bytes) and the dialer's hello,
//! whose MAC over the challenge, the dialer's id and its address proves that the dialer
//! holds the deployment's secret: a stranger who reaches the port can neither relay into a
//! room nor learn anything.

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use hmac::{Hmac, Mac};
use p2piano_bus::Headers;
use p2piano_protocol::RoomCode;
use p2piano_protocol::relay::Relay;
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The largest frame accepted: far above the largest relay (64 KiB of payload), so that
/// only a broken or hostile peer meets it.
pub const MAX_FRAME: usize = 1 << 20;

/// Length of a challenge.
pub const CHALLENGE_LEN: usize = 32;

/// What a frame is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Listener to dialer: the bytes the hello's MAC must cover.
    Challenge = 0,
    /// Dialer to listener: who it is and where its own listener is.
    Hello = 1,
    /// A relay for one room's members on the receiving edge.
    Relay = 2,
    /// "I hold members of this room": the receiver relays the room to the sender from now
    /// on, and answers with an [`Kind::Ack`] saying whether it holds the room too.
    Interest = 3,
    /// The answer to an interest.
    Ack = 4,
    /// "I no longer hold this room".
    Drop = 5,
    /// The full list of rooms the sender holds, first on every new link: replaces what the
    /// receiver knew of the sender; answered with a [`Kind::SyncAck`].
    Sync = 6,
    /// The answer to a sync: which of those rooms the receiver holds.
    SyncAck = 7,
    /// Listener to dialer: the hello is accepted; the link is up.
    Welcome = 8,
}

impl Kind {
    fn of(b: u8) -> Option<Self> {
        Some(match b {
            0 => Self::Challenge,
            1 => Self::Hello,
            2 => Self::Relay,
            3 => Self::Interest,
            4 => Self::Ack,
            5 => Self::Drop,
            6 => Self::Sync,
            7 => Self::SyncAck,
            8 => Self::Welcome,
            _ => return None,
        })
    }
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The connection failed or closed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// A frame longer than [`MAX_FRAME`] was announced.
    #[error("frame of {0} bytes")]
    TooLong(usize),
    /// A frame that does not parse.
    #[error("malformed {0} frame")]
    Malformed(&'static str),
}

/// A frame as read: its kind and body.
#[derive(Debug)]
pub struct Raw {
    /// Its kind.
    pub kind: Kind,
    /// Its body, after the kind byte.
    pub body: Bytes,
}

/// Reads frames off a connection, taking as many bytes per read as are there, so that a
/// burst of frames costs one system call.
pub struct Reader<R> {
    io: R,
    buf: BytesMut,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    /// A reader of `io`.
    pub fn new(io: R) -> Self {
        Self {
            io,
            buf: BytesMut::with_capacity(16 * 1024),
        }
    }

    /// The next frame; `Ok(None)` when the peer closed the connection between frames.
    pub async fn next(&mut self) -> Result<Option<Raw>, WireError> {
        loop {
            if let Some(raw) = self.take()? {
                return Ok(Some(raw));
            }
            if self.io.read_buf(&mut self.buf).await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(WireError::Malformed("truncated"))
                };
            }
        }
    }

    /// Whether a whole frame is buffered already (the reader then goes on without waiting).
    pub fn has_frame(&self) -> bool {
        self.buf.len() >= 4 && {
            let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
            self.buf.len() >= 4 + len as usize
        }
    }

    fn take(&mut self) -> Result<Option<Raw>, WireError> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if len == 0 {
            return Err(WireError::Malformed("empty"));
        }
        if len > MAX_FRAME {
            return Err(WireError::TooLong(len));
        }
        if self.buf.len() < 4 + len {
            self.buf.reserve(4 + len - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(4);
        let mut frame = self.buf.split_to(len).freeze();
        let kind = Kind::of(frame.get_u8()).ok_or(WireError::Malformed("unknown"))?;
        Ok(Some(Raw { kind, body: frame }))
    }
}

fn frame(kind: Kind, body_len: usize, body: impl FnOnce(&mut BytesMut)) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + body_len);
    out.put_u32(0);
    out.put_u8(kind as u8);
    body(&mut out);
    let len = (out.len() - 4) as u32;
    out[..4].copy_from_slice(&len.to_be_bytes());
    out.freeze()
}

/// The listener's challenge.
pub fn challenge(nonce: &[u8; CHALLENGE_LEN]) -> Bytes {
    frame(Kind::Challenge, CHALLENGE_LEN, |b| b.put_slice(nonce))
}

/// The listener's acceptance of a hello.
pub fn welcome() -> Bytes {
    frame(Kind::Welcome, 0, |_| {})
}

/// What a dialer says of itself.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hello {
    /// The dialer's edge id.
    pub edge_id: String,
    /// Where the dialer's own listener is.
    pub addr: String,
    /// Base64 HMAC-SHA256 over the challenge, the id and the address (see [`mac`]).
    pub mac: String,
}

/// The MAC a hello carries: HMAC-SHA256 keyed with the deployment's secret over a label,
/// the challenge, the edge id and the address.
pub fn mac(key: &[u8], nonce: &[u8], edge_id: &str, addr: &str) -> Hmac<Sha256> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(b"p2piano-mesh-1\0");
    m.update(nonce);
    m.update(edge_id.as_bytes());
    m.update(b"\0");
    m.update(addr.as_bytes());
    m
}

/// The dialer's hello for `nonce`.
pub fn hello(key: &[u8], nonce: &[u8], edge_id: &str, addr: &str) -> Bytes {
    let tag = mac(key, nonce, edge_id, addr).finalize().into_bytes();
    let body = Hello {
        edge_id: edge_id.to_owned(),
        addr: addr.to_owned(),
        mac: B64.encode(tag),
    };
    let json = serde_json::to_vec(&body).expect("a hello serializes");
    frame(Kind::Hello, json.len(), |b| b.put_slice(&json))
}

/// Reads a hello and checks its MAC against `nonce` in constant time.
pub fn check_hello(key: &[u8], nonce: &[u8], body: &[u8]) -> Result<Hello, WireError> {
    let hello: Hello = serde_json::from_slice(body).map_err(|_| WireError::Malformed("hello"))?;
    let tag = B64
        .decode(&hello.mac)
        .map_err(|_| WireError::Malformed("hello"))?;
    mac(key, nonce, &hello.edge_id, &hello.addr)
        .verify_slice(&tag)
        .map_err(|_| WireError::Malformed("hello MAC"))?;
    Ok(hello)
}

fn put_code(b: &mut BytesMut, code: &RoomCode) {
    let s = code.as_str().as_bytes();
    b.put_u8(s.len() as u8);
    b.put_slice(s);
}

fn get_code(body: &mut Bytes) -> Result<RoomCode, WireError> {
    let bad = WireError::Malformed("room code");
    if body.remaining() < 1 {
        return Err(bad);
    }
    let n = body.get_u8() as usize;
    if body.remaining() < n {
        return Err(bad);
    }
    let s = body.split_to(n);
    std::str::from_utf8(&s)
        .ok()
        .and_then(|s| RoomCode::parse(s).ok())
        .ok_or(bad)
}

/// A relay frame: the room, the headers (trace context) as `name:value` lines, the relay's
/// JSON.
pub fn relay(
    code: &RoomCode,
    headers: &Headers,
    relay: &Relay,
) -> Result<Bytes, serde_json::Error> {
    let json = serde_json::to_vec(relay)?;
    let mut lines = String::new();
    for (name, value) in headers.iter() {
        lines.push_str(name);
        lines.push(':');
        lines.push_str(value);
        lines.push('\n');
    }
    Ok(frame(Kind::Relay, 8 + lines.len() + json.len(), |b| {
        put_code(b, code);
        b.put_u16(lines.len() as u16);
        b.put_slice(lines.as_bytes());
        b.put_slice(&json);
    }))
}

/// Reads a relay frame's body.
pub fn read_relay(mut body: Bytes) -> Result<(RoomCode, Headers, Relay), WireError> {
    let code = get_code(&mut body)?;
    if body.remaining() < 2 {
        return Err(WireError::Malformed("relay"));
    }
    let n = body.get_u16() as usize;
    if body.remaining() < n {
        return Err(WireError::Malformed("relay"));
    }
    let lines = body.split_to(n);
    let lines = std::str::from_utf8(&lines).map_err(|_| WireError::Malformed("relay"))?;
    let headers = lines
        .lines()
        .filter_map(|l| l.split_once(':'))
        .collect::<Headers>();
    let relay = serde_json::from_slice(&body).map_err(|_| WireError::Malformed("relay"))?;
    Ok((code, headers, relay))
}

/// An interest (`id` pairs it with its answer).
pub fn interest(id: u32, code: &RoomCode) -> Bytes {
    frame(Kind::Interest, 10, |b| {
        b.put_u32(id);
        put_code(b, code);
    })
}

/// A drop.
pub fn drop_room(code: &RoomCode) -> Bytes {
    frame(Kind::Drop, 6, |b| put_code(b, code))
}

/// Reads an interest or an answer's id and room.
pub fn read_interest(mut body: Bytes) -> Result<(u32, RoomCode), WireError> {
    if body.remaining() < 4 {
        return Err(WireError::Malformed("interest"));
    }
    let id = body.get_u32();
    Ok((id, get_code(&mut body)?))
}

/// Reads a drop.
pub fn read_drop(mut body: Bytes) -> Result<RoomCode, WireError> {
    get_code(&mut body)
}

/// The answer to interest `id`.
pub fn ack(id: u32, holds: bool) -> Bytes {
    frame(Kind::Ack, 5, |b| {
        b.put_u32(id);
        b.put_u8(holds as u8);
    })
}

/// Reads an answer to an interest.
pub fn read_ack(mut body: Bytes) -> Result<(u32, bool), WireError> {
    if body.remaining() < 5 {
        return Err(WireError::Malformed("ack"));
    }
    Ok((body.get_u32(), body.get_u8() != 0))
}

/// A sync, or the answer to one (`kind`), listing rooms.
pub fn rooms(kind: Kind, id: u32, codes: &[RoomCode]) -> Bytes {
    frame(kind, 4 + codes.len() * 6, |b| {
        b.put_u32(id);
        for code in codes {
            put_code(b, code);
        }
    })
}

/// Reads a sync or its answer.
pub fn read_rooms(mut body: Bytes) -> Result<(u32, Vec<RoomCode>), WireError> {
    if body.remaining() < 4 {
        return Err(WireError::Malformed("sync"));
    }
    let id = body.get_u32();
    let mut codes = Vec::new();
    while body.has_remaining() {
        codes.push(get_code(&mut body)?);
    }
    Ok((id, codes))
}

#[cfg(test)]
mod tests {
    use p2piano_protocol::UserId;
    use p2piano_protocol::relay::RelayKind;

    use super::*;

    fn code() -> RoomCode {
        RoomCode::parse("abcde").unwrap()
    }

    async fn read_all(bytes: Vec<u8>) -> Vec<Result<Raw, String>> {
        let mut r = Reader::new(&bytes[..]);
        let mut out = Vec::new();
        loop {
            match r.next().await {
                Ok(Some(raw)) => out.push(Ok(raw)),
                Ok(None) => break,
                Err(e) => {
                    out.push(Err(e.to_string()));
                    break;
                }
            }
        }
        out
    }

    #[tokio::test]
    async fn frames_read_back_as_written_however_the_bytes_arrive() {
        let relay = Relay {
            from: UserId::parse("00000000-0000-4000-8000-00000000000a").unwrap(),
            to: None,
            kind: RelayKind::Event,
            event: "KEY_DOWN".into(),
            data: serde_json::json!({"note": 60}),
        };
        let mut headers = Headers::new();
        headers.insert("traceparent", "00-abc-def-01");
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&self::relay(&code(), &headers, &relay).unwrap());
        bytes.extend_from_slice(&interest(7, &code()));
        bytes.extend_from_slice(&ack(7, true));
        bytes.extend_from_slice(&drop_room(&code()));
        bytes.extend_from_slice(&rooms(
            Kind::Sync,
            9,
            &[code(), RoomCode::parse("bcdef").unwrap()],
        ));
        // One byte per read, as a slow peer would send them.
        let (mut tx, rx) = tokio::io::duplex(1);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            tx.write_all(&bytes).await.unwrap();
        });
        let mut r = Reader::new(rx);
        let f = r.next().await.unwrap().unwrap();
        assert_eq!(f.kind, Kind::Relay);
        let (c, h, back) = read_relay(f.body).unwrap();
        assert_eq!((c, h, back), (code(), headers, relay));
        let f = r.next().await.unwrap().unwrap();
        assert_eq!(read_interest(f.body).unwrap(), (7, code()));
        let f = r.next().await.unwrap().unwrap();
        assert_eq!(read_ack(f.body).unwrap(), (7, true));
        let f = r.next().await.unwrap().unwrap();
        assert_eq!(read_drop(f.body).unwrap(), code());
        let f = r.next().await.unwrap().unwrap();
        assert_eq!(f.kind, Kind::Sync);
        assert_eq!(read_rooms(f.body).unwrap().1.len(), 2);
        writer.await.unwrap();
        assert!(r.next().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn oversized_unknown_and_truncated_frames_are_refused() {
        let mut huge = ((MAX_FRAME + 1) as u32).to_be_bytes().to_vec();
        huge.push(2);
        assert!(matches!(&read_all(huge).await[..], [Err(e)] if e.contains("frame of")));
        assert!(
            matches!(&read_all(vec![0, 0, 0, 1, 99]).await[..], [Err(e)] if e.contains("unknown"))
        );
        let cut = interest(1, &code())[..6].to_vec();
        assert!(matches!(&read_all(cut).await[..], [Err(e)] if e.contains("truncated")));
        assert!(matches!(&read_all(vec![0, 0, 0, 0]).await[..], [Err(e)] if e.contains("empty")));
    }

    #[test]
    fn a_hello_passes_only_with_the_secret_and_the_challenge_it_answers() {
        let nonce = [7u8; CHALLENGE_LEN];
        let h = hello(b"secret", &nonce, "edge-1", "127.0.0.1:4000");
        let body = &h[5..];
        let ok = check_hello(b"secret", &nonce, body).unwrap();
        assert_eq!(
            (ok.edge_id.as_str(), ok.addr.as_str()),
            ("edge-1", "127.0.0.1:4000")
        );
        assert!(check_hello(b"other", &nonce, body).is_err(), "wrong secret");
        assert!(
            check_hello(b"secret", &[8u8; CHALLENGE_LEN], body).is_err(),
            "replayed"
        );
        // Claiming another id or address with the same MAC fails.
        let mut forged: Hello = serde_json::from_slice(body).unwrap();
        forged.edge_id = "edge-2".into();
        let forged = serde_json::to_vec(&forged).unwrap();
        assert!(
            check_hello(b"secret", &nonce, &forged).is_err(),
            "forged id"
        );
    }
}
