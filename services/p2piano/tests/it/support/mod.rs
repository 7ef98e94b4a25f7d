//! Helpers for tests that run the `p2piano` binary: spawn it with a clean environment, read
//! its log lines as they come, wait for one, and send it SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output};
use std::sync::mpsc;
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_p2piano");

pub fn p2piano(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

pub fn output(args: &[&str], env: &[(&str, &str)]) -> Output {
    p2piano(args, env).output().expect("binary runs")
}

/// Lines of a child's stream, delivered through a channel so the test can wait for one.
pub fn lines(stream: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

pub fn wait_for_line(rx: &mpsc::Receiver<String>, needle: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return line,
            Ok(_) => continue,
            Err(_) => panic!("no line containing {needle:?}"),
        }
    }
}

pub fn sigterm(child: &Child) {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

/// One HTTP request over a fresh connection, from synchronous code (these tests drive the
/// binary as a child process).
pub use p2piano_testkit::http::request_blocking as http;

/// The port in an `edge ready` log line (`port=N` as text, `"port":N` as JSON).
pub fn port_of(line: &str) -> u16 {
    let digits: String = line
        .split("port")
        .nth(1)
        .unwrap_or_default()
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(char::is_ascii_digit)
        .collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("no port in {line:?}"))
}

/// A child process that is killed when the test ends, even by a panic, so that a failed
/// test leaves nothing running.
pub struct Guard(pub std::process::Child);

impl Drop for Guard {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The repository's root directory (this crate is `services/p2piano`).
pub fn repo() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A port nobody listens on now, for the scripts that need ports before they start anything.
///
/// It is picked below the kernel's ephemeral range (`ip_local_port_range`): a port from that
/// range, released for a service to bind a moment later, can meanwhile become the source
/// port of any outgoing connection on the machine (a service connecting to NATS or MongoDB),
/// and the service then fails with "Address already in use". Outside the range only another
/// explicit bind can take it.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static CALLS: AtomicU64 = AtomicU64::new(0);
    const LOWEST: u32 = 10_000;
    let ephemeral_low: u32 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768);
    if ephemeral_low > LOWEST + 1_000 {
        for _ in 0..1_000 {
            // A fresh random number per call: RandomState is seeded randomly per process.
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(CALLS.fetch_add(1, Ordering::Relaxed));
            let port = (LOWEST + (h.finish() % u64::from(ephemeral_low - LOWEST)) as u32) as u16;
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
    // No room below the ephemeral range: let the OS pick one (and take the small risk).
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The split deployment of `make up` (tools/cluster/up.sh: NATS, a MongoDB-wire server,
/// rooms, presence and two edges) on free ports, with its own run directory. Dropping it runs
/// `make down` (down.sh), so that a failed test leaves no process behind.
pub struct Cluster {
    /// The run directory (`pids/`, `logs/`); removed after `down`.
    pub run: tempfile::TempDir,
    /// The ports of edge 1 and edge 2 on 127.0.0.1.
    pub edges: [u16; 2],
    env: Vec<(&'static str, String)>,
}

impl Cluster {
    /// Starts the cluster with `up.sh` and returns once both edges are ready (up.sh waits
    /// for `/health/ready` of every service); panics with up.sh's output and the services'
    /// logs if it fails.
    pub fn up() -> Cluster {
        // nats-server and secantusdb come from the test support's virtualenv, installed once
        // per machine (make test-deps); these calls install it when it is missing.
        let _ = p2piano_testkit::nats_url();
        let _ = p2piano_testkit::mongo_uri();
        let run = tempfile::tempdir().unwrap();
        // Six different ports (two random picks may coincide).
        let mut ports: Vec<u16> = Vec::new();
        while ports.len() < 8 {
            let port = free_port();
            if !ports.contains(&port) {
                ports.push(port);
            }
        }
        let env = vec![
            ("P2PIANO_BIN", BIN.to_owned()),
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
        let cluster = Cluster {
            run,
            edges: [ports[2], ports[3]],
            env,
        };
        // Built before up.sh runs, so that a failed start still runs down.sh on drop.
        let up = cluster.script("up.sh").output().unwrap();
        assert!(
            up.status.success(),
            "make up failed:\n{}{}\n{}",
            String::from_utf8_lossy(&up.stdout),
            String::from_utf8_lossy(&up.stderr),
            cluster.logs(40)
        );
        cluster
    }

    fn script(&self, name: &str) -> Command {
        let mut c = Command::new(repo().join("tools/cluster").join(name));
        c.envs(self.env.iter().map(|(k, v)| (*k, v.as_str())));
        c
    }

    /// The services `up.sh` started, by name (its pid files), with their pids.
    pub fn pids(&self) -> Vec<(String, u32)> {
        let Ok(dir) = std::fs::read_dir(self.run.path().join("pids")) else {
            return Vec::new();
        };
        dir.map_while(Result::ok)
            .filter_map(|e| {
                let pid = std::fs::read_to_string(e.path())
                    .ok()?
                    .trim()
                    .parse()
                    .ok()?;
                Some((e.file_name().to_string_lossy().into_owned(), pid))
            })
            .collect()
    }

    /// Runs `make down` (down.sh) now; dropping the cluster runs it again, which then finds
    /// nothing to stop.
    pub fn down(&self) -> Output {
        self.script("down.sh").output().unwrap()
    }

    /// The last `n` lines of every service's log, for a failure message.
    pub fn logs(&self, n: usize) -> String {
        let mut out = String::new();
        let Ok(dir) = std::fs::read_dir(self.run.path().join("logs")) else {
            return out;
        };
        let mut files: Vec<_> = dir.map_while(Result::ok).map(|e| e.path()).collect();
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
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.script("down.sh").output();
    }
}
