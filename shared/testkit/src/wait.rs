//! Waiting for a condition in service tests, by polling it up to a deadline.

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
