//! Harness for presence tests: presence and rooms running together on real NATS (JetStream
//! KV) + the MongoDB-wire server, or on the in-process bus + memory stores, each test with
//! its own subject prefix, buckets and database; test edges made with the edge library.

#![allow(dead_code, missing_docs, unused_imports)]

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use p2piano_bus::{Bus, Headers, Subscription};
use p2piano_clock::Clock;
use p2piano_config::{Config, Role};
use p2piano_edge::presence_link::EdgeLink;
use p2piano_presence::app::{jetstream_buckets, memory_buckets};
use p2piano_presence::{Application, Buckets};
use p2piano_protocol::presence::SessionCreated;
use p2piano_protocol::rpc::JoinReply;
use p2piano_protocol::{ErrorCode, MembersEvent, PresenceOp, Reply, Room, RoomsOp, Subjects};
use p2piano_rooms::store::{MemoryStore, MongoSettings, MongoStore, RoomStore};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const WAIT: Duration = Duration::from_secs(15);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Nats,
    InProcess,
}

/// Timings short enough for tests; everything else default.
pub fn config(name: &str, nats_url: Option<String>, session_ttl_secs: u64) -> Config {
    let figment = Config::figment()
        .merge(("subject_prefix", name))
        .merge(("mongo_db", name))
        .merge(("mongo_uri", p2piano_testkit::mongo_uri()))
        .merge(("admin_addr", "127.0.0.1:0"))
        .merge(("leave_grace_ms", 400))
        .merge(("heartbeat_ms", 100))
        .merge(("edge_timeout_ms", 400))
        .merge(("request_timeout_ms", 2000))
        .merge(("session_ttl_secs", session_ttl_secs));
    let mut c = Config::from_figment(figment).expect("test configuration");
    c.nats_url = nats_url;
    c
}

pub struct Harness {
    pub mode: Mode,
    pub name: String,
    pub config: Config,
    pub subjects: Subjects,
    /// The client's own connection (for NATS), or the shared in-process bus.
    pub bus: Bus,
    /// The presence buckets, opened on the client's connection (for NATS) or shared with
    /// the replicas (in process), for tests that look at the records.
    pub buckets: Buckets,
    /// Rooms and the presence replicas, built by the cluster builder (no edges: the tests
    /// play the edges themselves).
    pub cluster: p2piano::cluster::Cluster,
}

impl Harness {
    pub async fn start(mode: Mode) -> Self {
        Self::start_with(mode, None, 86400, Clock::system()).await
    }

    /// `nats_url` overrides the shared server (for restart tests).
    pub async fn start_with(mode: Mode, nats_url: Option<String>, ttl: u64, clock: Clock) -> Self {
        let name = p2piano_testkit::unique_name("presence");
        let url = nats_url.unwrap_or_else(p2piano_testkit::nats_url);
        let mut config = config(&name, (mode == Mode::Nats).then(|| url.clone()), ttl);
        let (bus, buckets) = match mode {
            Mode::Nats => {
                let bus = Bus::connect_nats(&url, "presence-test-client")
                    .await
                    .expect("nats");
                let buckets = jetstream_buckets(&bus, &config).await.expect("buckets");
                (bus, buckets)
            }
            Mode::InProcess => {
                config.mongo_uri = None;
                (Bus::in_process(), memory_buckets(&config))
            }
        };
        let options = p2piano::cluster::Options {
            clock: Some(clock),
            bus: (mode == Mode::InProcess).then(|| bus.clone()),
            buckets: (mode == Mode::InProcess).then(|| buckets.clone()),
            ..Default::default()
        };
        let cluster = p2piano::cluster::Plan::split(config.clone(), 0)
            .start(options)
            .await
            .expect("rooms and presence start");
        Self {
            mode,
            subjects: Subjects::new(&name).unwrap(),
            name,
            config,
            bus,
            buckets,
            cluster,
        }
    }

    /// The admin port of the rooms service (health and `/metrics`).
    pub fn rooms_admin(&self) -> u16 {
        self.admin_ports(Role::Rooms)[0]
    }

    /// The admin ports of the presence replicas, in the order they started.
    pub fn presence_admin(&self) -> Vec<u16> {
        self.admin_ports(Role::Presence)
    }

    fn admin_ports(&self, role: Role) -> Vec<u16> {
        self.cluster
            .services()
            .iter()
            .filter(|s| s.role == role)
            .map(|s| s.admin_port)
            .collect()
    }

    /// Starts one more presence replica (own connection for NATS, same buckets).
    pub async fn add_presence(&mut self) {
        self.cluster
            .add_presence()
            .await
            .expect("presence replica starts");
    }

    /// Stops presence replica `i` (from 0) and waits until it has stopped.
    pub async fn stop_presence(&mut self, i: usize) {
        let name = self.cluster.plan().presence_replica(i + 1).name;
        self.cluster
            .stop(&name)
            .await
            .expect("presence stops cleanly");
    }

    pub async fn raw(&self, subject: &str, body: Vec<u8>) -> Reply<Value> {
        let msg = self
            .bus
            .request(subject, Headers::new(), body.into(), WAIT)
            .await
            .expect("answered");
        serde_json::from_slice(&msg.payload).expect("reply envelope")
    }

