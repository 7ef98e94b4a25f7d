//! One address cannot take the edge down by holding connections: `p2piano all` runs with a
//! low open-file limit (`prlimit --nofile=512`), and one client address opens more stalled
//! requests (full headers, one byte of a 100-byte body) than the process has descriptors.
//! Without the connection caps `accept` fails with "Too many open files" and `/health`
//! stops answering; with them the address gets its share (`P2PIANO_MAX_CONNECTIONS_PER_IP`)
//! and the rest are closed at once, `/health` and `/health/ready` answer throughout, and the
//! body deadline closes the stalled requests with 408.

use crate::support;

use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{BIN, Guard, http, lines, port_of, wait_for_line};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// The open-file limit of the edge under attack.
const NOFILE: u32 = 512;
/// Connections the attacker opens: more than the process could hold without caps.
const ATTACK: usize = 700;
/// The per-address cap this test sets.
const PER_IP: usize = 200;
/// The body deadline this test sets.
const BODY_TIMEOUT: Duration = Duration::from_millis(5_000);

/// Opens a connection from `source` and sends headers announcing a 100-byte body, then one
/// byte of it. `None` when the connection could not even be made.
async fn stalled_request(source: Ipv4Addr, port: u16) -> Option<TcpStream> {
    let socket = TcpSocket::new_v4().ok()?;
    socket.bind(SocketAddr::from((source, 0))).ok()?;
    let mut tcp = socket
        .connect(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .ok()?;
    let req = "POST /rooms HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
               Content-Length: 100\r\n\r\n{";
    tcp.write_all(req.as_bytes()).await.ok()?;
    Some(tcp)
}

/// Reads what the edge sends on `tcp` until it closes it (or `within` passes).
async fn read_to_close(tcp: &mut TcpStream, within: Duration) -> Option<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(within, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok()
        .map(|()| String::from_utf8_lossy(&got).into_owned())
}

/// GET `path` on the edge from 127.0.0.1 (a thread: the helper is blocking), bounded.
async fn status_of(port: u16, path: &'static str) -> u16 {
    let probe = tokio::task::spawn_blocking(move || http(port, "GET", path, &[]).status);
    tokio::time::timeout(Duration::from_secs(10), probe)
        .await
        .map_or(0, |r| r.unwrap_or(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_exhaust_descriptors() {
    let per_ip = PER_IP.to_string();
    let body_ms = BODY_TIMEOUT.as_millis().to_string();
    let mut child = Guard(
        Command::new("prlimit")
            .arg(format!("--nofile={NOFILE}:{NOFILE}"))
            .arg(BIN)
            .arg("all")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("PORT", "0")
            .env("P2PIANO_COOKIE_SECURE", "false")
            .env("P2PIANO_MAX_CONNECTIONS_PER_IP", &per_ip)
            .env("P2PIANO_BODY_TIMEOUT_MS", &body_ms)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("prlimit runs p2piano"),
    );
    let logs = lines(child.0.stdout.take().unwrap());
    let _stderr = lines(child.0.stderr.take().unwrap());
    let caps = wait_for_line(&logs, "connection caps");
    let port = port_of(&wait_for_line(&logs, "edge ready"));
    assert!(caps.contains("max_connections=384"), "{caps}");
    assert_eq!(status_of(port, "/health").await, 200);

    // The attack: from 127.0.0.2, as many stalled requests as it can open.
    let attacker = Ipv4Addr::new(127, 0, 0, 2);
    let started = Instant::now();
    let mut held = Vec::new();
    for _ in 0..ATTACK {
        if let Some(tcp) = stalled_request(attacker, port).await {
            held.push(tcp);
        }
    }
    // The edge has answered every connection past the cap by closing it: those read EOF at
    // once, with no HTTP answer.
    let looked = futures::future::join_all(held.into_iter().map(|mut tcp| async move {
        let got = read_to_close(&mut tcp, Duration::from_millis(200)).await;
        (tcp, got)
    }))
    .await;
    let mut open = Vec::new();
    let mut closed_at_once = 0;
    for (tcp, got) in looked {
        match got {
            Some(got) if got.is_empty() => closed_at_once += 1,
            Some(got) => panic!("a connection got an answer before its deadline: {got}"),
            None => open.push(tcp),
        }
    }
    println!(
        "[descriptors] {} of {ATTACK} stalled requests held, {closed_at_once} closed at once, \
         in {:.2} s",
        open.len(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(open.len(), PER_IP, "the address holds exactly its cap");
    assert_eq!(closed_at_once, ATTACK - PER_IP);

    // Meanwhile everyone else is served.
    assert_eq!(status_of(port, "/health").await, 200, "/health answers");
    assert_eq!(
        status_of(port, "/health/ready").await,
        200,
        "/health/ready answers, and the edge is not near its global cap"
    );

    // The body deadline ends every stalled request with 408 and closes its connection.
    let answers = futures::future::join_all(open.iter_mut().map(|tcp| async move {
        read_to_close(tcp, BODY_TIMEOUT + Duration::from_secs(10))
            .await
            .expect("the edge closes a stalled request after its body deadline")
    }))
    .await;
    let timed_out = answers
        .iter()
        .filter(|got| got.starts_with("HTTP/1.1 408"))
        .count();
    assert_eq!(timed_out, PER_IP, "every stalled request was answered 408");
    // And the address has its places back.
    let again = stalled_request(attacker, port).await.expect("connects");
    drop(again);
    assert_eq!(status_of(port, "/health").await, 200);
    child.0.kill().ok();
}
