//! Clients for the fault tests: a minimal HTTP/1.1 client and a player of the client dialect
//! (Engine.IO v4 / Socket.IO v5 over WebSocket, namespace `/api`) whose frames are read by a
//! task of its own, so that a test can send while it watches what arrives, with the arrival
//! time of every event.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::SplitSink;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Mutex, mpsc};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// An HTTP answer.
#[derive(Debug)]
pub struct Http {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Http {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// The `sessionId=...` pair of `Set-Cookie`, if a new session was handed out.
    pub fn cookie(&self) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("set-cookie")
                .then(|| v.trim().split(';').next().unwrap_or_default().to_owned())
        })
    }
}

/// One request over a fresh connection (`Connection: close`); an error if the connection
/// fails. No timeout of its own: callers bound it.
pub async fn http(
    port: u16,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    body: Option<&str>,
) -> Result<Http, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    if let Some(c) = cookie {
        req.push_str(&format!("Cookie: {c}\r\n"));
    }
    let body = body.unwrap_or("");
    req.push_str(&format!(
        "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ));
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    Ok(Http {
        status,
        head: head.to_owned(),
        body: if chunked {
            dechunk(body)
        } else {
            body.to_owned()
        },
    })
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A request that must be answered within `within`: the answer, or a panic naming it.
pub async fn http_within(
    within: Duration,
    port: u16,
    method: &str,
    path: &str,
    cookie: Option<&str>,
) -> (Http, Duration) {
    let started = Instant::now();
    match tokio::time::timeout(within, http(port, method, path, cookie, None)).await {
        Ok(Ok(r)) => (r, started.elapsed()),
        Ok(Err(e)) => panic!("{method} {path}: {e}"),
        Err(_) => panic!("{method} {path}: no answer within {within:?} (a hang)"),
    }
}

/// A new session that created a room (`POST /api/room`): (cookie, room code).
pub async fn create_room(port: u16) -> (String, String) {
    let (r, _) = http_within(Duration::from_secs(30), port, "POST", "/api/room", None).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let code = r.json()["roomId"].as_str().unwrap().to_owned();
    (r.cookie().expect("a session cookie"), code)
}

/// A new session that looked at room `code` (`GET /api/room/:code`): its cookie.
pub async fn session_for(port: u16, code: &str) -> String {
    let path = format!("/api/room/{code}");
    let (r, _) = http_within(Duration::from_secs(30), port, "GET", &path, None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.cookie().expect("a session cookie")
}

/// The user ids of the room's participants (`GET /rooms/:code`, service shape), read with
/// a fresh session (so that polling never meets the per-session read limit).
pub async fn participants(port: u16, code: &str) -> Result<Vec<String>, Http> {
    let path = format!("/rooms/{code}");
    let (r, _) = http_within(Duration::from_secs(30), port, "GET", &path, None).await;
    if r.status != 200 {
        return Err(r);
    }
    Ok(r.json()["participants"]
        .as_array()
        .expect("participants")
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_owned())
        .collect())
}

pub type Ws = WebSocketStream<TcpStream>;
type Sink = Arc<Mutex<SplitSink<Ws, Message>>>;

/// Something a player's socket brought.
#[derive(Debug, Clone)]
pub enum Got {
    /// `42/api,[name, data]`.
    Event {
        name: String,
        data: Value,
        at: Instant,
    },
    /// `41/api,`: the server ended the namespace.
    Disconnected(Instant),
    /// The WebSocket closed, with the close code if there was one.
    Closed(Option<u16>, Instant),
}

impl Got {
    /// When it arrived.
    pub fn at(&self) -> Instant {
        match self {
            Got::Event { at, .. } | Got::Disconnected(at) | Got::Closed(_, at) => *at,
        }
    }

    /// The event's name and data, if it is an event.
    pub fn event(&self) -> Option<(&str, &Value)> {
        match self {
            Got::Event { name, data, .. } => Some((name, data)),
            _ => None,
        }
    }

    /// Whether it is event `name` about user `user` (`data.userId`).
    pub fn is(&self, name: &str, user: &str) -> bool {
        self.event()
            .is_some_and(|(n, d)| n == name && d["userId"] == user)
    }
}

/// Why a join failed.
#[derive(Debug)]
pub enum JoinError {
    /// The server refused the namespace connect (`44/api,{"message"}`).
    Refused(String),
    /// The connection or the WebSocket handshake failed, or the socket closed.
    Transport(String),
}

/// A socket that joined: the socket, the player's user id (from `ROOM_JOIN`) and the page
/// id of the connect reply.
pub type Joined = (Ws, String, Option<String>);

/// Opens a socket to edge `port` and connects to room `code` with session `cookie`, as the
/// page `pid` when given (connection state recovery, as socket.io-client reconnects), else
/// as a new page.
pub async fn join_raw(
    port: u16,
    code: &str,
    cookie: &str,
    recv_buffer: Option<u32>,
    pid: Option<&str>,
) -> Result<Joined, JoinError> {
    let t = |e: &dyn std::fmt::Display| JoinError::Transport(e.to_string());
    let url = format!(
        "ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket&roomId={code}&displayName=P"
    );
    let mut req = url.into_client_request().map_err(|e| t(&e))?;
    req.headers_mut()
        .insert("cookie", cookie.parse().map_err(|e| t(&e))?);
    let socket = tokio::net::TcpSocket::new_v4().map_err(|e| t(&e))?;
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size).map_err(|e| t(&e))?;
    }
    let tcp = socket
        .connect(([127, 0, 0, 1], port).into())
        .await
        .map_err(|e| t(&e))?;
    let _ = tcp.set_nodelay(true);
    let (mut ws, _) = tokio_tungstenite::client_async(req, tcp)
        .await
        .map_err(|e| t(&e))?;
    let open = next_text(&mut ws).await?;
    if !open.starts_with('0') {
        return Err(JoinError::Transport(format!("expected open, got {open}")));
    }
    let connect = match pid {
        Some(pid) => format!("40/api,{}", json!({"pid": pid, "offset": null})),
        None => "40/api,".to_owned(),
    };
    ws.send(Message::Text(connect.into()))
        .await
        .map_err(|e| t(&e))?;
    let mut page = None;
    loop {
        let frame = next_text(&mut ws).await?;
        if let Some(reply) = frame.strip_prefix("40/api,") {
            let v: Value = serde_json::from_str(reply).unwrap_or(Value::Null);
            page = v["pid"].as_str().map(str::to_owned);
            continue;
        }
        if let Some(err) = frame.strip_prefix("44/api,") {
            let v: Value = serde_json::from_str(err).unwrap_or(Value::Null);
            return Err(JoinError::Refused(
                v["message"].as_str().unwrap_or(err).to_owned(),
            ));
        }
        if let Some(event) = frame.strip_prefix("42/api,") {
            let v: Value = serde_json::from_str(event).map_err(|e| t(&e))?;
            if v[0] == "ROOM_JOIN" {
                let me = v[1]["userId"].as_str().unwrap_or_default().to_owned();
                return Ok((ws, me, page));
            }
        }
    }
}

