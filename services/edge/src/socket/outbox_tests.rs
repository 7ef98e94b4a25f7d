use std::time::Duration;

use futures::StreamExt;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as ClientMessage;

use super::*;
use crate::socket::test_support::{WAIT, socket_pair};

fn text(n: usize) -> Frame {
    Frame::Text(Utf8Bytes::from(n.to_string()))
}

fn texts(outbox: &Outbox) -> Vec<String> {
    std::iter::from_fn(|| outbox.state.pop())
        .map(|f| match f {
            Frame::Text(t) => t.as_str().to_owned(),
            Frame::Binary(_) => unreachable!(),
        })
        .collect()
}

/// An outbox attached to the server's side of a fresh [`socket_pair`], with no writer
/// running, and the client; the reading half is returned to be kept alive.
async fn attached() -> (Outbox, WebSocketStream<TcpStream>, impl Sized) {
    let (server, client) = socket_pair(None).await;
    let (sink, stream) = server.split();
    let outbox = outbox(8);
    outbox.attach(sink);
    (outbox, client, stream)
}

/// Offers frame 1 while the sending half is held, as by the writer in the middle of a
/// write: the offer is queued.
fn queue_behind_the_writer(outbox: &Outbox) {
    let _writing = outbox.state.sink();
    assert_eq!(outbox.offer(text(1), Write::Now), Offer::Queued);
}

/// Asks for a close and waits for `task`, which it must end (`what` says why).
async fn close_and_join<T>(outbox: &Outbox, task: tokio::task::JoinHandle<T>, what: &str) {
    outbox.close(Close {
        code: 1000,
        reason: "bye",
    });
    tokio::time::timeout(WAIT, task).await.expect(what).unwrap();
}

/// The next text frame the client receives.
async fn next_text(client: &mut WebSocketStream<TcpStream>) -> String {
    loop {
        let msg = tokio::time::timeout(WAIT, client.next())
            .await
            .expect("a frame in time")
            .expect("the socket is open")
            .expect("a frame");
        match msg {
            ClientMessage::Text(t) => return t.as_str().to_owned(),
            ClientMessage::Ping(_) | ClientMessage::Pong(_) => {}
            other => panic!("unexpected frame {other:?}"),
        }
    }
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
        assert_eq!(outbox.offer(text(n), Write::Now), expected);
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
    assert_eq!(outbox.offer(text(0), Write::Now), Offer::Closed);
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
    assert!(matches!(outbox.state.pop(), Some(Frame::Text(t)) if t == "1"));
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
    let reader = tokio::spawn({
        let outbox = outbox.clone();
        async move { outbox.closed().await }
    });
    let writer = tokio::spawn({
        let outbox = outbox.clone();
        async move { outbox.has_work().await }
    });
    tokio::task::yield_now().await;
    assert!(!reader.is_finished(), "no close asked for yet");
    assert!(!writer.is_finished(), "no work yet");
    assert_eq!(outbox.offer(text(1), Write::Now), Offer::Queued);
    assert!(writer.await.unwrap(), "a queued frame wakes the writer");
    close_and_join(&outbox, reader, "the close wakes the reader").await;
    assert!(!outbox.has_work().await, "the writer stops at the close");
    assert!(outbox.has_pending(), "with what was queued left to flush");
    assert_eq!(texts(&outbox), ["1"]);
}

#[tokio::test]
async fn a_frame_for_an_idle_socket_is_written_by_its_sender() {
    let (outbox, mut client, _stream) = attached().await;
    // No writer runs in this test: the frame reaches the client only if the offer itself
    // wrote it.
    assert_eq!(outbox.offer(text(1), Write::Now), Offer::Queued);
    assert!(!outbox.has_pending(), "nothing was left for the writer");
    assert_eq!(next_text(&mut client).await, "1");
}

#[tokio::test]
async fn a_frame_offered_while_others_are_queued_goes_behind_them() {
    let (outbox, client, _stream) = attached().await;
    queue_behind_the_writer(&outbox);
    // The sending half is free again and the connection would take the bytes, but frame
    // 1 is still queued: frame 2 must wait behind it, not overtake it.
    assert_eq!(outbox.offer(text(2), Write::Now), Offer::Queued);
    assert_eq!(texts(&outbox), ["1", "2"]);
    drop(client);
}

#[tokio::test]
async fn the_writer_sends_what_the_queue_holds_in_order() {
    let (outbox, mut client, _stream) = attached().await;
    queue_behind_the_writer(&outbox);
    assert_eq!(outbox.offer(text(2), Write::Now), Offer::Queued);
    outbox.write(None).await.unwrap();
    assert_eq!(outbox.offer(text(3), Write::Now), Offer::Queued);
    for n in ["1", "2", "3"] {
        assert_eq!(next_text(&mut client).await, n);
    }
}

