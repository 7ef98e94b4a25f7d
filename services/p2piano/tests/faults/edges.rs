//! An edge dies (`kill -9`) or is drained (SIGTERM).

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use p2piano_testkit::sio::Got;
use p2piano_testkit::sio::player::{Arrival, Player, Sender, seq_of};

use crate::harness::{Deployment, create_room, participants, session_for};

/// The default leave grace period (`P2PIANO_LEAVE_GRACE_MS`), which these tests keep.
const GRACE: Duration = Duration::from_secs(5);

/// Sends a note to `to` every `every` until `stop`; returns the send time of each note
/// (index = sequence number).
pub fn spawn_notes(
    from: Sender,
    to: String,
    every: Duration,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<Vec<Instant>> {
    spawn_notes_to(from, vec![to], every, stop)
}

/// Like [`spawn_notes`], each note to every one of `to`.
pub fn spawn_notes_to(
    from: Sender,
    to: Vec<String>,
    every: Duration,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<Vec<Instant>> {
    tokio::spawn(async move {
        let targets: Vec<&str> = to.iter().map(String::as_str).collect();
        let mut sent = Vec::new();
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {
                    let at = Instant::now();
                    if from.note(sent.len() as u64, &targets).await.is_err() {
                        break;
                    }
                    sent.push(at);
                }
            }
        }
        sent
    })
}

/// The notes from `from` in `got`: (sequence number, arrival time).
pub fn notes_from(got: &[Arrival], from: &str) -> Vec<(u64, Instant)> {
    got.iter()
        .filter_map(|g| match g.event() {
            Some(("KEY_DOWN", data)) if data["userId"] == from => Some((seq_of(data), g.at)),
            _ => None,
        })
        .collect()
}

/// Reads `p`'s events until `done` holds for everything it has seen (its whole history),
/// or `deadline`; returns that history.
pub async fn collect_until(
    p: &mut Player,
    deadline: Instant,
    done: impl FnMut(&[Arrival]) -> bool,
) -> Vec<Arrival> {
    p.until(deadline.saturating_duration_since(Instant::now()), done)
        .await;
    p.seen.clone()
}

/// Waits until `p` has seen `USER_CONNECT` of every user in `ids`.
async fn seen_connect(p: &mut Player, ids: &[String]) {
    let got = collect_until(p, Instant::now() + Duration::from_secs(30), |g| {
        ids.iter()
            .all(|id| g.iter().any(|e| e.is("USER_CONNECT", id)))
    })
    .await;
    for id in ids {
        assert!(
            got.iter().any(|e| e.is("USER_CONNECT", id)),
            "no USER_CONNECT for {id}: {got:?}"
        );
    }
}

