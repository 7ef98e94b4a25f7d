//! [`both_modes!`](crate::both_modes): one test body run over NATS and in process.

/// Runs each named test body twice: once in a module `nats`, given the value of the `nats`
/// expression (a deployment over a real `nats-server`), and once in a module `in_process`,
/// given the value of the `in_process` one (the in-process bus and memory stores, as in
/// `p2piano all`). Each body is an `async fn` of that one argument beside the macro call.
///
/// The expressions are evaluated inside the generated modules, which see everything the
/// calling module has in scope, so they read as they would at the call site:
///
/// ```ignore
/// p2piano_testkit::both_modes!(
///     nats: Cluster::start(Mode::Nats).await,
///     in_process: Cluster::start(Mode::InProcess).await;
///     sessions_and_cookies,
///     client_dialect_rooms,
/// );
/// ```
///
/// Every test runs on a two-worker multi-threaded runtime, like the services themselves.
#[macro_export]
macro_rules! both_modes {
    (nats: $nats:expr, in_process: $in_process:expr; $($case:ident),+ $(,)?) => {
        mod nats {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case($nats).await
                }
            )+
        }
        mod in_process {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case($in_process).await
                }
            )+
        }
    };
}
