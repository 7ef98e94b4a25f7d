//! `make up` / `make down` (tools/cluster): the split deployment as local processes passes the
//! socket.io-client conformance suite across its two edges, and `down` leaves no process of
//! the ones `up` started.

use std::path::Path;
use std::process::Command;

use crate::support::{self, Cluster};

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false)
}

#[test]
fn up_serves_the_conformance_suite_and_down_stops_everything() {
    let js = support::repo().join("services/edge/tests/js");
    assert!(
        js.join("node_modules/socket.io-client").exists(),
        "npm packages missing: run `make test-deps`"
    );
    let cluster = Cluster::up();
    let pids = cluster.pids();
    let conformance = Command::new("node")
        .args(["--test", "--test-reporter=spec", "--test-force-exit"])
        .current_dir(&js)
        .env("EDGE_A", format!("http://127.0.0.1:{}", cluster.edges[0]))
        .env("EDGE_B", format!("http://127.0.0.1:{}", cluster.edges[1]))
        .output()
        .unwrap();
    let down = cluster.down();
    assert_eq!(
        pids.len(),
        6,
        "nats, mongo, rooms, presence and two edges: {pids:?}"
    );
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
        !cluster.run.path().join("pids").exists(),
        "make down removes its pid files"
    );
}
