//! The handle that keeps telemetry running and flushes it at the end.

use std::sync::mpsc;
use std::time::Duration;

use opentelemetry_sdk::trace::SdkTracerProvider;
use tokio::runtime::{Handle, RuntimeFlavor};

use crate::TelemetryError;

/// How long shutting down may wait for the last spans to be exported.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// Returned by [`crate::init`]; keep it alive for the life of the process. Dropping it (or
/// calling [`TelemetryGuard::shutdown`]) exports the spans still buffered and shuts the
/// tracer provider down, so that the last requests of a stopping service are not lost.
/// Logging keeps working afterwards; only span export stops.
#[derive(Debug)]
#[must_use = "dropping the guard stops span export"]
pub struct TelemetryGuard {
    installed: bool,
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// A guard for a subscriber this call installed, exporting through `provider` if any.
    pub(crate) fn installed(provider: Option<SdkTracerProvider>) -> Self {
        TelemetryGuard {
            installed: true,
            provider,
        }
    }

    /// A guard that does nothing, for a call that found telemetry already installed.
    pub(crate) fn inactive() -> Self {
        TelemetryGuard {
            installed: false,
            provider: None,
        }
    }

    /// Whether the call that returned this guard installed the global subscriber (false
    /// when one was already installed, in which case the guard does nothing).
    pub fn is_installed(&self) -> bool {
        self.installed
    }

    /// Whether spans are exported over OTLP through this guard.
    pub fn is_exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports buffered spans and shuts the tracer provider down, reporting failure (which
    /// dropping the guard cannot). Blocks for at most 10 seconds.
    pub fn shutdown(mut self) -> Result<(), TelemetryError> {
        match self.provider.take() {
            Some(provider) => shutdown_provider(provider),
            None => Ok(()),
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(err) = shutdown_provider(provider)
        {
            // The subscriber may be gone already; stderr is the last resort.
            eprintln!("{err}");
        }
    }
}

/// Shuts `provider` down without deadlocking the runtime its batch task runs on.
///
/// The shutdown blocks until that task has exported the last batch. It runs on its own
/// thread (so that waking the task does not park it on this worker), and a tokio worker
/// thread calling this hands its other tasks off with `block_in_place` while it waits.
pub(crate) fn shutdown_provider(provider: SdkTracerProvider) -> Result<(), TelemetryError> {
    let wait = move || {
        let (done, result) = mpsc::channel();
        std::thread::Builder::new()
            .name("otel-shutdown".to_owned())
            .spawn(move || {
                let _ = done.send(provider.shutdown());
            })
            .map_err(|err| TelemetryError::Shutdown(format!("cannot start a thread: {err}")))?;
        match result.recv_timeout(SHUTDOWN_TIMEOUT) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(TelemetryError::Shutdown(err.to_string())),
            Err(_) => Err(TelemetryError::Shutdown(format!(
                "span export did not finish within {SHUTDOWN_TIMEOUT:?}"
            ))),
        }
    };
    match Handle::try_current() {
        Ok(handle) if !matches!(handle.runtime_flavor(), RuntimeFlavor::CurrentThread) => {
            tokio::task::block_in_place(wait)
        }
        _ => wait(),
    }
}
