//! A socket's writer task: it writes what senders could not write themselves (frames
//! queued behind others, or while the connection was not taking bytes), finishes writes
//! they left unflushed, sends the Engine.IO ping on its own timer, and closes the
//! WebSocket. See [`super::outbox`] for who writes when.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};

use crate::sio;
use crate::socket::outbox::{Close, Outbox, Sink};

/// How long the writer keeps flushing what was queued before a close, and then how long it
/// waits for the close frame and the close of the connection, each.
const CLOSE_DEADLINE: Duration = Duration::from_secs(2);

/// Runs the writer of `outbox` on `sink`: sends queued frames in order, and `2` (ping)
/// every `ping_every`, ahead of any queued data (biased select). On close, flushes what is
/// queued (bounded by a short deadline) and sends the close frame.
///
/// The sink is attached here, before the task starts, and the close runs in a future of its
/// own, so that the future an idle socket's writer keeps for its life holds only its loop's
/// state (an `async fn` keeps room for its arguments, and for its deepest await, in every
/// state).
pub fn run(
    sink: Sink,
    outbox: Outbox,
    ping_every: Duration,
) -> impl Future<Output = ()> + Send + 'static {
    outbox.attach(sink);
    async move {
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let first = tokio::select! {
                biased;
                _ = ping.tick(), if !outbox.is_closing() => {
                    Some(Message::Text(Utf8Bytes::from_static(sio::PING)))
                }
                work = outbox.has_work() => {
                    if !work {
                        break;
                    }
                    None
                }
            };
            if outbox.write(first).await.is_err() {
                outbox.close(Close {
                    code: 1006,
                    reason: "write failed",
                });
                drop(outbox.detach());
                return;
            }
        }
        Box::pin(finish(outbox)).await;
    }
}

/// The close: flushes what was queued before it (e.g. NEWER_CONNECTION then `41`), briefly,
/// then sends the close frame and closes the connection, each within [`CLOSE_DEADLINE`].
async fn finish(outbox: Outbox) {
    let flush = async {
        while outbox.has_pending() {
            if outbox.write(None).await.is_err() {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(CLOSE_DEADLINE, flush).await;
    let close = outbox.take_close();
    let frame = close.map(|c| CloseFrame {
        code: c.code,
        reason: Utf8Bytes::from_static(c.reason),
    });
    let _ = tokio::time::timeout(CLOSE_DEADLINE, outbox.write_last(Message::Close(frame))).await;
    let _ = tokio::time::timeout(CLOSE_DEADLINE, outbox.close_sink()).await;
    drop(outbox.detach());
}
