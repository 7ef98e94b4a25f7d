//! `GET /socket.io/`: checks the handshake (Engine.IO 4 over WebSocket only, Origin) and
//! hands the upgraded socket to its task.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Extension, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::edge::Edge;
use crate::gate::Places;
use crate::security::Kind as SecurityKind;
use crate::socket::conn::{self, Handshake};

fn refuse(status: StatusCode, code: u8, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"code": code, "message": message})),
    )
        .into_response()
}

/// Whether a browser page from `origin` may open a socket: one of `CORS_ORIGIN`, or a page
/// served by this edge itself (its origin's host and port are the request's `Host`; the
/// scheme is not compared, since TLS may end at a load balancer in front). A foreign page
/// cannot forge either: browsers set `Origin` and `Host` themselves.
pub fn origin_allowed(origin: &str, headers: &HeaderMap, allowed: &[String]) -> bool {
    if allowed.iter().any(|a| a == origin) {
        return true;
    }
    let authority = origin.split_once("://").map(|(_, rest)| rest);
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    matches!((authority, host), (Some(a), Some(h)) if !a.is_empty() && a.eq_ignore_ascii_case(h))
}

/// Bytes a socket reads from its connection at a time, and the size of the read buffer it
/// keeps while idle. Client frames are small (a note is under 100 bytes), so 512 bytes holds
/// several; a larger frame (a signal, a CRDT sync) grows the buffer to its length and is
/// read in several system calls. A 4 KiB buffer cost every idle socket 3.5 KiB more.
pub const READ_BUFFER: usize = 512;

/// The headers a socket keeps for its namespace connects (cookie and authorization),
/// copied. hyper's header values are slices of the connection's read buffer, so keeping
/// the request's `HeaderMap` would keep that whole buffer (8–16 KiB) alive for the life of
/// the socket; the copies cost the bytes of two header values.
pub fn credentials(headers: &HeaderMap) -> HeaderMap {
    // Sized for what is kept: a map grown by inserting reserves room for several more
    // entries, which every socket would carry for its life.
    let count = [header::COOKIE, header::AUTHORIZATION]
        .iter()
        .map(|name| headers.get_all(name).iter().count())
        .sum();
    let mut kept = HeaderMap::with_capacity(count);
    for name in [header::COOKIE, header::AUTHORIZATION] {
        for value in headers.get_all(&name) {
            if let Ok(copy) = HeaderValue::from_bytes(value.as_bytes()) {
                kept.append(name.clone(), copy);
            }
        }
    }
    kept
}

/// The upgrade handler.
#[tracing::instrument(skip_all, fields(ip = %addr.ip()))]
pub async fn upgrade(
    State(edge): State<Arc<Edge>>,
    Query(query): Query<HashMap<String, String>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    places: Option<Extension<Places>>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if edge.draining.load(Ordering::Relaxed) {
        return refuse(StatusCode::SERVICE_UNAVAILABLE, 2, "Server is restarting");
    }
    // Connection attempts per client address (`P2PIANO_IP_CONNECT_RATE`), counted before
    // anything else is looked at, so that malformed attempts count too.
    if let Err(wait) = edge.auth.ip_limits().check(addr.ip()) {
        edge.metrics.http_rate_limited.inc();
        let mut response = refuse(
            StatusCode::TOO_MANY_REQUESTS,
            3,
            "Too many connection attempts",
        );
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        return response;
    }
    // Polling, other transports and other Engine.IO versions (docs/protocol.md).
    if query.get("EIO").map(String::as_str) != Some("4")
        || query.get("transport").map(String::as_str) != Some("websocket")
    {
        return refuse(StatusCode::BAD_REQUEST, 0, "Transport unknown");
    }
    // A cross-site page must not ride the cookie; clients without Origin (not browsers) may.
    // A browser sends one Origin; more than one is a forgery, whichever of them would pass.
    let refused_origin = if headers.get_all(header::ORIGIN).iter().nth(1).is_some() {
        Some("more than one Origin")
    } else {
        headers
            .get(header::ORIGIN)
            .filter(|o| {
                !origin_allowed(o.to_str().unwrap_or_default(), &headers, &edge.cors_origins)
            })
            .map(|_| "Origin not allowed")
    };
    if let Some(detail) = refused_origin {
        edge.metrics
            .security
            .record(SecurityKind::RefusedOrigin, addr.ip(), None, detail);
        return refuse(StatusCode::FORBIDDEN, 4, "Origin not allowed");
    }
    let Ok(ws) = ws else {
        return refuse(StatusCode::BAD_REQUEST, 3, "Bad request");
    };
    let handshake = Handshake {
        room_id: query.get("roomId").map(|v| v.as_str().into()),
        display_name: query.get("displayName").map(|v| v.as_str().into()),
        headers: credentials(&headers),
        ip: addr.ip(),
        places: places.map(|Extension(p)| p),
    };
    let max = edge.settings.max_payload;
    ws.read_buffer_size(READ_BUFFER)
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(start(edge, handshake))
}

