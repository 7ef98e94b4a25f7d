//! A lane: a thread of its own with a single-threaded Tokio runtime, for work whose timing
//! must not depend on how busy the process's main runtime is.
//!
//! Liveness runs there: an edge's heartbeats and presence's judgement of them. On a
//! saturated main runtime (a flood of sockets, a CPU limit) a heartbeat task waits for a
//! worker like any other task, and a few seconds of that looks exactly like a dead edge.
//! With its own thread, and (see [`Bus::dedicated`](crate::Bus::dedicated)) its own NATS
//! connection, a heartbeat is late only when the whole process is (a stop, a frozen node),
//! which the protocol then heals (presence asks the edge to re-assert its sockets).

use std::future::Future;
use std::thread::JoinHandle;

/// Runs `task` to completion on a new thread named `name`, on a current-thread runtime with
/// time and I/O enabled. The future is built on that thread, so whatever it creates (a NATS
/// connection, timers) is driven there.
pub fn spawn_lane<F, Fut>(name: &str, task: F) -> std::io::Result<JoinHandle<()>>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "could not start a lane's runtime");
                    return;
                }
            };
            runtime.block_on(task());
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_on_its_own_thread_and_runtime() {
        let main = std::thread::current().id();
        let (tx, rx) = std::sync::mpsc::channel();
        let lane = spawn_lane("test-lane", move || async move {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            let _ = tx.send((
                std::thread::current().id(),
                std::thread::current().name().map(str::to_owned),
            ));
        })
        .unwrap();
        lane.join().unwrap();
        let (id, name) = rx.recv().unwrap();
        assert_ne!(id, main);
        assert_eq!(name.as_deref(), Some("test-lane"));
    }
}
