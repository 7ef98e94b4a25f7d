//! Tests of the crate. They live inside the crate so they can use the private wire probes,
//! and re-execute the test binary to check what happens when a test process dies.

use std::io::{BufRead, BufReader, ErrorKind, Read};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{MongoServer, NatsServer, mongo_uri, nats_url, unique_name};

/// Polls `cond` until it holds or `timeout` passes; returns whether it held.
fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// Port of a `nats://host:port` URL or `mongodb://host:port/...` URI.
fn port_of(url: &str) -> u16 {
    let rest = url.split("://").nth(1).expect("scheme");
    let host_port = rest.split('/').next().expect("authority");
    host_port
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port")
}

/// Connects with a plain TcpStream and returns the first line the server sends.
fn first_line(port: u16) -> std::io::Result<String> {
    let stream = TcpStream::connect_timeout(&local(port), Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    Ok(line)
}

fn refused(port: u16) -> bool {
    matches!(
        TcpStream::connect_timeout(&local(port), Duration::from_secs(2)),
        Err(e) if e.kind() == ErrorKind::ConnectionRefused
    )
}

fn assert_nats_info(port: u16) {
    let line = first_line(port).expect("read INFO");
    assert!(line.starts_with("INFO "), "{line}");
    assert!(line.contains("\"jetstream\":true"), "{line}");
}

#[test]
fn nats_server_start_stop_restart() {
    let mut server = NatsServer::start().expect("start nats-server");
    let port = server.port();
    assert_eq!(server.url(), format!("nats://127.0.0.1:{port}"));
    assert!(server.is_running());
    assert_nats_info(port);

    server.stop();
    assert!(!server.is_running());
    assert!(refused(port), "port {port} still accepts connections");
    assert!(
        server.dir().join("js").is_dir(),
        "JetStream store must survive stop"
    );
    server.stop(); // idempotent

    server.restart().expect("restart nats-server");
    assert!(server.is_running());
    assert_eq!(server.port(), port);
    assert_nats_info(port);

    // Restarting a running server is a stop + start.
    server.restart().expect("restart running nats-server");
    assert_nats_info(port);

    let dir = server.dir().to_owned();
    drop(server);
    assert!(refused(port));
    assert!(!dir.exists(), "{} not removed on drop", dir.display());
}

#[test]
fn mongo_server_start_stop_restart() {
    let mut server = MongoServer::start().expect("start secantus");
    let port = server.port();
    assert_eq!(
        server.uri(),
        format!("mongodb://127.0.0.1:{port}/?directConnection=true")
    );
    assert!(server.is_running());
    assert!(crate::mongo::ping(local(port)).expect("ping"));

    server.stop();
    assert!(!server.is_running());
    assert!(refused(port));
    let data = server.dir().join("data");
    assert!(data.is_dir(), "storage must survive stop");

    server.restart().expect("restart secantus");
    assert!(server.is_running());
    assert_eq!(server.port(), port);
    assert!(crate::mongo::ping(local(port)).expect("ping after restart"));

    let dir = server.dir().to_owned();
    drop(server);
    assert!(refused(port));
    assert!(!dir.exists());
}

#[test]
fn private_servers_are_independent() {
    let a = NatsServer::start().expect("start a");
    let b = NatsServer::start().expect("start b");
    assert_ne!(a.port(), b.port());
    assert_ne!(a.dir(), b.dir());
}

#[test]
fn shared_nats_is_started_once() {
    let first = nats_url();
    let second = nats_url();
    assert_eq!(first, second);
    assert_nats_info(port_of(&first));
}

#[test]
fn shared_nats_is_shared_across_threads() {
    let urls: Vec<String> = (0..4)
        .map(|_| std::thread::spawn(nats_url))
        .map(|t| t.join().expect("thread"))
        .collect();
    assert!(urls.iter().all(|u| *u == urls[0]), "{urls:?}");
}

#[test]
fn shared_mongo_is_started_once() {
    let first = mongo_uri();
    assert_eq!(first, mongo_uri());
    assert!(first.ends_with("/?directConnection=true"), "{first}");
    assert!(crate::mongo::ping(local(port_of(&first))).expect("ping"));
}

#[test]
fn unique_names_are_valid_and_distinct() {
    let tags = [
        "rooms_join",
        "Rooms.Join > *",
        "",
        "___",
        "Ünïcödé-tag",
        "a_very_long_tag_that_goes_on_and_on_and_on_forever_and_ever",
        "9starts_with_digit",
    ];
    let mut seen = std::collections::HashSet::new();
    for tag in tags {
        for _ in 0..200 {
            let name = unique_name(tag);
            assert!(name.len() <= 40, "{name}");
            assert!(name.starts_with("t_"), "{name}");
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{name}"
            );
            assert!(!name.contains("__") && !name.ends_with('_'), "{name}");
            assert!(seen.insert(name.clone()), "duplicate {name}");
        }
    }
    assert!(unique_name("rooms_join").starts_with("t_rooms_join_"));
    assert!(unique_name("Rooms.Join > *").starts_with("t_rooms_join_"));
    let suffix = unique_name("x").rsplit('_').next().map(str::len);
    assert_eq!(suffix, Some(8));
}

