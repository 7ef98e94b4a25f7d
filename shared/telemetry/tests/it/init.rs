//! `init` with OTLP export to a fake collector. Its own test binary, because it installs
//! the process-wide subscriber.

use crate::common;

use std::time::Duration;

use p2piano_telemetry::{TelemetryOptions, init};
use tokio::net::TcpListener;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_spans_over_otlp_http_and_is_idempotent() {
    let collector = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let endpoint = format!("http://{}/", collector.local_addr().expect("addr"));
    let received = tokio::spawn(async move { common::accept_one(&collector).await });

    let options = TelemetryOptions {
        service_name: "p2piano-init-test".to_owned(),
        level: "info".to_owned(),
        json: true,
        otlp_endpoint: Some(endpoint),
    };
    let guard = init(options.clone()).expect("init");
    assert!(guard.is_installed());
    assert!(guard.is_exporting());
    // `log` records under the filter's level (a dependency's per-frame `trace!`) stop at the
    // `log` crate's own level check instead of becoming tracing events.
    assert_eq!(log::max_level(), log::LevelFilter::Info);

    let again = init(options.clone()).expect("second init");
    assert!(!again.is_installed(), "a second call does nothing");
    assert!(!again.is_exporting());
    drop(again);

    let bad = init(TelemetryOptions {
        level: "info,=[".to_owned(),
        ..options
    });
    assert!(
        bad.is_err(),
        "a bad filter is reported even when already installed"
    );

    tracing::info_span!("exported_span").in_scope(|| tracing::info!("inside"));
    guard.shutdown().expect("shutdown flushes");

    let request = tokio::time::timeout(Duration::from_secs(10), received)
        .await
        .expect("collector got a request")
        .expect("join");
    assert_eq!(request.start, "POST /v1/traces HTTP/1.1");
    assert_eq!(
        request.header("content-type"),
        Some("application/x-protobuf")
    );
    let body = String::from_utf8_lossy(&request.body);
    assert!(body.contains("p2piano-init-test"), "service.name missing");
    assert!(body.contains("exported_span"), "span missing");
}
