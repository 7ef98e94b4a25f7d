//! The integration tests of the edge crate, in one binary: one build, one set of shared
//! test servers, and support code that every module can use without being compiled again
//! for each test file. Run one module with `cargo test -p p2piano-edge-tests --test it <module>::`.

mod support;

mod conformance;
mod fanout;
mod http;
mod relay;
mod robustness;
mod secrets;
mod security;
mod socketio;
