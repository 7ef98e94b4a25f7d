//! Bad neighbours: a client that never reads its socket and a client flooding above its
//! rate limit share a room with well-behaved players, who must not notice.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio_util::sync::CancellationToken;

use p2piano_testkit::http::try_request;
use p2piano_testkit::sio::Got;
use p2piano_testkit::sio::player::{Player, join};

use crate::edges::{notes_from, spawn_notes_to};
use crate::harness::{Deployment, create_room, session_for};

/// The well-behaved sender's rate: 50 notes a second (its budget is 1000 per 10 s).
const STEADY_EVERY: Duration = Duration::from_millis(20);
/// The flooder's rate: 500 notes a second, five times its budget.
const FLOOD_EVERY: Duration = Duration::from_millis(2);
/// How long both play: past the 10 s after which a session that keeps exceeding its limits
/// is disconnected (its first refusal comes ~2 s in, when its 1000-note budget is spent).
const PLAY: Duration = Duration::from_secs(13);

/// The `p2piano_edge_dropped_total` of the edge whose admin port is `port`, if it exports it.
async fn dropped(port: u16) -> Option<u64> {
    let r = try_request(port, "GET", "/metrics", &[], None).await.ok()?;
    r.body
        .lines()
        .find_map(|l| l.strip_prefix("p2piano_edge_dropped_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

/// A slow consumer (a member whose socket is never read, with a 4 KiB receive buffer, sent
/// 6 MB of CRDT messages that clog its pipe) and a flooder (500 notes a second against a
/// budget of 1000 per 10 s) in one room with a steady sender (50 notes a second) and a
/// receiver: the receiver gets at least 95% of the steady sender's notes (in fact all), in
/// order and at its rate; the flooder gets 429s, only its budget reaches anyone, and it is
/// disconnected after 10 s of exceeding; the slow consumer's relayed frames are dropped
/// (and it is closed) without holding anyone up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_and_flooder_do_not_hurt_the_room() {
    let d = Deployment::start(2, &[]).await;
    let (e1, e2) = (d.edge(0), d.edge(1));
    let (cookie_s, code) = create_room(e1).await;
    let mut cookies = Vec::new();
    for _ in 0..4 {
        cookies.push(session_for(e1, &code).await);
    }
    let sender = Player::must_join(e1, &code, &cookie_s, None).await;
    // The receiver and the slow consumer share an edge (and its delivery of the room).
    let mut receiver = Player::must_join(e2, &code, &cookies[0], None).await;
    let (mut slow, slow_id) = join(e2, &code, &cookies[1], Some(4096), None)
        .await
        .expect("the slow consumer joins");
    let mut flooder = Player::must_join(e1, &code, &cookies[2], None).await;
    let bulk = Player::must_join(e1, &code, &cookies[3], None).await;
    // Everyone is in: the receiver has seen the last joiner.
    receiver
        .wait_for(Duration::from_secs(30), |g| {
            g.is("USER_CONNECT", &bulk.user_id)
        })
        .await
        .expect("all joined");
    let dropped_before = dropped(d.edge_admin(1)).await;

    // Clog the slow consumer's pipe: 100 CRDT messages of ~60 KB (its sender's whole CRDT
    // budget for 10 s) for it alone.
    let sync: Vec<u8> = vec![255; 15_000];
    for seq in 0..100u64 {
        let crdt = json!({"syncMessage": sync, "seq": seq, "targetUserIds": [slow_id]});
        bulk.emit("AUTOMERGE_PROTOCOL", &crdt).await.unwrap();
    }

    let started = Instant::now();
    let stop = CancellationToken::new();
    let steady = spawn_notes_to(
        sender.sender(),
        vec![receiver.user_id.clone(), slow_id.clone()],
        STEADY_EVERY,
        stop.clone(),
    );
    let flood = spawn_notes_to(
        flooder.sender(),
        vec![receiver.user_id.clone(), slow_id.clone()],
        FLOOD_EVERY,
        stop.clone(),
    );
    // The receiver reads all along (its reader task does); the play lasts PLAY (the
    // scenario's length, not a wait for a condition).
    tokio::time::sleep(PLAY).await;
    stop.cancel();
    let sent = steady.await.unwrap();
    let flooded = flood.await.unwrap();
    let sender_id = sender.user_id.clone();
    receiver
        .until(Duration::from_secs(15), |g| {
            notes_from(g, &sender_id).len() >= sent.len()
        })
        .await;

    // The receiver: everything from the steady sender, in order, at its rate.
    let got = notes_from(&receiver.seen, &sender_id);
    let seqs: Vec<u64> = got.iter().map(|(s, _)| *s).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "notes reordered or duplicated"
    );
    let ratio = got.len() as f64 / sent.len() as f64;
    let latencies: Vec<Duration> = got
        .iter()
        .map(|(s, at)| at.duration_since(sent[*s as usize]))
        .collect();
    let mut sorted = latencies.clone();
    sorted.sort();
    let p50 = sorted[sorted.len() / 2];
    let p99 = sorted[sorted.len() * 99 / 100];
    let max = *sorted.last().unwrap();
    // Notes per second in each whole second of the play.
    let secs = PLAY.as_secs() as usize;
    let mut per_sec = vec![0usize; secs];
    for (_, at) in &got {
        let i = at.duration_since(started).as_secs() as usize;
        if i < secs {
            per_sec[i] += 1;
        }
    }
    println!(
        "[faults] slow_and_flood: receiver got {}/{} notes of the steady sender ({:.1}%), in \
         order; latency p50 {} ms, p99 {} ms, max {} ms; per second {per_sec:?} (sent 50/s)",
        got.len(),
        sent.len(),
        ratio * 100.0,
        p50.as_millis(),
        p99.as_millis(),
        max.as_millis()
    );
    assert!(ratio >= 0.95, "the receiver got only {:.1}%", ratio * 100.0);
    assert!(
        max < Duration::from_secs(3),
        "the receiver was held up: a note took {max:?}"
    );

    // The flooder: refused above its budget, and disconnected for keeping at it.
    flooder.drain();
    let refusals = flooder
        .seen
        .iter()
        .filter(|g| {
            g.event()
                .is_some_and(|(n, d)| n == "exception" && d["code"] == 429)
        })
        .count();
    let closed = flooder.seen.iter().find_map(|g| match g.got {
        Got::Closed(code) => Some((code, g.at.duration_since(started))),
        _ => None,
    });
    let passed = notes_from(&receiver.seen, &flooder.user_id).len();
    println!(
        "[faults] slow_and_flood: flooder sent {} notes in {:.1} s, got {refusals} refusals \
         (429), {passed} reached the receiver, closed: {closed:?}",
        flooded.len(),
        PLAY.as_secs_f64()
    );
    assert!(refusals > 0, "the flooder was never refused");
    // The key-press budget: a bucket of 1,000 that refills 100 a second, over the play.
    let budget = 1000 + 100 * PLAY.as_secs() as usize;
    assert!(
        passed <= budget,
        "at most its budget (1,000, then 100 a second) of the flood was relayed: {passed} > {budget}"
    );
    assert!(
        matches!(closed, Some((Some(1008), _))),
        "the flooder is disconnected (1008) after 10 s over its limits: {closed:?}"
    );

    // The slow consumer: its frames were dropped, and it was closed (1013) or is about to be.
    let dropped_after = dropped(d.edge_admin(1)).await;
    let (frames, close) = slow.frames_until_closed(Duration::from_secs(10)).await;
    println!(
        "[faults] slow_and_flood: edge dropped_total {dropped_before:?} -> {dropped_after:?}; the \
         slow consumer, read at last, held {frames} frames, then close {close:?}"
    );
    if let (Some(before), Some(after)) = (dropped_before, dropped_after) {
        assert!(after > before, "the slow consumer's frames were dropped");
    }
}
