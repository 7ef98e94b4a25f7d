//! A player of the client dialect (namespace `/api`) for tests that send while they watch
//! what arrives: after the join, a task of its own reads the socket (answering pings), and
//! stamps every event with its arrival time, so that a test can measure when a note or a
//! leave came while other tasks keep sending. The fault tests time clients of a killed,
//! drained or frozen edge this way.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::SplitSink;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{Mutex, mpsc};
use tokio_tungstenite::tungstenite::Message;

use super::{Got, SioClient, Ws, parse};

type Sink = Arc<Mutex<SplitSink<Ws, Message>>>;

/// Something a player's socket brought, and when: an event ([`Got::Event`]), the server
/// ending the namespace ([`Got::Disconnected`]) or the WebSocket closing ([`Got::Closed`]).
#[derive(Debug, Clone)]
pub struct Arrival {
    /// What came.
    pub got: Got,
    /// When the reader task read it.
    pub at: Instant,
}

impl Arrival {
    /// The event's name and data, if it is an event.
    pub fn event(&self) -> Option<(&str, &Value)> {
        match &self.got {
            Got::Event(name, data) => Some((name, data)),
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
    /// The server refused the namespace connect (`44/api,{"message"}`): the message.
    Refused(String),
    /// The connection or the WebSocket handshake failed, or the socket closed.
    Transport(String),
}

/// Opens a socket to edge `port` and joins room `code` with session `cookie` (the query
/// and cookie the web client sends), as page `pid` when given (connection state recovery,
/// as socket.io-client reconnects), else as a new page; `recv_buffer` fixes the TCP
/// receive buffer (a small one makes a client that stops reading back the server up at
/// once). Returns the socket, past its `ROOM_JOIN`, and the player's user id from it.
///
/// Nothing here fails the test or times out: a join under a fault may be refused, cut or
/// left unanswered, and the caller bounds it and decides what that means. The returned
/// client waits for frames without a limit as well.
pub async fn join(
    port: u16,
    code: &str,
    cookie: &str,
    recv_buffer: Option<u32>,
    pid: Option<&str>,
) -> Result<(SioClient, String), JoinError> {
    let query = format!("roomId={code}&displayName=P");
    let mut c = SioClient::handshake(port, &query, &[("cookie", cookie)], recv_buffer, None)
        .await
        .map_err(JoinError::Transport)?;
    let open = c
        .raw()
        .await
        .ok_or_else(|| JoinError::Transport("closed before the open packet".into()))?;
    if !open.starts_with('0') {
        return Err(JoinError::Transport(format!("expected open, got {open}")));
    }
    let auth = pid.map(|pid| json!({"pid": pid, "offset": null}));
    let mut got = c.connect("/api", auth).await;
    loop {
        match got {
            Got::ConnectError(v) => {
                let message = match v["message"].as_str() {
                    Some(m) => m.to_owned(),
                    None => v.to_string(),
                };
                return Err(JoinError::Refused(message));
            }
            Got::Closed(code) => {
                return Err(JoinError::Transport(format!("closed: {code:?}")));
            }
            Got::Event(name, data) if name == "ROOM_JOIN" => {
                let me = data["userId"].as_str().unwrap_or_default().to_owned();
                return Ok((c, me));
            }
            _ => got = c.next().await,
        }
    }
}

/// A joined player whose frames a task of its own reads; every method that looks at what
/// arrived records it in [`Player::seen`], so that none is lost to a wait for another.
pub struct Player {
    /// The player's public user id.
    pub user_id: String,
    /// The page id the server gave this socket: a reconnect that presents it is the same
    /// page coming back.
    pub pid: Option<String>,
    /// The session cookie it joined with.
    pub cookie: String,
    /// The room it joined.
    pub code: String,
    /// Everything this player received so far that a test has looked at.
    pub seen: Vec<Arrival>,
    sender: Sender,
    rx: mpsc::UnboundedReceiver<Arrival>,
    reader: tokio::task::JoinHandle<()>,
}

/// The sending half of a player, for a task that sends while the test watches.
#[derive(Clone)]
pub struct Sender {
    sink: Sink,
    /// The namespace prefix of every event (`/api,`).
    prefix: String,
}

impl Sender {
    /// Sends event `name` with `data`; an error once the socket is gone.
    pub async fn emit(&self, name: &str, data: &Value) -> Result<(), String> {
        let frame = format!("42{}{}", self.prefix, json!([name, data]));
        self.sink
            .lock()
            .await
            .send(Message::Text(frame.into()))
            .await
            .map_err(|e| e.to_string())
    }

    /// Sends note number `seq` (as `note = seq % 128`, `velocity = seq / 128`) to
    /// `targets`, so that the receiver can tell which notes came and in what order
    /// ([`seq_of`]).
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
    /// Joins room `code` on edge `port` with session `cookie`, as page `pid` when given
    /// (see [`join`]), and starts reading.
    pub async fn join(
        port: u16,
        code: &str,
        cookie: &str,
        pid: Option<&str>,
    ) -> Result<Player, JoinError> {
        let (client, user_id) = join(port, code, cookie, None, pid).await?;
        Ok(Self::reading(client, user_id, code, cookie))
    }

    /// [`Player::join`], failing the test when the join fails or takes over 30 s.
    pub async fn must_join(port: u16, code: &str, cookie: &str, pid: Option<&str>) -> Player {
        match tokio::time::timeout(Duration::from_secs(30), Self::join(port, code, cookie, pid))
            .await
        {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => panic!("join {code} on :{port} failed: {e:?}"),
            Err(_) => panic!("join {code} on :{port}: no answer within 30 s"),
        }
    }

    /// Starts the reader task of `client`, a socket that joined as `user_id`: events and
    /// the namespace's end are stamped and queued, pings answered, and the close is the
    /// last thing queued. Events read during the join and not yet taken come first.
    pub fn reading(client: SioClient, user_id: String, code: &str, cookie: &str) -> Player {
        let prefix = client.prefix();
        let SioClient {
            ws, pid, pending, ..
        } = client;
        let (sink, mut stream) = ws.split();
        let sink: Sink = Arc::new(Mutex::new(sink));
        let (tx, rx) = mpsc::unbounded_channel();
        for got in pending {
            let _ = tx.send(Arrival {
                got,
                at: Instant::now(),
            });
        }
        let pong = sink.clone();
        let ns = prefix.clone();
        let reader = tokio::spawn(async move {
            loop {
                let got = match stream.next().await {
                    Some(Ok(Message::Text(t))) if t.as_str() == "2" => {
                        let _ = pong.lock().await.send(Message::Text("3".into())).await;
                        continue;
                    }
                    Some(Ok(Message::Text(t))) => match parse(&t, &ns) {
                        Some(got @ (Got::Event(..) | Got::Disconnected)) => got,
                        _ => continue,
                    },
                    Some(Ok(Message::Close(c))) => Got::Closed(c.map(|c| c.code.into())),
                    Some(Ok(_)) => continue,
                    None | Some(Err(_)) => Got::Closed(None),
                };
                let closed = matches!(got, Got::Closed(_));
                let arrival = Arrival {
                    got,
                    at: Instant::now(),
                };
                if tx.send(arrival).is_err() || closed {
                    break;
                }
            }
        });
        Player {
            user_id,
            pid,
            cookie: cookie.to_owned(),
            code: code.to_owned(),
            seen: Vec::new(),
            sender: Sender { sink, prefix },
            rx,
            reader,
        }
    }

    /// A sending handle.
    pub fn sender(&self) -> Sender {
        self.sender.clone()
    }

    /// Sends event `name` with `data`.
    pub async fn emit(&self, name: &str, data: &Value) -> Result<(), String> {
        self.sender.emit(name, data).await
    }

    /// Waits up to `within` for an arrival matching `want`; returns it and what came before
    /// it, or (as the error) everything that came meanwhile. All of it is kept in `seen`.
    pub async fn wait_for(
        &mut self,
        within: Duration,
        mut want: impl FnMut(&Arrival) -> bool,
    ) -> Result<(Arrival, Vec<Arrival>), Vec<Arrival>> {
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

    /// Reads arrivals until `done` holds for everything seen so far (`seen`), or `within`
    /// passed; tells whether it holds.
    pub async fn until(
        &mut self,
        within: Duration,
        mut done: impl FnMut(&[Arrival]) -> bool,
    ) -> bool {
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
    pub fn drain(&mut self) -> Vec<Arrival> {
        let mut out = Vec::new();
        while let Ok(g) = self.rx.try_recv() {
            self.seen.push(g.clone());
            out.push(g);
        }
        out
    }

    /// What arrived after `t` (of what was recorded).
    pub fn since(&self, t: Instant) -> Vec<Arrival> {
        self.seen.iter().filter(|g| g.at > t).cloned().collect()
    }
}

impl Drop for Player {
    fn drop(&mut self) {
        self.reader.abort();
    }
}
