//! The servers shared by all tests of one test binary.

use std::io;
use std::sync::{Mutex, OnceLock};

use crate::process::Watched;

/// A server that lives as long as the test process.
struct Shared {
    /// The address handed to tests.
    address: String,
    /// Never stopped: holding it keeps the watchdog's pipe open. When the process exits
    /// (statics are not dropped) the kernel closes the pipe and the watchdog kills the
    /// server.
    _proc: Mutex<Watched>,
}

/// Returns the address of the shared server in `cell`, starting it with `start` on first
/// use; panics with the start error (every later call panics with the same message
/// rather than retrying a slow, failing start).
fn shared(
    cell: &'static OnceLock<Result<Shared, String>>,
    what: &str,
    start: fn() -> io::Result<(String, Watched)>,
) -> String {
    let shared = cell.get_or_init(|| {
        start()
            .map(|(address, proc)| Shared {
                address,
                _proc: Mutex::new(proc),
            })
            .map_err(|e| e.to_string())
    });
    match shared {
        Ok(s) => s.address.clone(),
        Err(e) => panic!("p2piano-testkit: could not start the shared {what}: {e}"),
    }
}

/// Reads an environment variable, treating empty as unset.
fn env_override(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// URL of a nats-server with JetStream shared by every test in this test binary, e.g.
/// `nats://127.0.0.1:41237`.
///
/// Starting a server per test would be slow, so tests share one and isolate themselves
/// with a subject prefix from [`unique_name`](crate::unique_name). If `NATS_URL` is set,
/// it is returned and nothing is started (e.g. to run against a server in CI or a
/// debugger-attached one). Otherwise the first call starts the server (blocking, up to
/// ~20 s) and later calls return the same URL; the server is killed when the test process
/// exits, however it exits.
///
/// # Panics
///
/// If the server cannot be started; tests cannot do anything useful without it.
pub fn nats_url() -> String {
    static NATS: OnceLock<Result<Shared, String>> = OnceLock::new();
    if let Some(url) = env_override("NATS_URL") {
        return url;
    }
    shared(&NATS, "nats-server", crate::nats::start_detached)
}

/// URI of a MongoDB-wire server (secantus) shared by every test in this test binary, e.g.
/// `mongodb://127.0.0.1:41239/?directConnection=true`.
///
/// Tests share one server and isolate themselves with a database named by
/// [`unique_name`](crate::unique_name). If `MONGO_URI` is set, it is returned and nothing
/// is started (e.g. to run against a real MongoDB). Otherwise the first call starts the
/// server (blocking; on a fresh machine it first installs secantus into a cached
/// virtualenv) and later calls return the same URI; the server is killed when the test
/// process exits, however it exits. The URI carries `directConnection=true` because
/// secantus advertises itself as a replica set.
///
/// # Panics
///
/// If the server cannot be started; tests cannot do anything useful without it.
pub fn mongo_uri() -> String {
    static MONGO: OnceLock<Result<Shared, String>> = OnceLock::new();
    if let Some(uri) = env_override("MONGO_URI") {
        return uri;
    }
    shared(
        &MONGO,
        "MongoDB-wire server (secantus)",
        crate::mongo::start_detached,
    )
}
