//! The integration tests of p2piano-telemetry, in one binary: one build, and helpers every
//! module uses without being compiled again for each test file. Run one module with
//! `cargo test -p p2piano-telemetry --test it <module>::`.

mod common;

mod admin;
mod init;
mod metrics;
mod propagation;
