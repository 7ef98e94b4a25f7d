//! Harness for edge tests: the split deployment (rooms, presence and two edges over real
//! NATS, rooms on the MongoDB-wire server, presence on JetStream KV) or everything on the
//! in-process bus; the Socket.IO and HTTP clients are the testkit's.

#![allow(dead_code, missing_docs, unused_imports)]

pub use p2piano_testkit::sio as client;

use std::sync::Arc;
use std::time::Duration;

use p2piano_bus::Bus;
use p2piano_clock::Clock;
use p2piano_config::Config;
use tokio_util::sync::CancellationToken;

pub use client::SioClient;
pub use p2piano_testkit::http::{Response, request};

pub use p2piano_testkit::sio::WAIT;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Nats,
    InProcess,
}

/// A deployment of the cluster builder (`p2piano::cluster`) with the test defaults.
pub struct Cluster {
    pub mode: Mode,
    pub name: String,
    pub config: Config,
    running: p2piano::cluster::Cluster,
}

pub fn config(name: &str, nats: Option<String>) -> Config {
    let figment = Config::figment()
        .merge(("subject_prefix", name))
        .merge(("mongo_db", name))
        .merge(("mongo_uri", p2piano_testkit::mongo_uri()))
        .merge(("admin_addr", "127.0.0.1:0"))
        .merge(("port", 0))
        .merge(("leave_grace_ms", 600))
        .merge(("heartbeat_ms", 200))
        .merge(("edge_timeout_ms", 1000))
        .merge(("cookie_secure", false))
        .merge(("cors_origin", "http://localhost:5173"))
        .merge((
            "cookie_secret",
            "test-cookie-secret-0123456789abcdef0123456789",
        ));
    let mut c = Config::from_figment(figment).expect("test configuration");
    c.nats_url = nats;
    c
}

/// A web-client socket of `cookie` in room `code` on edge `i`, with its public user id.
pub async fn web(c: &Cluster, i: usize, cookie: &str, code: &str) -> (SioClient, String) {
    let (s, welcome) = c.web(i, cookie, code).await;
    let me = welcome["userId"].as_str().expect("a user id").to_owned();
    (s, me)
}

impl Cluster {
    /// A web-client socket of `cookie` in room `code` on edge `i`, connected to `/api` and
    /// past its `ROOM_JOIN`, with that welcome (the player's `userId` and the room).
    pub async fn web(&self, i: usize, cookie: &str, code: &str) -> (SioClient, serde_json::Value) {
        let mut s = SioClient::open(
            self.edge(i),
            &format!("roomId={code}&displayName=Player"),
            &[("Cookie", cookie)],
        )
        .await
        .expect("socket opens");
        match s.connect("/api", None).await {
            client::Got::Connected(v) => assert!(v["sid"].is_string(), "{v}"),
            other => panic!("connect failed: {other:?}"),
        }
        let welcome = s.expect("ROOM_JOIN").await;
        (s, welcome)
    }

    pub async fn start(mode: Mode) -> Self {
        Self::start_with(mode, p2piano_edge::SocketSettings::default()).await
    }

    /// A cluster whose edges use `settings` (small queues, short timeouts).
    pub async fn start_with(mode: Mode, settings: p2piano_edge::SocketSettings) -> Self {
        Self::start_configured(mode, settings, |_| {}).await
    }

    /// A cluster whose configuration `tweak` changes after the test defaults (limits, TTLs):
    /// on NATS, rooms on the MongoDB-wire server and two edges; in process, memory stores
    /// and one edge.
    pub async fn start_configured(
        mode: Mode,
        settings: p2piano_edge::SocketSettings,
        tweak: impl FnOnce(&mut Config),
    ) -> Self {
        let name = p2piano_testkit::unique_name("edge");
        let nats = (mode == Mode::Nats).then(p2piano_testkit::nats_url);
        let mut config = config(&name, nats);
        if mode == Mode::InProcess {
            config.mongo_uri = None;
        }
        tweak(&mut config);
        let edges = if mode == Mode::Nats { 2 } else { 1 };
        let options = p2piano::cluster::Options {
            edge_settings: Some(settings),
            ..Default::default()
        };
        let running = p2piano::cluster::Plan::split(config.clone(), edges)
            .start(options)
            .await
            .expect("cluster starts");
        Self {
            mode,
            name,
            config,
            running,
        }
    }

    /// The ports of the edges (two in NATS mode, one in process).
    pub fn edge_ports(&self) -> Vec<u16> {
        self.running.edges().map(|e| e.port).collect()
    }

    /// Edge `i` (the second edge is the first in process mode).
    fn running_edge(&self, i: usize) -> &p2piano::cluster::Running {
        let last = self.running.edges().count() - 1;
        self.running
            .edges()
            .nth(i.min(last))
            .expect("the plan has edges")
    }

    /// The port of edge `i` (the second edge is the first in process mode).
    pub fn edge(&self, i: usize) -> u16 {
        self.running_edge(i).port
    }

    /// The admin port of edge `i`, where its `/metrics` is.
    pub fn admin(&self, i: usize) -> u16 {
        self.running_edge(i).admin_port
    }

    /// Drains edge `i` and waits for it to stop.
    pub async fn stop_edge(&mut self, i: usize) {
        let name = self.running.plan().edge(i + 1).name;
        self.running.stop(&name).await.expect("edge stops cleanly");
    }

    /// A new session: creates a room over HTTP on edge `i`; returns (cookie header value, room code).
    pub async fn session_with_room(&self, i: usize) -> (String, String) {
        let r = request(self.edge(i), "POST", "/api/room", &[], None).await;
        assert_eq!(r.status, 201, "{}", r.body);
        let code = r.json()["roomId"].as_str().unwrap().to_owned();
        (r.cookie().expect("a session cookie"), code)
    }

    /// A new session that looked at `code` over HTTP on edge `i`; returns its cookie.
    pub async fn session_for(&self, i: usize, code: &str) -> String {
        let r = request(self.edge(i), "GET", &format!("/api/room/{code}"), &[], None).await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.cookie().expect("a session cookie")
    }
}

/// The value of the series `name` (with its labels, if any) in the `/metrics` of the admin
/// port `port` ([`Cluster::admin`]), 0 when absent.
pub async fn metric(port: u16, name: &str) -> f64 {
    let r = request(port, "GET", "/metrics", &[], None).await;
    r.body
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}