/// The next text frame that is not a ping (pings are answered).
async fn next_text(ws: &mut Ws) -> Result<String, JoinError> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) if t.as_str() == "2" => {
                let _ = ws.send(Message::Text("3".into())).await;
            }
            Some(Ok(Message::Text(t))) => return Ok(t.to_string()),
            Some(Ok(Message::Close(c))) => {
                return Err(JoinError::Transport(format!("closed: {c:?}")));
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(JoinError::Transport(e.to_string())),
            None => return Err(JoinError::Transport("closed".into())),
        }
    }
}

/// A joined player whose frames a task of its own reads into [`Player::rx`].
pub struct Player {
    pub user_id: String,
    /// The page id the server gave this socket: a reconnect that presents it is the same
    /// page coming back (see [`Player::join_page`]).
    pub pid: Option<String>,
    pub cookie: String,
    pub code: String,
    sink: Sink,
    rx: mpsc::UnboundedReceiver<Got>,
    /// Everything this player received so far that a test has looked at (every method
    /// that reads events records them here, so none is lost to a wait for another).
    pub seen: Vec<Got>,
    reader: tokio::task::JoinHandle<()>,
}

/// The sending half of a player, for a task that sends while the test watches.
#[derive(Clone)]
pub struct Sender {
    sink: Sink,
}

impl Sender {
    /// Sends event `name` with `data`.
    pub async fn emit(&self, name: &str, data: &Value) -> Result<(), String> {
        let frame = format!("42/api,{}", json!([name, data]));
        self.sink
            .lock()
            .await
            .send(Message::Text(frame.into()))
            .await
            .map_err(|e| e.to_string())
    }

    /// Sends note number `seq` (as `note = seq % 128`, `velocity = seq / 128`) to `targets`.
    pub async fn note(&self, seq: u64, targets: &[&str]) -> Result<(), String> {
        let data =
            json!({"note": seq % 128, "velocity": (seq / 128) % 128, "targetUserIds": targets});
        self.emit("KEY_DOWN", &data).await
    }
}

/// The sequence number of a note sent by [`Sender::note`].
pub fn seq_of(data: &Value) -> u64 {
    data["note"].as_u64().unwrap() + 128 * data["velocity"].as_u64().unwrap()
}

impl Player {
    /// Joins room `code` on edge `port` with session `cookie`, as a new page.
    pub async fn join(port: u16, code: &str, cookie: &str) -> Result<Player, JoinError> {
        Self::join_page(port, code, cookie, None).await
    }

