//! MongoDB room store.
//!
//! Collections (docs/architecture.md, Data): `rooms` with a unique index on `code` and a TTL index on
//! `expireAt` (set only while a room is empty, so MongoDB removes idle empty rooms and never
//! an occupied one), and `users`, the profile each user keeps across rooms (unique on `id`).
//! Writes use a revision check instead of the positional `$` operator, so the same queries
//! run on MongoDB and on MongoDB-wire servers that lack it. Every operation is bounded by
//! the configured timeout and reports [`StoreError::Unavailable`] when it runs out, so a
//! dead database turns into a quick `unavailable` reply, not a hung request.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use mongodb::bson::{self, doc};
use mongodb::options::{ClientOptions, Credential, IndexOptions};
use mongodb::{Client, Collection, IndexModel};
use p2piano_config::Secret;
use p2piano_protocol::{
    Color, DisplayName, Instrument, Participant, Room, RoomCode, RoomSettings, Timestamp, UserId,
};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;

use super::{RoomStore, StoreError, StoredRoom, UserProfile};
use crate::metrics::{OpLabel, RoomsMetrics};

/// Connection settings for [`MongoStore::connect`].
#[derive(Clone, Debug)]
pub struct MongoSettings {
    /// `mongodb://` URI.
    pub uri: String,
    /// Database name.
    pub database: String,
    /// Optional user name (`MONGO_USERNAME`), used when the URI carries none.
    pub username: Option<String>,
    /// Optional password (`MONGO_PASSWORD`), kept redacted so that logging the settings
    /// does not leak it.
    pub password: Option<Secret>,
    /// Bound on server selection and on each operation.
    pub timeout: Duration,
}

/// Rooms and profiles in MongoDB.
pub struct MongoStore {
    rooms: Collection<RoomDoc>,
    users: Collection<UserDoc>,
    db: mongodb::Database,
    timeout: Duration,
    indexes: OnceCell<()>,
    /// Operation times, once [`RoomStore::report_to`] gave a place for them.
    latency: OnceLock<Family<OpLabel, Histogram>>,
}

impl MongoStore {
    /// Prepares a client. Nothing is contacted yet: the driver connects lazily, and the
    /// indexes are created by the first operation that finds the server up, so the service
    /// starts (unready) while MongoDB is down and recovers by itself when it comes back.
    pub async fn connect(settings: MongoSettings) -> Result<Self, StoreError> {
        let mut options = ClientOptions::parse(&settings.uri)
            .await
            .map_err(|e| StoreError::Unavailable(format!("MONGO_URI: {e}")))?;
        options.server_selection_timeout = Some(settings.timeout);
        options.connect_timeout = Some(settings.timeout);
        options
            .app_name
            .get_or_insert_with(|| "p2piano-rooms".to_owned());
        if options.credential.is_none()
            && let Some(user) = settings.username.filter(|u| !u.is_empty())
        {
            options.credential = Some(
                Credential::builder()
                    .username(user)
                    .password(settings.password.map(|p| p.expose().to_owned()))
                    .build(),
            );
        }
        let client = Client::with_options(options)
            .map_err(|e| StoreError::Unavailable(format!("MONGO_URI: {e}")))?;
        let db = client.database(&settings.database);
        Ok(Self {
            rooms: db.collection("rooms"),
            users: db.collection("users"),
            db,
            timeout: settings.timeout,
            indexes: OnceCell::new(),
            latency: OnceLock::new(),
        })
    }

    /// Runs a driver action within the operation timeout, and reports how long it took
    /// (failures and timeouts included) as operation `what`.
    async fn bounded<T>(
        &self,
        what: &'static str,
        action: impl IntoFuture<Output = Result<T, mongodb::error::Error>>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let result = tokio::time::timeout(self.timeout, action.into_future()).await;
        if let Some(latency) = self.latency.get() {
            latency
                .get_or_create(&OpLabel {
                    op: what.to_owned(),
                })
                .observe(started.elapsed().as_secs_f64());
        }
        match result {
            Ok(r) => r.map_err(map_error),
            Err(_) => Err(StoreError::Unavailable(format!("{what} timed out"))),
        }
    }

