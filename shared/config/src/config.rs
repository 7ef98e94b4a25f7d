//! The [`Config`] struct and its defaults.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{LogFormat, NodeEnv, RoomStore, Secret};

/// Everything a p2piano process can be configured with, for every role.
///
/// One struct for all roles so that `p2piano all` and the split services read the same
/// variables the same way; each service uses the fields it needs. Field docs name the
/// environment variable. The TOML file's keys are the serde names: the field name, with
/// the unit added for durations (`leave_grace` is read from `leave_grace_ms`), so that a
/// key says what its number means while code only ever sees a [`Duration`]. `Debug` hides
/// the secrets so that the configuration can be logged.
#[derive(Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct Config {
    /// `NODE_ENV`, default `development`; `production` turns on the strict start-up checks
    /// and JSON logs, as it did in the original service.
    pub node_env: NodeEnv,
    /// `PORT`, default 3001: the edge's HTTP and Socket.IO port (0 picks a free port).
    pub port: u16,
    /// `CORS_ORIGIN`: the origins allowed to call the HTTP API with credentials and to open
    /// WebSockets; comma-separated in the environment, a string or an array in TOML.
    #[serde(deserialize_with = "crate::de::list")]
    pub cors_origin: Vec<String>,
    /// `COOKIE_SECRET`: key that signs the session cookie; required (32+ characters) in
    /// production wherever the edge runs.
    #[serde(deserialize_with = "crate::de::optional_secret")]
    pub cookie_secret: Option<Secret>,
    /// `P2PIANO_COOKIE_SECURE`, default true: whether the session cookie gets the `Secure`
    /// attribute; turn off only for plain-http development.
    pub cookie_secure: bool,
    /// `MONGO_URI`: where rooms are stored; unset means the in-memory store (`p2piano all`).
    #[serde(deserialize_with = "crate::de::optional_text")]
    pub mongo_uri: Option<String>,
    /// `MONGO_USERNAME`: credentials kept out of the URI, as the original service allowed.
    #[serde(deserialize_with = "crate::de::optional_text")]
    pub mongo_username: Option<String>,
    /// `MONGO_PASSWORD`: goes with `MONGO_USERNAME`.
    #[serde(deserialize_with = "crate::de::optional_secret")]
    pub mongo_password: Option<Secret>,
    /// `P2PIANO_MONGO_DB`: database name overriding the one in `MONGO_URI`, so that tests and
    /// several deployments can share one server; see [`Config::mongo_database`].
    #[serde(deserialize_with = "crate::de::optional_text")]
    pub mongo_db: Option<String>,
    /// `P2PIANO_ROOM_STORE`, default `mongo`: where `p2piano rooms` keeps rooms. `memory`
    /// keeps them in the process (lost on restart, not shared between replicas): for one
    /// replica in development and benchmarks, where the database is not what is measured;
    /// refused in production. (`p2piano all` uses memory whenever `MONGO_URI` is unset.)
    pub room_store: RoomStore,
    /// `P2PIANO_MONGO_TIMEOUT_MS`, default 2000: server selection and per-operation bound,
    /// so that an unreachable database fails requests instead of hanging them.
    #[serde(rename = "mongo_timeout_ms", with = "crate::durations::millis")]
    pub mongo_timeout: Duration,
    /// `NATS_URL`: the bus; unset means the in-process bus (`p2piano all` only).
    #[serde(deserialize_with = "crate::de::optional_text")]
    pub nats_url: Option<String>,
    /// `P2PIANO_SUBJECT_PREFIX`, default `p2piano`: first tokens of every subject, so that
    /// several deployments (or tests) can share one NATS.
    pub subject_prefix: String,
    /// `P2PIANO_ADMIN_ADDR`: where health and metrics are served; `None` means the
    /// service's own default ([`crate::DEFAULT_ROOMS_ADMIN_ADDR`],
    /// [`crate::DEFAULT_PRESENCE_ADMIN_ADDR`], [`crate::DEFAULT_EDGE_ADMIN_ADDR`]; `p2piano
    /// all` without it serves `/metrics` on `PORT`).
    #[serde(deserialize_with = "crate::de::optional_socket_addr")]
    pub admin_addr: Option<SocketAddr>,
    /// `P2PIANO_EDGE_ID`: this edge's id in subjects and presence records; `None` lets the
    /// edge pick a random one (a restarted edge is a new edge).
    #[serde(deserialize_with = "crate::de::optional_text")]
    pub edge_id: Option<String>,
    /// `P2PIANO_MESH_ADDR`, default `127.0.0.1:0`: where an edge on NATS listens for the
    /// other edges' relay links. Edges on several hosts need an address the others reach
    /// (for example `0.0.0.0:3101`, with `P2PIANO_MESH_ADVERTISE`).
    #[serde(deserialize_with = "crate::de::optional_socket_addr")]
    pub mesh_addr: Option<SocketAddr>,
    /// `P2PIANO_MESH_ADVERTISE`: `host:port` at which the other edges reach this edge's
    /// relay listener; `None` means the listener's own bound address, which must then not
    /// be a wildcard such as `0.0.0.0`.
    #[serde(deserialize_with = "crate::de::optional_text")]
    pub mesh_advertise: Option<String>,
    /// `P2PIANO_REQUEST_TIMEOUT_MS`, default 5000: bound on each bus request.
    #[serde(rename = "request_timeout_ms", with = "crate::durations::millis")]
    pub request_timeout: Duration,
    /// `P2PIANO_ROOM_IDLE_SECS`, default 5400: how long an empty room is kept.
    #[serde(rename = "room_idle_secs", with = "crate::durations::secs")]
    pub room_idle: Duration,
    /// `P2PIANO_SESSION_TTL_SECS`, default 86400: idle expiry of a session.
    #[serde(rename = "session_ttl_secs", with = "crate::durations::secs")]
    pub session_ttl: Duration,
    /// `P2PIANO_IP_CONNECT_RATE`, default 1000: connection attempts (new sessions and
    /// Socket.IO upgrades) one client address may make per second on one edge, as a token
    /// bucket with `ip_connect_burst`; over it, `429` with `Retry-After`. 0 turns it off.
    /// The default is generous on purpose: behind a proxy or load balancer every client
    /// shares the proxy's address, and `tools/loadgen` joins thousands of sockets from
    /// 127.0.0.1..8; an edge facing clients directly can take a much lower value (20).
    pub ip_connect_rate: u32,
    /// `P2PIANO_IP_CONNECT_BURST`, default 2000: how many attempts one address may make at
    /// once before `ip_connect_rate` applies (at least 1 when the limit is on).
    pub ip_connect_burst: u32,
    /// `P2PIANO_MAX_CONNECTIONS`: TCP connections the edge holds at once, sockets and HTTP
    /// alike; 0 (the default) derives it from the open-file limit, less headroom for the
    /// process's own files (NATS, admin port, health checks). Over it, new connections are
    /// closed at once, and the edge reports not-ready from 15/16 of it.
    pub max_connections: usize,
    /// `P2PIANO_MAX_CONNECTIONS_PER_IP`, default 256: connections one client address (an
    /// IPv6 /64) holds at once; 0 turns it off. Behind a balancer it applies to the client
    /// address the balancer reports, once `P2PIANO_TRUSTED_PROXIES` lists the balancer.
    pub max_connections_per_ip: usize,
    /// `P2PIANO_TRUSTED_PROXIES`: addresses and CIDR blocks of the load balancers in front
    /// of the edges (comma-separated; default none). Only from these peers is the client's
    /// address taken from `X-Forwarded-For` / `Forwarded`, for the per-address limits.
    #[serde(deserialize_with = "crate::de::list")]
    pub trusted_proxies: Vec<String>,
    /// `P2PIANO_BODY_TIMEOUT_MS`, default 10000: how long a request's body may take to
    /// arrive, from the end of its headers; past it the request is answered 408 and its
    /// connection closed.
    #[serde(rename = "body_timeout_ms", with = "crate::durations::millis")]
    pub body_timeout: Duration,
    /// `P2PIANO_CONNECT_TIMEOUT_MS`, default 10000: how soon a new socket must connect to a
    /// namespace (socket.io-client does so at once); past it the socket is closed.
    #[serde(rename = "connect_timeout_ms", with = "crate::durations::millis")]
    pub connect_timeout: Duration,
    /// `P2PIANO_LEAVE_GRACE_MS`, default 5000: how long a dropped connection may take to come
    /// back before its member is announced as left (0 announces at once).
    #[serde(rename = "leave_grace_ms", with = "crate::durations::millis")]
    pub leave_grace: Duration,
    /// `P2PIANO_HEARTBEAT_MS`, default 1000: how often an edge tells presence it is alive.
    #[serde(rename = "heartbeat_ms", with = "crate::durations::millis")]
    pub heartbeat: Duration,
    /// `P2PIANO_EDGE_TIMEOUT_MS`, default 3000: silence after which presence treats an edge
    /// as dead and announces its members as left.
    #[serde(rename = "edge_timeout_ms", with = "crate::durations::millis")]
    pub edge_timeout: Duration,
    /// `P2PIANO_DRAIN_TIMEOUT_MS`, default 20000: budget for a graceful stop.
    #[serde(rename = "drain_timeout_ms", with = "crate::durations::millis")]
    pub drain_timeout: Duration,
    /// `P2PIANO_KV_REPLICAS`, default 1: replicas of the presence JetStream KV buckets
    /// (3 on a 3-node NATS cluster). Applied when a bucket is created.
    pub kv_replicas: usize,
    /// `P2PIANO_LOG_FORMAT` (`text` or `json`): default JSON in production, text otherwise.
    pub log_format: LogFormat,
    /// `P2PIANO_LOG`, default `info`: log filter in `tracing_subscriber::EnvFilter` syntax.
    pub log_level: String,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`: base URL of an OTLP/HTTP collector; unset means no
    /// trace export.
    #[serde(deserialize_with = "crate::de::optional_text")]
    pub otel_exporter_otlp_endpoint: Option<String>,
    /// `OTEL_SERVICE_NAME`: service name on exported traces; `None` lets each role use its
    /// own name.
    #[serde(deserialize_with = "crate::de::optional_text")]
    pub service_name: Option<String>,
}

impl Default for Config {
    /// The built-in defaults, as documented on each field; `log_format` is text here
    /// (loading picks JSON when `node_env` is production).
    fn default() -> Self {
        Config {
            node_env: NodeEnv::Development,
            port: 3001,
            cors_origin: vec!["http://localhost:5173".to_owned()],
            cookie_secret: None,
            cookie_secure: true,
            mongo_uri: None,
            room_store: RoomStore::Mongo,
            mongo_username: None,
            mongo_password: None,
            mongo_db: None,
            mongo_timeout: Duration::from_millis(2000),
            nats_url: None,
            subject_prefix: "p2piano".to_owned(),
            admin_addr: None,
            edge_id: None,
            mesh_addr: None,
            mesh_advertise: None,
            request_timeout: Duration::from_millis(5000),
            room_idle: Duration::from_secs(5400),
            session_ttl: Duration::from_secs(86400),
            ip_connect_rate: 1000,
            ip_connect_burst: 2000,
            max_connections: 0,
            max_connections_per_ip: 256,
            trusted_proxies: Vec::new(),
            body_timeout: Duration::from_millis(10_000),
            connect_timeout: Duration::from_millis(10_000),
            leave_grace: Duration::from_millis(5000),
            heartbeat: Duration::from_millis(1000),
            edge_timeout: Duration::from_millis(3000),
            drain_timeout: Duration::from_millis(20000),
            kv_replicas: 1,
            log_format: LogFormat::Text,
            log_level: "info".to_owned(),
            otel_exporter_otlp_endpoint: None,
            service_name: None,
        }
    }
}

impl Config {
    /// Whether `NODE_ENV` is `production` (any case), which turns on the strict checks of
    /// [`Config::validate`] and JSON logs.
    pub fn is_production(&self) -> bool {
        self.node_env.is_production()
    }
}
