//! No leaked records: every socket presence has heard of ends in exactly one disconnect,
//! whatever became of its join. Counted in the JetStream KV bucket itself
//! (`<prefix>_connections`), not through presence.

use std::time::{Duration, Instant};

use futures::StreamExt;
use p2piano_presence::kv::{BucketConfig, KvBucket, open_jetstream};

use p2piano_testkit::sio::player::{JoinError, Player};

use crate::harness::{Deployment, Store, create_room, http_within, session_for};

/// Refused joins in the first round.
const REFUSED: usize = 1_000;
/// Refused joins in the round during which the edge is killed.
const DURING_KILL: usize = 400;
/// Joins in flight at once.
const IN_FLIGHT: usize = 32;
/// Members who stay in their room throughout: their records must stay.
const STAYING: usize = 4;

/// The connection records in the deployment's KV bucket now.
async fn records(bucket: &dyn KvBucket) -> usize {
    bucket.keys().await.expect("the bucket's keys").len()
}

/// Waits until the bucket holds `want` records, within `within`; how long that took. A
/// listing that gets no answer (JetStream busy while a killed edge's sockets are put into
/// their grace periods) is polled again, not taken for a count: the deadline still holds.
async fn until_records(bucket: &dyn KvBucket, want: usize, within: Duration) -> Duration {
    let started = Instant::now();
    let mut unanswered = 0;
    loop {
        let seen = match bucket.keys().await {
            Ok(keys) if keys.len() == want => {
                if unanswered > 0 {
                    println!(
                        "[faults] records: {unanswered} listings of the bucket went unanswered meanwhile"
                    );
                }
                return started.elapsed();
            }
            Ok(keys) => format!("{} connection records", keys.len()),
            Err(e) => {
                unanswered += 1;
                format!("no listing of the bucket ({e})")
            }
        };
        assert!(
            started.elapsed() < within,
            "{seen}, {want} records expected, after {within:?}"
        );
        // The KV has no event for "this many keys": poll it.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Fresh sessions (one per join) trying to join rooms that do not exist, `IN_FLIGHT` at a
/// time; the number refused.
async fn refused_joins(port: u16, cookies: Vec<String>) -> usize {
    futures::stream::iter(cookies.into_iter().enumerate())
        .map(|(i, cookie)| async move {
            // Valid codes (the alphabet of room codes) that no room has.
            let code: String = format!("{i:05}")
                .chars()
                .map(|c| {
                    "abcdefghjk"
                        .chars()
                        .nth(c.to_digit(10).unwrap() as usize)
                        .unwrap()
                })
                .collect();
            matches!(
                tokio::time::timeout(
                    Duration::from_secs(20),
                    Player::join(port, &code, &cookie, None)
                )
                .await,
                Ok(Err(JoinError::Refused(_)))
            )
        })
        .buffer_unordered(IN_FLIGHT)
        .filter(|refused| futures::future::ready(*refused))
        .count()
        .await
}

/// Sessions to join with: one per join, as a client that drops its cookie would make them.
async fn fresh_sessions(port: u16, code: &str, n: usize) -> Vec<String> {
    futures::stream::iter(0..n)
        .map(|_| session_for(port, code))
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await
}

/// 1,000 joins refused (unknown rooms), then 400 more with the edge killed (`kill -9`) in
/// the middle of them: the records in `p2piano_connections` come back to what they were
/// (the members who stay), at once for the refused joins, and within the edge timeout and
/// the grace period for the killed edge's sockets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_joins_leave_no_records() {
    let env = [
        ("P2PIANO_IP_CONNECT_RATE", "0"),
        ("P2PIANO_MAX_CONNECTIONS_PER_IP", "0"),
    ];
    let mut d = Deployment::start_with(2, &env, Store::Memory).await;
    let (victim, stays) = (d.edge(0), d.edge(1));
    let bus = p2piano_bus::Bus::connect_nats(&d.nats.url(), "faults-records")
        .await
        .unwrap();
    let bucket = open_jetstream(
        bus.nats_client().expect("a NATS bus"),
        BucketConfig {
            name: format!("{}_connections", d.name.replace('.', "_")),
            max_age: None,
            replicas: 1,
            description: String::new(),
        },
        Duration::from_secs(5),
    )
    .await
    .expect("the connections bucket");

    // Members who stay, on the edge that stays.
    let (owner, code) = create_room(stays).await;
    let mut cookies = vec![owner];
    cookies.extend(fresh_sessions(stays, &code, STAYING - 1).await);
    let mut members = Vec::new();
    for cookie in &cookies {
        members.push(Player::must_join(stays, &code, cookie, None).await);
    }
    until_records(&*bucket, STAYING, Duration::from_secs(10)).await;
    let before = records(&*bucket).await;

    // 1,000 refused joins, each a fresh session.
    let sessions = fresh_sessions(victim, &code, REFUSED).await;
    let started = Instant::now();
    let refused = refused_joins(victim, sessions).await;
    let took = started.elapsed();
    let settled = until_records(&*bucket, before, Duration::from_secs(10)).await;
    println!(
        "[faults] records: {before} before; {refused} of {REFUSED} joins refused in {:.1} s; \
         back to {before} records {:.2} s after the last",
        took.as_secs_f64(),
        settled.as_secs_f64()
    );
    assert_eq!(refused, REFUSED, "every join to an unknown room is refused");
    // At once: a refused join ends its socket's record then, not after a grace period (5 s)
    // kept for a membership that never began.
    assert!(
        settled < Duration::from_secs(2),
        "records of refused joins waited {settled:?}"
    );

    // 400 more, and the edge killed in the middle of them.
    let sessions = fresh_sessions(victim, &code, DURING_KILL).await;
    let joins = tokio::spawn(refused_joins(victim, sessions));
    // Kill it once the first of them has a record (polled: a count has no event).
    while records(&*bucket).await == before && !joins.is_finished() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let in_flight = records(&*bucket).await - before;
    d.edges[0].kill();
    let killed = Instant::now();
    let refused = joins.await.unwrap();
    // Presence finds the edge dead after its timeout (3 s) and lets its sockets' grace
    // periods (5 s) run out: within 10 s of the kill.
    until_records(&*bucket, before, Duration::from_secs(15)).await;
    let back_after = killed.elapsed();
    println!(
        "[faults] records: edge killed with {in_flight} refused joins' records in the bucket \
         ({refused} of {DURING_KILL} refused before it died); back to {before} records {:.1} s \
         after the kill",
        back_after.as_secs_f64()
    );
    assert!(
        refused < DURING_KILL,
        "the edge died in the middle of the joins"
    );
    // The members who stayed are still there.
    let path = format!("/api/room/{code}");
    let (r, _) = http_within(
        Duration::from_secs(10),
        stays,
        "GET",
        &path,
        Some(&cookies[0]),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    drop(members);
}
