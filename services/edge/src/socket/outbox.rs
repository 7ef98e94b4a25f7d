//! A socket's outbound side: a bounded queue drained by one writer task, which also owns
//! the Engine.IO ping timer so that heartbeats never wait behind data.
//!
//! Slow consumers (docs/architecture.md): relayed events are offered without waiting; when
//! the queue is full they are dropped and counted, and a socket whose queue stays full past
//! [`SLOW_CONSUMER_GRACE`] is closed at the transport (the client reconnects). Direct
//! replies (acks, join results) use the same queue; they only fail when the socket is
//! already being closed.
//!
//! The queue is a `VecDeque` behind a mutex, with a waker for the writer and a [`Notify`]
//! for senders waiting for room, not a channel: an idle socket holds no buffer at all (a
//! channel allocates its first block of slots up front, 1.3 KiB per socket), and a buffer
//! grown by a burst is given back once the writer has emptied it. A close is a flag that
//! wakes all of them, and the socket's reader (a waker of its own).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use bytes::Bytes;
use futures::SinkExt;
use futures::stream::SplitSink;
use futures::task::AtomicWaker;
use tokio::sync::Notify;

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
    state: Arc<OutboxState>,
}

#[derive(Debug)]
struct OutboxState {
    queue: Mutex<VecDeque<Frame>>,
    capacity: usize,
    /// Wakes the writer (the one reader of the queue) when a frame is queued.
    queued: AtomicWaker,
    /// Wakes senders waiting for room when the writer takes frames from a full queue, and
    /// when the socket closes.
    room: Notify,
    dropped: AtomicU64,
    /// Milliseconds since `epoch` when the queue was first found full (0 = not full).
    full_since_ms: AtomicU64,
    epoch: tokio::time::Instant,
    closing: AtomicBool,
    close: Mutex<Option<Close>>,
    /// Wakes the socket's reader when a close is asked for ([`Outbox::closed`]).
    reader: AtomicWaker,
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

impl OutboxState {
    fn queue(&self) -> MutexGuard<'_, VecDeque<Frame>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends `frame` unless the queue is full (then hands it back).
    fn push(&self, frame: Frame) -> Result<(), Frame> {
        {
            let mut queue = self.queue();
            if queue.len() >= self.capacity {
                return Err(frame);
            }
            queue.push_back(frame);
        }
        self.queued.wake();
        Ok(())
    }

    /// Takes the oldest frame, waking senders that wait for room if the queue was full, and
    /// freeing the buffer once it is empty: most sockets are idle most of the time, and a
    /// buffer kept would be kept by each of them (an allocation per burst costs less).
    fn pop(&self) -> Option<Frame> {
        let (frame, was_full) = {
            let mut queue = self.queue();
            let was_full = queue.len() >= self.capacity;
            let frame = queue.pop_front();
            if queue.is_empty() && queue.capacity() > 0 {
                *queue = VecDeque::new();
            }
            (frame, was_full)
        };
        if was_full {
            self.room.notify_waiters();
        }
        frame
    }
}

impl Outbox {
    /// Queues a frame that must not be lost (acks, join results); waits for room if needed,
    /// false when the socket is closing.
    pub async fn send(&self, mut frame: Frame) -> bool {
        loop {
            // Registered before the close is looked at and the push tried, so that neither
            // a close nor room made after them is missed.
            let room = self.state.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if self.is_closing() {
                return false;
            }
            match self.state.push(frame) {
                Ok(()) => return true,
                Err(back) => frame = back,
            }
            room.await;
        }
    }

    /// Offers a relayed frame without waiting (the slow-consumer policy).
    pub fn offer(&self, frame: Frame) -> Offer {
        if self.is_closing() {
            return Offer::Closed;
        }
        if self.state.push(frame).is_ok() {
            self.state.full_since_ms.store(0, Ordering::Relaxed);
            return Offer::Queued;
        }
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

    /// Frames dropped so far because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.state.dropped.load(Ordering::Relaxed)
    }