    /// Joins as page `pid` when given: socket.io-client's reconnection after a lost
    /// transport, which the server announces to nobody within the grace period.
    pub async fn join_page(
        port: u16,
        code: &str,
        cookie: &str,
        pid: Option<&str>,
    ) -> Result<Player, JoinError> {
        Ok(Self::reading(
            join_raw(port, code, cookie, None, pid).await?,
            code,
            cookie,
        ))
    }

    /// Joins as a new page and panics on failure or after 30 s.
    pub async fn must_join(port: u16, code: &str, cookie: &str) -> Player {
        Self::must_join_page(port, code, cookie, None).await
    }

    /// [`Player::join_page`], panicking on failure or after 30 s.
    pub async fn must_join_page(port: u16, code: &str, cookie: &str, pid: Option<&str>) -> Player {
        match tokio::time::timeout(
            Duration::from_secs(30),
            Self::join_page(port, code, cookie, pid),
        )
        .await
        {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => panic!("join {code} on :{port} failed: {e:?}"),
            Err(_) => panic!("join {code} on :{port}: no answer within 30 s"),
        }
    }

    /// Starts the reader task of a joined socket.
    pub fn reading((ws, user_id, pid): Joined, code: &str, cookie: &str) -> Player {
        let (sink, mut stream) = ws.split();
        let sink: Sink = Arc::new(Mutex::new(sink));
        let (tx, rx) = mpsc::unbounded_channel();
        let pong = sink.clone();
        let reader = tokio::spawn(async move {
            loop {
                let got = match stream.next().await {
                    Some(Ok(Message::Text(t))) => {
                        let text = t.as_str();
                        if text == "2" {
                            let _ = pong.lock().await.send(Message::Text("3".into())).await;
                            continue;
                        }
                        if let Some(ev) = text.strip_prefix("42/api,") {
                            let Ok(v) = serde_json::from_str::<Value>(ev) else {
                                continue;
                            };
                            Got::Event {
                                name: v[0].as_str().unwrap_or_default().to_owned(),
                                data: v.get(1).cloned().unwrap_or(Value::Null),
                                at: Instant::now(),
                            }
                        } else if text.starts_with("41/api,") {
                            Got::Disconnected(Instant::now())
                        } else {
                            continue;
                        }
                    }
                    Some(Ok(Message::Close(c))) => {
                        let _ = tx.send(Got::Closed(c.map(|c| c.code.into()), Instant::now()));
                        break;
                    }
                    Some(Ok(_)) => continue,
                    None | Some(Err(_)) => {
                        let _ = tx.send(Got::Closed(None, Instant::now()));
                        break;
                    }
                };
                if tx.send(got).is_err() {
                    break;
                }
            }
        });
        Player {
            user_id,
            pid,
            cookie: cookie.to_owned(),
            code: code.to_owned(),
            sink,
            rx,
            seen: Vec::new(),
            reader,
        }
    }

    /// A sending handle.
    pub fn sender(&self) -> Sender {
        Sender {
            sink: self.sink.clone(),
        }
    }

    /// Sends event `name` with `data`.
    pub async fn emit(&self, name: &str, data: &Value) -> Result<(), String> {
        self.sender().emit(name, data).await
    }

    /// Waits up to `within` for something matching `want`; returns it and what came before
    /// it, or (as the error) everything seen meanwhile. All of it is also kept in `seen`.
    pub async fn wait_for(
        &mut self,
        within: Duration,
        mut want: impl FnMut(&Got) -> bool,
    ) -> Result<(Got, Vec<Got>), Vec<Got>> {
        let deadline = tokio::time::Instant::now() + within;
        let mut before = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(g)) => {
                    self.seen.push(g.clone());
                    if want(&g) {
                        return Ok((g, before));
                    }
                    before.push(g);
                }
                Ok(None) | Err(_) => return Err(before),
            }
        }
    }

    /// Reads events until `done` holds for everything seen so far (`seen`), or `within`
    /// passed; tells whether it holds.
    pub async fn until(&mut self, within: Duration, mut done: impl FnMut(&[Got]) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        self.drain();
        loop {
            if done(&self.seen) {
                return true;
            }
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(g)) => self.seen.push(g),
                Ok(None) | Err(_) => return done(&self.seen),
            }
        }
    }

    /// Records everything that arrived so far, without waiting; returns it.
    pub fn drain(&mut self) -> Vec<Got> {
        let mut out = Vec::new();
        while let Ok(g) = self.rx.try_recv() {
            self.seen.push(g.clone());
            out.push(g);
        }
        out
    }

    /// What arrived after `t` (of what was recorded).
    pub fn since(&self, t: Instant) -> Vec<Got> {
        self.seen.iter().filter(|g| g.at() > t).cloned().collect()
    }
}

impl Drop for Player {
    fn drop(&mut self) {
        self.reader.abort();
    }
}