/// `kill -9` of an edge: every member it held is announced as left to the members on the
/// other edge within 10 s (default heartbeat 1 s, edge timeout 3 s, grace 5 s), while those
/// members keep relaying notes to each other the whole time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_kill_9_leaves_no_ghosts() {
    let mut d = Deployment::start(2, &[]).await;
    let (doomed, stays) = (d.edge(0), d.edge(1));
    let (cookie_a, code) = create_room(stays).await;
    let cookie_b = session_for(stays, &code).await;
    let mut a = Player::must_join(stays, &code, &cookie_a, None).await;
    let mut b = Player::must_join(stays, &code, &cookie_b, None).await;
    // Kept open until the kill.
    let mut victims = Vec::new();
    for _ in 0..3 {
        let cookie = session_for(doomed, &code).await;
        victims.push(Player::must_join(doomed, &code, &cookie, None).await);
    }
    let victim_ids: Vec<String> = victims.iter().map(|v| v.user_id.clone()).collect();
    let mut joiners = victim_ids.clone();
    seen_connect(&mut b, &victim_ids).await;
    joiners.push(b.user_id.clone());
    seen_connect(&mut a, &joiners).await;

    // a and b play to each other, 20 notes a second each way, through the outage.
    let stop = CancellationToken::new();
    let every = Duration::from_millis(50);
    let a_to_b = spawn_notes(a.sender(), b.user_id.clone(), every, stop.clone());
    let b_to_a = spawn_notes(b.sender(), a.user_id.clone(), every, stop.clone());
    // Let the traffic start before the crash (the condition: b got a first note).
    let first = collect_until(&mut b, Instant::now() + Duration::from_secs(10), |g| {
        !notes_from(g, &a.user_id).is_empty()
    })
    .await;
    assert!(
        !notes_from(&first, &a.user_id).is_empty(),
        "no note before the crash"
    );

    let killed = Instant::now();
    d.edges[0].kill();
    a.until(Duration::from_secs(20), |g| {
        victim_ids
            .iter()
            .all(|id| g.iter().any(|e| e.is("USER_DISCONNECT", id)))
    })
    .await;
    let outage_end = Instant::now();
    // Keep playing a little past the last announcement, then stop and let the last notes land.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.cancel();
    let sent_ab = a_to_b.await.unwrap();
    let sent_ba = b_to_a.await.unwrap();
    let a_got = collect_until(&mut a, Instant::now() + Duration::from_secs(10), |g| {
        notes_from(g, &b.user_id).len() >= sent_ba.len()
    })
    .await;
    let b_got = collect_until(&mut b, Instant::now() + Duration::from_secs(10), |g| {
        notes_from(g, &a.user_id).len() >= sent_ab.len()
            && victim_ids
                .iter()
                .all(|id| g.iter().any(|e| e.is("USER_DISCONNECT", id)))
    })
    .await;

    let mut worst = Duration::ZERO;
    for id in &victim_ids {
        for (who, got) in [("a", &a_got), ("b", &b_got)] {
            let at = got
                .iter()
                .find_map(|g| g.is("USER_DISCONNECT", id).then_some(g.at))
                .unwrap_or_else(|| panic!("{who} never saw {id} leave: {got:?}"));
            let after = at.duration_since(killed);
            println!(
                "[faults] edge_kill_9: {who} saw {id} leave {:.2} s after the kill",
                after.as_secs_f64()
            );
            worst = worst.max(after);
        }
    }
    println!(
        "[faults] edge_kill_9: all {} members of the dead edge announced as left within {:.2} s",
        victim_ids.len(),
        worst.as_secs_f64()
    );
    assert!(
        worst <= Duration::from_secs(10),
        "ghosts: the last leave came {worst:?} after the kill"
    );
    for got in [&a_got, &b_got] {
        for id in [&a.user_id, &b.user_id] {
            assert!(
                !got.iter().any(|g| g.is("USER_DISCONNECT", id)),
                "a survivor was announced as left"
            );
        }
    }
    // Every note arrived, in order, including those sent during the outage.
    for (what, sent, got) in [
        ("a->b", &sent_ab, notes_from(&b_got, &a.user_id)),
        ("b->a", &sent_ba, notes_from(&a_got, &b.user_id)),
    ] {
        let seqs: Vec<u64> = got.iter().map(|(s, _)| *s).collect();
        let expected: Vec<u64> = (0..sent.len() as u64).collect();
        assert_eq!(seqs, expected, "{what}: every note, in order");
        let during = got
            .iter()
            .filter(|(_, at)| *at > killed && *at <= outage_end)
            .count();
        let gap = got
            .windows(2)
            .filter(|w| w[1].1 > killed)
            .map(|w| w[1].1.duration_since(w[0].1))
            .max()
            .unwrap_or_default();
        println!(
            "[faults] edge_kill_9: {what}: {} notes sent, all delivered in order; {during} arrived \
             between the kill and the last leave announcement; longest gap after the kill {} ms",
            sent.len(),
            gap.as_millis()
        );
        assert!(during > 0, "{what}: no note arrived during the outage");
        assert!(
            gap < Duration::from_secs(2),
            "{what}: notes stalled for {gap:?} during the outage"
        );
    }
    let left = participants(stays, &code).await.unwrap();
    assert_eq!(left.len(), 2, "only the survivors are members: {left:?}");
}