    /// Creates the indexes once per process, before the first real operation.
    async fn ready(&self) -> Result<(), StoreError> {
        self.indexes
            .get_or_try_init(|| async {
                let unique = IndexOptions::builder().unique(true).build();
                let code = IndexModel::builder()
                    .keys(doc! {"code": 1})
                    .options(unique.clone())
                    .build();
                let ttl = IndexModel::builder()
                    .keys(doc! {"expireAt": 1})
                    .options(IndexOptions::builder().expire_after(Duration::ZERO).build())
                    .build();
                let user = IndexModel::builder()
                    .keys(doc! {"id": 1})
                    .options(unique)
                    .build();
                self.bounded("create_index", self.rooms.create_index(code))
                    .await?;
                self.bounded("create_index", self.rooms.create_index(ttl))
                    .await?;
                self.bounded("create_index", self.users.create_index(user))
                    .await?;
                Ok(())
            })
            .await
            .map(|_| ())
    }
}

fn map_error(e: mongodb::error::Error) -> StoreError {
    use mongodb::error::{ErrorKind, WriteFailure};
    match e.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(w)) if w.code == 11000 => StoreError::Duplicate,
        ErrorKind::BsonDeserialization(d) => StoreError::Corrupt(d.to_string()),
        _ => StoreError::Unavailable(e.to_string()),
    }
}

fn date(t: Timestamp) -> bson::DateTime {
    bson::DateTime::from_millis(t.millis())
}

