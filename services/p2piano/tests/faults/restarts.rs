//! rooms, presence, NATS and the MongoDB-wire server go away and come back while a room is
//! in use: nothing is lost, and meanwhile requests fail promptly with `unavailable`/503.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio_util::sync::CancellationToken;

use p2piano_testkit::http::try_request;
use p2piano_testkit::sio::player::{JoinError, Player, seq_of};

use crate::edges::{collect_until, notes_from, spawn_notes};
use crate::harness::{
    Deployment, READY_WITHIN, create_room, http_within, participants, session_for,
};

/// The edge's own bus request timeout (`P2PIANO_REQUEST_TIMEOUT_MS`, default 5 s).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The bound on any one request while a service is down: well under [`REQUEST_TIMEOUT`],
/// so that an answer within it is a prompt refusal, not the edge giving up on a hang.
const PROMPT: Duration = Duration::from_secs(2);
/// While MongoDB is down, rooms waits for it up to `P2PIANO_MONGO_TIMEOUT_MS` (2 s) before it
/// answers `unavailable`: still under the edge's request timeout.
const PROMPT_STORE: Duration = Duration::from_millis(4_500);

/// Two members in one room, one on each edge, playing notes to each other; and a third
/// session that has looked at the room but not joined it yet.
struct Room {
    code: String,
    a: Player,
    b: Player,
    cookie_c: String,
}

async fn room(d: &Deployment) -> Room {
    let (cookie_a, code) = create_room(d.edge(0)).await;
    let cookie_b = session_for(d.edge(1), &code).await;
    let cookie_c = session_for(d.edge(1), &code).await;
    let a = Player::must_join(d.edge(0), &code, &cookie_a, None).await;
    let mut b = Player::must_join(d.edge(1), &code, &cookie_b, None).await;
    // b has joined once a's edge knows it (a sees USER_CONNECT); drain b's welcome traffic.
    let mut a = a;
    let got = collect_until(&mut a, Instant::now() + Duration::from_secs(30), |g| {
        g.iter().any(|e| e.is("USER_CONNECT", &b.user_id))
    })
    .await;
    assert!(got.iter().any(|e| e.is("USER_CONNECT", &b.user_id)));
    b.drain();
    Room {
        code,
        a,
        b,
        cookie_c,
    }
}

/// Expects `status` for `method path` within `bound`; returns how long it took.
async fn expect_status(
    port: u16,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    bound: Duration,
    status: u16,
) -> Duration {
    let (r, took) = http_within(bound, port, method, path, cookie).await;
    assert_eq!(
        r.status, status,
        "{method} {path}: {:?}\n{}",
        r.headers, r.body
    );
    took
}

/// `USER_UPDATE` from `p`: the `exception` it gets back within `bound` must have `code`.
async fn expect_update_refused(p: &mut Player, bound: Duration, code: u64) -> Duration {
    let sent = Instant::now();
    let update = json!({"displayName": "Renamed", "color": "#ff0000", "instrument": "SYNTH"});
    p.emit("USER_UPDATE", &update).await.unwrap();
    let (got, _) = p
        .wait_for(bound, |g| {
            g.event()
                .is_some_and(|(n, _)| n == "exception" || n == "USER_UPDATE")
        })
        .await
        .unwrap_or_else(|seen| panic!("no answer to USER_UPDATE within {bound:?}: {seen:?}"));
    let (name, data) = got.event().unwrap();
    assert_eq!(name, "exception", "refused, not done: {data}");
    assert_eq!(data["code"], code, "{data}");
    sent.elapsed()
}

/// `USER_UPDATE` from `p` is done: everyone in the room, `p` too, gets `USER_UPDATE`.
async fn expect_update_done(p: &mut Player, other: &mut Player, name: &str) {
    let update = json!({"displayName": name, "color": "#00ff00", "instrument": "PIANO"});
    p.emit("USER_UPDATE", &update).await.unwrap();
    for q in [p, other] {
        let (got, _) = q
            .wait_for(Duration::from_secs(15), |g| {
                g.event().is_some_and(|(n, d)| {
                    n == "exception" || (n == "USER_UPDATE" && d["room"].to_string().contains(name))
                })
            })
            .await
            .unwrap_or_else(|seen| panic!("no USER_UPDATE: {seen:?}"));
        assert_eq!(got.event().unwrap().0, "USER_UPDATE", "{got:?}");
    }
}

