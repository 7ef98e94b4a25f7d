//! The tests' Socket.IO client: raw Engine.IO v4 / Socket.IO v5 over tokio-tungstenite,
//! answering pings itself, so that tests see exactly the frames the edge sends (and can send
//! frames no real client would). The edge's tests and the split deployment's telemetry test
//! use it; the JavaScript conformance suite uses the real `socket.io-client`. The fault tests
//! use it through [`player`]: a joined socket whose frames a task of its own reads, with
//! the arrival time of each.

pub mod player;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use std::collections::VecDeque;
use std::time::Duration;

/// How long a test waits for any one frame or reply.
pub const WAIT: Duration = Duration::from_secs(15);

/// The WebSocket of a [`SioClient`].
type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// One socket to an edge.
pub struct SioClient {
    ws: Ws,
    /// The namespace of the last connect (`/api` or `/`), prefixed to every event sent.
    pub ns: String,
    /// The Engine.IO open packet's payload (`sid`, `pingInterval`, ...).
    pub open: Value,
    /// The page id of the last namespace connect reply (connection state recovery): a
    /// reconnecting client presents it as `{"pid"}` to be the same page coming back.
    pub pid: Option<String>,
    /// Events read while waiting for an ack, given back by [`SioClient::next`] in the
    /// order they came: the server may send an event caused by a request before the
    /// request's ack (rooms announces a change before it answers), and a test must still
    /// see it.
    pending: VecDeque<Got>,
    /// How long a read waits for the next frame before failing the test: [`WAIT`], or no
    /// limit for a client whose caller bounds the whole exchange (see [`player::join`]).
    limit: Option<Duration>,
}

/// The Socket.IO packet in text frame `text` of namespace prefix `prefix` (`/api,` or
/// nothing), or None for a frame that is none (an Engine.IO packet, an unknown type).
fn parse(text: &str, prefix: &str) -> Option<Got> {
    let sio = text.strip_prefix('4')?;
    let kind = sio.chars().next().unwrap_or(' ');
    let rest = &sio[1..];
    let rest = rest.strip_prefix(prefix).unwrap_or(rest);
    Some(match kind {
        '0' => Got::Connected(serde_json::from_str(rest).unwrap_or(Value::Null)),
        '1' => Got::Disconnected,
        '4' => Got::ConnectError(serde_json::from_str(rest).unwrap_or(Value::Null)),
        '2' => {
            let v: Value = serde_json::from_str(rest).expect("event JSON");
            Got::Event(
                v[0].as_str().unwrap().to_owned(),
                v.get(1).cloned().unwrap_or(Value::Null),
            )
        }
        '3' => {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            let v: Value = serde_json::from_str(&rest[digits.len()..]).unwrap();
            Got::Ack(digits.parse().unwrap(), v[0].clone())
        }
        _ => return None,
    })
}

/// What a client that does not answer pings read before the close.
#[derive(Default)]
struct Tally {
    /// Every frame but the close.
    frames: usize,
    /// Engine.IO pings among them.
    pings: usize,
    /// The close frame, if one came: its code, if it had one.
    close: Option<Option<u16>>,
}

/// What the server sent, as a test sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Got {
    /// `42<ns>[name, payload]`
    Event(String, Value),
    /// `43<ns><id>[body]`
    Ack(u64, Value),
    /// `40<ns>{...}`
    Connected(Value),
    /// `44<ns>{...}`
    ConnectError(Value),
    /// `41<ns>`
    Disconnected,
    /// The WebSocket closed (code).
    Closed(Option<u16>),
}

impl SioClient {
    /// Opens a socket with `query` (without EIO/transport) and extra headers.
    pub async fn open(port: u16, query: &str, headers: &[(&str, &str)]) -> Result<Self, String> {
        Self::open_with_recv_buffer(port, query, headers, None).await
    }

    /// Like [`SioClient::open`], with the TCP receive buffer fixed to `recv_buffer` bytes (a
    /// small one makes a client that stops reading back up the server at once).
    pub async fn open_with_recv_buffer(
        port: u16,
        query: &str,
        headers: &[(&str, &str)],
        recv_buffer: Option<u32>,
    ) -> Result<Self, String> {
        let mut c = Self::handshake(port, query, headers, recv_buffer, Some(WAIT)).await?;
        let first = c.raw().await.expect("open packet");
        let open = first.strip_prefix('0').expect("Engine.IO open");
        c.open = serde_json::from_str(open).unwrap();
        Ok(c)
    }

