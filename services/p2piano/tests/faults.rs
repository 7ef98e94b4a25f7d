//! Fault tests of the split deployment, as real processes on loopback: `nats-server` with
//! JetStream, the MongoDB-wire server (secantus), `p2piano rooms`, `p2piano presence` and
//! two `p2piano edge`s, each test with its own processes, ports, subject prefix and database.
//!
//! Each test breaks one thing (kills an edge, drains one, freezes one, kills and restarts
//! rooms, presence, NATS or the database, floods or stalls a client, kills an edge of 5,000
//! sockets) and
//! checks the rules of docs/architecture.md: no ghosts 10 s after an edge dies, a drain moves clients
//! without leave/join and exits within 30 s, nothing is lost on a restart, and an
//! unavailable dependency gives prompt errors, never hangs. They print what they measured
//! (`-- --nocapture`); docs/RELIABILITY.md records a run.
//!
//! Run them with `make test-faults` (one at a time: they are heavy for a 2-core machine); they
//! are not part of `cargo test --workspace` (`test = false` in Cargo.toml). Settings are the
//! defaults (leave grace 5 s, heartbeat 1 s, edge timeout 3 s, request timeout 5 s, MongoDB
//! timeout 2 s) unless a test says otherwise.
//!
//! Environment: `FAULTS_KEEP_LOGS=1` keeps each deployment's service logs (the path is
//! printed); `FAULTS_STORM_CLIENTS` and `FAULTS_DRAIN_CLIENTS` change the sizes of the
//! dead-edge and drain tests; `FAULTS_BIN` runs another build of `p2piano` (the release
//! build, for the sizes the test build cannot reach on two cores).

#[path = "faults/edges.rs"]
mod edges;
#[path = "faults/freeze.rs"]
mod freeze;
#[path = "faults/harness.rs"]
mod harness;
#[path = "faults/records.rs"]
mod records;
#[path = "faults/restarts.rs"]
mod restarts;
#[path = "faults/storm.rs"]
mod storm;
/// The helpers of the binary's other tests; the fault tests use only some of them.
#[allow(dead_code, unused_imports)]
#[path = "it/support/mod.rs"]
mod support;
#[path = "faults/traffic.rs"]
mod traffic;
