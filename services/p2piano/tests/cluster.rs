//! `make up` / `make down` (tools/cluster): the split deployment as local processes passes the
//! socket.io-client conformance suite across its two edges, and `down` leaves no process of
//! the ones `up` started.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A port nobody listens on now (the OS picks it; it is released for the service to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false)
}

#[test]
fn up_serves_the_conformance_suite_and_down_stops_everything() {
    let js = repo().join("services/edge/tests/js");
    assert!(
        js.join("node_modules/socket.io-client").exists(),
        "npm packages missing: run `make test-deps`"
    );
    // The servers of the test support, installed once per machine (make test-deps).
    let _ = p2piano_testkit::nats_url();
    let _ = p2piano_testkit::mongo_uri();
    let run = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = (0..8).map(|_| free_port()).collect();
    let env = [
        ("P2PIANO_BIN", env!("CARGO_BIN_EXE_p2piano").to_owned()),
        ("RUN_DIR", run.path().display().to_string()),
        ("NATS_PORT", ports[0].to_string()),
        ("MONGO_PORT", ports[1].to_string()),
        ("EDGE1_PORT", ports[2].to_string()),
        ("EDGE2_PORT", ports[3].to_string()),
        ("ROOMS_ADMIN", format!("127.0.0.1:{}", ports[4])),
        ("PRESENCE_ADMIN", format!("127.0.0.1:{}", ports[5])),
        ("EDGE1_ADMIN", format!("127.0.0.1:{}", ports[6])),
        ("EDGE2_ADMIN", format!("127.0.0.1:{}", ports[7])),
    ];
    let script = |name: &str| {
        let mut c = Command::new(repo().join("tools/cluster").join(name));
        c.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
        c
    };
    let up = script("up.sh").output().unwrap();
    let pids: Vec<(String, u32)> = std::fs::read_dir(run.path().join("pids"))
        .map(|dir| {
            dir.map_while(Result::ok)
                .map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    (
                        name,
                        std::fs::read_to_string(e.path())
                            .unwrap()
                            .trim()
                            .parse()
                            .unwrap(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let conformance = up.status.success().then(|| {
        Command::new("node")
            .args(["--test", "--test-reporter=spec", "--test-force-exit"])
            .current_dir(&js)
            .env("EDGE_A", format!("http://127.0.0.1:{}", ports[2]))
            .env("EDGE_B", format!("http://127.0.0.1:{}", ports[3]))
            .output()
            .unwrap()
    });
    let down = script("down.sh").output().unwrap();
    assert!(
        up.status.success(),
        "make up failed:\n{}{}",
        String::from_utf8_lossy(&up.stdout),
        String::from_utf8_lossy(&up.stderr)
    );
    assert_eq!(
        pids.len(),
        6,
        "nats, mongo, rooms, presence and two edges: {pids:?}"
    );
    let conformance = conformance.unwrap();
    assert!(
        conformance.status.success(),
        "conformance against make up failed:\n{}\n{}",
        String::from_utf8_lossy(&conformance.stdout),
        String::from_utf8_lossy(&conformance.stderr)
    );
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    for (name, pid) in &pids {
        assert!(
            !alive(*pid),
            "{name} (pid {pid}) still running after make down"
        );
    }
    assert!(
        !run.path().join("pids").exists(),
        "make down removes its pid files"
    );
}
