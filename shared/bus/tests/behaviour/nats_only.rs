//! Cases that only exist for NATS: the server being unreachable or going away.

use std::time::Duration;

use bytes::Bytes;
use p2piano_bus::{Bus, BusErrorKind};
use p2piano_testkit::{NatsServer, wait_until_within};

use crate::{recv, text};

#[tokio::test]
async fn connect_to_closed_port_fails_fast_with_disconnected() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let err = Bus::connect_nats(&format!("nats://127.0.0.1:{port}"), "closed-port")
        .await
        .expect_err("nothing listens there");
    assert_eq!(err.kind(), BusErrorKind::Disconnected, "{err}");
}

/// Runs a blocking testkit call off the async runtime, so the bus keeps running meanwhile.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

#[tokio::test]
async fn subscription_survives_server_restart() {
    let server = blocking(|| NatsServer::start().expect("start nats-server")).await;
    let bus = Bus::connect_nats(&server.url(), "restart-test")
        .await
        .unwrap();
    let subject = p2piano_testkit::unique_name("bus_restart");
    let mut sub = bus.subscribe(&subject).await.unwrap();
    bus.publish(&subject, Bytes::from_static(b"before"))
        .await
        .unwrap();
    assert_eq!(text(&recv(&mut sub).await), "before");
    assert!(bus.is_connected());

    let mut server = blocking(move || {
        let mut server = server;
        server.stop();
        server
    })
    .await;
    wait_until_within("the bus notices", Duration::from_secs(10), || {
        let bus = &bus;
        async move { !bus.is_connected() }
    })
    .await;
    let flushed = bus.flush().await;
    assert_eq!(
        flushed.expect_err("flush while down").kind(),
        BusErrorKind::Disconnected
    );

    let server = blocking(move || {
        server.restart().expect("restart nats-server");
        server
    })
    .await;
    // The client retries with a backoff of at most 4 s.
    wait_until_within("the bus reconnects", Duration::from_secs(30), || {
        let bus = &bus;
        async move { bus.is_connected() }
    })
    .await;

    // async-nats resubscribed: the old subscription receives again.
    bus.publish(&subject, Bytes::from_static(b"after"))
        .await
        .unwrap();
    assert_eq!(text(&recv(&mut sub).await), "after");
    bus.flush().await.unwrap();
    drop(server);
}
