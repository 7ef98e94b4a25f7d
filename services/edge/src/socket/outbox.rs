//! A socket's outbound side: a bounded queue and the WebSocket's sending half, written in
//! order by whoever holds it. A frame offered to a socket whose queue is empty and whose
//! connection takes the bytes at once is written by the sender's own task, there and then;
//! otherwise it is queued for the socket's writer task ([`super::writer`]), which also owns
//! the Engine.IO ping timer so that heartbeats never wait behind data.
//!
//! Writing in the sender's task saves a delivery the writer's wake-up (a scheduling, a
//! poll of its ping timer, a lock of the queue on each side), which was the largest part
//! of a delivery's cost that was neither the system call nor the event's own work. Order
//! holds because every write, the writer's and a sender's, happens under the sending
//! half's lock, and a sender writes only when the queue is empty and no earlier write is
//! still waiting to be flushed: a frame queued before is always written before.
//!
//! Slow consumers (docs/architecture.md): relayed events are offered without waiting; when
//! the socket does not take them they are queued, when the queue is full they are dropped
//! and counted, and a socket whose queue stays full past [`SLOW_CONSUMER_GRACE`] is closed
//! at the transport (the client reconnects). Direct replies (acks, join results) use the
//! same path; they only fail when the socket is already being closed.
//!
//! The queue is a `VecDeque` behind a mutex, with a waker for the writer and a [`Notify`]
//! for senders waiting for room, not a channel: an idle socket holds no buffer at all (a
//! channel allocates its first block of slots up front, 1.3 KiB per socket), and a buffer
//! grown by a burst is given back once the writer has emptied it. A close is a flag that
//! wakes all of them, and the socket's reader (a waker of its own).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::extract::ws::{Message, Utf8Bytes, WebSocket};
use bytes::Bytes;
use futures::SinkExt;
use futures::stream::SplitSink;
use futures::task::AtomicWaker;
use tokio::sync::Notify;

/// The sending half of a socket's WebSocket.
pub type Sink = SplitSink<WebSocket, Message>;

/// Outbound queue length per socket (the default of [`crate::edge::SocketSettings`]).
pub const OUTBOX_CAPACITY: usize = 1024;
/// How long a socket's queue may stay full before the socket is closed.
pub const SLOW_CONSUMER_GRACE: Duration = Duration::from_secs(5);
/// Most queued frames the writer puts into the WebSocket's buffer before one flush: enough
/// to turn a burst into one system call, few enough that a ping waits behind at most this
/// many frames.
pub const WRITE_BATCH: usize = 64;

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
    /// Wakes the writer when it has work: a frame queued, a write left unflushed, a close.
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
    /// The WebSocket's sending half while the writer runs (`None` before it starts and
    /// after it has closed the socket). Every write happens under this lock.
    sink: Mutex<Option<Sink>>,
    /// Set while bytes may be waiting in the sending half's buffers: a write that could not
    /// finish at once. Only the writer clears it, after a flush has gone through; while it
    /// is set, senders queue rather than write, so that a socket that does not take its
    /// bytes fills its queue (and meets the slow-consumer policy) instead of a buffer.
    unflushed: AtomicBool,
}

/// Who writes a frame offered to a socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Write {
    /// The sender, at once, when nothing is ahead of the frame: one event reaching its
    /// sockets (a player's relay delivered by the player's own task).
    Now,
    /// The socket's writer task: a burst of events handed over together (the messages of
    /// one read from the bus), which the writer gathers into one system call per socket
    /// where the sender would make one per frame.
    Queued,
}