/// A join that must be refused within `bound`, with a message containing `says`.
async fn expect_join_refused(
    port: u16,
    code: &str,
    cookie: &str,
    bound: Duration,
    says: &str,
) -> Duration {
    let started = Instant::now();
    match tokio::time::timeout(bound, Player::join(port, code, cookie, None)).await {
        Ok(Err(JoinError::Refused(message))) => {
            assert!(
                message.to_lowercase().contains(says),
                "refused with {message:?}"
            );
            started.elapsed()
        }
        Ok(Err(e)) => panic!("join failed at the transport instead of being refused: {e:?}"),
        Ok(Ok(_)) => panic!("a join succeeded while its dependency was down"),
        Err(_) => panic!("join: no answer within {bound:?} (a hang)"),
    }
}

/// What a dependency's outage is checked with, round after round.
#[derive(Clone, Copy, PartialEq)]
enum Down {
    Rooms,
    Presence,
    Mongo,
}

/// Requests during an outage of `down`, every 250 ms for `window` (the length of the
/// outage: the fault's duration, not a wait for a condition), all of one round at once:
/// `GET /rooms/:code` and `GET /api/room/:code` with a member's cookie, `POST /api/room`
/// without one, a join by a new socket, and (unless presence is what is down: rooms serves
/// it) a member's `USER_UPDATE`. Each must be refused (503, `exception` 503, `44`) within
/// `bound`. Returns (rounds, slowest refusal).
async fn during_outage(
    d: &Deployment,
    r: &mut Room,
    down: Down,
    window: Duration,
    bound: Duration,
) -> (usize, Duration) {
    let started = Instant::now();
    let code = r.code.clone();
    let says = match down {
        Down::Rooms | Down::Mongo => "unavailable",
        Down::Presence => "unavailable, try again",
    };
    let (mut rounds, mut worst) = (0, Duration::ZERO);
    let (room_path, client_path) = (format!("/rooms/{code}"), format!("/api/room/{code}"));
    let (cookie_a, cookie_b) = (r.a.cookie.clone(), r.b.cookie.clone());
    while rounds == 0 || started.elapsed() < window {
        let round = Instant::now();
        let (get, client_get, create, join, update) = tokio::join!(
            expect_status(d.edge(0), "GET", &room_path, Some(&cookie_a), bound, 503),
            expect_status(d.edge(1), "GET", &client_path, Some(&cookie_b), bound, 503),
            expect_status(d.edge(0), "POST", "/api/room", None, bound, 503),
            expect_join_refused(d.edge(1), &code, &r.cookie_c, bound, says),
            async {
                if down == Down::Presence {
                    Duration::ZERO
                } else {
                    expect_update_refused(&mut r.a, bound, 503).await
                }
            },
        );
        let took = [get, client_get, create, join, update];
        if rounds == 0 {
            println!(
                "[faults]   first round refused in {:?} ms (GET /rooms, GET /api/room, POST \
                 /api/room, join, USER_UPDATE)",
                took.iter().map(Duration::as_millis).collect::<Vec<_>>()
            );
        }
        worst = worst.max(took.into_iter().max().unwrap_or_default());
        rounds += 1;
        // Pacing of the requests (a client retrying now and then), below the HTTP limits.
        tokio::time::sleep(Duration::from_millis(250).saturating_sub(round.elapsed())).await;
    }
    (rounds, worst)
}

/// `a` and `b` playing notes to each other every 50 ms, until [`Notes::stop`].
struct Notes {
    stop: CancellationToken,
    ab: tokio::task::JoinHandle<Vec<Instant>>,
    ba: tokio::task::JoinHandle<Vec<Instant>>,
}

impl Notes {
    fn start(r: &Room) -> Self {
        let stop = CancellationToken::new();
        let every = Duration::from_millis(50);
        let ab = spawn_notes(r.a.sender(), r.b.user_id.clone(), every, stop.clone());
        let ba = spawn_notes(r.b.sender(), r.a.user_id.clone(), every, stop.clone());
        Self { stop, ab, ba }
    }

