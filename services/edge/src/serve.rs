//! The edge's HTTP/1.1 accept loop: every phase of a connection has a deadline, and the
//! number of connections has caps.
//!
//! `axum::serve` gives hyper no timer, so hyper's header read timeout never runs there: a
//! client that opens a TCP connection and never sends a request, or sends its headers a
//! byte at a time (slowloris), holds a connection and a task for ever. This loop is
//! `axum::serve` with what it lacks for the open internet:
//!
//! - **caps**: each connection takes a [`Pass`] from the [`Gate`] before anything is read,
//!   or is closed at once (the global cap and the per-address cap, [`crate::gate`]);
//! - **headers**: hyper's HTTP/1 connection with a Tokio timer and
//!   [`SocketSettings::header_read_timeout`](crate::edge::SocketSettings) (10 s by
//!   default), which also bounds an idle keep-alive connection between two requests;
//! - **body**: a request's body must arrive within the body deadline from the end of its
//!   headers ([`DeadlineBody`]); a route reading it past that answers 408 and the
//!   connection closes;
//! - **trusted proxies**: from a peer in `P2PIANO_TRUSTED_PROXIES` the client's address is
//!   the forwarded one ([`crate::proxy`]): it is what `ConnectInfo` says, and each request
//!   holds a place under that address's cap (503 over it: the proxy's connection carries
//!   other clients too);
//! - WebSocket upgrades (the pass travels with the request into the socket task, where the
//!   namespace connect deadline and the ping deadlines take over), `TCP_NODELAY`, the peer
//!   address as `ConnectInfo`, and a graceful stop.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::extract::Request;
use axum::response::Response;
use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::metrics::counter::Counter;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::gate::{Gate, Pass, Places};
use crate::metrics::EdgeMetrics;
use crate::proxy::TrustedProxies;

/// What the accept loop enforces.
#[derive(Clone)]
pub struct Limits {
    /// The connection caps.
    pub gate: Arc<Gate>,
    /// From the connection's start, or the end of its previous request, to the end of the
    /// next request's headers.
    pub header_read_timeout: Duration,
    /// From the end of a request's headers to the end of its body.
    pub body_timeout: Duration,
    /// Where refusals and deadlines are counted.
    pub metrics: EdgeMetrics,
    /// Peers whose forwarded client addresses are believed.
    pub proxies: Arc<TrustedProxies>,
}

/// Serves `router` on `listener` until `stop`; then stops accepting, lets requests in
/// flight finish, and returns when every connection (not upgraded sockets) has closed.
pub async fn serve(listener: TcpListener, router: Router, limits: Limits, stop: CancellationToken) {
    let connections = TaskTracker::new();
    let closing = CancellationToken::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
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
        // A trusted proxy's connection carries many clients: only the global cap applies
        // to it, and each request's client is counted under its own address below.
        let proxied = limits.proxies.contains(peer.ip());
        let pass = match limits.gate.admit(peer.ip(), !proxied) {
            Ok(pass) => pass,
            Err(refused) => {
                // Closed before a byte is read: the cheapest answer, and the one that
                // keeps this process's descriptors for the connections it serves.
                limits.metrics.connection_refused(refused, peer.ip());
                drop(tcp);
                continue;
            }
        };
        // Notes are small frames written one at a time: with Nagle's algorithm on, each
        // waits for the previous one's ACK (which the client may delay by up to 40 ms).
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "TCP_NODELAY not set");
        }
        let service = PeerService {
            router: router.clone(),
            peer,
            pass: Arc::new(pass),
            proxied: proxied.then(|| limits.clone()),
            body_timeout: limits.body_timeout,
            body_timeouts: limits.metrics.body_timeouts.clone(),
        };
        let header_timeouts = limits.metrics.header_timeouts.clone();
        let conn = http
            .serve_connection(TokioIo::new(tcp), service)
            .with_upgrades();
        let closing = closing.clone();
        connections.spawn(async move {
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(error) = result {
                        if error.is_timeout() {
                            header_timeouts.inc();
                        }
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

/// The router for one connection, with the client's address as `ConnectInfo` (the peer's,
/// or behind a trusted proxy the forwarded one) and the request's [`Places`] in its
/// extensions (the upgrade handler moves them into the socket task, so that an upgraded
/// socket keeps its places under the caps).
#[derive(Clone)]
struct PeerService {
    router: Router,
    peer: SocketAddr,
    pass: Arc<Pass>,
    /// Set when the peer is a trusted proxy.
    proxied: Option<Limits>,
    body_timeout: Duration,
    body_timeouts: Counter,
}

impl hyper::service::Service<Request<Incoming>> for PeerService {
    type Response = Response;
    type Error = Infallible;
    type Future = futures::future::Either<
        axum::routing::future::RouteFuture<Infallible>,
        futures::future::BoxFuture<'static, Result<Response, Infallible>>,
    >;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        let mut places = Places {
            connection: self.pass.clone(),
            client: None,
        };
        let mut client = self.peer;
        if let Some(limits) = &self.proxied {
            client.set_ip(limits.proxies.client_of(self.peer.ip(), req.headers()));
            match limits.gate.admit_client(client.ip()) {
                Ok(pass) => places.client = Some(Arc::new(pass)),
                Err(refused) => {
                    // The proxy's connection is shared by other clients: answer, do not
                    // close it.
                    limits.metrics.connection_refused(refused, client.ip());
                    let busy = (
                        axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        [(axum::http::header::RETRY_AFTER, "1")],
                        "too many connections from this address",
                    );
                    let busy = axum::response::IntoResponse::into_response(busy);
                    return futures::future::Either::Right(Box::pin(std::future::ready(Ok(busy))));
                }
            }
        }
        // A proxied client's place is held until its answer is ready (the request's
        // extensions are dropped as soon as a handler takes the body), and by its socket
        // after an upgrade (the upgrade handler takes a copy of the places).
        let client_place = places.client.clone();
        req.extensions_mut().insert(ConnectInfo(client));
        req.extensions_mut().insert(places);
        let mut router = self.router.clone();
        let req = if hyper::body::Body::is_end_stream(req.body()) {
            req.map(axum::body::Body::new)
        } else {
            let (timeout, counter) = (self.body_timeout, self.body_timeouts.clone());
            req.map(|inner| axum::body::Body::new(DeadlineBody::new(inner, timeout, counter)))
        };
        // Router is always ready (its poll_ready returns Ready at once).
        let answer = tower_service::Service::call(&mut router, req);
        match client_place {
            None => futures::future::Either::Left(answer),
            Some(place) => futures::future::Either::Right(Box::pin(async move {
                let response = answer.await;
                drop(place);
                response
            })),
        }
    }
}

/// The error of a body that did not arrive before its deadline.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive before its deadline")]
pub struct BodyTimeout;

/// Whether a body read failed on its deadline (the routes answer 408 then).
pub fn is_body_timeout(e: axum::Error) -> bool {
    let inner = e.into_inner();
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(inner.as_ref());
    while let Some(e) = source {
        if e.is::<BodyTimeout>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// A request body that fails with [`BodyTimeout`] once its deadline passes, so that a
/// client sending its body slowly, or part of it and then nothing, cannot hold a route (and
/// its connection) beyond it. Only requests with a body pay for the timer.
struct DeadlineBody {
    inner: Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timeouts: Counter,
}

impl DeadlineBody {
    fn new(inner: Incoming, timeout: Duration, timeouts: Counter) -> Self {
        Self {
            inner,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            timeouts,
        }
    }
}

impl hyper::body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            this.timeouts.inc();
            return Poll::Ready(Some(Err(Box::new(BodyTimeout))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
