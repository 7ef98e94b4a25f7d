//! The load generator end to end: each scenario run as a process against the reference
//! server and against `p2piano all`, its JSON line read back. Small sizes: these check that
//! the tool measures correctly (every note accounted for, nothing reordered), not speed.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

const LOADGEN: &str = env!("CARGO_BIN_EXE_loadgen");

/// A child process killed when the test ends, however it ends.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `loadgen reference-server` on a free port; its base URL and pid.
fn reference() -> (Guard, String, u32) {
    let mut child = Command::new(LOADGEN)
        .args(["reference-server", "--port", "0"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the reference server");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("read");
    let url = line
        .trim()
        .rsplit(' ')
        .next()
        .expect("address printed")
        .to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{line}");
    let pid = child.id();
    (Guard(child), url, pid)
}

/// The `p2piano` binary beside this one (built by `cargo test --workspace`; built here
/// when only this package's tests run).
fn p2piano_bin() -> PathBuf {
    let dir = PathBuf::from(LOADGEN)
        .parent()
        .expect("bin dir")
        .to_path_buf();
    let bin = dir.join("p2piano");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "p2piano"])
            .status()
            .expect("cargo build -p p2piano");
        assert!(status.success());
    }
    bin
}

/// Starts `p2piano all` on a free port (in-process bus, memory stores).
fn p2piano_all() -> (Guard, String, u32) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let child = Command::new(p2piano_bin())
        .arg("all")
        .env("PORT", port.to_string())
        .env("P2PIANO_COOKIE_SECURE", "false")
        .env("RUST_LOG", "warn")
        .env_remove("NATS_URL")
        .env_remove("MONGO_URI")
        .stdout(Stdio::null())
        .spawn()
        .expect("start p2piano all");
    let pid = child.id();
    let url = format!("http://127.0.0.1:{port}");
    let guard = Guard(child);
    // Wait for the port to accept: the condition, not a fixed pause.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "p2piano all did not start"
        );
        std::thread::yield_now();
    }
    (guard, url, pid)
}

/// Runs a scenario and returns its JSON line.
fn loadgen(args: &[&str]) -> Value {
    let out = Command::new(LOADGEN)
        .args(args)
        .args(["--json", "-", "--timeout", "120"])
        .output()
        .expect("run loadgen");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "loadgen {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout.lines().last().expect("a JSON line");
    serde_json::from_str(line).expect("JSON")
}

fn n(v: &Value, key: &str) -> f64 {
    v["results"][key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

fn fanout_accounts_for_every_note(url: &str, pid: u32) {
    let pid = pid.to_string();
    let v = loadgen(&[
        "fanout",
        "--rooms",
        "3",
        "--users",
        "3",
        "--rate",
        "40",
        "--duration",
        "1",
        "--drain",
        "5",
        "--targets",
        url,
        "--server-pid",
        &pid,
    ]);
    assert_eq!(n(&v, "joined"), 9.0, "{v}");
    assert!(n(&v, "sent") > 0.0, "{v}");
    // Every note sent reached both others in its room, in order.
    assert_eq!(n(&v, "delivered"), n(&v, "sent") * 2.0, "{v}");
    assert_eq!(n(&v, "expected_deliveries"), n(&v, "delivered"), "{v}");
    assert_eq!(n(&v, "lost"), 0.0, "{v}");
    assert_eq!(n(&v, "reordered"), 0.0, "{v}");
    assert_eq!(n(&v, "unmatched"), 0.0, "{v}");
    assert_eq!(
        v["results"]["latency_us"]["count"],
        v["results"]["delivered"]
    );
    assert!(n(&v, "server_cpu_s") >= 0.0, "{v}");
}

fn idle_holds_every_socket(url: &str, pid: u32) {
    let pid = pid.to_string();
    let v = loadgen(&[
        "idle",
        "--conns",
        "40",
        "--hold",
        "0.5",
        "--targets",
        url,
        "--server-pid",
        &pid,
    ]);
    assert_eq!(n(&v, "joined"), 40.0, "{v}");
    assert_eq!(n(&v, "failed"), 0.0, "{v}");
    assert_eq!(n(&v, "dropped_during_hold"), 0.0, "{v}");
    assert!(n(&v, "server_rss_after_kib") > 0.0, "{v}");
}

fn join_storm_joins_everyone(url: &str) {
    let v = loadgen(&[
        "join-storm",
        "--rate",
        "100",
        "--total",
        "20",
        "--targets",
        url,
    ]);
    assert_eq!(n(&v, "joined"), 20.0, "{v}");
    assert_eq!(n(&v, "failed"), 0.0, "{v}");
    assert_eq!(v["results"]["socket_join_latency_us"]["count"], 20);
}

#[test]
fn scenarios_against_the_reference_server() {
    let (_guard, url, pid) = reference();
    fanout_accounts_for_every_note(&url, pid);
    idle_holds_every_socket(&url, pid);
    join_storm_joins_everyone(&url);
}

#[test]
fn scenarios_against_p2piano_all() {
    let (_guard, url, pid) = p2piano_all();
    fanout_accounts_for_every_note(&url, pid);
    idle_holds_every_socket(&url, pid);
    join_storm_joins_everyone(&url);
}

#[test]
fn remote_targets_are_refused() {
    let out = Command::new(LOADGEN)
        .args(["idle", "--targets", "http://192.0.2.1:3001"])
        .output()
        .expect("run loadgen");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));
}

#[test]
fn bench_report_writes_tables_and_a_plot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let results = dir.path().join("results.jsonl");
    std::fs::write(
        &results,
        concat!(
            r#"{"machine":{"cpu":"X","cores":2,"mem_gib":1,"kernel":"k","rustc":"r","date":"d","commit":"c","nofile":"1"}}"#,
            "\n",
            r#"{"scenario":"fanout","label":"reference","params":{"rooms":1,"users":2,"rate":10},"results":{"delivered_per_s":20.0,"latency_us":{"p50":100,"p99":300}}}"#,
            "\n",
            r#"{"scenario":"fanout","label":"all","params":{"rooms":1,"users":2,"rate":10},"results":{"delivered_per_s":20.0,"latency_us":{"p50":120,"p99":400}}}"#,
            "\n",
        ),
    )
    .expect("write");
    let md = dir.path().join("BENCH.md");
    std::fs::write(&md, "# Benchmarks\n\nprose\n").expect("write");
    let png = dir.path().join("plot.png");
    let out = Command::new(LOADGEN)
        .arg("bench-report")
        .arg("--results")
        .arg(&results)
        .arg("--markdown")
        .arg(&md)
        .arg("--plot")
        .arg(&png)
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("no TrueType font") {
        eprintln!("no system font here: the plot is not checked");
        return;
    }
    assert!(out.status.success(), "{stderr}");
    let text = std::fs::read_to_string(&md).expect("read");
    assert!(text.starts_with("# Benchmarks\n\nprose\n"), "{text}");
    assert!(text.contains("| all | 1 | 20 | 20 | 0.12 |"), "{text}");
    assert!(std::fs::metadata(&png).expect("png").len() > 1000);
}
