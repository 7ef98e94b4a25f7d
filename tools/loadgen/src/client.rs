//! One player's socket: Engine.IO 4 / Socket.IO 5 over WebSocket, namespace `/api`
//! (the client dialect of docs/protocol.md). It answers the server's pings itself and hands the
//! caller only events, `41/api,` and the close.

use std::future::Future;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::addr::Sources;
use crate::target::Target;

/// Prefix of a client dialect event.
pub const EVENT_PREFIX: &str = "42/api,";

/// What the socket brought, past pings and handshake frames.
#[derive(Debug)]
pub enum Frame {
    /// A `42/api,[...]` frame, whole (see [`split_event`]).
    Event(Utf8Bytes),
    /// `41/api,`: the server ended the namespace (do not reconnect).
    Disconnected,
    /// The WebSocket closed, with its close code if the server sent one.
    Closed(Option<u16>),
}

/// Counts of what a player saw while it only waited.
#[derive(Clone, Copy, Debug, Default)]
pub struct Seen {
    /// `USER_CONNECT` events.
    pub user_connect: u64,
    /// `USER_DISCONNECT` events.
    pub user_disconnect: u64,
    /// `exception` events.
    pub exceptions: u64,
    /// Any other event.
    pub other: u64,
}

impl Seen {
    /// Counts one event frame.
    pub fn count(&mut self, frame: &str) {
        match split_event(frame).map(|(name, _)| name) {
            Some("USER_CONNECT") => self.user_connect += 1,
            Some("USER_DISCONNECT") => self.user_disconnect += 1,
            Some("exception") => self.exceptions += 1,
            _ => self.other += 1,
        }
    }
}

/// Splits a `42/api,["NAME",payload]` frame into the name and the payload's JSON text
/// (empty when there is none). No allocation.
pub fn split_event(frame: &str) -> Option<(&str, &str)> {
    let rest = frame.strip_prefix(EVENT_PREFIX)?.strip_prefix("[\"")?;
    let end = rest.find('"')?;
    let name = &rest[..end];
    let after = rest[end + 1..].strip_suffix(']')?;
    let payload = after.strip_prefix(',').unwrap_or(after);
    Some((name, payload))
}

/// A joined player.
pub struct Client {
    ws: WebSocketStream<TcpStream>,
    /// This player's public user id (from `ROOM_JOIN`).
    pub user_id: String,
    /// The page id of the namespace connect reply: presented again on a reconnect, as
    /// socket.io-client does, it makes the reconnect the same page coming back.
    pub pid: Option<String>,
    pong_due: bool,
}

#[derive(Deserialize)]
struct RoomJoin {
    #[serde(rename = "userId")]
    user_id: String,
}

fn ws_config() -> WebSocketConfig {
    // Small buffers: tens of thousands of idle sockets must not cost 256 KiB each.
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(1 << 20))
        .max_frame_size(Some(1 << 20))
}

impl Client {
    /// Opens a socket to `target` with `cookie`, connects `/api` for room `code` (as page
    /// `pid` when given, else as a new page), and waits for `ROOM_JOIN`, all within
    /// `timeout`.
    pub async fn join(
        sources: &Sources,
        target: &Target,
        seat: (&str, &str, Option<&str>),
        name: &str,
        timeout: Duration,
    ) -> Result<Client, String> {
        tokio::time::timeout(timeout, Self::join_inner(sources, target, seat, name))
            .await
            .map_err(|_| "join timeout".to_owned())?
    }