    /// Stops playing; the send times of a's notes and of b's (for [`check_notes`]).
    async fn stop(self) -> (Vec<Instant>, Vec<Instant>) {
        self.stop.cancel();
        (self.ab.await.unwrap(), self.ba.await.unwrap())
    }
}

/// After a recovery, the room works again: a profile change reaches both members (named
/// `name`), a new member (the third session, on edge 1) is announced to `a`, and a room can
/// be created. Returns the new member.
async fn expect_working_again(d: &Deployment, r: &mut Room, name: &str) -> Player {
    let (a, b) = (&mut r.a, &mut r.b);
    expect_update_done(a, b, name).await;
    let c = Player::must_join(d.edge(1), &r.code, &r.cookie_c, None).await;
    r.a.wait_for(Duration::from_secs(15), |g| {
        g.is("USER_CONNECT", &c.user_id)
    })
    .await
    .expect("the new member is announced");
    let created = Duration::from_secs(15);
    expect_status(d.edge(0), "POST", "/api/room", None, created, 201).await;
    c
}

/// The notes `a` and `b` sent each other all arrived, in order; prints how many arrived
/// between `from` and `to`.
async fn check_notes(
    r: &mut Room,
    what: &str,
    sent: (Vec<Instant>, Vec<Instant>),
    window: (Instant, Instant),
) {
    let (ab, ba) = sent;
    let deadline = Instant::now() + Duration::from_secs(15);
    let a_id = r.a.user_id.clone();
    let b_id = r.b.user_id.clone();
    let at_b = collect_until(&mut r.b, deadline, |g| {
        notes_from(g, &a_id).len() >= ab.len()
    })
    .await;
    let at_a = collect_until(&mut r.a, deadline, |g| {
        notes_from(g, &b_id).len() >= ba.len()
    })
    .await;
    for (dir, sent, got) in [
        ("a->b", &ab, notes_from(&at_b, &a_id)),
        ("b->a", &ba, notes_from(&at_a, &b_id)),
    ] {
        let seqs: Vec<u64> = got.iter().map(|(s, _)| *s).collect();
        let expected: Vec<u64> = (0..sent.len() as u64).collect();
        assert_eq!(seqs, expected, "{what} {dir}: every note, in order");
        let during = got
            .iter()
            .filter(|(_, at)| *at > window.0 && *at < window.1)
            .count();
        println!(
            "[faults] {what}: {dir}: {} notes, all delivered in order, {during} while it was down",
            sent.len()
        );
    }
    for got in [&at_a, &at_b] {
        assert!(
            !got.iter()
                .any(|g| g.event().is_some_and(|(n, _)| n == "USER_DISCONNECT")),
            "{what}: a member was announced as left"
        );
    }
}

/// Sessions still authenticate: the cookie is accepted (no new `Set-Cookie`).
async fn expect_session_kept(port: u16, code: &str, cookie: &str) {
    let path = format!("/api/room/{code}");
    let (r, _) = http_within(Duration::from_secs(15), port, "GET", &path, Some(cookie)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.cookie(),
        None,
        "the session was lost: a new one was handed out"
    );
}

/// The members of `code` (sorted) must be exactly `ids`.
async fn expect_members(port: u16, code: &str, ids: &[&str]) {
    let mut members = participants(port, code).await.unwrap();
    members.sort();
    let mut expected: Vec<String> = ids.iter().map(|s| (*s).to_owned()).collect();
    expected.sort();
    assert_eq!(members, expected, "the room's members");
}

/// Waits until the bus has seen the killed service go: a request routed to it before NATS
/// noticed its connection close (a few milliseconds) is lost and answered only at the edge's
/// request timeout (5 s, still a 503). Probes with `GET /rooms/:code` (no cookie: it needs
/// both presence and rooms), each given 1 s, until one is refused within it; returns how
/// long that took after the kill.
async fn settle(d: &Deployment, code: &str) -> Duration {
    let started = Instant::now();
    let path = format!("/rooms/{code}");
    loop {
        let probe = tokio::time::timeout(
            Duration::from_secs(1),
            try_request(d.edge(0), "GET", &path, &[], None),
        )
        .await;
        if let Ok(Ok(r)) = probe {
            assert_eq!(r.status, 503, "{}", r.body);
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "requests still hang 20 s after the kill"
        );
    }
}

