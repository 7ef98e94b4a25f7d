//! A socket's outbound side: a bounded queue drained by one writer task, which also owns
//! the Engine.IO ping timer so that heartbeats never wait behind data.
//!
//! Slow consumers (docs/architecture.md): relayed events are offered with `try_send`; when the queue
//! is full they are dropped and counted, and a socket whose queue stays full past
//! [`SLOW_CONSUMER_GRACE`] is closed at the transport (the client reconnects). Direct
//! replies (acks, join results) use the same queue; they only fail when the socket is
//! already being closed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use bytes::Bytes;
use futures::SinkExt;
use futures::stream::SplitSink;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::sio;

/// Outbound queue length per socket (the default of [`crate::edge::SocketSettings`]).
pub const OUTBOX_CAPACITY: usize = 1024;
/// How long a socket's queue may stay full before the socket is closed.
pub const SLOW_CONSUMER_GRACE: Duration = Duration::from_secs(5);

/// One outgoing WebSocket frame. Text frames are shared across recipients (encoded once).
#[derive(Clone, Debug)]
pub enum Frame {
    /// A text frame (Engine.IO packet).
    Text(Utf8Bytes),
    /// A binary frame (Socket.IO attachment).
    Binary(Bytes),
}

/// Why and how the writer should close the WebSocket.
#[derive(Clone, Debug)]
pub struct Close {
    /// WebSocket close code (1000 normal, 1001 going away, 1002 protocol error, 1008
    /// policy, 1009 too big, 1012 service restart).
    pub code: u16,
    /// Short reason.
    pub reason: &'static str,
}

/// The sending half of a socket's queue, shared with the room tasks that deliver to it.
#[derive(Clone, Debug)]
pub struct Outbox {
    tx: mpsc::Sender<Frame>,
    state: Arc<OutboxState>,
}

#[derive(Debug)]
struct OutboxState {
    dropped: AtomicU64,
    /// Milliseconds since `epoch` when the queue was first found full (0 = not full).
    full_since_ms: AtomicU64,
    epoch: tokio::time::Instant,
    closing: AtomicBool,
    close: std::sync::Mutex<Option<Close>>,
    kill: CancellationToken,
}

/// Outcome of offering a relayed frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offer {
    /// Queued.
    Queued,
    /// Dropped: the queue is full (counted).
    Dropped,
    /// The socket is closing or closed.
    Closed,
}

impl Outbox {
    /// Queues a frame that must not be lost (acks, join results); waits for room if needed,
    /// false when the socket is closing.
    pub async fn send(&self, frame: Frame) -> bool {
        if self.state.closing.load(Ordering::Relaxed) {
            return false;
        }
        self.tx.send(frame).await.is_ok()
    }

    /// Offers a relayed frame without waiting (the slow-consumer policy).
    pub fn offer(&self, frame: Frame) -> Offer {
        if self.state.closing.load(Ordering::Relaxed) {
            return Offer::Closed;
        }
        match self.tx.try_send(frame) {
            Ok(()) => {
                self.state.full_since_ms.store(0, Ordering::Relaxed);
                Offer::Queued
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.state.dropped.fetch_add(1, Ordering::Relaxed);
                let now = self.state.epoch.elapsed().as_millis() as u64 + 1;
                let since = match self.state.full_since_ms.compare_exchange(
                    0,
                    now,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => now,
                    Err(v) => v,
                };
                if now.saturating_sub(since) >= SLOW_CONSUMER_GRACE.as_millis() as u64 {
                    self.close(Close {
                        code: 1013,
                        reason: "slow consumer",
                    });
                }
                Offer::Dropped
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Offer::Closed,
        }
    }

    /// Frames dropped so far because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.state.dropped.load(Ordering::Relaxed)
    }

    /// Asks the writer to send what is queued, then close the WebSocket with `close`
    /// (the first request wins). The reader sees the socket end.
    pub fn close(&self, close: Close) {
        if self.state.closing.swap(true, Ordering::Relaxed) {
            return;
        }
        *self.state.close.lock().unwrap_or_else(|e| e.into_inner()) = Some(close);
        self.state.kill.cancel();
    }

    /// Whether a close was requested.
    pub fn is_closing(&self) -> bool {
        self.state.closing.load(Ordering::Relaxed)
    }

    /// Cancelled when the socket must close (for the reader's select).
    pub fn closed_token(&self) -> CancellationToken {
        self.state.kill.clone()
    }
}

/// Creates a socket's queue of `capacity` frames; the receiver goes to [`run_writer`].
pub fn outbox(capacity: usize) -> (Outbox, mpsc::Receiver<Frame>) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let state = Arc::new(OutboxState {
        dropped: AtomicU64::new(0),
        full_since_ms: AtomicU64::new(0),
        epoch: tokio::time::Instant::now(),
        closing: AtomicBool::new(false),
        close: std::sync::Mutex::new(None),
        kill: CancellationToken::new(),
    });
    (Outbox { tx, state }, rx)
}

/// The writer task: sends queued frames in order, and `2` (ping) every `ping_every`,
/// ahead of any queued data (biased select). On close, flushes what is queued (bounded by
/// a short deadline) and sends the close frame.
pub async fn run_writer(
    mut sink: SplitSink<WebSocket, Message>,
    mut rx: mpsc::Receiver<Frame>,
    outbox: Outbox,
    ping_every: Duration,
) {
    let kill = outbox.closed_token();
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = kill.cancelled() => break,
            _ = ping.tick() => {
                if sink.send(Message::Text(Utf8Bytes::from_static(sio::PING))).await.is_err() {
                    outbox.close(Close { code: 1006, reason: "write failed" });
                    return;
                }
            }
            frame = rx.recv() => match frame {
                Some(frame) => {
                    if write_batch(&mut sink, &mut rx, frame).await.is_err() {
                        outbox.close(Close { code: 1006, reason: "write failed" });
                        return;
                    }
                }
                None => break,
            },
        }
    }
    // Flush what was queued before the close (e.g. NEWER_CONNECTION then `41`), briefly.
    let flush = async {
        while let Ok(frame) = rx.try_recv() {
            if sink.send(to_message(frame)).await.is_err() {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), flush).await;
    let close = outbox
        .state
        .close
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    let frame = close.map(|c| CloseFrame {
        code: c.code,
        reason: Utf8Bytes::from_static(c.reason),
    });
    let _ = tokio::time::timeout(Duration::from_secs(2), sink.send(Message::Close(frame))).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), sink.close()).await;
}

/// Most frames written with one flush: enough to turn a burst into one system call, few
/// enough that a ping waits behind at most this many frames.
pub const WRITE_BATCH: usize = 64;

/// Writes `first` and whatever else is already queued (up to [`WRITE_BATCH`] frames) into
/// the WebSocket's buffer, then flushes once: a room's burst of notes leaves in one
/// `send` system call instead of one per frame, which was the largest cost of a delivery.
async fn write_batch(
    sink: &mut SplitSink<WebSocket, Message>,
    rx: &mut mpsc::Receiver<Frame>,
    first: Frame,
) -> Result<(), axum::Error> {
    sink.feed(to_message(first)).await?;
    for _ in 1..WRITE_BATCH {
        match rx.try_recv() {
            Ok(frame) => sink.feed(to_message(frame)).await?,
            Err(_) => break,
        }
    }
    sink.flush().await
}

fn to_message(frame: Frame) -> Message {
    match frame {
        Frame::Text(t) => Message::Text(t),
        Frame::Binary(b) => Message::Binary(b),
    }
}
