//! The demo page at `/` in a real browser (tests/browser/demo.test.js, Playwright driving the
//! system Chromium): two users in two browser contexts create and join a room, see each
//! other, play a note through the server, open a WebRTC data channel and play a note over it.
//! Once against `p2piano all` (both users on one edge), once against the split deployment of
//! `make up` (one user on each edge, so that everything between them crosses NATS).
//!
//! Each scenario runs in a network namespace of its own: the test starts
//! `unshare -n bash tests/browser/in-netns.sh <mode>`, which gives the new namespace loopback
//! and a veth pair with both ends inside it (10.77.0.1 and 10.77.0.2), starts the server(s)
//! there, runs demo.test.js and stops everything. Chromium's WebRTC does not use loopback, so
//! on the host its ICE candidates would be the host's own addresses (eth0); in the namespace
//! they are 10.77.0.x, and demo.test.js fails on any other candidate address than those,
//! 127.0.0.0/8 and ::1. No packet of the test leaves the namespace.
//!
//! Skipped, with a message, when `P2PIANO_SKIP_BROWSER=1`, when Chromium or the npm packages
//! are missing, or when this machine does not let the test create a network namespace with a
//! veth pair (`unshare -n` needs root, or CAP_SYS_ADMIN and CAP_NET_ADMIN); in CI (`CI` set)
//! any of the latter fails the test instead, since a skip there would hide that it never ran.

use crate::support;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";

/// The longest a scenario may take, setup and teardown included (demo.test.js gives up after
/// 150 s by itself); then the script gets SIGTERM, which stops everything it started.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(300);

/// One browser test at a time: two Chromiums and a cluster at once on a small CI machine
/// make the timeouts of the page's waits the thing under test.
static SERIAL: Mutex<()> = Mutex::new(());

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Whether this machine lets the test create a network namespace with a veth pair in it:
/// `Err` with the reason when it does not (not root, no CAP_SYS_ADMIN, no veth driver, no
/// `unshare` or `ip`). Probed once per test binary.
fn netns_problem() -> Result<(), String> {
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    PROBE
        .get_or_init(|| {
            let ip = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
                .into_iter()
                .find(|p| Path::new(p).exists())
                .ok_or("no ip from iproute2 (apt-get install iproute2)")?;
            let out = Command::new("unshare")
                .args([
                    "-n", ip, "link", "add", "vb0", "type", "veth", "peer", "name", "vb1",
                ])
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("cannot run unshare (util-linux): {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "`unshare -n ip link add vb0 type veth peer name vb1` failed ({}): {}; \
                     a network namespace of the test's own needs root (or CAP_SYS_ADMIN and \
                     CAP_NET_ADMIN, e.g. docker run --cap-add SYS_ADMIN --cap-add NET_ADMIN)",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        })
        .clone()
}

/// Why the browser tests cannot run on this machine, or `None` when they can. Panics when
/// something is missing in CI, where a skip would hide that the test never ran.
fn skip_reason() -> Option<String> {
    if std::env::var("P2PIANO_SKIP_BROWSER").as_deref() == Ok("1") {
        return Some("P2PIANO_SKIP_BROWSER=1".to_owned());
    }
    let mut missing = Vec::new();
    if !Path::new(CHROMIUM).exists() {
        missing.push(format!("missing {CHROMIUM} (apt-get install chromium)"));
    }
    if !browser_dir().join("node_modules/playwright-core").exists() {
        missing
            .push("missing tests/browser/node_modules/playwright-core (make test-deps)".to_owned());
    }
    if let Err(why) = netns_problem() {
        missing.push(format!("no network namespace: {why}"));
    }
    if missing.is_empty() {
        return None;
    }
    let reason = missing.join("; and ");
    assert!(
        std::env::var_os("CI").is_none(),
        "browser test cannot run in CI: {reason}"
    );
    Some(reason)
}

/// The virtualenv with nats-server and secantusdb that up.sh uses, as p2piano-testkit
/// computes it (`${XDG_CACHE_HOME:-$HOME/.cache}/p2piano/venv`).
fn venv() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(|h| Path::new(&h).join(".cache"))
        })
        .unwrap_or_else(|| std::env::temp_dir().join("p2piano-cache"));
    cache.join("p2piano").join("venv")
}

/// The script, stopped with SIGTERM if the test ends before it does (a panic, the timeout):
/// its trap then stops the servers, node and Chromium in the namespace.
struct Script(Child);

