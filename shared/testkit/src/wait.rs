//! Async helpers for service tests: wait for a condition, and a bare HTTP GET for admin
//! endpoints (no HTTP client dependency in every test crate).

use std::time::Duration;

/// How long [`wait_until`] waits before failing the test.
pub const CONDITION_DEADLINE: Duration = Duration::from_secs(60);

/// Re-checks `cond` until it holds, failing the test (naming `what`) after
/// [`CONDITION_DEADLINE`]. For conditions no event announces (a document deleted by a TTL
/// monitor, a readiness probe turning green).
pub async fn wait_until<F, Fut>(what: &str, cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_until_within(what, CONDITION_DEADLINE, cond).await
}

/// [`wait_until`] with a deadline of the test's own, for a test whose point is how soon
/// something happens (a reconnection within the client's backoff). The 20 ms pause is the
/// polling interval, not a wait for time to pass.
pub async fn wait_until_within<F, Fut>(what: &str, within: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if cond().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `GET path` on `127.0.0.1:port` over HTTP/1.1; returns the status and the body.
pub async fn http_get(port: u16, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to the admin port");
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("send request");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("read response");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}