#[tokio::test]
async fn a_write_the_connection_could_not_take_at_once_is_finished_by_the_writer() {
    // A client that reads nothing yet, with a small receive buffer: a frame of 4 MiB
    // cannot leave at once, so its sender leaves the rest to the writer.
    let (server, mut client) = socket_pair(Some(4096)).await;
    let (sink, _stream) = server.split();
    let outbox = outbox(8);
    let writer = tokio::spawn(super::super::writer::run(
        sink,
        outbox.clone(),
        Duration::from_secs(3600),
    ));
    // The writer attached the sending half when it was made.
    assert!(outbox.state.sink().is_some());
    let big = "x".repeat(4 << 20);
    assert_eq!(
        outbox.offer(Frame::Text(Utf8Bytes::from(big.clone())), Write::Now),
        Offer::Queued
    );
    assert!(outbox.has_pending(), "the frame did not leave at once");
    // Nothing else is offered: only the writer, told by the sender, can finish it.
    assert_eq!(next_text(&mut client).await.len(), big.len());
    assert_eq!(outbox.offer(text(2), Write::Now), Offer::Queued);
    assert_eq!(next_text(&mut client).await, "2");
    close_and_join(&outbox, writer, "the writer ends after the close").await;
}

#[tokio::test]
async fn frames_for_a_socket_that_has_not_taken_its_bytes_are_queued() {
    // 4 MiB fits in the WebSocket's own buffer but not through a client that reads
    // nothing with a 4 KiB receive buffer: the write is left unflushed.
    let (server, _client) = socket_pair(Some(4096)).await;
    let (sink, _stream) = server.split();
    let outbox = outbox(8);
    outbox.attach(sink);
    let frame = Frame::Text(Utf8Bytes::from("x".repeat(4 << 20)));
    assert_eq!(outbox.offer(frame, Write::Now), Offer::Queued);
    assert!(outbox.has_pending(), "the frame did not leave at once");
    // The next frames go to the queue, where the slow-consumer policy counts them, not
    // into the WebSocket's buffer behind the first.
    assert_eq!(outbox.offer(text(2), Write::Now), Offer::Queued);
    assert_eq!(outbox.offer(text(3), Write::Now), Offer::Queued);
    assert_eq!(texts(&outbox), ["2", "3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn senders_on_several_threads_keep_each_ones_order() {
    const SENDERS: usize = 4;
    const FRAMES: usize = 2_000;
    let (server, mut client) = socket_pair(None).await;
    let (sink, _stream) = server.split();
    let outbox = outbox(SENDERS * FRAMES);
    let writer = tokio::spawn(super::super::writer::run(
        sink,
        outbox.clone(),
        Duration::from_secs(3600),
    ));
    let senders: Vec<_> = (0..SENDERS)
        .map(|s| {
            let outbox = outbox.clone();
            tokio::spawn(async move {
                for n in 0..FRAMES {
                    let frame = Frame::Text(Utf8Bytes::from(format!("{s}:{n}")));
                    assert_eq!(outbox.offer(frame, Write::Now), Offer::Queued);
                    if n % 64 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    let mut next = [0usize; SENDERS];
    for _ in 0..SENDERS * FRAMES {
        let got = next_text(&mut client).await;
        let (s, n) = got.split_once(':').unwrap();
        let (s, n): (usize, usize) = (s.parse().unwrap(), n.parse().unwrap());
        assert_eq!(n, next[s], "sender {s}'s frames arrive in the order sent");
        next[s] += 1;
    }
    for sender in senders {
        sender.await.unwrap();
    }
    outbox.close(Close {
        code: 1000,
        reason: "bye",
    });
    tokio::time::timeout(WAIT, writer).await.unwrap().unwrap();
}

/// An idle socket keeps its writer's future for its whole life, so the future holds the
/// loop's state and nothing more: not the sending half it was given, nor the timeouts of
/// the close, which an `async fn` keeps room for in every state (384 bytes in a test
/// build, against 192 now).
#[tokio::test]
async fn a_writers_task_keeps_only_what_its_loop_needs() {
    let (server, _client) = socket_pair(None).await;
    let (sink, _stream) = server.split();
    let writer = super::super::writer::run(sink, outbox(8), Duration::from_secs(3600));
    let size = std::mem::size_of_val(&writer);
    assert!(size <= 256, "the writer's future is {size} bytes");
}
