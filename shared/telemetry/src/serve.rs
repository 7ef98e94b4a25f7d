//! Serving the admin routes on their own listener.

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