    /// Asks the writer to send what is queued, then close the WebSocket with `close`
    /// (the first request wins). The reader sees the socket end.
    pub fn close(&self, close: Close) {
        if self.state.closing.swap(true, Ordering::AcqRel) {
            return;
        }
        *self.state.close.lock().unwrap_or_else(|e| e.into_inner()) = Some(close);
        self.state.queued.wake();
        self.state.reader.wake();
        self.state.room.notify_waiters();
    }

    /// Whether a close was requested.
    pub fn is_closing(&self) -> bool {
        self.state.closing.load(Ordering::Acquire)
    }

    /// Resolves once a close was asked for. For the socket's one reader: its waker is the
    /// only one kept. A flag and a waker rather than a cancellation token's waiter, which
    /// takes the token's lock each time it is polled, that is on every message the reader
    /// wakes for.
    pub fn closed(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(|cx| {
            if self.is_closing() {
                return Poll::Ready(());
            }
            self.state.reader.register(cx.waker());
            // Looked at again after registering, so that a close in between is seen.
            if self.is_closing() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }

    /// The next queued frame, waiting for one, or `None` once a close was asked for (the
    /// writer's side; there is one writer). The close is looked at first, so that the
    /// writer stops taking frames at once, then flushes what is left within its deadline.
    async fn next(&self) -> Option<Frame> {
        std::future::poll_fn(|cx| {
            if self.is_closing() {
                return Poll::Ready(None);
            }
            if let Some(frame) = self.state.pop() {
                return Poll::Ready(Some(frame));
            }
            self.state.queued.register(cx.waker());
            // Looked at again after registering, so that a frame queued (or a close asked
            // for) in between is seen.
            if self.is_closing() {
                return Poll::Ready(None);
            }
            match self.state.pop() {
                Some(frame) => Poll::Ready(Some(frame)),
                None => Poll::Pending,
            }
        })
        .await
    }

    /// The next queued frame if there is one (the writer's side).
    fn try_next(&self) -> Option<Frame> {
        self.state.pop()
    }
}

/// Creates a socket's queue of `capacity` frames; the writer ([`run_writer`]) drains it.
pub fn outbox(capacity: usize) -> Outbox {
    let state = Arc::new(OutboxState {
        queue: Mutex::new(VecDeque::new()),
        capacity: capacity.max(1),
        queued: AtomicWaker::new(),
        room: Notify::new(),
        dropped: AtomicU64::new(0),
        full_since_ms: AtomicU64::new(0),
        epoch: tokio::time::Instant::now(),
        closing: AtomicBool::new(false),
        close: Mutex::new(None),
        reader: AtomicWaker::new(),
    });
    Outbox { state }
}

/// The writer task: sends queued frames in order, and `2` (ping) every `ping_every`,
/// ahead of any queued data (biased select). On close, flushes what is queued (bounded by
/// a short deadline) and sends the close frame.
pub async fn run_writer(
    mut sink: SplitSink<WebSocket, Message>,
    outbox: Outbox,
    ping_every: Duration,
) {
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = ping.tick(), if !outbox.is_closing() => {
                if sink.send(Message::Text(Utf8Bytes::from_static(sio::PING))).await.is_err() {
                    outbox.close(Close { code: 1006, reason: "write failed" });
                    return;
                }
            }
            frame = outbox.next() => {
                let Some(frame) = frame else { break };
                if write_batch(&mut sink, &outbox, frame).await.is_err() {
                    outbox.close(Close { code: 1006, reason: "write failed" });
                    return;
                }
            }
        }
    }
    // Flush what was queued before the close (e.g. NEWER_CONNECTION then `41`), briefly.
    let flush = async {
        while let Some(frame) = outbox.try_next() {
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
    outbox: &Outbox,
    first: Frame,
) -> Result<(), axum::Error> {
    sink.feed(to_message(first)).await?;
    for _ in 1..WRITE_BATCH {
        match outbox.try_next() {
            Some(frame) => sink.feed(to_message(frame)).await?,
            None => break,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn text(n: usize) -> Frame {
        Frame::Text(Utf8Bytes::from(n.to_string()))
    }

    fn texts(outbox: &Outbox) -> Vec<String> {
        std::iter::from_fn(|| outbox.try_next())
            .map(|f| match f {
                Frame::Text(t) => t.as_str().to_owned(),
                Frame::Binary(_) => unreachable!(),
            })
            .collect()
    }

    #[test]
    fn offers_past_capacity_are_dropped_and_the_buffer_is_given_back() {
        let outbox = outbox(64);
        assert_eq!(
            outbox.state.queue().capacity(),
            0,
            "an idle socket holds no buffer"
        );
        for n in 0..100 {
            let expected = if n < 64 {
                Offer::Queued
            } else {
                Offer::Dropped
            };
            assert_eq!(outbox.offer(text(n)), expected);
        }
        assert_eq!(outbox.dropped(), 36);
        let sent = texts(&outbox);
        assert_eq!(sent, (0..64).map(|n| n.to_string()).collect::<Vec<_>>());
        assert_eq!(
            outbox.state.queue().capacity(),
            0,
            "the burst's buffer is freed"
        );
        outbox.close(Close {
            code: 1000,
            reason: "bye",
        });
        assert_eq!(outbox.offer(text(0)), Offer::Closed);
    }

    /// A queue of one holding frame `1`, and a task sending frame `2`, which has run until
    /// it waits for room.
    async fn full_with_a_waiting_sender() -> (Outbox, tokio::task::JoinHandle<bool>) {
        let outbox = outbox(1);
        assert!(outbox.send(text(1)).await);
        let waiting = tokio::spawn({
            let outbox = outbox.clone();
            async move { outbox.send(text(2)).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "no room yet");
        (outbox, waiting)
    }

    #[tokio::test]
    async fn a_send_to_a_full_queue_waits_for_room_and_keeps_order() {
        let (outbox, waiting) = full_with_a_waiting_sender().await;
        assert!(matches!(outbox.next().await, Some(Frame::Text(t)) if t == "1"));
        assert!(
            waiting.await.unwrap(),
            "room made by the writer wakes the sender"
        );
        assert_eq!(texts(&outbox), ["2"]);
    }

    #[tokio::test]
    async fn a_send_waiting_for_room_gives_up_when_the_socket_closes() {
        let (outbox, waiting) = full_with_a_waiting_sender().await;
        outbox.close(Close {
            code: 1000,
            reason: "bye",
        });
        assert!(!waiting.await.unwrap());
    }

    #[tokio::test]
    async fn a_close_wakes_the_reader_and_stops_the_writer_before_what_is_queued() {
        let outbox = outbox(8);
        assert_eq!(outbox.offer(text(1)), Offer::Queued);
        assert!(matches!(outbox.next().await, Some(Frame::Text(t)) if t == "1"));
        let reader = tokio::spawn({
            let outbox = outbox.clone();
            async move { outbox.closed().await }
        });
        let writer = tokio::spawn({
            let outbox = outbox.clone();
            async move { outbox.next().await.is_none() }
        });
        tokio::task::yield_now().await;
        assert!(!reader.is_finished(), "no close asked for yet");
        assert_eq!(outbox.offer(text(2)), Offer::Queued);
        assert!(!writer.await.unwrap(), "a queued frame wakes the writer");
        assert_eq!(outbox.offer(text(3)), Offer::Queued);
        outbox.close(Close {
            code: 1000,
            reason: "bye",
        });
        tokio::time::timeout(Duration::from_secs(5), reader)
            .await
            .expect("the close wakes the reader")
            .unwrap();
        assert!(
            outbox.next().await.is_none(),
            "the writer stops at the close"
        );
        assert_eq!(texts(&outbox), ["3"], "and flushes what was queued itself");
    }
}
