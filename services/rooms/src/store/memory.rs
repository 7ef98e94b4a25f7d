//! In-memory room store for `p2piano all` and tests: the same semantics as MongoDB
//! (unique codes, revision check, expiry), behind one mutex that is never held across an
//! await.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use p2piano_protocol::{RoomCode, Timestamp, UserId};

use super::{RoomStore, StoreError, StoredRoom, UserProfile};

/// Rooms and profiles in process memory; lost on exit.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    rooms: HashMap<RoomCode, StoredRoom>,
    profiles: HashMap<UserId, UserProfile>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of rooms held, expired or not (expired ones go at the next purge).
    pub fn len(&self) -> usize {
        self.lock().rooms.len()
    }

    /// Whether the store holds no room.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-written map (every mutation is
        // a single insert/remove), so a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn expired(room: &StoredRoom, now: Timestamp) -> bool {
    room.expire_at.is_some_and(|t| t <= now)
}

#[async_trait]
impl RoomStore for MemoryStore {
    async fn insert(&self, room: &StoredRoom) -> Result<(), StoreError> {
        let mut inner = self.lock();
        match inner.rooms.get(&room.room.code) {
            // An expired room's code is free again, as after MongoDB's TTL deletion.
            Some(old) if !expired(old, room.room.created_at) => Err(StoreError::Duplicate),
            _ => {
                inner.rooms.insert(room.room.code.clone(), room.clone());
                Ok(())
            }
        }
    }

    async fn find(
        &self,
        code: &RoomCode,
        now: Timestamp,
    ) -> Result<Option<StoredRoom>, StoreError> {
        Ok(self
            .lock()
            .rooms
            .get(code)
            .filter(|r| !expired(r, now))
            .cloned())
    }

    async fn replace(&self, room: &StoredRoom, expected_revision: u64) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        match inner.rooms.get_mut(&room.room.code) {
            Some(current) if current.room.revision == expected_revision => {
                *current = room.clone();
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn purge_expired(&self, now: Timestamp) -> Result<u64, StoreError> {
        let mut inner = self.lock();
        let before = inner.rooms.len();
        inner.rooms.retain(|_, r| !expired(r, now));
        Ok((before - inner.rooms.len()) as u64)
    }

    async fn upsert_profile(&self, profile: &UserProfile) -> Result<(), StoreError> {
        self.lock()
            .profiles
            .insert(profile.id.clone(), profile.clone());
        Ok(())
    }

    async fn profile(&self, id: &UserId) -> Result<Option<UserProfile>, StoreError> {
        Ok(self.lock().profiles.get(id).cloned())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