// ---- Process death: the test binary re-executes itself as a "child" test process. ----

/// Env var selecting what [`child_process`] does; unset in normal runs.
const CHILD_MODE: &str = "P2PIANO_TESTKIT_CHILD";
/// Marks the reports of the child on stdout (libtest may print before it on the line).
const OUT: &str = "P2PIANO_OUT ";

/// Not a real test: the body of the child processes used below. Does nothing unless
/// `P2PIANO_TESTKIT_CHILD` is set.
#[test]
fn child_process() {
    let Ok(mode) = std::env::var(CHILD_MODE) else {
        return;
    };
    let report = |v: &dyn std::fmt::Display| println!("{OUT}{v}");
    let block = || {
        // Blocks until killed (the parent never writes to our stdin).
        let _ = std::io::stdin().read(&mut [0u8; 1]);
    };
    match mode.as_str() {
        "shared_nats_exit" => {
            report(&nats_url());
            std::process::exit(0);
        }
        "shared_nats_kill" => {
            report(&nats_url());
            block();
        }
        "shared_mongo_exit" => {
            report(&mongo_uri());
            std::process::exit(0);
        }
        "private_nats_kill" => {
            let server = NatsServer::start().expect("start");
            report(&server.url());
            report(&server.dir().display());
            block();
        }
        "private_mongo_kill" => {
            let server = MongoServer::start().expect("start");
            report(&server.uri());
            report(&server.dir().display());
            block();
        }
        "env_override" => {
            report(&nats_url());
            report(&mongo_uri());
            std::process::exit(0);
        }
        other => panic!("unknown child mode {other}"),
    }
}

/// Runs [`child_process`] in `mode`; returns the process and its first `n` reports.
fn spawn_child(mode: &str, n: usize, env: &[(&str, &str)]) -> (std::process::Child, Vec<String>) {
    let exe = std::env::current_exe().expect("current_exe");
    let mut child = Command::new(exe)
        .args([
            "tests::child_process",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_MODE, mode)
        .env_remove("NATS_URL")
        .env_remove("MONGO_URI")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child test process");
    let stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let reports: Vec<String> = stdout
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| l.split_once(OUT).map(|(_, v)| v.to_owned()))
        .take(n)
        .collect();
    assert_eq!(reports.len(), n, "child {mode} reported {reports:?}");
    (child, reports)
}

const GONE_WITHIN: Duration = Duration::from_secs(10);

/// The server (`what`) that was on `port` is gone within [`GONE_WITHIN`].
fn assert_gone(port: u16, what: &str) {
    assert!(
        eventually(GONE_WITHIN, || refused(port)),
        "orphan {what} on {port}"
    );
}

/// Child `mode` starts a shared server, reports its port and exits cleanly; the server
/// (`what`) must go with it.
fn assert_dies_with_exit(mode: &str, what: &str) {
    let (mut child, r) = spawn_child(mode, 1, &[]);
    let port = port_of(&r[0]);
    assert!(child.wait().expect("wait").success());
    assert_gone(port, what);
}

#[test]
fn shared_nats_dies_with_process_exit() {
    assert_dies_with_exit("shared_nats_exit", "nats");
}

#[test]
fn shared_nats_dies_with_killed_process() {
    let (mut child, r) = spawn_child("shared_nats_kill", 1, &[]);
    let port = port_of(&r[0]);
    assert_nats_info(port);
    child.kill().expect("kill child");
    child.wait().expect("wait");
    assert_gone(port, "nats");
}

#[test]
fn shared_mongo_dies_with_process_exit() {
    assert_dies_with_exit("shared_mongo_exit", "secantus");
}

#[test]
fn private_servers_die_with_killed_process_and_clean_up() {
    for mode in ["private_nats_kill", "private_mongo_kill"] {
        let (mut child, r) = spawn_child(mode, 2, &[]);
        let port = port_of(&r[0]);
        let dir = PathBuf::from(&r[1]);
        assert!(dir.is_dir());
        child.kill().expect("kill child");
        child.wait().expect("wait");
        assert!(
            eventually(GONE_WITHIN, || refused(port)),
            "{mode}: orphan on {port}"
        );
        assert!(
            eventually(GONE_WITHIN, || !dir.exists()),
            "{mode}: {} left behind",
            dir.display()
        );
    }
}

#[test]
fn env_overrides_start_nothing() {
    let (mut child, r) = spawn_child(
        "env_override",
        2,
        &[
            ("NATS_URL", "nats://example.invalid:4222"),
            ("MONGO_URI", "mongodb://example.invalid:27017"),
        ],
    );
    assert!(child.wait().expect("wait").success());
    assert_eq!(
        r,
        [
            "nats://example.invalid:4222",
            "mongodb://example.invalid:27017"
        ]
    );
}

#[test]
fn servers_can_be_shared_between_threads_and_tasks() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<NatsServer>();
    assert_send_sync::<MongoServer>();
}