    /// The TCP connection (no Nagle delay) and the WebSocket upgrade, before the Engine.IO
    /// open packet; reads then wait for each frame up to `limit`.
    async fn handshake(
        port: u16,
        query: &str,
        headers: &[(&str, &str)],
        recv_buffer: Option<u32>,
        limit: Option<Duration>,
    ) -> Result<Self, String> {
        let url = format!("ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket&{query}");
        let mut req = url.into_client_request().map_err(|e| e.to_string())?;
        for (k, v) in headers {
            let name = tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes())
                .map_err(|e| e.to_string())?;
            req.headers_mut()
                .insert(name, v.parse().map_err(|e| format!("{e}"))?);
        }
        let socket = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
        if let Some(size) = recv_buffer {
            socket
                .set_recv_buffer_size(size)
                .map_err(|e| e.to_string())?;
        }
        let tcp = socket
            .connect(([127, 0, 0, 1], port).into())
            .await
            .map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        let (ws, _) = tokio_tungstenite::client_async(req, MaybeTlsStream::Plain(tcp))
            .await
            .map_err(|e| e.to_string())?;
        Ok(Self {
            ws,
            ns: "/".into(),
            open: Value::Null,
            pid: None,
            pending: VecDeque::new(),
            limit,
        })
    }

    /// The next frame off the socket, waiting up to `limit` (failing the test after it).
    async fn frame(&mut self) -> Option<Result<Message, tokio_tungstenite::tungstenite::Error>> {
        match self.limit {
            Some(limit) => tokio::time::timeout(limit, self.ws.next())
                .await
                .expect("a frame in time"),
            None => self.ws.next().await,
        }
    }

    /// The client dialect's connect: `40/api,` (with auth when given).
    pub async fn connect(&mut self, ns: &str, auth: Option<Value>) -> Got {
        self.ns = ns.to_owned();
        let prefix = self.prefix();
        let frame = match auth {
            Some(a) => format!("40{prefix}{a}"),
            None => format!("40{prefix}"),
        };
        self.send_raw(&frame).await;
        let got = self.next().await;
        if let Got::Connected(reply) = &got {
            self.pid = reply["pid"].as_str().map(str::to_owned);
        }
        got
    }

    fn prefix(&self) -> String {
        if self.ns == "/" {
            String::new()
        } else {
            format!("{},", self.ns)
        }
    }

    /// Sends `frame` as one text frame, as it is (malformed ones included).
    pub async fn send_raw(&mut self, frame: &str) {
        self.ws
            .send(Message::Text(frame.into()))
            .await
            .expect("send");
    }

    /// Sends `data` as one binary frame (an attachment, or bytes that are none).
    pub async fn send_binary(&mut self, data: Vec<u8>) {
        self.ws
            .send(Message::Binary(data.into()))
            .await
            .expect("send");
    }

    /// Sends a text frame whose payload is not UTF-8, which a browser never would.
    pub async fn send_invalid_text(&mut self, data: Vec<u8>) {
        use tokio_tungstenite::tungstenite::protocol::frame::Frame;
        use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
        let frame = Frame::message(data, OpCode::Data(Data::Text), true);
        self.ws.send(Message::Frame(frame)).await.expect("send");
    }

    /// Sends event `name` with `payload` in the connected namespace, without an ack id.
    pub async fn emit(&mut self, name: &str, payload: Value) {
        let frame = format!("42{}{}", self.prefix(), json!([name, payload]));
        self.send_raw(&frame).await;
    }

    /// Sends event `name` with ack id `id` and returns the ack's body, skipping the frames
    /// that come before it.
    pub async fn emit_ack(&mut self, name: &str, payload: Value, id: u64) -> Value {
        let frame = format!("42{}{id}{}", self.prefix(), json!([name, payload]));
        self.send_raw(&frame).await;
        loop {
            match self.read().await {
                Got::Ack(got, body) if got == id => return body,
                Got::Closed(c) => panic!("closed ({c:?}) while waiting for ack {id}"),
                event @ Got::Event(..) => self.pending.push_back(event),
                _ => continue,
            }
        }
    }

    /// The next raw text frame, answering pings; None when closed.
    pub async fn raw(&mut self) -> Option<String> {
        loop {
            match self.frame().await? {
                Ok(Message::Text(t)) if t.as_str() == "2" => {
                    let _ = self.ws.send(Message::Text("3".into())).await;
                }
                Ok(Message::Text(t)) => return Some(t.to_string()),
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => continue,
            }
        }
    }

    /// The next Socket.IO-level thing that happened.
    pub async fn next(&mut self) -> Got {
        match self.pending.pop_front() {
            Some(got) => got,
            None => self.read().await,
        }
    }

    /// The next Socket.IO-level thing on the wire, past what is pending.
    async fn read(&mut self) -> Got {
        loop {
            let msg = match self.frame().await {
                None => return Got::Closed(None),
                Some(Err(_)) => return Got::Closed(None),
                Some(Ok(m)) => m,
            };
            let text = match msg {
                Message::Text(t) => t,
                Message::Close(c) => return Got::Closed(c.map(|c| c.code.into())),
                _ => continue,
            };
            if text.as_str() == "2" {
                let _ = self.ws.send(Message::Text("3".into())).await;
                continue;
            }
            if let Some(got) = parse(&text, &self.prefix()) {
                return got;
            }
        }
    }

    /// Waits for event `name`, failing on anything else but other events listed in `skip`.
    pub async fn expect(&mut self, name: &str) -> Value {
        match self.next().await {
            Got::Event(n, p) if n == name => p,
            other => panic!("expected {name}, got {other:?}"),
        }
    }

    /// Reads frames WITHOUT answering pings until the server closes the socket; returns
    /// the pings seen and the close code.
    pub async fn until_closed_ignoring_pings(&mut self) -> (usize, Option<u16>) {
        let mut tally = Tally::default();
        self.read_until_closed(&mut tally).await;
        (tally.pings, tally.close.flatten())
    }

    /// Reads frames, answering pings, until `n` pings were answered: a client that is
    /// quiet but alive. Socket.IO packets read meanwhile are kept for [`SioClient::next`].
    /// False if the socket closed first.
    pub async fn answer_pings(&mut self, n: usize) -> bool {
        let mut answered = 0;
        while answered < n {
            match self.frame().await {
                Some(Ok(Message::Text(t))) if t.as_str() == "2" => {
                    let _ = self.ws.send(Message::Text("3".into())).await;
                    answered += 1;
                }
                Some(Ok(Message::Text(t))) => {
                    if let Some(got) = parse(&t, &self.prefix()) {
                        self.pending.push_back(got);
                    }
                }
                Some(Ok(Message::Close(_)) | Err(_)) | None => return false,
                Some(Ok(_)) => {}
            }
        }
        true
    }

    /// Reads frames WITHOUT answering pings until the server closes the socket or `within`
    /// passes: a client that stopped reading, reading at last. Returns how many frames it
    /// held (of any kind) and, if the close frame came, its code.
    pub async fn frames_until_closed(&mut self, within: Duration) -> (usize, Option<Option<u16>>) {
        let mut tally = Tally::default();
        let _ = tokio::time::timeout(within, self.read_until_closed(&mut tally)).await;
        (tally.frames, tally.close)
    }

    /// Counts frames into `tally` until the socket closes (or its stream ends).
    async fn read_until_closed(&mut self, tally: &mut Tally) {
        loop {
            match self.frame().await {
                Some(Ok(Message::Close(c))) => {
                    tally.close = Some(c.map(|c| c.code.into()));
                    return;
                }
                Some(Ok(Message::Text(t))) if t.as_str() == "2" => {
                    tally.pings += 1;
                    tally.frames += 1;
                }
                Some(Ok(_)) => tally.frames += 1,
                None | Some(Err(_)) => return,
            }
        }
    }

    /// Closes with a close frame that carries no code (the server sees 1005), as
    /// engine.io-client does after its own ping timeout.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
        self.finish_close().await;
    }

    /// Closes with a close frame with `code`: 1001 is what a browser sends when its page
    /// unloads (a reload, a closed tab, a navigation).
    pub async fn close_with(mut self, code: u16) {
        let frame = tokio_tungstenite::tungstenite::protocol::CloseFrame {
            code: code.into(),
            reason: "".into(),
        };
        let _ = self.ws.close(Some(frame)).await;
        self.finish_close().await;
    }

    /// Completes the closing handshake as a browser does: reads until the server's close
    /// frame (and the end of the stream), so that the connection is not reset while the
    /// server still has our close frame unread, which would make it a lost transport.
    async fn finish_close(&mut self) {
        let drained = async { while let Some(Ok(_)) = self.ws.next().await {} };
        let _ = tokio::time::timeout(WAIT, drained).await;
    }

    /// Drops the TCP connection without a close frame: a lost transport as the server sees
    /// a network drop.
    pub fn drop_transport(self) {
        drop(self);
    }
}
