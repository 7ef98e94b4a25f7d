//! [`both_modes`](crate::both_modes): one test module run over NATS and in process.

/// Runs each case of a test module twice: once in a module `nats`, given the value of the
/// `nats` expression (a deployment over a real `nats-server`), and once in a module
/// `in_process`, given the value of the `in_process` one (the in-process bus and memory
/// stores, as in `p2piano all`). The cases are the module's public `async fn`s, each of
/// one argument; they are named only where they are written, so that a new case cannot be
/// left out of one mode or the other. Private items of the module are its helpers.
///
/// The two mode modules stand beside the annotated one (tests are `nats::<case>` and
/// `in_process::<case>` of the enclosing module), and the expressions are evaluated inside
/// them, which see everything the enclosing module has in scope:
///
/// ```ignore
/// #[p2piano_testkit::both_modes(
///     nats = Cluster::start(Mode::Nats).await,
///     in_process = Cluster::start(Mode::InProcess).await,
/// )]
/// mod cases {
///     use super::*;
///
///     pub async fn sessions_and_cookies(c: Cluster) { /* ... */ }
/// }
/// ```
///
/// Every test runs on a two-worker multi-threaded runtime, like the services themselves.
pub use p2piano_testkit_macros::both_modes;