    async fn join_inner(
        sources: &Sources,
        target: &Target,
        (code, cookie, pid): (&str, &str, Option<&str>),
        name: &str,
    ) -> Result<Client, String> {
        let url = format!(
            "ws://{}/socket.io/?EIO=4&transport=websocket&roomId={code}&displayName={name}",
            target.host
        );
        let mut req = url.into_client_request().map_err(|e| e.to_string())?;
        req.headers_mut().insert(
            "cookie",
            HeaderValue::from_str(cookie).map_err(|e| e.to_string())?,
        );
        let tcp = sources
            .connect(target.addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let (ws, _) = tokio_tungstenite::client_async_with_config(req, tcp, Some(ws_config()))
            .await
            .map_err(|e| format!("upgrade: {e}"))?;
        let mut c = Client {
            ws,
            user_id: String::new(),
            pid: None,
            pong_due: false,
        };
        let open = c.raw().await.ok_or("closed before open")?;
        if !open.starts_with('0') {
            return Err(format!("expected Engine.IO open, got {open:.60}"));
        }
        match pid {
            Some(pid) => {
                let connect = serde_json::json!({"pid": pid, "offset": null});
                c.send(format!("40/api,{connect}")).await?
            }
            None => c.send("40/api,").await?,
        }
        loop {
            let text = c.raw().await.ok_or("closed while joining")?;
            if let Some(reply) = text.strip_prefix("40/api,") {
                let reply: serde_json::Value = serde_json::from_str(reply).unwrap_or_default();
                c.pid = reply["pid"].as_str().map(str::to_owned);
                continue;
            }
            if let Some(err) = text.strip_prefix("44/api,") {
                return Err(format!("connect refused: {err:.100}"));
            }
            if let Some(("ROOM_JOIN", payload)) = split_event(&text) {
                let join: RoomJoin =
                    serde_json::from_str(payload).map_err(|e| format!("ROOM_JOIN: {e}"))?;
                c.user_id = join.user_id;
                return Ok(c);
            }
        }
    }

    /// The next text frame other than a ping (answered here), `None` once closed.
    async fn raw(&mut self) -> Option<Utf8Bytes> {
        loop {
            match self.ws.next().await? {
                Ok(Message::Text(t)) if t.as_str() == "2" => {
                    self.ws.send(Message::Text("3".into())).await.ok()?;
                }
                Ok(Message::Text(t)) => return Some(t),
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => continue,
            }
        }
    }

    /// The next event, `41/api,` or close; pings are answered on the way. Cancel-safe: a
    /// pong interrupted by cancellation is sent on the next call.
    pub async fn next(&mut self) -> Frame {
        loop {
            if self.pong_due {
                if self.ws.send(Message::Text("3".into())).await.is_err() {
                    return Frame::Closed(None);
                }
                self.pong_due = false;
            }
            let msg = match self.ws.next().await {
                None | Some(Err(_)) => return Frame::Closed(None),
                Some(Ok(m)) => m,
            };
            match msg {
                Message::Text(t) if t.as_str() == "2" => self.pong_due = true,
                Message::Text(t) if t.starts_with(EVENT_PREFIX) => return Frame::Event(t),
                Message::Text(t) if t.starts_with("41/api,") => return Frame::Disconnected,
                Message::Close(c) => return Frame::Closed(c.map(|c| c.code.into())),
                _ => continue,
            }
        }
    }

    /// Sends one text frame.
    pub async fn send(&mut self, text: impl Into<Utf8Bytes>) -> Result<(), String> {
        self.ws
            .send(Message::Text(text.into()))
            .await
            .map_err(|e| e.to_string())
    }

    /// Waits for `until` while answering pings and counting events into `seen`. Returns
    /// `Ok(output)`, or `Err(frame)` when the socket closed (or got `41/api,`) first.
    pub async fn idle_until<F: Future>(
        &mut self,
        until: F,
        seen: &mut Seen,
    ) -> Result<F::Output, Frame> {
        let mut until = std::pin::pin!(until);
        loop {
            // `until` first: once it has fired, no frame is counted, not even one that was
            // already waiting. Scenarios end by closing every client, and the leaves that
            // this announces to the clients still open are not events of the run.
            tokio::select! {
                biased;
                out = &mut until => return Ok(out),
                frame = self.next() => match frame {
                    Frame::Event(t) => seen.count(&t),
                    other => return Err(other),
                },
            }
        }
    }

    /// Closes the socket politely (`41/api,` then a WebSocket close), within a second.
    pub async fn leave(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let _ = self.send("41/api,").await;
            let _ = self.ws.close(None).await;
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_without_allocating() {
        assert_eq!(
            split_event(r#"42/api,["KEY_DOWN",{"note":60,"velocity":1,"userId":"u"}]"#),
            Some(("KEY_DOWN", r#"{"note":60,"velocity":1,"userId":"u"}"#))
        );
        assert_eq!(
            split_event(r#"42/api,["NEWER_CONNECTION"]"#),
            Some(("NEWER_CONNECTION", ""))
        );
        assert_eq!(split_event(r#"42["join-room",{}]"#), None);
        assert_eq!(split_event("42/api,"), None);
        assert_eq!(split_event(r#"42/api,["x""#), None);
    }

    #[test]
    fn seen_counts_by_name() {
        let mut s = Seen::default();
        s.count(r#"42/api,["USER_CONNECT",{"userId":"a","room":{}}]"#);
        s.count(r#"42/api,["USER_DISCONNECT",{"userId":"a","room":{}}]"#);
        s.count(r#"42/api,["exception",{"code":429}]"#);
        s.count(r#"42/api,["KEY_UP",{"note":1,"userId":"a"}]"#);
        assert_eq!(
            (s.user_connect, s.user_disconnect, s.exceptions, s.other),
            (1, 1, 1, 1)
        );
    }
}