/// How long rooms or presence stays down in the tests below.
const OUTAGE: Duration = Duration::from_secs(3);

/// `kill -9` of rooms or presence under traffic, requests during the gap, a restart, and
/// the checks afterwards.
async fn service_killed(down: Down) {
    let what = match down {
        Down::Rooms => "rooms_killed",
        _ => "presence_killed",
    };
    let mut d = Deployment::start(2, &[]).await;
    let mut r = room(&d).await;
    let code = r.code.clone();
    let notes = Notes::start(&r);

    let killed = Instant::now();
    match down {
        Down::Rooms => d.rooms.kill(),
        _ => d.presence.kill(),
    }
    let settled = settle(&d, &code).await;
    let (rounds, worst) = during_outage(&d, &mut r, down, OUTAGE, PROMPT).await;
    if down == Down::Presence {
        // Profile changes go to rooms, which is up.
        let (a, b) = (&mut r.a, &mut r.b);
        expect_update_done(a, b, "WhilePresenceDown").await;
    }
    let restart = Instant::now();
    match down {
        Down::Rooms => d.rooms.restart().await,
        _ => d.presence.restart().await,
    }
    let up = Instant::now();
    println!(
        "[faults] {what}: down {:.2} s; the bus saw it gone within {} ms; then {rounds} rounds of \
         requests, every one refused within {} ms (bound {} ms); restart to ready {:.2} s",
        up.duration_since(killed).as_secs_f64(),
        settled.as_millis(),
        worst.as_millis(),
        PROMPT.as_millis(),
        up.duration_since(restart).as_secs_f64()
    );
    expect_members(d.edge(1), &code, &[&r.a.user_id, &r.b.user_id]).await;
    expect_session_kept(d.edge(0), &code, &r.a.cookie).await;
    expect_session_kept(d.edge(1), &code, &r.b.cookie).await;
    let c = expect_working_again(&d, &mut r, "Back").await;
    if down == Down::Presence {
        // A restarted presence must not take the live edges for dead ones: watch past one
        // edge timeout (3 s) plus the grace period (5 s) after the restart. Proving an
        // absence, so this is a fixed wait.
        tokio::time::sleep((up + Duration::from_secs(9)).saturating_duration_since(Instant::now()))
            .await;
    }
    check_notes(&mut r, what, notes.stop().await, (killed, up)).await;
    expect_members(d.edge(0), &code, &[&r.a.user_id, &r.b.user_id, &c.user_id]).await;
}

/// `kill -9` of rooms under traffic, then a restart: during the gap every room operation
/// (REST reads and creates, a socket's profile update, a new socket's join) is refused with
/// 503/`unavailable` within 2 s while notes keep flowing; afterwards the room still lists its
/// members, the sessions still authenticate, and the same operations work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_killed_and_restarted_under_traffic() {
    service_killed(Down::Rooms).await;
}

/// `kill -9` of presence, then a restart: meanwhile anything that needs a session (REST
/// with or without a cookie, a new socket) is refused with 503 within 2 s, while the members
/// already in the room keep playing and can still change their profile (rooms serves that);
/// afterwards the sessions and the members are all there, and nobody was announced as left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_killed_and_restarted_under_traffic() {
    service_killed(Down::Presence).await;
}

/// One note from a to b (sequence `first`) and one from b to a (`first + 1`), each sent
/// once: both must arrive within `within`. `when` names the moment in the log line.
async fn notes_each_way(r: &mut Room, first: u64, within: Duration, when: &str) {
    for (seq, forward) in [(first, true), (first + 1, false)] {
        let (from, to) = if forward {
            (&r.a, &mut r.b)
        } else {
            (&r.b, &mut r.a)
        };
        let sent = Instant::now();
        from.sender().note(seq, &[&to.user_id]).await.unwrap();
        let (got, _) = to
            .wait_for(within, |g| g.is("KEY_DOWN", &from.user_id))
            .await
            .unwrap_or_else(|seen| {
                panic!("a note sent {when} did not arrive within {within:?}: {seen:?}")
            });
        assert_eq!(seq_of(got.event().unwrap().1), seq);
        println!(
            "[faults] nats_restarted: note sent {when} delivered in {} ms",
            sent.elapsed().as_millis()
        );
    }
}

