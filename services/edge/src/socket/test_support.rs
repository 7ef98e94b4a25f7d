//! What the socket layer's unit tests share: a real WebSocket accepted by axum, and an edge
//! on the in-process bus.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use p2piano_bus::Bus;
use p2piano_protocol::Subjects;
use p2piano_telemetry::Metrics;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;

use crate::edge::{Edge, SocketSettings};
use crate::http::limits::IpLimits;
use crate::http::session::{CookieSigner, SessionAuth};
use crate::metrics::EdgeMetrics;
use crate::rpc::Rpc;
use crate::socket::conn::Handshake;

/// How long a test waits for a frame it expects.
pub(crate) const WAIT: Duration = Duration::from_secs(10);

/// A WebSocket accepted by axum (the server's side, as a socket task gets it) and the
/// client connected to it over loopback, whose receive buffer is `recv_buffer` bytes if
/// given (a small one makes a client that does not read stop taking bytes soon).
pub(crate) async fn socket_pair(
    recv_buffer: Option<u32>,
) -> (WebSocket, WebSocketStream<TcpStream>) {
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(move |ws: WebSocketUpgrade| {
            let tx = tx.clone();
            async move {
                // A write buffer larger than any frame of these tests: a frame is only
                // written to the connection by a flush, never by the write that buffers it.
                ws.write_buffer_size(8 << 20)
                    .on_upgrade(move |socket| async move {
                        let _ = tx.send(socket).await;
                    })
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size).unwrap();
    }
    let tcp = socket.connect(addr).await.unwrap();
    let (client, _) = tokio_tungstenite::client_async(format!("ws://{addr}/"), tcp)
        .await
        .unwrap();
    let server = tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap()
        .unwrap();
    (server, client)
}

/// An edge on an in-process bus with nothing else on it: enough to start a socket's task,
/// not to answer its joins.
pub(crate) fn edge() -> Arc<Edge> {
    let bus = Bus::in_process();
    let metrics = EdgeMetrics::new(&Metrics::new("test"));
    let subjects = Subjects::new("test").unwrap();
    let rpc = Rpc::new(bus.clone(), subjects, WAIT, metrics.clone());
    let signer = CookieSigner::new(b"a test secret of at least 32 bytes");
    let auth = SessionAuth::new(rpc.clone(), signer, false, Arc::new(IpLimits::new(0, 1)));
    Edge::new(
        "test-edge".to_owned(),
        rpc,
        bus,
        auth,
        Vec::new(),
        SocketSettings::default(),
        metrics,
    )
}

/// The handshake of a socket from loopback with no query and no credentials.
pub(crate) fn handshake() -> Handshake {
    Handshake {
        room_id: None,
        display_name: None,
        headers: axum::http::HeaderMap::new(),
        ip: std::net::IpAddr::from([127, 0, 0, 1]),
        places: None,
    }
}
