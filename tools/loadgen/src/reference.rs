//! `loadgen reference-server`: the speed-of-light reference. It speaks the same client
//! dialect as the edge, just enough for the scenarios (room create/read with a session
//! cookie, the Engine.IO open, the `/api` namespace connect, `ROOM_JOIN`, relayed
//! `KEY_DOWN`/`KEY_UP`/… to `targetUserIds`), on the same WebSocket stack (axum), and
//! nothing else: no validation, no rate limits, no sessions kept, no bus, no rooms kept
//! (a user id is made up per socket and anyone may send to anyone it names). Whatever the
//! edge costs beyond it is the price of the real service's work.
//!
//! Per socket: one reader task that parses each event once, and a writer task fed by a
//! bounded queue (1024 frames, dropped when full, as the edge's slow-consumer policy does
//! in spirit), written in batches with one flush per batch. A relayed event is encoded once
//! and the same bytes go to every target.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use futures::{SinkExt, StreamExt};
use rand::Rng;
use serde_json::{Map, Value};
use tokio::sync::mpsc;

/// Frames a socket's writer may have queued before new ones are dropped.
const QUEUE: usize = 1024;
/// Most frames written with one flush.
const BATCH: usize = 64;
/// Server ping period, as the edge's default.
const PING: Duration = Duration::from_secs(25);

/// Every connected socket by its user id.
#[derive(Default)]
struct Hub {
    sockets: RwLock<HashMap<Arc<str>, mpsc::Sender<Utf8Bytes>>>,
}

