//! `p2piano all` as a newcomer runs it: with nothing configured it says in its first log line
//! that it runs on the in-process bus and memory stores, serves the whole HTTP surface and the
//! demo page on one port, and stops cleanly on SIGTERM; given NATS and MongoDB it runs on them.

use crate::support;

use std::process::Stdio;

use support::{Guard, http, lines, p2piano, port_of, sigterm, wait_for_line};

fn start(env: &[(&str, &str)]) -> (Guard, std::sync::mpsc::Receiver<String>, u16, String) {
    let mut child = Guard(
        p2piano(&["all"], env)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let logs = lines(child.0.stdout.take().unwrap());
    let _ = lines(child.0.stderr.take().unwrap());
    let first = logs
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("a first log line");
    let port = port_of(&wait_for_line(&logs, "edge ready"));
    (child, logs, port, first)
}

/// Creates a room over HTTP and reads it back with the session cookie.
fn create_and_read(port: u16) {
    let created = http(port, "POST", "/api/room", &[]);
    assert_eq!(created.status, 201, "{created:?}");
    let code = created.json()["roomId"].as_str().unwrap().to_owned();
    let cookie = created.cookie().expect("a session cookie");
    let read = http(
        port,
        "GET",
        &format!("/rooms/{code}"),
        &[("Cookie", &cookie)],
    );
    assert_eq!(read.status, 200, "{}", read.body);
    assert_eq!(read.json()["code"], code);
}

#[test]
fn embedded_mode_needs_nothing_and_says_so() {
    let (mut child, logs, port, first) =
        start(&[("PORT", "0"), ("P2PIANO_COOKIE_SECURE", "false")]);
    assert!(
        first.contains("in-process bus and memory stores"),
        "first line: {first}"
    );
    assert!(
        first.contains("open http://localhost:"),
        "first line: {first}"
    );
    let health = http(port, "GET", "/health", &[]);
    assert_eq!(health.status, 200, "{}", health.body);
    assert_eq!(http(port, "GET", "/health/ready", &[]).status, 200);
    create_and_read(port);
    let page = http(port, "GET", "/", &[]);
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-type")
            .is_some_and(|t| t.starts_with("text/html")),
        "{:?}",
        page.headers
    );
    sigterm(&child.0);
    wait_for_line(&logs, "edge stopped");
    assert!(child.0.wait().unwrap().success());
}

#[test]
fn with_nats_and_mongo_it_runs_on_them() {
    let prefix = p2piano_testkit::unique_name("all");
    let nats = p2piano_testkit::nats_url();
    let mongo = p2piano_testkit::mongo_uri();
    let env = [
        ("PORT", "0"),
        ("NATS_URL", nats.as_str()),
        ("MONGO_URI", mongo.as_str()),
        ("P2PIANO_MONGO_DB", prefix.as_str()),
        ("P2PIANO_SUBJECT_PREFIX", prefix.as_str()),
        ("P2PIANO_COOKIE_SECURE", "false"),
    ];
    let (mut child, logs, port, first) = start(&env);
    assert!(
        first.contains("NATS with JetStream KV sessions, rooms in MongoDB"),
        "first line: {first}"
    );
    create_and_read(port);
    // The rooms it serves are on the bus: a `p2piano request` from outside sees them.
    let out = support::output(
        &[
            "request",
            &format!("{prefix}.rpc.rooms.create"),
            r#"{"ownerId":"3f1c2d9e-8a4b-4c1d-9e2f-5a6b7c8d9e0f"}"#,
        ],
        &env,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    sigterm(&child.0);
    wait_for_line(&logs, "edge stopped");
    assert!(child.0.wait().unwrap().success());
}