fn stamp(d: bson::DateTime) -> Timestamp {
    Timestamp::from_millis(d.timestamp_millis())
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RoomDoc {
    code: String,
    created_at: bson::DateTime,
    last_activity: bson::DateTime,
    owner_id: String,
    participants: Vec<ParticipantDoc>,
    settings: SettingsDoc,
    revision: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expire_at: Option<bson::DateTime>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ParticipantDoc {
    id: String,
    display_name: String,
    instrument: Instrument,
    color: String,
    joined_at: bson::DateTime,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SettingsDoc {
    name: Option<String>,
    max_participants: i32,
    locked: bool,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UserDoc {
    id: String,
    display_name: String,
    instrument: Instrument,
    joined_at: bson::DateTime,
    last_room: String,
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

impl From<&StoredRoom> for RoomDoc {
    fn from(s: &StoredRoom) -> Self {
        let r = &s.room;
        RoomDoc {
            code: r.code.to_string(),
            created_at: date(r.created_at),
            last_activity: date(r.last_activity),
            owner_id: r.owner_id.to_string(),
            participants: r
                .participants
                .iter()
                .map(|p| ParticipantDoc {
                    id: p.id.to_string(),
                    display_name: p.display_name.to_string(),
                    instrument: p.instrument,
                    color: p.color.to_string(),
                    joined_at: date(p.joined_at),
                })
                .collect(),
            settings: SettingsDoc {
                name: r.settings.name.clone(),
                max_participants: i32::from(r.settings.max_participants),
                locked: r.settings.locked,
            },
            // Revisions stay far below i64::MAX (one per change of one room).
            revision: r.revision as i64,
            expire_at: s.expire_at.map(date),
        }
    }
}

impl TryFrom<RoomDoc> for StoredRoom {
    type Error = StoreError;
    fn try_from(d: RoomDoc) -> Result<Self, StoreError> {
        let participants = d
            .participants
            .into_iter()
            .map(|p| {
                Ok(Participant {
                    id: UserId::parse(&p.id).map_err(corrupt)?,
                    display_name: DisplayName::parse(&p.display_name).map_err(corrupt)?,
                    instrument: p.instrument,
                    color: Color::parse(&p.color).map_err(corrupt)?,
                    joined_at: stamp(p.joined_at),
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(StoredRoom {
            room: Room {
                code: RoomCode::parse(&d.code).map_err(corrupt)?,
                created_at: stamp(d.created_at),
                last_activity: stamp(d.last_activity),
                owner_id: UserId::parse(&d.owner_id).map_err(corrupt)?,
                participants,
                settings: RoomSettings {
                    name: d.settings.name,
                    max_participants: u8::try_from(d.settings.max_participants).map_err(corrupt)?,
                    locked: d.settings.locked,
                },
                revision: u64::try_from(d.revision).map_err(corrupt)?,
            },
            expire_at: d.expire_at.map(stamp),
        })
    }
}

#[async_trait]
impl RoomStore for MongoStore {
    #[tracing::instrument(skip_all, fields(code = %room.room.code))]
    async fn insert(&self, room: &StoredRoom) -> Result<(), StoreError> {
        self.ready().await?;
        self.bounded("insert", self.rooms.insert_one(RoomDoc::from(room)))
            .await
            .map(|_| ())
    }

    #[tracing::instrument(skip_all, fields(code = %code))]
    async fn find(
        &self,
        code: &RoomCode,
        now: Timestamp,
    ) -> Result<Option<StoredRoom>, StoreError> {
        self.ready().await?;
        // By code alone, expiry checked here: with the expiry condition in the filter (an
        // `$or` on `expireAt`), secantus does not use the unique index on `code` and scans
        // the whole collection for every lookup (46 lookups/s with 625 rooms).
        let filter = doc! {"code": code.as_str()};
        Ok(self
            .bounded("find", self.rooms.find_one(filter))
            .await?
            .map(StoredRoom::try_from)
            .transpose()?
            .filter(|room| room.expire_at.is_none_or(|t| t > now)))
    }

    #[tracing::instrument(skip_all, fields(code = %room.room.code, expected_revision))]
    async fn replace(&self, room: &StoredRoom, expected_revision: u64) -> Result<bool, StoreError> {
        self.ready().await?;
        let filter = doc! {"code": room.room.code.as_str(), "revision": expected_revision as i64};
        let result = self
            .bounded(
                "replace",
                self.rooms.replace_one(filter, RoomDoc::from(room)),
            )
            .await?;
        Ok(result.matched_count == 1)
    }

    #[tracing::instrument(skip_all)]
    async fn purge_expired(&self, now: Timestamp) -> Result<u64, StoreError> {
        self.ready().await?;
        let filter = doc! {"expireAt": {"$lte": date(now)}};
        let result = self
            .bounded("purge", self.rooms.delete_many(filter))
            .await?;
        Ok(result.deleted_count)
    }

    #[tracing::instrument(skip_all, fields(user_id = %profile.id))]
    async fn upsert_profile(&self, profile: &UserProfile) -> Result<(), StoreError> {
        self.ready().await?;
        let doc = UserDoc {
            id: profile.id.to_string(),
            display_name: profile.display_name.to_string(),
            instrument: profile.instrument,
            joined_at: date(profile.joined_at),
            last_room: profile.last_room.to_string(),
        };
        let set = bson::to_document(&doc).map_err(corrupt)?;
        let update = self
            .users
            .update_one(doc! {"id": profile.id.as_str()}, doc! {"$set": set})
            .upsert(true);
        self.bounded("upsert_profile", update).await.map(|_| ())
    }

    #[tracing::instrument(skip_all, fields(user_id = %id))]
    async fn profile(&self, id: &UserId) -> Result<Option<UserProfile>, StoreError> {
        self.ready().await?;
        let Some(d) = self
            .bounded(
                "find_profile",
                self.users.find_one(doc! {"id": id.as_str()}),
            )
            .await?
        else {
            return Ok(None);
        };
        Ok(Some(UserProfile {
            id: UserId::parse(&d.id).map_err(corrupt)?,
            display_name: DisplayName::parse(&d.display_name).map_err(corrupt)?,
            instrument: d.instrument,
            joined_at: stamp(d.joined_at),
            last_room: RoomCode::parse(&d.last_room).map_err(corrupt)?,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn ping(&self) -> Result<(), StoreError> {
        self.bounded("ping", self.db.run_command(doc! {"ping": 1}))
            .await?;
        self.ready().await
    }

    fn report_to(&self, metrics: &RoomsMetrics) {
        // The first registry wins; a store is built for one service.
        let _ = self.latency.set(metrics.mongo_duration.clone());
    }
}
