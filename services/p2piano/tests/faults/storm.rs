//! 5,000 clients lose their edge at once; most reconnect to the other one, some never do.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures::StreamExt;

use p2piano_testkit::sio::player::{JoinError, Player};

use crate::harness::{Deployment, Store, create_room, http_within, session_for};

/// Clients in the storm (`FAULTS_STORM_CLIENTS` overrides it, for investigating).
fn clients() -> usize {
    std::env::var("FAULTS_STORM_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000)
}
/// Members per room: the default `maxParticipants`.
const PER_ROOM: usize = 8;
/// Socket joins (and reconnects) in flight at once, as a fleet of browsers behind a load
/// balancer would bring them, bounded so that the test measures the services, not a
/// connect flood of one process on a 2-core machine.
const IN_FLIGHT: usize = 256;
/// HTTP requests in flight at once while setting up.
const HTTP_IN_FLIGHT: usize = 64;
/// The bound on the whole reconnect storm: generous for a busy 2-core machine.
const STORM_WITHIN: Duration = Duration::from_secs(60);
/// The bound on one client's reconnect (socket.io-client's own connect timeout is 20 s).
const ONE_WITHIN: Duration = Duration::from_secs(20);

/// The soft open-file limit of this process (children inherit it).
fn open_file_limit() -> Option<u64> {
    std::fs::read_to_string("/proc/self/limits")
        .ok()?
        .lines()
        .find(|l| l.starts_with("Max open files"))?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()
}

/// Percentiles of `d` (sorted in place): (p50, p99, max) in ms.
fn percentiles(d: &mut [Duration]) -> (u128, u128, u128) {
    d.sort();
    let at = |q: usize| d[(d.len() * q / 100).min(d.len() - 1)].as_millis();
    (at(50), at(99), d.last().map_or(0, Duration::as_millis))
}

/// One page joining `code` on the edge on `port` (as page `pid` when it has one), bounded
/// by [`ONE_WITHIN`]; the error says how it failed.
async fn join_one(
    port: u16,
    cookie: &str,
    code: &str,
    pid: Option<&str>,
) -> Result<Player, String> {
    match tokio::time::timeout(ONE_WITHIN, Player::join(port, code, cookie, pid)).await {
        Ok(Ok(p)) => Ok(p),
        Ok(Err(JoinError::Refused(m))) => Err(format!("refused: {m}")),
        Ok(Err(JoinError::Transport(m))) => Err(format!("transport: {m}")),
        Err(_) => Err(format!("no answer within {ONE_WITHIN:?}")),
    }
}

/// Joins every (cookie, code, page id) on `port`, `in_flight` at a time, each within
/// `ONE_WITHIN`: the players (in input order) or the failures, and each join's latency. A
/// page id makes the join the same page coming back (as socket.io-client reconnects).
async fn join_all(
    port: u16,
    who: Vec<(String, String, Option<String>)>,
    in_flight: usize,
) -> (Vec<Result<Player, String>>, Vec<Duration>) {
    let mut results: Vec<(usize, Result<Player, String>, Duration)> =
        futures::stream::iter(who.into_iter().enumerate())
            .map(|(i, (cookie, code, pid))| async move {
                let started = Instant::now();
                let r = join_one(port, &cookie, &code, pid.as_deref()).await;
                (i, r, started.elapsed())
            })
            .buffer_unordered(in_flight)
            .collect()
            .await;
    results.sort_by_key(|(i, _, _)| *i);
    let latencies = results.iter().map(|(_, _, d)| *d).collect();
    (results.into_iter().map(|(_, r, _)| r).collect(), latencies)
}

/// 5,000 clients in 625 rooms of 8 on one edge, with the default settings (edge timeout
/// 3 s, grace 5 s); the edge is killed (`kill -9`: every socket drops at once). Seven of
/// each room's eight reconnect at once, as the same pages, to the other edge, 256 at a time;
/// the eighth never comes back. Presence has the dead edge's 5,000 sockets in their grace
/// period within 3 s of the timeout, every one who never came back is announced as left
/// within 10 s of the kill, and every room lists exactly the seven who came back.
///
/// Rooms are kept in memory (`P2PIANO_ROOM_STORE=memory`): the 625 leaves in a second and
/// the 5,000 first joins are more than the Python MongoDB-wire server serves on this
/// machine; what is under test is presence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_edge_of_5000_sockets_meets_the_10_s_rule() {
    let clients = clients();
    let limit = open_file_limit().unwrap_or(0);
    assert!(
        limit >= 3 * clients as u64,
        "the open-file limit ({limit}) is too low for {clients} client sockets plus an edge's \
         {clients}: raise `ulimit -n` to at least {}",
        3 * clients
    );
    let test = Instant::now();
    // The clients are a fleet of browsers, not one address: no per-address limit.
    let env = [
        ("P2PIANO_IP_CONNECT_RATE", "0"),
        ("P2PIANO_MAX_CONNECTIONS_PER_IP", "0"),
    ];
    let mut d = Deployment::start_with(2, &env, Store::Memory).await;
    let (doomed, stays) = (d.edge(0), d.edge(1));

    // Sessions and rooms over REST: one owner per room, then the other members.
    let phase = Instant::now();
    let rooms: Vec<(String, String)> = futures::stream::iter(0..clients / PER_ROOM)
        .map(|_| create_room(doomed))
        .buffer_unordered(HTTP_IN_FLIGHT)
        .collect()
        .await;
    let created = phase.elapsed();
    let phase = Instant::now();
    // The other members, in the order k-th member of every room, then the (k+1)-th, so
    // that the joins in flight at once go to different rooms.
    let others: Vec<(String, String)> = futures::stream::iter(
        (1..PER_ROOM).flat_map(|_| rooms.iter().map(|(_, code)| code.clone())),
    )
    .map(|code| async move { (session_for(doomed, &code).await, code) })
    .buffered(HTTP_IN_FLIGHT)
    .collect()
    .await;
    let sessions = phase.elapsed();
    let who: Vec<(String, String)> = rooms.iter().cloned().chain(others).collect();
    assert_eq!(who.len(), clients);

    // Everyone joins on the edge that will die.
    let phase = Instant::now();
    let new_pages: Vec<(String, String, Option<String>)> = who
        .iter()
        .map(|(c, r)| (c.clone(), r.clone(), None))
        .collect();
    let (joined, mut join_latency) = join_all(doomed, new_pages, IN_FLIGHT).await;
    let join_time = phase.elapsed();
    let failed: Vec<&String> = joined.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        failed.is_empty(),
        "{} of {clients} first joins failed, e.g. {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    let players: Vec<Player> = joined.into_iter().map(Result::unwrap).collect();
    let (p50, p99, max) = percentiles(&mut join_latency);
    println!(
        "[faults] dead edge: setup: {} rooms in {:.1} s, {} more sessions in {:.1} s; \
         {clients} first joins ({IN_FLIGHT} in flight) in {:.1} s (p50 {p50} ms, p99 {p99} ms, \
         max {max} ms)",
        rooms.len(),
        created.as_secs_f64(),
        clients - rooms.len(),
        sessions.as_secs_f64(),
        join_time.as_secs_f64()
    );
    let user_ids: Vec<String> = players.iter().map(|p| p.user_id.clone()).collect();
    // The owners (the first of each room) never come back; the others do, as the pages
    // they were (their page ids), as socket.io-client reconnects.
    let owners = rooms.len();
    let gone: HashSet<String> = user_ids[..owners].iter().cloned().collect();
    let pages: Vec<(String, String, Option<String>)> = who[owners..]
        .iter()
        .zip(&players[owners..])
        .map(|((c, r), p)| (c.clone(), r.clone(), p.pid.clone()))
        .collect();

    // Every membership event, as rooms publishes it, with the time it was seen.
    let bus = p2piano_bus::Bus::connect_nats(&d.nats.url(), "faults-observer")
        .await
        .unwrap();
    let subjects = p2piano_protocol::Subjects::new(&d.name).unwrap();
    let mut events = bus.subscribe(&subjects.all_room_members()).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let observer = tokio::spawn(async move {
        while let Some(msg) = events.next().await {
            if let Ok(e) = serde_json::from_slice::<p2piano_protocol::MembersEvent>(&msg.payload)
                && tx.send((Instant::now(), e)).is_err()
            {
                break;
            }
        }
    });
    let edge_gone = d.presence.watch_log(
        "dead edge's sockets entered the grace period",
        Duration::from_secs(60),
    );
    let ops_before = kv_ops(d.presence.port).await;
    let killed = Instant::now();
    d.edges[0].kill();
    drop(players);
    let (back, mut latency) = join_all(stays, pages, IN_FLIGHT).await;
    let storm = killed.elapsed();
    let failed: Vec<&String> = back.iter().filter_map(|r| r.as_ref().err()).collect();
    let (p50, p99, max) = percentiles(&mut latency);
    println!(
        "[faults] dead edge: {} of {} reconnected to the other edge ({IN_FLIGHT} in flight) \
         in {:.1} s after the kill (p50 {p50} ms, p99 {p99} ms, max {max} ms); failures: {} \
         e.g. {:?}",
        back.len() - failed.len(),
        back.len(),
        storm.as_secs_f64(),
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(failed.is_empty(), "every reconnect succeeds");
    assert!(storm <= STORM_WITHIN, "the reconnects took {storm:?}");

    // The leaves of those who never came back, each seen once, and those of anyone else.
    let mut left_gone: std::collections::HashMap<String, Duration> = Default::default();
    let mut left_back = 0usize;
    let deadline = killed + Duration::from_secs(30);
    while left_gone.len() < gone.len() {
        let Ok(Some((at, e))) = tokio::time::timeout_at(deadline.into(), rx.recv()).await else {
            break;
        };
        if e.kind != p2piano_protocol::MembersEventKind::Left {
            continue;
        }
        let user = e.user_id.map(|u| u.to_string()).unwrap_or_default();
        if gone.contains(&user) {
            left_gone.entry(user).or_insert(at.duration_since(killed));
        } else {
            left_back += 1;
        }
    }
    observer.abort();
    let ops = kv_ops(d.presence.port).await - ops_before;
    println!(
        "[faults] dead edge: presence's KV round trips from the kill until the last leave: \
         {ops} for {} reconnects and {} leaves",
        clients - owners,
        owners
    );
    let edge_gone = edge_gone.await.unwrap().map(|t| t.duration_since(killed));
    let mut times: Vec<Duration> = left_gone.values().copied().collect();
    times.sort();
    let last = times.last().copied();
    println!(
        "[faults] dead edge: presence had its {clients} sockets in their grace period {:?} \
         after the kill (the edge timeout is 3 s); {} of {} who never came back announced as \
         left, the first {:?} and the last {:?} after the kill; {left_back} leaves announced \
         for members who came back",
        edge_gone.map(|t| format!("{:.2} s", t.as_secs_f64())),
        left_gone.len(),
        gone.len(),
        times.first(),
        last
    );
    assert!(
        edge_gone.is_some_and(|t| t <= Duration::from_secs(6)),
        "the dead edge's sockets in grace within 3 s of the timeout: {edge_gone:?}"
    );
    assert_eq!(
        left_gone.len(),
        gone.len(),
        "everyone who left is announced"
    );
    assert!(
        last.is_some_and(|t| t <= Duration::from_secs(10)),
        "the last leave {last:?} after the kill (the rule: 10 s)"
    );

    // Every room lists the seven who came back, once each (read with the owner's session).
    let mut expected: std::collections::HashMap<&str, HashSet<&str>> = Default::default();
    for ((_, code), id) in who.iter().zip(&user_ids).skip(owners) {
        expected.entry(code).or_default().insert(id);
    }
    let listed: Vec<(String, Vec<String>)> = futures::stream::iter(rooms.iter())
        .map(|(cookie, code)| async move {
            let path = format!("/rooms/{code}");
            let (r, _) =
                http_within(Duration::from_secs(60), stays, "GET", &path, Some(cookie)).await;
            assert_eq!(r.status, 200, "{}", r.body);
            let ids = r.json()["participants"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["id"].as_str().unwrap().to_owned())
                .collect();
            (code.clone(), ids)
        })
        .buffer_unordered(HTTP_IN_FLIGHT)
        .collect()
        .await;
    for (code, ids) in &listed {
        let unique: HashSet<&str> = ids.iter().map(String::as_str).collect();
        assert_eq!(
            unique.len(),
            ids.len(),
            "room {code} lists a member twice: {ids:?}"
        );
        assert_eq!(
            &unique,
            &expected[code.as_str()],
            "room {code}: exactly those who came back"
        );
    }
    drop(back);
    println!(
        "[faults] dead edge: {} rooms checked; whole test {:.1} s",
        listed.len(),
        test.elapsed().as_secs_f64()
    );
}

/// Clients in the drain test: `FAULTS_DRAIN_CLIENTS`, else 1,500. docs/RELIABILITY.md
/// records the run with 10,000 built in release (`FAULTS_DRAIN_CLIENTS=10000 cargo test
/// --release -p p2piano --test faults drain`): in the test build, this test's own clients
/// and the services share two cores and reconnect about 1,400 sockets a second, which does
/// not fit 10,000 into a 5 s grace period.
fn drain_clients() -> usize {
    std::env::var("FAULTS_DRAIN_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_500)
}

/// Clients in rooms of 8 on one edge (see [`drain_clients`]), default settings; the edge is drained
/// (SIGTERM: every socket closed with 1012) and every client reconnects at once, as the
/// page it was, to the other edge, 256 at a time. Nobody is announced as left (nor as
/// joining again), and every room lists its members once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_of_thousands_of_sockets_announces_no_leave() {
    let clients = drain_clients() / PER_ROOM * PER_ROOM;
    let limit = open_file_limit().unwrap_or(0);
    assert!(
        limit >= clients as u64 + 1_000,
        "the open-file limit ({limit}) is too low for {clients} client sockets: raise \
         `ulimit -n` to at least {}",
        clients + 1_000
    );
    let test = Instant::now();
    let env = [
        ("P2PIANO_IP_CONNECT_RATE", "0"),
        ("P2PIANO_MAX_CONNECTIONS_PER_IP", "0"),
    ];
    let mut d = Deployment::start_with(2, &env, Store::Memory).await;
    let (draining, stays) = (d.edge(0), d.edge(1));
    let rooms: Vec<(String, String)> = futures::stream::iter(0..clients / PER_ROOM)
        .map(|_| create_room(draining))
        .buffer_unordered(HTTP_IN_FLIGHT)
        .collect()
        .await;
    let others: Vec<(String, String)> = futures::stream::iter(
        (1..PER_ROOM).flat_map(|_| rooms.iter().map(|(_, code)| code.clone())),
    )
    .map(|code| async move { (session_for(draining, &code).await, code) })
    .buffered(HTTP_IN_FLIGHT)
    .collect()
    .await;
    let who: Vec<(String, String)> = rooms.iter().cloned().chain(others).collect();
    let setup = Instant::now();
    let first: Vec<(String, String, Option<String>)> = who
        .iter()
        .map(|(c, r)| (c.clone(), r.clone(), None))
        .collect();
    let (joined, _) = join_all(draining, first, IN_FLIGHT).await;
    assert!(
        joined.iter().all(Result::is_ok),
        "every first join succeeds"
    );
    let players: Vec<Player> = joined.into_iter().map(Result::unwrap).collect();
    println!(
        "[faults] drain: {} clients in {} rooms joined in {:.1} s",
        players.len(),
        rooms.len(),
        setup.elapsed().as_secs_f64()
    );
    let pages: Vec<(String, String, Option<String>)> = who
        .iter()
        .zip(&players)
        .map(|((c, r), p)| (c.clone(), r.clone(), p.pid.clone()))
        .collect();
    let user_ids: Vec<String> = players.iter().map(|p| p.user_id.clone()).collect();

    // Every membership event from here on.
    let bus = p2piano_bus::Bus::connect_nats(&d.nats.url(), "faults-observer")
        .await
        .unwrap();
    let subjects = p2piano_protocol::Subjects::new(&d.name).unwrap();
    let mut events = bus.subscribe(&subjects.all_room_members()).await.unwrap();

    let drained = Instant::now();
    d.edges[0].sigterm();
    let status = d.edges[0].wait_exit(Duration::from_secs(30)).await;
    let exited = drained.elapsed();
    drop(players);
    let (back, mut latency) = join_all(stays, pages, IN_FLIGHT).await;
    let storm = drained.elapsed();
    let failed = back.iter().filter(|r| r.is_err()).count();
    let (p50, p99, max) = percentiles(&mut latency);
    // Any leave would come within the grace period (5 s) of the last socket's close, and
    // a join right at a reconnect: watch well past both.
    let watch_until = drained.max(Instant::now()) + Duration::from_secs(8);
    let (mut left, mut joins) = (0usize, 0usize);
    while let Ok(Some(msg)) =
        tokio::time::timeout_at(watch_until.into(), futures::StreamExt::next(&mut events)).await
    {
        if let Ok(e) = serde_json::from_slice::<p2piano_protocol::MembersEvent>(&msg.payload) {
            match e.kind {
                p2piano_protocol::MembersEventKind::Left => left += 1,
                p2piano_protocol::MembersEventKind::Joined => joins += 1,
                _ => {}
            }
        }
    }
    println!(
        "[faults] drain: edge exited ({status:?}) {:.2} s after SIGTERM; {} of {clients} back \
         on the other edge {:.1} s after SIGTERM (p50 {p50} ms, p99 {p99} ms, max {max} ms); \
         watched until {:.1} s: {left} leaves and {joins} joins announced",
        exited.as_secs_f64(),
        clients - failed,
        storm.as_secs_f64(),
        watch_until.duration_since(drained).as_secs_f64()
    );
    assert!(
        status.is_some_and(|s| s.success()),
        "the drained edge exits cleanly"
    );
    assert_eq!(failed, 0, "every reconnect succeeds");
    let back: Vec<Player> = back.into_iter().map(Result::unwrap).collect();
    for (p, id) in back.iter().zip(&user_ids) {
        assert_eq!(&p.user_id, id, "same session, same user");
    }
    assert_eq!((left, joins), (0, 0), "a drain announces nobody");
    let members: usize = futures::stream::iter(rooms.iter())
        .map(|(cookie, code)| async move {
            let path = format!("/rooms/{code}");
            let (r, _) =
                http_within(Duration::from_secs(60), stays, "GET", &path, Some(cookie)).await;
            r.json()["participants"].as_array().map_or(0, Vec::len)
        })
        .buffer_unordered(HTTP_IN_FLIGHT)
        .fold(0, |n, m| async move { n + m })
        .await;
    assert_eq!(members, clients, "every room lists its members, once");
    println!(
        "[faults] drain: whole test {:.1} s",
        test.elapsed().as_secs_f64()
    );
}

/// Presence's KV round trips so far (`p2piano_presence_kv_ops_total`, every bucket and op).
async fn kv_ops(admin: u16) -> f64 {
    let (r, _) = http_within(Duration::from_secs(10), admin, "GET", "/metrics", None).await;
    r.body
        .lines()
        .filter(|l| l.starts_with("p2piano_presence_kv_ops_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
