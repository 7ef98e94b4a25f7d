//! Test harness for the rooms service: the service running on a real NATS + MongoDB-wire
//! server, or on the in-process bus + memory store, each test with its own subject prefix
//! and database.

#![allow(dead_code, missing_docs, unused_imports)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use p2piano_bus::{Bus, Headers, Subscription};
use p2piano_config::Config;
use p2piano_protocol::{ErrorCode, MembersEvent, Reply, RoomsOp, Subjects};
use p2piano_rooms::store::{MemoryStore, MongoSettings, MongoStore, RoomStore};
use p2piano_rooms::{AppError, Application, Clock};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long a test waits for a reply or an event before failing.
pub const WAIT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    NatsMongo,
    InProcess,
}

/// Configuration for one test: its own prefix and database, admin on an ephemeral port.
pub fn test_config(name: &str, mongo_uri: &str) -> Config {
    test_config_idle(name, mongo_uri, 5400)
}

/// [`test_config`] with a given room idle time.
pub fn test_config_idle(name: &str, mongo_uri: &str, idle_secs: u64) -> Config {
    let figment = Config::figment()
        .merge(("room_idle_secs", idle_secs))
        .merge(("subject_prefix", name))
        .merge(("mongo_db", name))
        .merge(("mongo_uri", mongo_uri))
        .merge(("admin_addr", "127.0.0.1:0"))
        .merge(("mongo_timeout_ms", 1500))
        .merge(("request_timeout_ms", 5000));
    Config::from_figment(figment).expect("test configuration")
}

pub async fn mongo_store(uri: &str, db: &str) -> Arc<MongoStore> {
    Arc::new(
        MongoStore::connect(MongoSettings {
            uri: uri.to_owned(),
            database: db.to_owned(),
            username: None,
            password: None,
            timeout: Duration::from_millis(1500),
        })
        .await
        .expect("mongo client"),
    )
}

/// Non-default settings for [`Harness::start_with`].
pub struct Options {
    pub clock: Clock,
    /// A private MongoDB-wire server instead of the shared one.
    pub mongo_uri: Option<String>,
    pub idle_secs: u64,
    /// The memory store to use in process (to inspect it).
    pub store: Option<Arc<MemoryStore>>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            clock: Clock::system(),
            mongo_uri: None,
            idle_secs: 5400,
            store: None,
        }
    }
}

pub struct Harness {
    pub mode: Mode,
    pub name: String,
    pub config: Config,
    /// A client connection, separate from the service's own.
    pub bus: Bus,
    pub subjects: Subjects,
    pub store: Arc<dyn RoomStore>,
    pub admin_port: u16,
    shutdown: CancellationToken,
    task: Option<JoinHandle<Result<(), AppError>>>,
}

impl Harness {
    pub async fn start(mode: Mode) -> Self {
        Self::start_with(mode, Options::default()).await
    }

    /// Starts the service with non-default options.
    pub async fn start_with(mode: Mode, options: Options) -> Self {
        let Options {
            clock,
            mongo_uri,
            idle_secs,
            store: memory,
        } = options;
        let name = p2piano_testkit::unique_name("rooms");
        let uri = mongo_uri.unwrap_or_else(p2piano_testkit::mongo_uri);
        let config = test_config_idle(&name, &uri, idle_secs);
        let (service_bus, client_bus, store): (Bus, Bus, Arc<dyn RoomStore>) = match mode {
            Mode::NatsMongo => {
                let url = p2piano_testkit::nats_url();
                (
                    Bus::connect_nats(&url, "rooms-under-test")
                        .await
                        .expect("nats"),
                    Bus::connect_nats(&url, "rooms-test-client")
                        .await
                        .expect("nats"),
                    mongo_store(&uri, &name).await,
                )
            }
            Mode::InProcess => {
                let bus = Bus::in_process();
                (
                    bus.clone(),
                    bus,
                    memory.unwrap_or_else(|| Arc::new(MemoryStore::new())),
                )
            }
        };
        Self::launch(mode, name, config, service_bus, client_bus, store, clock).await
    }

    pub async fn launch(
        mode: Mode,
        name: String,
        config: Config,
        service_bus: Bus,
        client_bus: Bus,
        store: Arc<dyn RoomStore>,
        clock: Clock,
    ) -> Self {
        let app = Application::build_with(&config, service_bus, store.clone(), clock)
            .await
            .expect("rooms service builds");
        let admin_port = app.admin_port();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(app.run_until_stopped(shutdown.clone()));
        Self {
            mode,
            subjects: Subjects::new(&name).unwrap(),
            name,
            config,
            bus: client_bus,
            store,
            admin_port,
            shutdown,
            task: Some(task),
        }
    }

    /// Sends a request and returns the raw reply envelope.
    pub async fn raw(&self, subject: &str, payload: impl Into<Bytes>) -> Reply<Value> {
        let msg = self
            .bus
            .request(subject, Headers::new(), payload.into(), WAIT)
            .await
            .expect("rooms service answers");
        serde_json::from_slice(&msg.payload).expect("reply is a JSON envelope")
    }

    pub async fn call(&self, op: RoomsOp, body: impl Serialize) -> Reply<Value> {
        let bytes = serde_json::to_vec(&body).unwrap();
        self.raw(&self.subjects.rooms_rpc(op), bytes).await
    }

    /// Calls and expects success, decoding the value.
    pub async fn ok<T: DeserializeOwned>(&self, op: RoomsOp, body: impl Serialize) -> T {
        match self.call(op, body).await {
            Reply::Ok(v) => serde_json::from_value(v).expect("reply value decodes"),
            Reply::Error(e) => panic!("{op:?} failed: {e}"),
        }
    }

    /// Calls and expects failure, returning the code.
    pub async fn err(&self, op: RoomsOp, body: impl Serialize) -> ErrorCode {
        match self.call(op, body).await {
            Reply::Ok(v) => panic!("{op:?} unexpectedly succeeded: {v}"),
            Reply::Error(e) => e.code,
        }
    }

    /// Watches every room's membership events.
    pub async fn events(&self) -> Events {
        let sub = self
            .bus
            .subscribe(&self.subjects.all_room_members())
            .await
            .unwrap();
        self.bus.flush().await.unwrap();
        Events { sub }
    }

    /// Stops the service (drain) and waits for it to return.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await
                .expect("service task")
                .expect("service stops cleanly");
        }
    }

    /// GET on the admin port; returns (status, body).
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        http_get(self.admin_port, path).await
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub struct Events {
    sub: Subscription,
}

impl Events {
    pub async fn next(&mut self) -> MembersEvent {
        let msg = tokio::time::timeout(WAIT, self.sub.next())
            .await
            .expect("a membership event arrives")
            .expect("subscription open");
        serde_json::from_slice(&msg.payload).expect("event decodes")
    }
}

pub use p2piano_testkit::{http_get, wait_until};

/// A fresh public user id as a JSON string value.
pub fn uid() -> String {
    p2piano_protocol::UserId::random().to_string()
}