/// SIGTERM of an edge: its clients get a transport close 1012 (not a Socket.IO disconnect),
/// reconnect with the same cookie to the other edge, and the members they play with see no
/// leave and no join; the edge exits within 30 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_sigterm_drains_without_leave_or_join() {
    let mut d = Deployment::start(2, &[]).await;
    let (draining, stays) = (d.edge(0), d.edge(1));
    let (cookie_a, code) = create_room(stays).await;
    let mut a = Player::must_join(stays, &code, &cookie_a, None).await;
    let mut movers = Vec::new();
    for _ in 0..3 {
        let cookie = session_for(draining, &code).await;
        movers.push(Player::must_join(draining, &code, &cookie, None).await);
    }
    let mover_ids: Vec<String> = movers.iter().map(|m| m.user_id.clone()).collect();
    seen_connect(&mut a, &mover_ids).await;

    let started = Instant::now();
    d.edges[0].sigterm();
    let moving: Vec<_> = movers
        .into_iter()
        .map(|mut m| {
            tokio::spawn(async move {
                let (closed, _) = m
                    .wait_for(Duration::from_secs(30), |g| {
                        matches!(g.got, Got::Closed(..) | Got::Disconnected)
                    })
                    .await
                    .expect("the draining edge closes the socket");
                let Arrival {
                    got: Got::Closed(code),
                    at,
                } = closed
                else {
                    panic!("a Socket.IO disconnect instead of a transport close: {closed:?}");
                };
                // Like socket.io-client: reconnect at once, with the same cookie and the
                // page id it was given, elsewhere.
                let back = Player::must_join(stays, &m.code, &m.cookie, m.pid.as_deref()).await;
                assert_eq!(back.user_id, m.user_id, "the same session, the same user");
                (code, at, Instant::now(), back)
            })
        })
        .collect();
    let mut back = Vec::new();
    for task in moving {
        let (code, closed_at, back_at, player) = task.await.unwrap();
        println!(
            "[faults] edge_sigterm: closed with {code:?} {:.2} s after SIGTERM, back on the other \
             edge {} ms later",
            closed_at.duration_since(started).as_secs_f64(),
            back_at.duration_since(closed_at).as_millis()
        );
        assert_eq!(code, Some(1012), "a transport close 1012 (service restart)");
        back.push(player);
    }
    let left = Duration::from_secs(30).saturating_sub(started.elapsed());
    let status = d.edges[0]
        .wait_exit(left)
        .await
        .expect("the drained edge exits within 30 s of SIGTERM");
    let exit_after = started.elapsed();
    println!(
        "[faults] edge_sigterm: edge exited ({status}) {:.2} s after SIGTERM",
        exit_after.as_secs_f64()
    );
    assert!(status.success(), "a clean exit: {status}");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", draining)).is_err(),
        "the drained edge no longer listens"
    );
    // Proving an absence needs time to pass: watch `a` for the grace period plus 3 s after
    // the sockets closed (a fixed wait, on purpose). A leave would be announced when the
    // grace period ends; a join right at the reconnect.
    tokio::time::sleep(
        (started + GRACE + Duration::from_secs(3)).saturating_duration_since(Instant::now()),
    )
    .await;
    a.drain();
    let seen = a.since(started);
    assert!(
        !seen.iter().any(|g| g
            .event()
            .is_some_and(|(n, _)| n == "USER_DISCONNECT" || n == "USER_CONNECT")),
        "leave/join announced for a reconnect within the grace period: {seen:?}"
    );
    println!(
        "[faults] edge_sigterm: {} s watched past the closes: no USER_DISCONNECT, no USER_CONNECT",
        started.elapsed().as_secs()
    );
    // And they still play: a note from each reconnected player reaches `a`, nothing before it.
    for (i, p) in back.iter().enumerate() {
        p.sender().note(i as u64, &[&a.user_id]).await.unwrap();
        let (got, before) = a
            .wait_for(Duration::from_secs(10), |g| g.is("KEY_DOWN", &p.user_id))
            .await
            .expect("the note of a reconnected player");
        assert!(before.is_empty(), "unexpected events: {before:?}");
        assert_eq!(seq_of(got.event().unwrap().1), i as u64);
    }
    let mut members = participants(stays, &code).await.unwrap();
    members.sort();
    let mut expected = [mover_ids, vec![a.user_id.clone()]].concat();
    expected.sort();
    assert_eq!(members, expected, "the same four members, once each");
}
