//! Fault tests of the split deployment, as real processes on loopback: `nats-server` with
//! JetStream, the MongoDB-wire server (secantus), `p2piano rooms`, `p2piano presence` and
//! two `p2piano edge`s, each test with its own processes, ports, subject prefix and database.
//!
//! Each test breaks one thing (kills an edge, drains one, kills and restarts rooms, presence,
//! NATS or the database, floods or stalls a client, reconnects 5,000 clients at once) and
//! checks the rules of DESIGN.md: no ghosts 10 s after an edge dies, a drain moves clients
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
//! printed); `FAULTS_STORM_CLIENTS` and `FAULTS_STORM_GRACE_MS` change the 5,000-client test's
//! size and leave grace (for investigating; the defaults are what is asserted).

#[path = "faults/client.rs"]
mod client;
#[path = "faults/edges.rs"]
mod edges;
#[path = "faults/harness.rs"]
mod harness;
#[path = "faults/restarts.rs"]
mod restarts;
#[path = "faults/storm.rs"]
mod storm;
mod support;
#[path = "faults/traffic.rs"]
mod traffic;
