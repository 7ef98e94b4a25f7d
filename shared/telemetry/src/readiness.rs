//! Whether a service can do its work, as `/health/ready` reports it.

use futures::future::BoxFuture;

/// A readiness probe: each service says what "ready" means for it (bus connected,
/// dependencies reachable, not draining). A trait with a boxed future rather than an
/// `async fn` so that it can be used as `Arc<dyn Readiness>`.
pub trait Readiness: Send + Sync {
    /// `Ok` when ready; otherwise the reason, which `/health/ready` returns to the caller
    /// (a load balancer or an operator), so keep it short and free of secrets.
    fn check(&self) -> BoxFuture<'_, Result<(), String>>;
}

/// A probe that is always ready, for services without dependencies and for tests.
#[derive(Clone, Copy, Debug, Default)]
pub struct AlwaysReady;

impl Readiness for AlwaysReady {
    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
}