impl Drop for Script {
    fn drop(&mut self) {
        if !matches!(self.0.try_wait(), Ok(None)) {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        // down.sh gives each service up to 30 s; leave the script time to run it.
        let deadline = Instant::now() + Duration::from_secs(60);
        while matches!(self.0.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The last `n` lines of every log in `dir`, for a failure message.
fn log_tails(dir: &Path, n: usize) -> String {
    let mut out = String::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    let mut files: Vec<PathBuf> = entries.map_while(Result::ok).map(|e| e.path()).collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        out.push_str(&format!("--- {} ---\n", file.display()));
        for line in &lines[lines.len().saturating_sub(n)..] {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Runs `in-netns.sh <mode>` in a new network namespace; demo.test.js's screenshots go to
/// `target/browser-shots/<test>`, and nothing else is kept. Panics with the script's output
/// (which includes demo.test.js's) and the servers' logs if it fails; returns how long it
/// took.
fn run_in_netns(test: &str, mode: &str) -> Duration {
    // CARGO_TARGET_TMPDIR is `<target dir>/tmp`, wherever the target directory is.
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("browser-shots")
        .join(test);
    let _ = std::fs::remove_dir_all(&shots);
    std::fs::create_dir_all(&shots).unwrap();
    // The servers' logs and state; removed when the test ends.
    let run = tempfile::tempdir().unwrap();
    let venv = venv();
    if mode == "cluster" && !venv.join(".p2piano-testkit-ready").is_file() {
        // Installs nats-server and secantusdb into the virtualenv (make test-deps does it
        // too), here in the host's namespace: the test's own one reaches no package index.
        // Starting the shared servers is the testkit's way to install them.
        let _ = p2piano_testkit::nats_url();
        let _ = p2piano_testkit::mongo_uri();
    }
    let host_netns = std::fs::read_link("/proc/self/ns/net").unwrap();

    let mut cmd = Command::new("unshare");
    cmd.args(["-n", "bash"])
        .arg(browser_dir().join("in-netns.sh"))
        .arg(mode)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("P2PIANO_BIN", support::BIN)
        .env("RUN_DIR", run.path())
        .env("SHOTS_DIR", &shots)
        .env("VENV", &venv)
        .env("HOST_NETNS", &host_netns)
        .stdin(Stdio::null());
    for var in ["HOME", "TMPDIR", "XDG_CACHE_HOME", "LANG"] {
        if let Some(v) = std::env::var_os(var) {
            cmd.env(var, v);
        }
    }
    // One pipe for stdout and stderr, so that the output reads in the order it was written.
    let (mut reader, writer) = std::io::pipe().unwrap();
    cmd.stdout(writer.try_clone().unwrap()).stderr(writer);
    let started = Instant::now();
    let mut script = Script(cmd.spawn().expect("unshare runs"));
    // The Command holds the pipe's write ends until it is dropped; then the reader ends when
    // the script and everything it started have closed theirs.
    drop(cmd);
    let (tx, output) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = reader.read_to_end(&mut bytes);
        let _ = tx.send(String::from_utf8_lossy(&bytes).into_owned());
    });
    let status = loop {
        if let Some(status) = script.0.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > SCENARIO_TIMEOUT {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // On the timeout, SIGTERM and wait for the script's cleanup.
    drop(script);
    let took = started.elapsed();
    let text = output
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| "(no output: something the script started still holds it)".into());
    let text = format!(
        "unshare -n bash in-netns.sh {mode} ({took:.1?}), screenshots in {}:\n{text}",
        shots.display()
    );
    match status {
        Some(status) if status.success() => {
            println!("{text}");
            took
        }
        Some(status) => panic!(
            "the demo page test ({mode}) failed: {status}\n{text}\n{}",
            log_tails(&run.path().join("logs"), 60)
        ),
        None => panic!(
            "the demo page test ({mode}) did not end within {SCENARIO_TIMEOUT:?}\n{text}\n{}",
            log_tails(&run.path().join("logs"), 60)
        ),
    }
}

#[test]
fn demo_page_in_process() {
    if let Some(why) = skip_reason() {
        eprintln!("skipping the browser test: {why}");
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let took = run_in_netns("demo_page_in_process", "all");
    eprintln!("demo page in process: {took:.1?}");
}

#[test]
fn demo_page_across_two_edges() {
    if let Some(why) = skip_reason() {
        eprintln!("skipping the browser test: {why}");
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let took = run_in_netns("demo_page_across_two_edges", "cluster");
    eprintln!("demo page across two edges: {took:.1?}");
}
