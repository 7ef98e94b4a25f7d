//! The in-process bus backend for `p2piano all`: a subject trie plus one bounded queue per
//! subscription, with the same observable semantics as NATS (wildcards, queue groups,
//! per-publisher order, slow-consumer drops, no-responders, payload limit).
//!
//! A subscription's queue is a `VecDeque` that is allocated on the first message and freed
//! again when emptied, not a channel: the edge holds one subscription per room, and a
//! channel's first block of slots (3.5 KiB) would be paid by every room, busy or not.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::task::AtomicWaker;
use futures::{Stream, StreamExt};
use rand::Rng;

use crate::bus::BusKind;
use crate::error::BusError;
use crate::headers::Headers;
use crate::message::{Local, Message};
use crate::sublist::Sublist;
use crate::subscription::{Subscription, SubscriptionBackend};
use crate::transport::Transport;

/// Messages buffered per subscription before new ones are dropped (async-nats' default).
pub(crate) const SUBSCRIPTION_CAPACITY: usize = 65_536;

/// Largest message (payload plus headers) accepted, as a default nats-server (1 MiB), so that
/// an oversized message fails the same way in both modes.
pub(crate) const MAX_PAYLOAD: usize = 1024 * 1024;

/// A queue buffer with more room than this is freed when emptied, so that a burst does not
/// leave its high-water mark allocated for the subscription's life.
const KEEP_CAPACITY: usize = 16;

/// Why a message was not queued.
enum Refused {
    /// The subscriber is [`SUBSCRIPTION_CAPACITY`] messages behind.
    Full,
    /// The subscription has ended.
    Closed,
}

/// One subscription's buffer, shared by the trie (publishers push) and the subscription
/// (the reader pops).
#[derive(Default)]
struct Queue {
    messages: Mutex<VecDeque<Message>>,
    /// Set when no more messages will be pushed (the subscription left the trie).
    closed: AtomicBool,
    waker: AtomicWaker,
}

impl Queue {
    fn messages(&self) -> std::sync::MutexGuard<'_, VecDeque<Message>> {
        self.messages.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `message`, or says why not (the message is then dropped).
    fn push(&self, message: Message) -> Result<(), Refused> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Refused::Closed);
        }
        {
            let mut messages = self.messages();
            if messages.len() >= SUBSCRIPTION_CAPACITY {
                return Err(Refused::Full);
            }
            messages.push_back(message);
        }
        self.waker.wake();
        Ok(())
    }

    fn pop(&self) -> Option<Message> {
        let mut messages = self.messages();
        let message = messages.pop_front();
        if messages.is_empty() && messages.capacity() > KEEP_CAPACITY {
            *messages = VecDeque::new();
        }
        message
    }

    /// No more pushes; what is buffered can still be read.
    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.waker.wake();
    }

    fn poll_pop(&self, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        if let Some(message) = self.pop() {
            return Poll::Ready(Some(message));
        }
        self.waker.register(cx.waker());
        // Checked again after registering, so that a push in between is not missed.
        match self.pop() {
            Some(message) => Poll::Ready(Some(message)),
            None if self.closed.load(Ordering::Acquire) => Poll::Ready(None),
            None => Poll::Pending,
        }
    }
}

/// One subscription as stored in the trie.
struct Slot {
    /// The pattern it was made with, for the slow-consumer warning.
    subject: Arc<str>,
    /// The no-echo handle that made it (its own publishes skip it), or 0.
    origin: u64,
    queue: Arc<Queue>,
    /// Messages dropped for this subscription because its buffer was full.
    dropped: AtomicU64,
}

/// The state every clone of an in-process `Bus` shares.
#[derive(Default)]
struct Shared {
    subs: RwLock<Sublist<Slot>>,
    next_id: AtomicU64,
    dropped: AtomicU64,
}

