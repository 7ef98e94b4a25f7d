//! A process that stops and comes back (`SIGSTOP`, then `SIGCONT`): a frozen node, CPU
//! throttling at a container's limit, a long pause. Membership must stay true: a stalled edge
//! is not a dead one.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use p2piano_testkit::sio::Got;
use p2piano_testkit::sio::player::{Arrival, Player};

use crate::edges::{notes_from, spawn_notes, spawn_notes_to};
use crate::harness::{Deployment, all_in_one};
use crate::harness::{create_room, participants, session_for};
use crate::support::free_port;

/// Edge timeout and grace period of the default settings: a frozen edge is declared dead
/// 3 s after its last heartbeat, and its members would be announced as left 5 s later.
const TIMEOUT: Duration = Duration::from_secs(3);
const GRACE: Duration = Duration::from_secs(5);

/// Polls the room's member list on `port` every 200 ms until `stop`: the times at which it
/// did not list every one of `ids` (HTTP failures count as such too).
fn watch_listing(
    port: u16,
    code: String,
    ids: Vec<String>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<Vec<(Instant, String)>> {
    tokio::spawn(async move {
        let mut missing = Vec::new();
        loop {
            let at = Instant::now();
            match participants(port, &code).await {
                Ok(listed) => {
                    if let Some(id) = ids.iter().find(|id| !listed.contains(id)) {
                        missing.push((at, format!("{id} not listed")));
                    }
                }
                Err(r) => missing.push((at, format!("HTTP {}", r.status))),
            }
            tokio::select! {
                _ = stop.cancelled() => return missing,
                // The polling period of this watch, not a wait for time to pass.
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    })
}

/// One member on the edge that stays (`a`), two on the edge that freezes (`b`, `c`);
/// `a` plays to both every 50 ms and `b` to `a` 80 notes a second (a fast player's rate, all
/// key presses, so all in one budget class), throughout.
struct Scene {
    d: Deployment,
    code: String,
    a: Player,
    b_id: String,
    c_id: String,
    stop_notes: CancellationToken,
    a_notes: tokio::task::JoinHandle<Vec<Instant>>,
    b_notes: tokio::task::JoinHandle<Vec<Instant>>,
    b: Player,
    _c: Player,
}

async fn scene() -> Scene {
    let d = Deployment::start(2, &[]).await;
    let (frozen, stays) = (d.edge(0), d.edge(1));
    let (cookie_a, code) = create_room(stays).await;
    let mut a = Player::must_join(stays, &code, &cookie_a, None).await;
    let b = Player::must_join(frozen, &code, &session_for(frozen, &code).await, None).await;
    let c = Player::must_join(frozen, &code, &session_for(frozen, &code).await, None).await;
    let ids = [b.user_id.clone(), c.user_id.clone()];
    a.wait_for(Duration::from_secs(30), |g| g.is("USER_CONNECT", &ids[1]))
        .await
        .expect("a sees the others join");
    let stop_notes = CancellationToken::new();
    let a_notes = spawn_notes_to(
        a.sender(),
        ids.to_vec(),
        Duration::from_millis(50),
        stop_notes.clone(),
    );
    let b_notes = spawn_notes(
        b.sender(),
        a.user_id.clone(),
        Duration::from_micros(12_500),
        stop_notes.clone(),
    );
    Scene {
        d,
        code,
        b_id: b.user_id.clone(),
        c_id: c.user_id.clone(),
        a,
        stop_notes,
        a_notes,
        b_notes,
        b,
        _c: c,
    }
}

/// Freezes edge 0 for `freeze`, then lets it go on; returns (stopped, resumed).
async fn freeze_edge(s: &Scene, freeze: Duration) -> (Instant, Instant) {
    let stopped = Instant::now();
    s.d.edges[0].sigstop();
    // The freeze itself is the fault under test: its length is on the clock.
    tokio::time::sleep(freeze).await;
    s.d.edges[0].sigcont();
    (stopped, Instant::now())
}

/// Edges frozen for 2 s, 4 s and 7 s (one after the other) under traffic: the 4 s and 7 s
/// ones outlast the edge timeout, so presence declares the edge dead; it hears the edge
/// again before the grace period ends and takes it back. Nobody is announced as left, the
/// room lists everyone throughout, and notes flow before and after. The frozen edge reads
/// the notes its member sent meanwhile all at once when it goes on (560 after the 7 s
/// freeze): a player at 80 notes a second meets no limit however they arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_frozen_for_2_4_7_s_loses_nobody() {
    let mut s = scene().await;
    let began = Instant::now();
    let stays = s.d.edge(1);
    let everyone = vec![s.a.user_id.clone(), s.b_id.clone(), s.c_id.clone()];
    for secs in [2, 4, 7] {
        let freeze = Duration::from_secs(secs);
        let stop = CancellationToken::new();
        let listing = watch_listing(stays, s.code.clone(), everyone.clone(), stop.clone());
        let (stopped, resumed) = freeze_edge(&s, freeze).await;
        // Long enough to see any leave: the grace period of a death at the timeout, and
        // some more. Proving an absence needs the time to pass.
        let watch_until = stopped + freeze.max(TIMEOUT) + GRACE + Duration::from_secs(2);
        let got =
            s.a.wait_for(watch_until.saturating_duration_since(Instant::now()), |g| {
                g.is("USER_DISCONNECT", &s.b_id) || g.is("USER_DISCONNECT", &s.c_id)
            })
            .await;
        stop.cancel();
        let missing = listing.await.unwrap();
        let after: Vec<(u64, Instant)> = notes_from(&s.a.since(resumed), &s.b_id);
        println!(
            "[faults] edge frozen {secs} s: {} notes from the frozen edge's member after it \
             resumed (first {:?} after), the room listed all 3 members in every poll: {}",
            after.len(),
            after.first().map(|(_, at)| at.duration_since(resumed)),
            missing.is_empty()
        );
        assert!(
            got.is_err(),
            "announced as left after a {secs} s freeze: {got:?}"
        );
        assert!(missing.is_empty(), "{secs} s freeze: {missing:?}");
        assert!(
            !after.is_empty(),
            "notes flow again after a {secs} s freeze"
        );
        assert!(
            !s.a.since(stopped)
                .iter()
                .any(|g| matches!(&g.got, Got::Event(name, _) if name == "USER_CONNECT")),
            "no join announced either"
        );
    }
    s.stop_notes.cancel();
    let (sent_a, sent_b) = (s.a_notes.await.unwrap(), s.b_notes.await.unwrap());
    // Refusals would have come back while the test watched for leaves after the last
    // freeze: everything b received is in by now.
    s.b.drain();
    let refused: Vec<Arrival> =
        s.b.since(began)
            .into_iter()
            .filter(|g| g.event().is_some_and(|(n, _)| n == "exception"))
            .collect();
    println!(
        "[faults] frozen 2/4/7 s: {} notes sent by a, {} by b (80/s), {} of b's refused",
        sent_a.len(),
        sent_b.len(),
        refused.len()
    );
    assert!(
        refused.is_empty(),
        "a player at 80 notes a second met a limit: {refused:?}"
    );
}

/// An edge frozen for 12 s, past the timeout and the grace period: its members may be
/// announced as left (at about 8 s), but once it goes on they are announced back and listed
/// again within 2 s, and their notes reach the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_frozen_for_12_s_is_announced_back() {
    let mut s = scene().await;
    let stays = s.d.edge(1);
    let (stopped, resumed) = freeze_edge(&s, Duration::from_secs(12)).await;
    let ids = [s.b_id.clone(), s.c_id.clone()];
    // Until each one announced as left is announced back (the leaves came during the
    // freeze, from the edge that stayed), and b's notes arrive again.
    s.a.until(Duration::from_secs(10), |g| {
        let back = ids.iter().all(|id| {
            let left = g
                .iter()
                .any(|e| e.is("USER_DISCONNECT", id) && e.at >= stopped);
            !left
                || g.iter()
                    .any(|e| e.is("USER_CONNECT", id) && e.at >= resumed)
        });
        let after: Vec<Arrival> = g.iter().filter(|e| e.at >= resumed).cloned().collect();
        back && !notes_from(&after, &ids[0]).is_empty()
    })
    .await;
    let seen = s.a.since(stopped);
    let listed = participants(stays, &s.code).await.unwrap();
    for id in &ids {
        let left = seen
            .iter()
            .find(|g| g.is("USER_DISCONNECT", id))
            .map(|g| g.at.duration_since(stopped));
        let back = seen
            .iter()
            .find(|g| g.is("USER_CONNECT", id))
            .map(|g| g.at.saturating_duration_since(resumed));
        println!(
            "[faults] edge frozen 12 s: {id} announced as left {left:?} after the stop, back \
             {back:?} after the resume; listed: {}",
            listed.contains(id)
        );
        if left.is_some() {
            assert!(
                back.is_some_and(|d| d <= Duration::from_secs(2)),
                "{id} announced back {back:?} after the resume"
            );
        }
        assert!(listed.contains(id), "{id} listed again: {listed:?}");
    }
    let after = notes_from(&s.a.since(resumed), &ids[0]);
    assert!(!after.is_empty(), "b's notes reach a after the resume");
    println!(
        "[faults] edge frozen 12 s: {} notes from b after the resume",
        after.len()
    );
    s.stop_notes.cancel();
}

/// `p2piano all` frozen for 7 s under traffic: its presence judges no edge of its own by
/// heartbeats, and the judge knows it was paused itself; nobody is announced as left and
/// the notes flow again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_frozen_for_7_s_loses_nobody() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let mut all = all_in_one(port, dir.path().join("all.log"));
    all.spawn();
    all.wait_ready(Duration::from_secs(60)).await;
    let (cookie_a, code) = create_room(port).await;
    let mut a = Player::must_join(port, &code, &cookie_a, None).await;
    let b = Player::must_join(port, &code, &session_for(port, &code).await, None).await;
    a.wait_for(Duration::from_secs(30), |g| {
        g.is("USER_CONNECT", &b.user_id)
    })
    .await
    .expect("a sees b join");
    let stop = CancellationToken::new();
    let notes = spawn_notes(
        b.sender(),
        a.user_id.clone(),
        Duration::from_millis(50),
        stop.clone(),
    );
    let stopped = Instant::now();
    all.sigstop();
    // The freeze is the fault under test.
    tokio::time::sleep(Duration::from_secs(7)).await;
    all.sigcont();
    let resumed = Instant::now();
    let got = a
        .wait_for(Duration::from_secs(8), |g| {
            g.is("USER_DISCONNECT", &b.user_id)
        })
        .await;
    stop.cancel();
    let _ = notes.await;
    let after = notes_from(&a.since(resumed), &b.user_id);
    println!(
        "[faults] p2piano all frozen 7 s: watched {:.1} s after: no leave: {}; {} notes from b \
         after the resume",
        resumed.elapsed().as_secs_f64(),
        got.is_err(),
        after.len()
    );
    assert!(got.is_err(), "announced as left: {got:?}");
    assert!(!after.is_empty(), "notes flow again");
    let listed = participants(port, &code).await.unwrap();
    assert!(listed.contains(&b.user_id) && listed.contains(&a.user_id));
    let _ = stopped;
    all.kill();
}