/// How long NATS stays down: longer than the edge timeout (3 s), so that presence hears no
/// heartbeat for longer than it allows a live edge.
const NATS_OUTAGE: Duration = Duration::from_secs(4);

/// NATS killed, down for 4 s, and started again on the same port with the same JetStream
/// store: meanwhile REST requests fail within the edge's request timeout while notes between
/// the two edges keep flowing over the relay links; afterwards the
/// edges and services reconnect and resubscribe, a note sent after the restart arrives, the
/// room and the sessions are intact, and nobody is announced as left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restarted_everything_reconnects() {
    let mut d = Deployment::start(2, &[]).await;
    let mut r = room(&d).await;
    let code = r.code.clone();
    let killed = Instant::now();
    d.nats.stop();
    // Notes between players on different edges do not need NATS: the edges' relay links
    // carry them while it is down (a relay on NATS would wait in the client's buffer until
    // the restart, past this deadline).
    notes_each_way(&mut r, 900, NATS_OUTAGE / 2, "while NATS was down").await;
    let (mut worst_get, mut worst_ready, mut rounds) = (Duration::ZERO, Duration::ZERO, 0);
    // Requests during the outage (its length is the fault's duration, not a wait). The
    // edge's NATS client holds a request while it reconnects, so a request that needs a
    // service is answered 503 at the request timeout (5 s), or served if NATS is back
    // by then; readiness says 503 at once.
    while rounds == 0 || killed.elapsed() < NATS_OUTAGE {
        let bound = REQUEST_TIMEOUT + Duration::from_secs(2);
        let path = format!("/api/room/{code}");
        let (get, ready) = tokio::join!(
            expect_status(d.edge(0), "GET", &path, Some(&r.a.cookie), bound, 503),
            expect_status(d.edge(1), "GET", "/health/ready", None, PROMPT, 503),
        );
        worst_get = worst_get.max(get);
        worst_ready = worst_ready.max(ready);
        rounds += 1;
    }
    let restart = Instant::now();
    d.nats.restart().expect("nats-server restarts on its port");
    let nats_up = Instant::now();
    d.wait_all_ready(READY_WITHIN).await;
    let ready = Instant::now();
    println!(
        "[faults] nats_restarted: down {:.2} s ({rounds} rounds: GET /api/room 503 within {} ms, \
         /health/ready 503 within {} ms); nats-server started in {:.2} s; every service ready \
         (bus connected) {:.2} s after that",
        restart.duration_since(killed).as_secs_f64(),
        worst_get.as_millis(),
        worst_ready.as_millis(),
        nats_up.duration_since(restart).as_secs_f64(),
        ready.duration_since(nats_up).as_secs_f64()
    );
    // Fan-out resumed: one note each way, sent once, arrives.
    notes_each_way(&mut r, 1000, Duration::from_secs(10), "after the restart").await;
    expect_session_kept(d.edge(0), &code, &r.a.cookie).await;
    expect_session_kept(d.edge(1), &code, &r.b.cookie).await;
    let c = Player::must_join(d.edge(0), &code, &r.cookie_c, None).await;
    r.b.wait_for(Duration::from_secs(15), |g| {
        g.is("USER_CONNECT", &c.user_id)
    })
    .await
    .expect("membership events flow again");
    // Presence missed heartbeats while NATS was down: it must not declare the edges dead.
    // Watch past an edge timeout plus the grace period (proving an absence: a fixed wait).
    tokio::time::sleep((ready + Duration::from_secs(9)).saturating_duration_since(Instant::now()))
        .await;
    for p in [&mut r.a, &mut r.b] {
        p.drain();
        assert!(
            !p.seen
                .iter()
                .any(|g| g.event().is_some_and(|(n, _)| n == "USER_DISCONNECT")),
            "a member was announced as left after the NATS restart: {:?}",
            p.seen
        );
    }
    expect_members(d.edge(1), &code, &[&r.a.user_id, &r.b.user_id, &c.user_id]).await;
}