impl Shared {
    // A panic while holding the lock cannot leave the trie half-updated in a way that matters
    // more than stopping the whole bus would, so poisoning is ignored.
    fn read(&self) -> RwLockReadGuard<'_, Sublist<Slot>> {
        self.subs.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Sublist<Slot>> {
        self.subs.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Delivers a message to every matching plain subscription and to one member of each
    /// matching queue group; returns how many subscriptions (groups counting once) matched,
    /// whether or not their buffer had room.
    fn publish(
        &self,
        subject: &str,
        reply: Option<&str>,
        headers: Headers,
        payload: Bytes,
        local: Option<Local>,
        origin: u64,
    ) -> Result<usize, BusError> {
        let size = payload.len() + headers.wire_len();
        if size > MAX_PAYLOAD {
            return Err(BusError::other(format!(
                "message of {size} bytes exceeds the maximum payload of {MAX_PAYLOAD} bytes"
            )));
        }
        // Delivery never waits (a full queue refuses), so the read lock is held briefly and
        // never across an await; a full queue drops the message for that subscriber alone.
        let subs = self.read();
        let matches = subs.matches(subject);
        // A no-echo handle's publishes skip its own subscriptions, as NATS `no_echo` does.
        let foreign = |slot: &&Slot| origin == 0 || slot.origin != origin;
        let mut targets = matches.plain;
        targets.retain(foreign);
        if !matches.groups.is_empty() {
            let mut rng = rand::rng();
            for (_, members) in &matches.groups {
                let members: Vec<&Slot> = members.iter().copied().filter(foreign).collect();
                if !members.is_empty() {
                    targets.push(members[rng.random_range(0..members.len())]);
                }
            }
        }
        let interest = targets.len();
        // The message is built only for someone: a publish nobody receives (an edge's relay
        // in `p2piano all`, where the edge's own room subscription is no-echo) costs no
        // copy of its subject and headers.
        let Some((last, rest)) = targets.split_last() else {
            return Ok(0);
        };
        let message = Message {
            subject: subject.to_owned(),
            reply: reply.map(str::to_owned),
            headers: headers.trimmed(),
            payload,
            local,
        };
        for slot in rest {
            self.deliver(slot, message.clone(), subject);
        }
        self.deliver(last, message, subject);
        Ok(interest)
    }

    fn deliver(&self, slot: &Slot, message: Message, subject: &str) {
        match slot.queue.push(message) {
            Ok(()) => {}
            Err(Refused::Full) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                let dropped = slot.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                // Warn on the 1st, 2nd, 4th, 8th... drop so a stuck subscriber cannot flood
                // the log.
                if dropped.is_power_of_two() {
                    tracing::warn!(
                        subscription = %slot.subject,
                        subject,
                        dropped,
                        "slow consumer: subscription buffer full, message dropped"
                    );
                }
            }
            // The subscription is being dropped and will leave the trie momentarily.
            Err(Refused::Closed) => {}
        }
    }

    fn subscribe(
        self: &Arc<Self>,
        subject: &str,
        group: Option<&str>,
        origin: u64,
    ) -> MemorySubscription {
        let queue = Arc::new(Queue::default());
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let slot = Slot {
            subject: subject.into(),
            origin,
            queue: Arc::clone(&queue),
            dropped: AtomicU64::new(0),
        };
        self.write().insert(subject, group, id, slot);
        MemorySubscription {
            shared: Arc::clone(self),
            id,
            subject: subject.to_owned(),
            group: group.map(str::to_owned),
            queue,
            registered: true,
        }
    }
}

/// The in-process backend; clones of the `Bus` holding it share one set of subscriptions.
#[derive(Default)]
pub(crate) struct InProcess {
    shared: Arc<Shared>,
    /// This handle's identity when it is a no-echo handle ([`Transport::no_echo`]), else 0.
    origin: u64,
}

#[async_trait]
impl Transport for InProcess {
    fn kind(&self) -> BusKind {
        BusKind::InProcess
    }

    async fn publish(
        &self,
        subject: &str,
        reply: Option<&str>,
        headers: Headers,
        payload: Bytes,
    ) -> Result<(), BusError> {
        self.shared
            .publish(subject, reply, headers, payload, None, self.origin)?;
        Ok(())
    }

    async fn publish_local(
        &self,
        subject: &str,
        headers: Headers,
        value: Local,
    ) -> Result<(), BusError> {
        self.shared.publish(
            subject,
            None,
            headers,
            Bytes::new(),
            Some(value),
            self.origin,
        )?;
        Ok(())
    }

    async fn subscribe(
        &self,
        subject: &str,
        group: Option<&str>,
    ) -> Result<Subscription, BusError> {
        let sub = self.shared.subscribe(subject, group, self.origin);
        Ok(Subscription::new(subject, Box::new(sub)))
    }

