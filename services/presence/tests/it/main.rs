//! The integration tests of the presence crate, in one binary: one build, one set of shared
//! test servers, and support code that every module can use without being compiled again
//! for each test file. Run one module with `cargo test -p p2piano-presence-tests --test it <module>::`.

mod support;

mod healing;
mod kv;
mod lifecycle;
mod presence;
