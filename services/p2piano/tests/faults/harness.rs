//! The split deployment as separate processes on loopback, for fault tests: a private
//! `nats-server -js` and a private MongoDB-wire server (testkit's `NatsServer` and
//! `MongoServer`, which can be killed and restarted on the same port with the same data),
//! `p2piano rooms`, `p2piano presence` and N `p2piano edge`s.
//!
//! Every process is owned by a guard that kills it when dropped, so a failed (panicking)
//! test leaves nothing behind; the p2piano processes are also started under
//! `setpriv --pdeathsig KILL` where available, so that they die with the test thread even if
//! the test process itself is killed. Their logs go to files in the deployment's temporary
//! directory; when a test fails, the end of every log is printed.
//!
//! The room API calls the tests make (create a room, get a session, list the participants)
//! are here too, over the testkit's HTTP client; the players are the testkit's
//! (`p2piano_testkit::sio::player`).

use std::fs::OpenOptions;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use p2piano_testkit::http::{Response, try_request};
use p2piano_testkit::{MongoServer, NatsServer};

use crate::support::free_port;

/// The binary under test: `FAULTS_BIN` when set (one built elsewhere), else the one cargo
/// built with this test (the release build under `cargo test --release`, which the
/// 10,000-socket drain needs: see `storm::drain_clients`).
pub fn bin() -> String {
    std::env::var("FAULTS_BIN")
        .ok()
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_p2piano").to_owned())
}
/// The cookie secret every edge shares.
pub const SECRET: &str = "fault-tests-cookie-secret-0123456789abcdef0123";
/// How long a (re)started service may take to become ready on a busy 2-core machine.
pub const READY_WITHIN: Duration = Duration::from_secs(60);

/// One process (`p2piano <role>`, or a server), restartable with the same settings and port.
pub struct Proc {
    /// `rooms`, `presence`, `edge-1`, ...
    pub name: String,
    /// Program and arguments.
    argv: Vec<String>,
    /// The HTTP port: the edge's `PORT`, or the admin port of rooms and presence.
    pub port: u16,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
}

impl Proc {
    fn new(
        name: &str,
        argv: Vec<String>,
        port: u16,
        env: Vec<(String, String)>,
        log: PathBuf,
    ) -> Self {
        Self {
            name: name.to_owned(),
            argv,
            port,
            env,
            log,
            child: None,
        }
    }