/// Outcome of offering a relayed frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offer {
    /// Written to the socket or queued.
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

    fn sink(&self) -> MutexGuard<'_, Option<Sink>> {
        self.sink.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Writes `frame` now, or appends it to the queue unless the queue is full (then hands
    /// it back) and `bounded`.
    fn push(&self, frame: Frame, write: Write, bounded: bool) -> Result<(), Frame> {
        let frame = match write {
            Write::Now => match self.write_now(frame) {
                Ok(()) => return Ok(()),
                Err(frame) => frame,
            },
            Write::Queued => frame,
        };
        {
            let mut queue = self.queue();
            if bounded && queue.len() >= self.capacity {
                return Err(frame);
            }
            queue.push_back(frame);
        }
        self.queued.wake();
        Ok(())
    }

    /// Writes `frame` to the WebSocket from the caller's task if nothing is ahead of it
    /// and the connection takes it without waiting; hands it back to be queued otherwise
    /// (the writer holds the sending half, or is not running yet, or frames are queued or
    /// unflushed, or the socket is closing, or the connection is not ready).
    ///
    /// The calls are made with a waker that does nothing: whatever could not finish is
    /// left to the writer, woken here, which polls again with its own.
    fn write_now(&self, frame: Frame) -> Result<(), Frame> {
        let mut slot = match self.sink.try_lock() {
            Ok(slot) => slot,
            Err(TryLockError::WouldBlock | TryLockError::Poisoned(_)) => return Err(frame),
        };
        let Some(sink) = slot.as_mut() else {
            return Err(frame);
        };
        if self.unflushed.load(Ordering::Acquire) || self.is_closing() || !self.queue().is_empty() {
            return Err(frame);
        }
        let mut cx = Context::from_waker(Waker::noop());
        if !matches!(sink.poll_ready_unpin(&mut cx), Poll::Ready(Ok(()))) {
            return Err(frame);
        }
        let flushed = match sink.start_send_unpin(to_message(frame)) {
            Ok(()) => sink.poll_flush_unpin(&mut cx),
            Err(e) => Poll::Ready(Err(e)),
        };
        if flushed.is_pending() {
            // Set before the lock is let go, so that no sender writes behind bytes the
            // writer has not been told about.
            self.unflushed.store(true, Ordering::Release);
        }
        drop(slot);
        match flushed {
            Poll::Ready(Ok(())) => {}
            Poll::Pending => self.queued.wake(),
            Poll::Ready(Err(_)) => self.close(Close {
                code: 1006,
                reason: "write failed",
            }),
        }
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

    fn close(&self, close: Close) {
        if self.closing.swap(true, Ordering::AcqRel) {
            return;
        }
        *self.close.lock().unwrap_or_else(|e| e.into_inner()) = Some(close);
        self.queued.wake();
        self.reader.wake();
        self.room.notify_waiters();
    }
}

impl Outbox {
    /// Sends a frame that must not be lost (acks, join results); waits for room if needed,
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
            match self.state.push(frame, Write::Now, true) {
                Ok(()) => return true,
                Err(back) => frame = back,
            }
            room.await;
        }
    }

    /// Sends a frame that must not be lost, without waiting: if the queue is full it goes
    /// in one past the capacity. For a frame that must be in the socket's order before
    /// anything another task may offer next, sent under the lock that orders those offers
    /// (the welcome of a join, under the room's lock, ahead of the room's first relay);
    /// false when the socket is closing.
    pub fn send_now(&self, frame: Frame) -> bool {
        if self.is_closing() {
            return false;
        }
        let _ = self.state.push(frame, Write::Now, false);
        true
    }

    /// Offers a relayed frame without waiting (the slow-consumer policy), to be written as
    /// `write` says.
    pub fn offer(&self, frame: Frame, write: Write) -> Offer {
        if self.is_closing() {
            return Offer::Closed;
        }
        if self.state.push(frame, write, true).is_ok() {
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

    /// The texts of the queued frames, oldest first, without taking them (tests of the
    /// senders' order).
    #[cfg(test)]
    pub(crate) fn queued_texts(&self) -> Vec<String> {
        self.state
            .queue()
            .iter()
            .map(|f| match f {
                Frame::Text(t) => t.as_str().to_owned(),
                Frame::Binary(b) => format!("<{} bytes>", b.len()),
            })
            .collect()
    }

    /// Frames dropped so far because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.state.dropped.load(Ordering::Relaxed)
    }

    /// Asks the writer to send what is queued, then close the WebSocket with `close`
    /// (the first request wins). The reader sees the socket end.
    pub fn close(&self, close: Close) {
        self.state.close(close);
    }

    /// Whether a close was requested.
    pub fn is_closing(&self) -> bool {
        self.state.is_closing()
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

    /// Hands the WebSocket's sending half to the outbox (the writer, as it starts): from
    /// then on senders may write to it.
    pub(super) fn attach(&self, sink: Sink) {
        *self.state.sink() = Some(sink);
    }

    /// Takes the sending half back (the writer, as it ends), so that the connection is
    /// released when the writer is done with it, not when the last room lets go of the
    /// outbox.
    pub(super) fn detach(&self) -> Option<Sink> {
        self.state.sink().take()
    }

    /// Resolves with `true` once the writer has work (a queued frame, or a write left
    /// unflushed), or with `false` once a close was asked for. The close is looked at
    /// first, so that the writer stops taking frames at once, then flushes what is left
    /// within its deadline.
    pub(super) async fn has_work(&self) -> bool {
        std::future::poll_fn(|cx| {
            if let Some(ready) = self.work() {
                return Poll::Ready(ready);
            }
            self.state.queued.register(cx.waker());
            // Looked at again after registering, so that work (or a close) that came in
            // between is seen.
            match self.work() {
                Some(ready) => Poll::Ready(ready),
                None => Poll::Pending,
            }
        })
        .await
    }

    fn work(&self) -> Option<bool> {
        if self.is_closing() {
            return Some(false);
        }
        self.has_pending().then_some(true)
    }

    /// The close asked for, taken once (the writer's close frame).
    pub(super) fn take_close(&self) -> Option<Close> {
        self.state
            .close
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// Whether frames are queued or written but not flushed (the writer's flush at close).
    pub(super) fn has_pending(&self) -> bool {
        self.state.unflushed.load(Ordering::Acquire) || !self.state.queue().is_empty()
    }

    /// The writer's write: `first` (a ping) if any, then up to [`WRITE_BATCH`]
    /// queued frames into the WebSocket's buffer, then one flush. Polled with the writer's
    /// waker, under the sending half's lock for each poll; the flag that keeps senders
    /// from writing stays set until the flush has gone through.
    pub(super) async fn write(&self, first: Option<Message>) -> Result<(), axum::Error> {
        let mut first = first;
        self.state.unflushed.store(true, Ordering::Release);
        std::future::poll_fn(|cx| self.poll_write(cx, &mut first, true)).await
    }

    /// Writes and flushes `last` alone, taking nothing more from the queue (the writer's
    /// close frame: nothing may follow it).
    pub(super) async fn write_last(&self, last: Message) -> Result<(), axum::Error> {
        let mut last = Some(last);
        self.state.unflushed.store(true, Ordering::Release);
        std::future::poll_fn(|cx| self.poll_write(cx, &mut last, false)).await
    }

    fn poll_write(
        &self,
        cx: &mut Context<'_>,
        first: &mut Option<Message>,
        queued: bool,
    ) -> Poll<Result<(), axum::Error>> {
        let mut slot = self.state.sink();
        let Some(sink) = slot.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        if let Some(message) = first.take() {
            match sink.poll_ready_unpin(cx) {
                Poll::Ready(Ok(())) => sink.start_send_unpin(message)?,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    *first = Some(message);
                    return Poll::Pending;
                }
            }
        }
        let batch = if queued { WRITE_BATCH } else { 0 };
        for _ in 0..batch {
            std::task::ready!(sink.poll_ready_unpin(cx))?;
            // Taken under the sending half's lock, so that no sender writes between the
            // frame leaving the queue and entering the buffer.
            let Some(frame) = self.state.pop() else { break };
            sink.start_send_unpin(to_message(frame))?;
        }
        std::task::ready!(sink.poll_flush_unpin(cx))?;
        self.state.unflushed.store(false, Ordering::Release);
        Poll::Ready(Ok(()))
    }

    /// Closes the sending half (the writer's last step, after its close frame).
    pub(super) async fn close_sink(&self) -> Result<(), axum::Error> {
        std::future::poll_fn(|cx| match self.state.sink().as_mut() {
            Some(sink) => sink.poll_close_unpin(cx),
            None => Poll::Ready(Ok(())),
        })
        .await
    }
}

/// Creates a socket's queue of `capacity` frames; the writer ([`super::writer::run`])
/// attaches the WebSocket's sending half and drains it.
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
        sink: Mutex::new(None),
        unflushed: AtomicBool::new(false),
    });
    Outbox { state }
}

fn to_message(frame: Frame) -> Message {
    match frame {
        Frame::Text(t) => Message::Text(t),
        Frame::Binary(b) => Message::Binary(b),
    }
}

#[cfg(test)]
#[path = "outbox_tests.rs"]
mod tests;
