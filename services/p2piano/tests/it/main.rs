//! The integration tests of the `p2piano` binary and of `p2piano all`, in one binary: one
//! build, and support code that every module uses without `allow(dead_code)`. The fault
//! tests are a binary of their own (`tests/faults.rs`, `make test-faults`): they run one at
//! a time and outside `cargo test --workspace`. Run one module with
//! `cargo test -p p2piano --test it <module>::`.

mod support;

mod all;
mod browser;
mod cli;
mod cluster;
mod descriptors;
mod telemetry;