/// Serves on 127.0.0.1:`port` until interrupted (SIGINT or SIGTERM), printing the bound
/// address first so that a script can read it.
pub async fn serve(port: u16) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
        .await
        .map_err(|e| format!("bind 127.0.0.1:{port}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    println!("reference server listening on http://{addr}");
    // Small frames must leave at once: without TCP_NODELAY, Nagle holds each one back
    // until the previous is acknowledged.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let hub = Arc::new(Hub::default());
    let app = Router::new()
        .route("/api/room", post(create_room))
        .route("/rooms", post(create_room_service))
        .route("/api/room/{code}", get(get_room))
        .route("/health", get(|| async { "ok" }))
        .route("/socket.io/", get(upgrade))
        .with_state(hub);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(|e| e.to_string())
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn random_hex(bytes: usize) -> String {
    let mut rng = rand::rng();
    (0..bytes)
        .map(|_| format!("{:02x}", rng.random::<u8>()))
        .collect()
}

fn room_code() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// A JSON response that hands out a new session cookie.
fn with_cookie(status: StatusCode, body: Value) -> Response {
    let cookie = format!("sessionId={}; Path=/; HttpOnly", random_hex(16));
    let mut resp = (status, axum::Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

async fn create_room() -> Response {
    with_cookie(
        StatusCode::CREATED,
        serde_json::json!({"roomId": room_code(), "users": {}}),
    )
}

async fn create_room_service() -> Response {
    with_cookie(
        StatusCode::CREATED,
        serde_json::json!({"code": room_code(), "members": []}),
    )
}

async fn get_room(Path(code): Path<String>) -> Response {
    with_cookie(
        StatusCode::OK,
        serde_json::json!({"roomId": code, "users": {}}),
    )
}

async fn upgrade(State(hub): State<Arc<Hub>>, ws: WebSocketUpgrade) -> Response {
    ws.read_buffer_size(4 * 1024)
        .on_upgrade(move |socket| run_socket(hub, socket))
}

/// One socket: the open and the namespace connect, then events until it closes.
async fn run_socket(hub: Arc<Hub>, socket: WebSocket) {
    let (mut sink, mut stream) = socket.split();
    let sid = random_hex(10);
    let open = format!(
        "0{{\"sid\":\"{sid}\",\"upgrades\":[],\"pingInterval\":25000,\"pingTimeout\":20000,\"maxPayload\":1000000}}"
    );
    if sink.send(Message::Text(open.into())).await.is_err() {
        return;
    }
    let user_id: Arc<str> = uuid::Uuid::new_v4().to_string().into();
    let (tx, mut rx) = mpsc::channel::<Utf8Bytes>(QUEUE);
    let writer = tokio::spawn(async move {
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + PING, PING);
        loop {
            let frame = tokio::select! {
                f = rx.recv() => match f {
                    Some(f) => f,
                    None => break,
                },
                _ = ping.tick() => Utf8Bytes::from_static("2"),
            };
            // What is already queued goes out with one flush (one system call), as the
            // edge's writer does.
            let mut written = sink.feed(Message::Text(frame)).await;
            for _ in 1..BATCH {
                match rx.try_recv() {
                    Ok(f) if written.is_ok() => written = sink.feed(Message::Text(f)).await,
                    _ => break,
                }
            }
            if written.is_err() || sink.flush().await.is_err() {
                break;
            }
        }
    });
    let mut joined = false;
    while let Some(Ok(msg)) = stream.next().await {
        let Message::Text(text) = msg else {
            if matches!(msg, Message::Close(_)) {
                break;
            }
            continue;
        };
        let text = text.as_str();
        if text == "3" {
            continue;
        }
        if text.starts_with("40/api,") && !joined {
            joined = true;
            hub.sockets
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(user_id.clone(), tx.clone());
            let welcome = format!(
                "42/api,[\"ROOM_JOIN\",{{\"userId\":\"{user_id}\",\"room\":{{\"users\":{{}}}}}}]"
            );
            let _ = tx.try_send(format!("40/api,{{\"sid\":\"{sid}\"}}").into());
            let _ = tx.try_send(welcome.into());
            continue;
        }
        if text.starts_with("41/api,") {
            break;
        }
        if let Some(event) = text.strip_prefix("42/api,") {
            relay(&hub, &user_id, event);
        }
    }
    hub.sockets
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&user_id);
    drop(tx);
    let _ = writer.await;
}

/// `["NAME",{...,"targetUserIds":[...]}]` → `["NAME",{...,"userId":sender}]` to each
/// target, encoded once.
fn relay(hub: &Hub, sender: &str, event: &str) {
    let Ok((name, mut payload)) = serde_json::from_str::<(String, Map<String, Value>)>(event)
    else {
        return;
    };
    let targets = match payload.remove("targetUserIds") {
        Some(Value::Array(t)) => t,
        _ => return,
    };
    payload.insert("userId".into(), Value::String(sender.to_owned()));
    let Ok(body) = serde_json::to_string(&(name, payload)) else {
        return;
    };
    let frame: Utf8Bytes = format!("42/api,{body}").into();
    let sockets = hub.sockets.read().unwrap_or_else(|e| e.into_inner());
    for target in &targets {
        if let Some(tx) = target.as_str().and_then(|t| sockets.get(t)) {
            let _ = tx.try_send(frame.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn relays_to_the_named_targets_only_with_the_sender_added() {
        let hub = Hub::default();
        let (a_tx, mut a_rx) = mpsc::channel(4);
        let (b_tx, mut b_rx) = mpsc::channel(4);
        {
            let mut s = hub.sockets.write().unwrap();
            s.insert("a".into(), a_tx);
            s.insert("b".into(), b_tx);
        }
        relay(
            &hub,
            "s",
            r#"["KEY_DOWN",{"note":60,"velocity":5,"targetUserIds":["a","nobody"]}]"#,
        );
        let got = a_rx.recv().await.unwrap();
        let event: Value =
            serde_json::from_str(got.as_str().strip_prefix("42/api,").unwrap()).unwrap();
        assert_eq!(
            event,
            serde_json::json!(["KEY_DOWN", {"note": 60, "velocity": 5, "userId": "s"}])
        );
        assert!(b_rx.try_recv().is_err());
        relay(&hub, "s", "not json");
        relay(&hub, "s", r#"["KEY_UP",{"note":1}]"#);
        assert!(a_rx.try_recv().is_err());
    }

    #[test]
    fn codes_and_ids_have_their_shapes() {
        let c = room_code();
        assert!(c.len() == 5 && c.bytes().all(|b| b.is_ascii_lowercase()));
        assert_eq!(random_hex(16).len(), 32);
    }
}
