//! The integration tests of p2piano-config, in one binary: one build, and helpers every
//! module uses without being compiled again for each test file. Run one module with
//! `cargo test -p p2piano-config --test it <module>::`.

mod load;
mod mongo_database;
mod validate;