    pub async fn presence_call(&self, op: PresenceOp, body: impl Serialize) -> Reply<Value> {
        self.raw(
            &self.subjects.presence_rpc(op),
            serde_json::to_vec(&body).unwrap(),
        )
        .await
    }

    pub async fn presence_ok<T: DeserializeOwned>(
        &self,
        op: PresenceOp,
        body: impl Serialize,
    ) -> T {
        match self.presence_call(op, body).await {
            Reply::Ok(v) => serde_json::from_value(v).expect("reply decodes"),
            Reply::Error(e) => panic!("{op:?} failed: {e}"),
        }
    }

    pub async fn presence_err(&self, op: PresenceOp, body: impl Serialize) -> ErrorCode {
        match self.presence_call(op, body).await {
            Reply::Ok(v) => panic!("{op:?} unexpectedly succeeded: {v}"),
            Reply::Error(e) => e.code,
        }
    }

    pub async fn rooms_ok<T: DeserializeOwned>(&self, op: RoomsOp, body: impl Serialize) -> T {
        let r = self
            .raw(
                &self.subjects.rooms_rpc(op),
                serde_json::to_vec(&body).unwrap(),
            )
            .await;
        match r {
            Reply::Ok(v) => serde_json::from_value(v).unwrap(),
            Reply::Error(e) => panic!("rooms {op:?} failed: {e}"),
        }
    }

    pub async fn session(&self) -> SessionCreated {
        self.presence_ok(
            PresenceOp::SessionCreate,
            json!({"ip": "127.0.0.1", "userAgent": "test"}),
        )
        .await
    }

    pub async fn room(&self) -> Room {
        self.rooms_ok(
            RoomsOp::Create,
            json!({"ownerId": p2piano_protocol::UserId::random()}),
        )
        .await
    }

    /// What an edge does for a socket: presence `connect`, then rooms `join`.
    pub async fn connect_and_join(
        &self,
        s: &SessionCreated,
        edge: &str,
        conn: &str,
        room: &Room,
    ) -> Value {
        let reply: Value = self
            .presence_ok(
                PresenceOp::Connect,
                json!({"sessionId": s.session_id.expose(), "edgeId": edge, "connId": conn, "roomCode": room.code}),
            )
            .await;
        let _: JoinReply = self
            .rooms_ok(
                RoomsOp::Join,
                json!({"code": room.code, "userId": s.user_id}),
            )
            .await;
        reply
    }

    pub async fn disconnect(&self, s: &SessionCreated, edge: &str, conn: &str) -> bool {
        let v: Value = self
            .presence_ok(
                PresenceOp::Disconnect,
                json!({"sessionId": s.session_id.expose(), "edgeId": edge, "connId": conn}),
            )
            .await;
        v["graceStarted"].as_bool().unwrap()
    }

    pub async fn members_of(&self, room: &Room) -> Vec<String> {
        let r: Room = self
            .rooms_ok(RoomsOp::Get, json!({"code": room.code}))
            .await;
        r.participants.iter().map(|p| p.id.to_string()).collect()
    }

    pub async fn events(&self) -> Events {
        let sub = self
            .bus
            .subscribe(&self.subjects.all_room_members())
            .await
            .unwrap();
        self.bus.flush().await.unwrap();
        Events { sub }
    }

    /// A test edge on its own connection.
    pub async fn edge(&self, id: &str) -> EdgeLink {
        let bus = match self.mode {
            Mode::Nats => Bus::connect_nats(self.config.nats_url.as_deref().unwrap(), id)
                .await
                .unwrap(),
            Mode::InProcess => self.bus.clone(),
        };
        EdgeLink::new(bus, self.subjects.clone(), id)
    }

    /// A counter's value summed over the given admin ports' `/metrics`.
    pub async fn metric(&self, ports: &[u16], series: &str) -> f64 {
        let mut total = 0.0;
        for port in ports {
            let (_, body) = http_get(*port, "/metrics").await;
            total += body
                .lines()
                .filter(|l| l.starts_with(series))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>();
        }
        total
    }

    /// Rooms `leave` requests that succeeded, as the rooms service counted them.
    pub async fn rooms_leaves(&self) -> f64 {
        self.metric(
            &[self.rooms_admin()],
            r#"p2piano_rooms_requests_total{op="leave",outcome="ok"}"#,
        )
        .await
    }
}

pub struct Events {
    sub: Subscription,
}

impl Events {
    pub async fn next(&mut self) -> MembersEvent {
        let msg = tokio::time::timeout(WAIT, self.sub.next())
            .await
            .expect("event arrives")
            .expect("open");
        serde_json::from_slice(&msg.payload).expect("event decodes")
    }

    /// The next event of kind `left`, skipping joins and others.
    pub async fn next_left(&mut self) -> MembersEvent {
        loop {
            let e = self.next().await;
            if e.kind == p2piano_protocol::MembersEventKind::Left {
                return e;
            }
        }
    }
}

pub use p2piano_testkit::http_get;