/// What the upgrade's task does once the connection is a WebSocket: sets the socket up and
/// spawns its own task, tracked by `Edge::tasks`, and ends. The upgrade's task holds what
/// the upgrade needed (its configuration, this callback); awaiting the socket in it would
/// keep all that for the socket's life.
fn start(
    edge: Arc<Edge>,
    handshake: Handshake,
) -> impl FnOnce(WebSocket) -> std::future::Ready<()> + Send + 'static {
    move |socket| {
        let tasks = edge.tasks.clone();
        tasks.spawn(conn::run(edge, socket, handshake));
        std::future::ready(())
    }
}

#[cfg(test)]
mod tests {
    use futures::{FutureExt, StreamExt};

    use super::*;
    use crate::socket::test_support::{WAIT, edge, handshake, socket_pair};

    /// The upgrade's task ends as soon as the socket is set up, and the socket goes on in a
    /// task of its own (tracked for the drain): its open packet reaches the client after
    /// the upgrade's work is over. Awaiting the socket in the upgrade's task kept the
    /// upgrade's state for the socket's life.
    #[tokio::test]
    async fn the_upgrades_task_ends_and_the_socket_lives_on_in_its_own() {
        let (socket, mut client) = socket_pair(None).await;
        let edge = edge();
        let upgrade = start(edge.clone(), handshake())(socket);
        assert!(
            upgrade.now_or_never().is_some(),
            "the upgrade's task waited on the socket"
        );
        assert_eq!(edge.tasks.len(), 1, "the socket's task is tracked");
        let open = tokio::time::timeout(WAIT, client.next())
            .await
            .expect("the socket's open packet")
            .unwrap()
            .unwrap();
        assert!(open.to_text().unwrap().starts_with("0{"), "{open:?}");
    }

    #[test]
    fn origins_from_the_list_or_this_host() {
        let allowed = vec!["http://localhost:5173".to_owned()];
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, "localhost:3001".parse().unwrap());
        assert!(origin_allowed("http://localhost:5173", &headers, &allowed));
        assert!(origin_allowed("http://localhost:3001", &headers, &allowed));
        assert!(origin_allowed("https://LOCALHOST:3001", &headers, &allowed));
        assert!(!origin_allowed("https://evil.example", &headers, &allowed));
        assert!(!origin_allowed("http://localhost:3002", &headers, &allowed));
        assert!(!origin_allowed("null", &headers, &allowed));
        assert!(!origin_allowed("http://", &HeaderMap::new(), &allowed));
    }

    #[test]
    fn sockets_keep_only_their_credentials() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, "localhost:3001".parse().unwrap());
        headers.insert(header::USER_AGENT, "test".parse().unwrap());
        headers.append(header::COOKIE, "a=1".parse().unwrap());
        headers.append(header::COOKIE, "sessionId=x".parse().unwrap());
        headers.insert(header::AUTHORIZATION, "Bearer y".parse().unwrap());
        let kept = credentials(&headers);
        assert_eq!(kept.len(), 3);
        let cookies: Vec<_> = kept.get_all(header::COOKIE).iter().collect();
        assert_eq!(cookies, ["a=1", "sessionId=x"]);
        assert_eq!(kept[header::AUTHORIZATION], "Bearer y");
        assert!(kept.get(header::HOST).is_none());
    }
}
