//! The `p2piano` binary as an operator uses it: help and version, configuration errors that
//! name the variable, `p2piano rooms` serving and stopping cleanly on SIGTERM, and
//! `p2piano sub` / `p2piano request` showing the bus traffic as JSON.

use crate::support;

use std::process::Stdio;

use support::{lines, output, p2piano, sigterm, wait_for_line};

#[test]
fn help_and_version() {
    let help = output(&["--help"], &[]);
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for role in ["edge", "rooms", "presence", "all"] {
        assert!(text.contains(role), "{text}");
    }
    let version = output(&["--version"], &[]);
    assert!(String::from_utf8_lossy(&version.stdout).contains(env!("CARGO_PKG_VERSION")));
    assert!(!output(&["conduct"], &[]).status.success());
}

#[test]
fn production_without_required_variables_names_them() {
    let out = output(&["rooms"], &[("NODE_ENV", "production")]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("MONGO_URI"), "{err}");
    assert!(err.contains("NATS_URL"), "{err}");
    let out = output(&["rooms"], &[("PORT", "not-a-port")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("PORT"));
}

#[test]
fn rooms_serves_shows_events_and_stops_on_sigterm() {
    let prefix = p2piano_testkit::unique_name("cli");
    let nats = p2piano_testkit::nats_url();
    let mongo = p2piano_testkit::mongo_uri();
    let env = [
        ("NATS_URL", nats.as_str()),
        ("MONGO_URI", mongo.as_str()),
        ("P2PIANO_MONGO_DB", prefix.as_str()),
        ("P2PIANO_SUBJECT_PREFIX", prefix.as_str()),
        ("P2PIANO_ADMIN_ADDR", "127.0.0.1:0"),
        ("P2PIANO_LOG_FORMAT", "json"),
    ];
    let mut rooms = p2piano(&["rooms"], &env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let logs = lines(rooms.stdout.take().unwrap());
    let _stderr = lines(rooms.stderr.take().unwrap());
    wait_for_line(&logs, "rooms service ready");

    let members = format!("{prefix}.room.*.members");
    let mut sub = p2piano(&["sub", &members, "--count", "1"], &env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let sub_out = lines(sub.stdout.take().unwrap());
    let sub_err = lines(sub.stderr.take().unwrap());
    wait_for_line(&sub_err, "listening");

    let owner = p2piano_protocol::UserId::random().to_string();
    let created = output(
        &[
            "request",
            &format!("{prefix}.rpc.rooms.create"),
            &format!(r#"{{"ownerId":"{owner}"}}"#),
        ],
        &env,
    );
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let reply: serde_json::Value = serde_json::from_slice(&created.stdout).unwrap();
    let code = reply["data"]["ok"]["code"]
        .as_str()
        .expect("room code")
        .to_owned();
    let joined = output(
        &[
            "request",
            &format!("{prefix}.rpc.rooms.join"),
            &format!(r#"{{"code":"{code}","userId":"{owner}"}}"#),
        ],
        &env,
    );
    assert!(joined.status.success());

    let event: serde_json::Value =
        serde_json::from_str(&wait_for_line(&sub_out, "joined")).unwrap();
    assert_eq!(event["subject"], format!("{prefix}.room.{code}.members"));
    assert_eq!(event["data"]["kind"], "joined");
    assert_eq!(event["data"]["userId"], owner.as_str());
    assert!(
        sub.wait().unwrap().success(),
        "sub stops after --count messages"
    );

    sigterm(&rooms);
    wait_for_line(&logs, "rooms service stopped");
    let status = rooms.wait().unwrap();
    assert!(status.success(), "clean exit after SIGTERM: {status}");
}

#[test]
fn presence_serves_sessions_and_stops_on_sigterm() {
    let prefix = p2piano_testkit::unique_name("cli_presence");
    let nats = p2piano_testkit::nats_url();
    let env = [
        ("NATS_URL", nats.as_str()),
        ("P2PIANO_SUBJECT_PREFIX", prefix.as_str()),
        ("P2PIANO_ADMIN_ADDR", "127.0.0.1:0"),
        ("P2PIANO_LOG_FORMAT", "json"),
    ];
    let mut presence = p2piano(&["presence"], &env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let logs = lines(presence.stdout.take().unwrap());
    let _stderr = lines(presence.stderr.take().unwrap());
    wait_for_line(&logs, "presence service ready");

    let created = output(
        &[
            "request",
            &format!("{prefix}.rpc.presence.session_create"),
            "{}",
        ],
        &env,
    );
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let reply: serde_json::Value = serde_json::from_slice(&created.stdout).unwrap();
    let sid = reply["data"]["ok"]["sessionId"]
        .as_str()
        .expect("a session id")
        .to_owned();
    let found = output(
        &[
            "request",
            &format!("{prefix}.rpc.presence.session_get"),
            &format!(r#"{{"sessionId":"{sid}"}}"#),
        ],
        &env,
    );
    let found: serde_json::Value = serde_json::from_slice(&found.stdout).unwrap();
    assert_eq!(found["data"]["ok"]["userId"], reply["data"]["ok"]["userId"]);

    sigterm(&presence);
    wait_for_line(&logs, "presence service stopped");
    assert!(presence.wait().unwrap().success());
}