    /// Starts the process (it must not be running); its output is appended to its log.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut cmd = if std::path::Path::new("/usr/bin/setpriv").exists() {
            let mut c = Command::new("/usr/bin/setpriv");
            c.args(["--pdeathsig", "KILL", "--"]).args(&self.argv);
            c
        } else {
            let mut c = Command::new(&self.argv[0]);
            c.args(&self.argv[1..]);
            c
        };
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", std::env::var("HOME").unwrap_or_default())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        self.child = Some(cmd.spawn().expect("spawn p2piano"));
    }

    /// Whether the process is alive.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Waits until `/health/ready` answers 200.
    pub async fn wait_ready(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Ok(r)) = tokio::time::timeout(
                Duration::from_secs(2),
                try_request(self.port, "GET", "/health/ready", &[], None),
            )
            .await
                && r.status == 200
            {
                return;
            }
            assert!(
                self.is_running(),
                "{} exited before it was ready:\n{}",
                self.name,
                self.log_tail(40)
            );
            assert!(
                Instant::now() < deadline,
                "{} not ready within {within:?}:\n{}",
                self.name,
                self.log_tail(40)
            );
            // Polling interval of the readiness probe, not a wait for time to pass.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL (a crash) and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM (a graceful stop); see [`Proc::wait_exit`].
    pub fn sigterm(&self) {
        self.signal("TERM");
    }

    /// Sends SIGSTOP: the whole process, every thread of it, stops where it is (what a
    /// frozen node, a debugger or a long pause looks like from outside); see
    /// [`Proc::sigcont`].
    pub fn sigstop(&self) {
        self.signal("STOP");
    }

    /// Sends SIGCONT: a stopped process goes on.
    pub fn sigcont(&self) {
        self.signal("CONT");
    }

    fn signal(&self, name: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let ok = Command::new("kill")
            .args([format!("-{name}"), pid.to_string()])
            .status()
            .unwrap();
        assert!(ok.success(), "kill -{name} {pid}");
    }

    /// Waits for the process to exit by itself: its status, or None after `within`.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            let child = self.child.as_mut()?;
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            // Polling interval, not a wait for time to pass.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts the process again (after a kill or an exit) and waits until it is ready.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn();
        self.wait_ready(READY_WITHIN).await;
    }

    /// The last `n` lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Watches its log for a line containing `needle`, every 50 ms, from a task of its
    /// own: the task ends with the time the line was first seen (None after `within`).
    pub fn watch_log(
        &self,
        needle: &'static str,
        within: Duration,
    ) -> tokio::task::JoinHandle<Option<Instant>> {
        let log = self.log.clone();
        tokio::spawn(async move {
            let deadline = Instant::now() + within;
            while Instant::now() < deadline {
                let text = tokio::fs::read_to_string(&log).await.unwrap_or_default();
                if text.contains(needle) {
                    return Some(Instant::now());
                }
                // Polling interval, not a wait for time to pass.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            None
        })
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `p2piano all` on `port`, in-process bus and memory stores, logging to `log`.
pub fn all_in_one(port: u16, log: PathBuf) -> Proc {
    Proc::new(
        "all",
        vec![bin(), "all".to_owned()],
        port,
        vec![
            ("PORT".into(), port.to_string()),
            ("COOKIE_SECRET".into(), SECRET.into()),
            ("P2PIANO_COOKIE_SECURE".into(), "false".into()),
        ],
        log,
    )
}

/// NATS, the MongoDB-wire server, rooms, presence and the edges of one test.
pub struct Deployment {
    /// Subject prefix and database name of this test.
    pub name: String,
    /// The edges, `edge-1`...
    pub edges: Vec<Proc>,
    /// The admin ports of the edges (health and `/metrics`), by index.
    pub edge_admins: Vec<u16>,
    /// `p2piano rooms`.
    pub rooms: Proc,
    /// `p2piano presence`.
    pub presence: Proc,
    /// The private NATS server.
    pub nats: NatsServer,
    /// The private MongoDB-wire server ([`Store::Durable`]).
    mongo: Option<MongoServer>,
    dir: tempfile::TempDir,
    started: Instant,
}

/// How the MongoDB-wire server commits.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// testkit's `MongoServer`: secantus with `--sync-on-commit` (an fsync per commit, like
    /// mongod's journal), restartable without losing a write.
    Durable,
    /// No MongoDB-wire server: rooms keeps rooms in memory (`P2PIANO_ROOM_STORE=memory`),
    /// for a test about presence at a scale (thousands of joins and leaves in seconds) that
    /// the Python MongoDB-wire server cannot serve on this machine.
    Memory,
}

impl Deployment {
    /// Starts everything with default settings plus `env`, and waits until every service
    /// is ready.
    pub async fn start(edges: usize, env: &[(&str, &str)]) -> Deployment {
        Self::start_with(edges, env, Store::Durable).await
    }

    /// Like [`Deployment::start`], with the given kind of MongoDB-wire server.
    pub async fn start_with(edges: usize, env: &[(&str, &str)], store: Store) -> Deployment {
        let started = Instant::now();
        let name = p2piano_testkit::unique_name("faults");
        let nats = NatsServer::start().expect("nats-server");
        let dir = tempfile::Builder::new()
            .prefix("p2piano-faults-")
            .tempdir()
            .unwrap();
        let (mongo, mongo_uri) = match store {
            Store::Memory => (None, String::new()),
            Store::Durable => {
                let m = MongoServer::start().expect("secantus");
                let uri = m.uri();
                (Some(m), uri)
            }
        };
        let mut config = p2piano_config::Config {
            nats_url: Some(nats.url()),
            mongo_db: Some(name.clone()),
            subject_prefix: name.clone(),
            cookie_secret: Some(SECRET.into()),
            cookie_secure: false,
            ..Default::default()
        };
        match store {
            Store::Memory => config.room_store = p2piano_config::RoomStore::Memory,
            Store::Durable => config.mongo_uri = Some(mongo_uri.clone()),
        }
        let plan = p2piano::cluster::Plan::split(config, edges);
        let mut ports: Vec<u16> = Vec::new();
        while ports.len() < 2 + 2 * edges {
            let p = free_port();
            if !ports.contains(&p) {
                ports.push(p);
            }
        }
        // Each service of the plan as a process: its configuration as its environment (the
        // edge's public port, or the admin port, as the port to probe), then the test's own
        // variables, which win.
        let process = |service: p2piano::cluster::Service, port: u16, admin: u16| {
            let mut config = service.config;
            if service.role == p2piano_config::Role::Edge {
                config.port = port;
            }
            config.admin_addr = Some(std::net::SocketAddr::from(([127, 0, 0, 1], admin)));
            let mut vars: Vec<(String, String)> = config
                .to_env()
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect();
            vars.extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
            let log = dir.path().join(format!("{}.log", service.name));
            Proc::new(
                &service.name,
                vec![bin(), service.role.to_string()],
                port,
                vars,
                log,
            )
        };
        let rooms = process(plan.rooms(), ports[0], ports[0]);
        let presence = process(plan.presence_replica(1), ports[1], ports[1]);
        let count = edges;
        let edges = (0..count)
            .map(|i| process(plan.edge(i + 1), ports[2 + i], ports[2 + count + i]))
            .collect();
        let edge_admins = ports[2 + count..].to_vec();
        let mut d = Deployment {
            name,
            edges,
            edge_admins,
            rooms,
            presence,
            nats,
            mongo,
            dir,
            started,
        };
        d.rooms.spawn();
        d.presence.spawn();
        d.rooms.wait_ready(READY_WITHIN).await;
        d.presence.wait_ready(READY_WITHIN).await;
        for e in &mut d.edges {
            e.spawn();
        }
        for e in &mut d.edges {
            e.wait_ready(READY_WITHIN).await;
        }
        println!(
            "[faults] deployment {} up in {:.1} s (nats :{}, mongo {mongo_uri}, edges {:?})",
            d.name,
            started.elapsed().as_secs_f64(),
            d.nats.port(),
            d.edges.iter().map(|e| e.port).collect::<Vec<_>>()
        );
        d
    }

    /// The MongoDB-wire server of a [`Store::Durable`] deployment.
    pub fn mongo(&mut self) -> &mut MongoServer {
        self.mongo.as_mut().expect("a durable store")
    }

    /// The port of edge `i` (0-based).
    pub fn edge(&self, i: usize) -> u16 {
        self.edges[i].port
    }

    /// The admin port of edge `i` (0-based), where its `/metrics` is.
    pub fn edge_admin(&self, i: usize) -> u16 {
        self.edge_admins[i]
    }

    /// Waits until every running service answers ready again.
    pub async fn wait_all_ready(&mut self, within: Duration) {
        self.rooms.wait_ready(within).await;
        self.presence.wait_ready(within).await;
        for e in &mut self.edges {
            if e.is_running() {
                e.wait_ready(within).await;
            }
        }
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        let test = std::thread::current().name().unwrap_or("test").to_owned();
        if !std::thread::panicking() {
            println!(
                "[faults] {test}: passed, {:.1} s from the deployment's start",
                self.started.elapsed().as_secs_f64()
            );
        }
        if std::env::var_os("FAULTS_KEEP_LOGS").is_some() {
            let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap()).keep();
            eprintln!("[faults] {test}: logs kept in {}", dir.display());
        }
        if std::thread::panicking() {
            for p in std::iter::once(&self.rooms)
                .chain(std::iter::once(&self.presence))
                .chain(&self.edges)
            {
                eprintln!("----- {} (last 30 lines) -----\n{}", p.name, p.log_tail(30));
            }
        }
    }
}

