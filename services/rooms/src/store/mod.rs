//! Room storage: one trait, a MongoDB implementation for production and a memory
//! implementation for `p2piano all` and tests, with the same semantics (a behaviour suite
//! runs against both).
//!
//! Atomicity is optimistic: every room carries a `revision`, and [`RoomStore::replace`]
//! writes only if the stored revision is still the one that was read. The domain logic
//! (colours, limits, locks) therefore runs once, in Rust, for both stores, and concurrent
//! joins from any number of service replicas cannot lose or double a member.

mod memory;
mod mongo;

pub use memory::MemoryStore;
pub use mongo::{MongoSettings, MongoStore};

use async_trait::async_trait;
use p2piano_protocol::{DisplayName, Instrument, Room, RoomCode, Timestamp, UserId};

use crate::metrics::RoomsMetrics;

/// A room as stored: the bus record plus its expiry deadline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRoom {
    /// The room.
    pub room: Room,
    /// When set, the room disappears at this time. Set while the room is empty, cleared when
    /// someone joins: rooms expire after an idle time with nobody in them, never mid-session.
    pub expire_at: Option<Timestamp>,
}

/// The profile a user keeps across rooms (`users` collection), used as the default name
/// and instrument on the next join.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserProfile {
    /// Public user id.
    pub id: UserId,
    /// Last display name used.
    pub display_name: DisplayName,
    /// Last instrument used.
    pub instrument: Instrument,
    /// When the user last joined a room.
    pub joined_at: Timestamp,
    /// The room the user last joined.
    pub last_room: RoomCode,
}

/// Storage failures, by what the caller can do about them.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A room with that code already exists.
    #[error("duplicate room code")]
    Duplicate,
    /// The database cannot be reached or did not answer in time; retrying later may work.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// A stored document could not be read back into the model.
    #[error("stored document is malformed: {0}")]
    Corrupt(String),
}

/// Room and profile storage.
#[async_trait]
pub trait RoomStore: Send + Sync + 'static {
    /// Inserts a new room; [`StoreError::Duplicate`] when the code is taken.
    async fn insert(&self, room: &StoredRoom) -> Result<(), StoreError>;
    /// The room with this code, unless absent or expired at `now`.
    async fn find(&self, code: &RoomCode, now: Timestamp)
    -> Result<Option<StoredRoom>, StoreError>;
    /// Replaces the room if its stored revision is still `expected_revision`; false when
    /// another writer got there first (or the room is gone).
    async fn replace(&self, room: &StoredRoom, expected_revision: u64) -> Result<bool, StoreError>;
    /// Deletes every room expired at `now`; returns how many. MongoDB's TTL index does the
    /// same on its own schedule; this makes expiry prompt and identical on both stores.
    async fn purge_expired(&self, now: Timestamp) -> Result<u64, StoreError>;
    /// Creates or replaces a user's profile.
    async fn upsert_profile(&self, profile: &UserProfile) -> Result<(), StoreError>;
    /// A user's profile, if any.
    async fn profile(&self, id: &UserId) -> Result<Option<UserProfile>, StoreError>;
    /// Checks that the store answers, for readiness.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Reports the time of each database operation in `metrics` from now on, so that the
    /// database's latency can be watched apart from the request handling around it. A store
    /// without a database (memory) has nothing to report and ignores it.
    fn report_to(&self, metrics: &RoomsMetrics) {
        let _ = metrics;
    }
}
