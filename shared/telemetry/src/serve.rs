//! Serving the admin routes on their own listener.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{AdminState, admin_router};

/// Serves [`admin_router`] on `listener` until `shutdown` is cancelled, then stops
/// accepting and lets requests in flight finish. The caller binds the listener, so that
/// tests can bind port 0 and learn the address first.
pub async fn serve_admin(
    listener: TcpListener,
    state: AdminState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, admin_router(state))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

/// Runs a service beside its admin listener, the way rooms and presence both stop: when
/// `shutdown` is cancelled `draining` is set at once (so that `/health/ready` says 503 while
/// the service drains), `service` finishes its drain, and only then does the admin server
/// stop, so that health and metrics answer until the end.
pub async fn serve_with_admin(
    listener: TcpListener,
    state: AdminState,
    draining: Arc<AtomicBool>,
    shutdown: CancellationToken,
    service: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let admin_stop = CancellationToken::new();
    let admin = tokio::spawn(serve_admin(listener, state, admin_stop.clone()));
    let watch = shutdown.clone();
    tokio::spawn(async move {
        watch.cancelled().await;
        draining.store(true, Ordering::Relaxed);
    });
    service.await;
    admin_stop.cancel();
    match admin.await {
        Ok(result) => result,
        Err(e) => {
            tracing::warn!(error = %e, "admin server task failed");
            Ok(())
        }
    }
}
