//! The admin routes over a real socket.

use crate::common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::future::BoxFuture;
use p2piano_telemetry::prometheus_client::metrics::counter::Counter;
use p2piano_telemetry::{
    AdminState, AlwaysReady, Metrics, Readiness, serve_admin, serve_with_admin,
};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A probe the test can flip.
struct Switch(AtomicBool);

impl Readiness for Switch {
    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            if self.0.load(Ordering::SeqCst) {
                Ok(())
            } else {
                Err("bus disconnected".to_owned())
            }
        })
    }
}

async fn start(
    state: AdminState,
) -> (
    SocketAddr,
    CancellationToken,
    JoinHandle<std::io::Result<()>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let token = CancellationToken::new();
    let task = tokio::spawn(serve_admin(listener, state, token.clone()));
    (addr, token, task)
}

#[tokio::test]
async fn live_ready_and_metrics() {
    let metrics = Metrics::new("p2piano");
    let requests = Counter::<u64>::default();
    metrics.register(
        "admin_test_requests",
        "Requests in this test.",
        requests.clone(),
    );
    requests.inc_by(3);
    let probe = Arc::new(Switch(AtomicBool::new(true)));
    let (addr, token, task) = start(AdminState {
        metrics: metrics.clone(),
        readiness: probe.clone(),
    })
    .await;

    let live = common::get(addr, "/health/live").await;
    assert_eq!(live.status, 200);
    assert_eq!(live.body, r#"{"status":"ok"}"#);

    let ready = common::get(addr, "/health/ready").await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.body, r#"{"status":"ok"}"#);

    probe.0.store(false, Ordering::SeqCst);
    let unavailable = common::get(addr, "/health/ready").await;
    assert_eq!(unavailable.status, 503);
    let body: serde_json::Value = serde_json::from_str(&unavailable.body).expect("json");
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["reason"], "bus disconnected");
    assert!(
        unavailable
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/json"))
    );

    let scrape = common::get(addr, "/metrics").await;
    assert_eq!(scrape.status, 200);
    assert_eq!(
        scrape.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    let text = scrape.body;
    assert!(
        text.contains("p2piano_admin_test_requests_total 3"),
        "{text}"
    );
    assert!(text.ends_with("# EOF\n"), "{text}");

    assert_eq!(common::get(addr, "/nope").await.status, 404);

    token.cancel();
    task.await.expect("join").expect("serve ends cleanly");
}

#[tokio::test]
async fn cancelling_stops_the_server() {
    let (addr, token, task) = start(AdminState {
        metrics: Metrics::new("p2piano"),
        readiness: Arc::new(AlwaysReady),
    })
    .await;
    assert_eq!(common::get(addr, "/health/live").await.status, 200);
    token.cancel();
    task.await.expect("join").expect("serve ends cleanly");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "listener closed"
    );
}

/// Readiness that is the draining flag itself, as a service's would read it.
struct Draining(Arc<AtomicBool>);

impl Readiness for Draining {
    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            if self.0.load(Ordering::SeqCst) {
                Err("draining".to_owned())
            } else {
                Ok(())
            }
        })
    }
}

#[tokio::test]
async fn the_admin_listener_answers_until_the_service_has_drained() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let draining = Arc::new(AtomicBool::new(false));
    let shutdown = CancellationToken::new();
    let (release, drained) = tokio::sync::oneshot::channel::<()>();
    let service = {
        let shutdown = shutdown.clone();
        async move {
            shutdown.cancelled().await;
            // The drain: it ends when the test says so.
            let _ = drained.await;
        }
    };
    let run = tokio::spawn(serve_with_admin(
        listener,
        AdminState {
            metrics: Metrics::new("p2piano"),
            readiness: Arc::new(Draining(draining.clone())),
        },
        draining.clone(),
        shutdown.clone(),
        service,
    ));
    assert_eq!(common::get(addr, "/health/ready").await.status, 200);
    shutdown.cancel();
    while !draining.load(Ordering::SeqCst) {
        tokio::task::yield_now().await;
    }
    // Draining: not ready, but health and metrics still answer while the service drains.
    assert_eq!(common::get(addr, "/health/ready").await.status, 503);
    assert_eq!(common::get(addr, "/health/live").await.status, 200);
    assert_eq!(common::get(addr, "/metrics").await.status, 200);
    assert!(!run.is_finished());
    release.send(()).unwrap();
    run.await.unwrap().unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the admin listener stops once the service has drained"
    );
}