/// The MongoDB-wire server killed and started again (same storage, same port): meanwhile
/// REST answers 503 and sockets get errors for room operations (each within the store
/// timeout, 2 s, plus slack) while notes keep flowing; everything recovers without
/// restarting any service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongo_stopped_and_started() {
    let mut d = Deployment::start(2, &[]).await;
    let mut r = room(&d).await;
    let code = r.code.clone();
    let notes = Notes::start(&r);

    let killed = Instant::now();
    d.mongo().stop();
    let (rounds, worst) = during_outage(&d, &mut r, Down::Mongo, OUTAGE, PROMPT_STORE).await;
    let (ready, _) = http_within(PROMPT_STORE, d.rooms.port, "GET", "/health/ready", None).await;
    assert_eq!(
        ready.status, 503,
        "rooms says it is not ready: {}",
        ready.body
    );
    let restart = Instant::now();
    d.mongo().restart().expect("secantus restarts on its port");
    let mongo_up = Instant::now();
    // Recovered when a read answers 200 again (polled with fresh sessions).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match participants(d.edge(0), &code).await {
            Ok(_) => break,
            Err(e) => assert!(
                Instant::now() < deadline,
                "no recovery: {} {}",
                e.status,
                e.body
            ),
        }
        // Polling interval, not a wait for time to pass.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let recovered = Instant::now();
    println!(
        "[faults] mongo_stopped: down {:.2} s; {rounds} rounds of requests, every one refused \
         within {} ms (bound {} ms; rooms waits up to 2 s for the store); secantus started in \
         {:.2} s; REST recovered {:.2} s after that; rooms /health/ready said {:?}",
        mongo_up.duration_since(killed).as_secs_f64(),
        worst.as_millis(),
        PROMPT_STORE.as_millis(),
        mongo_up.duration_since(restart).as_secs_f64(),
        recovered.duration_since(mongo_up).as_secs_f64(),
        ready.body
    );
    expect_members(d.edge(1), &code, &[&r.a.user_id, &r.b.user_id]).await;
    expect_session_kept(d.edge(0), &code, &r.a.cookie).await;
    let _c = expect_working_again(&d, &mut r, "Recovered").await;
    check_notes(
        &mut r,
        "mongo_stopped",
        notes.stop().await,
        (killed, mongo_up),
    )
    .await;
    assert!(
        d.rooms.is_running()
            && d.presence.is_running()
            && d.edges.iter_mut().all(|e| e.is_running()),
        "recovered without restarting any service"
    );
}

/// A member who leaves (closes its socket) while presence is down is still announced as left
/// once presence is back: no ghost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaving_while_presence_is_down_leaves_no_ghost() {
    let mut d = Deployment::start(2, &[]).await;
    let mut r = room(&d).await;
    let code = r.code.clone();
    let leaver = Player::must_join(d.edge(1), &code, &r.cookie_c, None).await;
    let leaver_id = leaver.user_id.clone();
    r.a.wait_for(Duration::from_secs(15), |g| {
        g.is("USER_CONNECT", &leaver_id)
    })
    .await
    .expect("joined");
    d.presence.kill();
    settle(&d, &code).await;
    drop(leaver);
    let left = Instant::now();
    // The leaver's edge tries to tell presence (fails: it is down); give it a moment
    // (this is the fault's duration).
    tokio::time::sleep(Duration::from_secs(2)).await;
    d.presence.restart().await;
    let back = Instant::now();
    // The edge retries the disconnect (backing off to 5 s), then the grace period (5 s).
    let seen =
        r.a.wait_for(Duration::from_secs(30), |g| {
            g.is("USER_DISCONNECT", &leaver_id)
        })
        .await;
    println!(
        "[faults] leave_during_presence_outage: socket closed 2 s into the outage; leave \
         announced {:?} after the close, {:?} after presence was back",
        seen.as_ref().ok().map(|_| left.elapsed()),
        seen.as_ref().ok().map(|_| back.elapsed())
    );
    assert!(
        seen.is_ok(),
        "a ghost: the member who left is still in the room"
    );
    expect_members(d.edge(0), &code, &[&r.a.user_id, &r.b.user_id]).await;
}