    async fn request(
        &self,
        subject: &str,
        headers: Headers,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Message, BusError> {
        let inbox = format!("_INBOX.{:032x}", rand::random::<u128>());
        let mut replies = self.shared.subscribe(&inbox, None, self.origin);
        if self
            .shared
            .publish(subject, Some(&inbox), headers, payload, None, self.origin)?
            == 0
        {
            return Err(BusError::no_responders());
        }
        match tokio::time::timeout(timeout, replies.next()).await {
            Ok(Some(reply)) => Ok(reply),
            Ok(None) => Err(BusError::other("reply subscription closed")),
            Err(_) => Err(BusError::timeout()),
        }
    }

    async fn flush(&self) -> Result<(), BusError> {
        Ok(())
    }

    fn is_connected(&self) -> bool {
        true
    }

    fn nats_client(&self) -> Option<async_nats::Client> {
        None
    }

    fn dropped_messages(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    async fn dedicated(&self, _name: &str) -> Result<Option<Arc<dyn Transport>>, BusError> {
        Ok(None)
    }

    async fn no_echo(&self, _name: &str) -> Result<Arc<dyn Transport>, BusError> {
        let origin = self.shared.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        Ok(Arc::new(InProcess {
            shared: Arc::clone(&self.shared),
            origin,
        }))
    }
}

/// An in-process subscription: the reading end of its slot's queue.
struct MemorySubscription {
    shared: Arc<Shared>,
    id: u64,
    subject: String,
    group: Option<String>,
    queue: Arc<Queue>,
    /// Whether the slot is still in the trie.
    registered: bool,
}

impl MemorySubscription {
    /// Takes the slot out of the trie: no new messages. The queue is closed, so the stream
    /// yields what is buffered and then ends.
    fn deregister(&mut self) {
        if self.registered {
            self.registered = false;
            let slot = self
                .shared
                .write()
                .remove(&self.subject, self.group.as_deref(), self.id);
            drop(slot);
            self.queue.close();
        }
    }
}

#[async_trait]
impl SubscriptionBackend for MemorySubscription {
    async fn drain(&mut self) -> Result<(), BusError> {
        self.deregister();
        Ok(())
    }

    async fn unsubscribe(&mut self) -> Result<(), BusError> {
        self.deregister();
        self.queue.messages().clear();
        Ok(())
    }
}

impl Stream for MemorySubscription {
    type Item = Message;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.queue.poll_pop(cx)
    }
}

impl Drop for MemorySubscription {
    fn drop(&mut self) {
        self.deregister();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BusErrorKind;

    #[tokio::test]
    async fn slow_consumer_drops_without_blocking_others() {
        let bus = InProcess::default();
        let mut slow = bus.subscribe("s.x", None).await.unwrap();
        let mut fast = bus.subscribe("s.*", None).await.unwrap();
        let extra = 10;
        for i in 0..SUBSCRIPTION_CAPACITY + extra {
            bus.publish("s.x", None, Headers::new(), Bytes::from(i.to_string()))
                .await
                .unwrap();
            // Keep the fast one empty so only the slow one overflows.
            assert_eq!(fast.next().await.unwrap().payload, i.to_string());
        }
        assert_eq!(bus.dropped_messages(), extra as u64);
        // The slow one kept the oldest messages, in order.
        assert_eq!(slow.next().await.unwrap().payload, "0");
        assert_eq!(slow.next().await.unwrap().payload, "1");
    }

    #[tokio::test]
    async fn a_queue_holds_no_buffer_until_used_and_gives_it_back_when_emptied() {
        let bus = InProcess::default();
        let mut sub = bus.shared.subscribe("q", None, 0);
        assert_eq!(sub.queue.messages().capacity(), 0);
        for i in 0..100 {
            bus.publish("q", None, Headers::new(), Bytes::from(i.to_string()))
                .await
                .unwrap();
        }
        assert!(sub.queue.messages().capacity() >= 100);
        for i in 0..100 {
            assert_eq!(sub.next().await.unwrap().payload, i.to_string());
        }
        assert_eq!(sub.queue.messages().capacity(), 0);
    }

    #[tokio::test]
    async fn oversized_message_is_rejected() {
        let bus = InProcess::default();
        let _sub = bus.subscribe("big", None).await.unwrap();
        let ok = Bytes::from(vec![0u8; MAX_PAYLOAD]);
        bus.publish("big", None, Headers::new(), ok).await.unwrap();
        let too_big = Bytes::from(vec![0u8; MAX_PAYLOAD + 1]);
        let err = bus
            .publish("big", None, Headers::new(), too_big)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), BusErrorKind::Other);
    }

    #[tokio::test]
    async fn subscriptions_leave_the_trie() {
        let bus = InProcess::default();
        let mut a = bus.subscribe("t.a", None).await.unwrap();
        let mut b = bus.subscribe("t.>", Some("g")).await.unwrap();
        let c = bus.subscribe("t.*", None).await.unwrap();
        assert_eq!(bus.shared.read().len(), 3);
        a.unsubscribe().await.unwrap();
        b.drain().await.unwrap();
        drop(c);
        assert_eq!(bus.shared.read().len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn request_times_out_on_paused_clock() {
        let bus = InProcess::default();
        let _silent = bus.subscribe("svc", None).await.unwrap();
        let err = bus
            .request("svc", Headers::new(), Bytes::new(), Duration::from_secs(30))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), BusErrorKind::Timeout);
        // The reply inbox was removed again.
        assert_eq!(bus.shared.read().len(), 1);
    }
}