/// A request that must be answered within `within` (with session `cookie` when given): the
/// answer and how long it took, or a panic naming it.
pub async fn http_within(
    within: Duration,
    port: u16,
    method: &str,
    path: &str,
    cookie: Option<&str>,
) -> (Response, Duration) {
    let started = Instant::now();
    let headers: Vec<(&str, &str)> = cookie.map(|c| ("Cookie", c)).into_iter().collect();
    match tokio::time::timeout(within, try_request(port, method, path, &headers, None)).await {
        Ok(Ok(r)) => (r, started.elapsed()),
        Ok(Err(e)) => panic!("{method} {path}: {e}"),
        Err(_) => panic!("{method} {path}: no answer within {within:?} (a hang)"),
    }
}

/// A new session that created a room (`POST /api/room`): (cookie, room code).
pub async fn create_room(port: u16) -> (String, String) {
    let (r, _) = http_within(Duration::from_secs(30), port, "POST", "/api/room", None).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let code = r.json()["roomId"].as_str().unwrap().to_owned();
    (r.cookie().expect("a session cookie"), code)
}

/// A new session that looked at room `code` (`GET /api/room/:code`): its cookie.
pub async fn session_for(port: u16, code: &str) -> String {
    let path = format!("/api/room/{code}");
    let (r, _) = http_within(Duration::from_secs(30), port, "GET", &path, None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.cookie().expect("a session cookie")
}

/// The user ids of the room's participants (`GET /rooms/:code`, service shape), read with
/// a fresh session (so that polling never meets the per-session read limit).
pub async fn participants(port: u16, code: &str) -> Result<Vec<String>, Response> {
    let path = format!("/rooms/{code}");
    let (r, _) = http_within(Duration::from_secs(30), port, "GET", &path, None).await;
    if r.status != 200 {
        return Err(r);
    }
    Ok(r.json()["participants"]
        .as_array()
        .expect("participants")
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_owned())
        .collect())
}
