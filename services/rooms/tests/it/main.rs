//! The integration tests of the rooms crate, in one binary: one build, one set of shared
//! test servers, and support code that every module can use without being compiled again
//! for each test file. Run one module with `cargo test -p p2piano-rooms-tests --test it <module>::`.

mod support;

mod lifecycle;
mod rpc;
mod store;
