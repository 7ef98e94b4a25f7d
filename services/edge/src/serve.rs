//! The edge's HTTP/1.1 accept loop.
//!
//! `axum::serve` gives hyper no timer, so hyper's header read timeout never runs there: a
//! client that opens a TCP connection and never sends a request, or sends its headers a
//! byte at a time (slowloris), holds a connection and a task for ever. This loop is
//! `axum::serve` with that one thing added: hyper's HTTP/1 connection with a Tokio timer and
//! [`SocketSettings::header_read_timeout`](crate::edge::SocketSettings) (10 s by default),
//! WebSocket upgrades, `TCP_NODELAY`, the peer address as `ConnectInfo`, and a graceful stop.
//! Upgraded sockets are not affected: they leave hyper at the upgrade, and the Engine.IO
//! connect and ping deadlines take over.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::extract::Request;
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Serves `router` on `listener` until `stop`; then stops accepting, lets requests in
/// flight finish, and returns when every connection (not upgraded sockets) has closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    header_read_timeout: Duration,
    stop: CancellationToken,
) {
    let connections = TaskTracker::new();
    let closing = CancellationToken::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    loop {
        let (tcp, peer) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(error) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // Notes are small frames written one at a time: with Nagle's algorithm on, each
        // waits for the previous one's ACK (which the client may delay by up to 40 ms).
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "TCP_NODELAY not set");
        }
        let service = PeerService {
            router: router.clone(),
            peer,
        };
        let conn = http
            .serve_connection(TokioIo::new(tcp), service)
            .with_upgrades();
        let closing = closing.clone();
        connections.spawn(async move {
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(error) = result {
                        tracing::trace!(%error, "connection ended with an error");
                    }
                    return;
                }
                () = closing.cancelled() => conn.as_mut().graceful_shutdown(),
            }
            let _ = conn.await;
        });
    }
    closing.cancel();
    connections.close();
    connections.wait().await;
}

/// The router for one connection, with the peer's address as `ConnectInfo`.
#[derive(Clone)]
struct PeerService {
    router: Router,
    peer: SocketAddr,
}

impl hyper::service::Service<Request<Incoming>> for PeerService {
    type Response = Response;
    type Error = Infallible;
    type Future = axum::routing::future::RouteFuture<Infallible>;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        req.extensions_mut().insert(ConnectInfo(self.peer));
        let mut router = self.router.clone();
        // Router is always ready (its poll_ready returns Ready at once).
        tower_service::Service::call(&mut router, req.map(axum::body::Body::new))
    }
}
