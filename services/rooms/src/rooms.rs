//! The room rules: create, read, settings, join, leave and profile updates, written once
//! over any [`RoomStore`].
//!
//! Each change is read → decide → write-if-unchanged (the store's revision check), retried
//! when another writer won. So 20 joins racing for 16 places, from any number of replicas,
//! end with exactly 16 members with distinct colours and 4 `full` refusals.

use std::sync::Arc;
use std::time::Duration;

use p2piano_protocol::rpc::{
    CreateRoom, GetRoom, JoinReply, JoinRoom, LeaveReply, LeaveRoom, UpdateRoom, UpdateUser,
    UpdateUserReply,
};
use p2piano_protocol::validate::next_color;
use p2piano_protocol::{
    DisplayName, ErrorBody, ErrorCode, MembersEvent, MembersEventKind, Participant, Room, RoomCode,
    RoomSettings, UserId,
};
use rand::Rng;

use crate::store::{RoomStore, StoreError, StoredRoom, UserProfile};
use p2piano_clock::Clock;

/// How many codes `create` tries before giving up with `conflict`. With 31^5 ≈ 28.6 M codes
/// even a million live rooms collide on a random code 3.5% of the time, so eight tries
/// failing means something else is wrong.
const CREATE_ATTEMPTS: usize = 8;
/// How many times a change is retried after losing a revision race.
const CHANGE_ATTEMPTS: u32 = 64;

/// Source of new room codes; random in production, scripted in tests that force collisions.
pub type CodeSource = Arc<dyn Fn() -> RoomCode + Send + Sync>;

/// The outcome of an operation that may have changed a room: the reply value, and the
/// membership events to publish, in order, when something was committed.
#[derive(Debug)]
pub struct Outcome<T> {
    /// What the caller gets back.
    pub reply: T,
    /// What the others are told (nothing when nothing changed; a leave and a join for a
    /// renewed member).
    pub events: Vec<MembersEvent>,
}

/// The room rules over a store.
#[derive(Clone)]
pub struct Rooms {
    store: Arc<dyn RoomStore>,
    clock: Clock,
    idle: Duration,
    codes: CodeSource,
}

impl From<StoreError> for ErrorBody {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Duplicate => ErrorBody::new(ErrorCode::Conflict, "room code already taken"),
            StoreError::Unavailable(detail) | StoreError::Corrupt(detail) => {
                // The detail may name hosts or driver internals: log it, tell the client less.
                tracing::warn!(error = %detail, "storage error");
                ErrorBody::new(
                    ErrorCode::Unavailable,
                    "storage is unavailable, try again later",
                )
            }
        }
    }
}

fn not_found() -> ErrorBody {
    ErrorBody::new(ErrorCode::NotFound, "room not found")
}

/// What a change function decided.
enum Decision<T> {
    /// Nothing to write; reply with this.
    Keep(T),
    /// Write the modified room; reply with this and publish an event of this kind.
    Write(T, MembersEventKind, Option<UserId>),
    /// Write the room unchanged but for two revisions, and publish that this member left
    /// (with the room as it would be without them) and joined again: a member's new page.
    Renew(T, UserId),
}

impl Rooms {
    /// Rules over `store`; rooms expire `idle` after they become empty.
    pub fn new(store: Arc<dyn RoomStore>, clock: Clock, idle: Duration) -> Self {
        let codes: CodeSource = Arc::new(|| RoomCode::random(&mut rand::rng()));
        Self {
            store,
            clock,
            idle,
            codes,
        }
    }

    /// Replaces the code generator (tests force duplicate codes with it).
    pub fn with_code_source(mut self, codes: CodeSource) -> Self {
        self.codes = codes;
        self
    }

    /// The store, for readiness checks and purges.
    pub fn store(&self) -> &Arc<dyn RoomStore> {
        &self.store
    }

    /// The clock in use.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// `create`: a new empty room owned by the caller, with a fresh random code.
    #[tracing::instrument(skip_all, fields(owner_id = %req.owner_id))]
    pub async fn create(&self, req: CreateRoom) -> Result<Room, ErrorBody> {
        let settings = match &req.settings {
            Some(patch) => RoomSettings::default().apply(patch)?,
            None => RoomSettings::default(),
        };
        for _ in 0..CREATE_ATTEMPTS {
            let now = self.clock.now();
            let room = Room {
                code: (self.codes)(),
                created_at: now,
                last_activity: now,
                owner_id: req.owner_id.clone(),
                participants: Vec::new(),
                settings: settings.clone(),
                revision: 1,
            };
            let stored = StoredRoom {
                expire_at: Some(now.plus(self.idle)),
                room,
            };
            match self.store.insert(&stored).await {
                Ok(()) => return Ok(stored.room),
                Err(StoreError::Duplicate) => {
                    tracing::debug!(code = %stored.room.code, "room code taken, retrying");
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(ErrorBody::new(
            ErrorCode::Conflict,
            "could not find a free room code",
        ))
    }

    /// `get`: the room, or `not_found` (also once it has expired).
    #[tracing::instrument(skip_all, fields(code = %req.code))]
    pub async fn get(&self, req: GetRoom) -> Result<Room, ErrorBody> {
        self.store
            .find(&req.code, self.clock.now())
            .await?
            .map(|s| s.room)
            .ok_or_else(not_found)
    }

    /// `update`: merges settings; only the owner may.
    #[tracing::instrument(skip_all, fields(code = %req.code, by = %req.by))]
    pub async fn update(&self, req: UpdateRoom) -> Result<Outcome<Room>, ErrorBody> {
        self.change(&req.code, |room| {
            if room.owner_id != req.by {
                return Err(ErrorBody::new(
                    ErrorCode::Forbidden,
                    "only the room's owner may change its settings",
                ));
            }
            let next = room.settings.apply(&req.settings)?;
            if next == room.settings {
                return Ok(Decision::Keep(()));
            }
            room.settings = next;
            Ok(Decision::Write((), MembersEventKind::Settings, None))
        })
        .await
        .map(|(room, (), events)| Outcome {
            reply: room,
            events,
        })
    }

    /// `join`: adds the user (idempotent), with the next free palette colour.
    #[tracing::instrument(skip_all, fields(code = %req.code, user_id = %req.user_id))]
    pub async fn join(&self, req: JoinRoom) -> Result<Outcome<JoinReply>, ErrorBody> {
        let profile = self.store.profile(&req.user_id).await?;
        let display_name = req
            .display_name
            .clone()
            .or_else(|| profile.as_ref().map(|p| p.display_name.clone()))
            .unwrap_or_else(DisplayName::anonymous);
        let instrument = req
            .instrument
            .or_else(|| profile.as_ref().map(|p| p.instrument))
            .unwrap_or_default();
        let now = self.clock.now();
        let (room, (user, rejoined), events) = self
            .change(&req.code, |room| {
                if let Some(p) = room.participant(&req.user_id) {
                    if req.renew {
                        return Ok(Decision::Renew((p.clone(), false), req.user_id.clone()));
                    }
                    return Ok(Decision::Keep((p.clone(), true)));
                }
                // The owner may always come back to their room; presence may put back a
                // member it wrongly announced as left.
                let privileged = req.restore || room.owner_id == req.user_id;
                if room.settings.locked && !privileged {
                    return Err(ErrorBody::new(ErrorCode::Forbidden, "room is locked"));
                }
                if room.participants.len() >= usize::from(room.settings.max_participants)
                    && !req.restore
                {
                    return Err(ErrorBody::new(ErrorCode::Full, "room is full"));
                }
                let user = Participant {
                    id: req.user_id.clone(),
                    display_name: display_name.clone(),
                    instrument,
                    color: next_color(room.participants.iter().map(|p| &p.color)),
                    joined_at: now,
                };
                room.participants.push(user.clone());
                Ok(Decision::Write(
                    (user, false),
                    MembersEventKind::Joined,
                    Some(req.user_id.clone()),
                ))
            })
            .await?;
        if !rejoined {
            self.remember(&user, &room.code).await;
        }
        Ok(Outcome {
            reply: JoinReply {
                room,
                user,
                rejoined,
            },
            events,
        })
    }

    /// `leave`: removes the user; leaving a room one is not in changes nothing. The owner
    /// keeps ownership after leaving, so that they can come back and still manage the room.
    #[tracing::instrument(skip_all, fields(code = %req.code, user_id = %req.user_id))]
    pub async fn leave(&self, req: LeaveRoom) -> Result<Outcome<LeaveReply>, ErrorBody> {
        self.change(&req.code, |room| {
            let before = room.participants.len();
            // A conditional leave spares a membership newer than its decision.
            room.participants.retain(|p| {
                p.id != req.user_id || req.joined_before.is_some_and(|t| p.joined_at > t)
            });
            if room.participants.len() == before {
                return Ok(Decision::Keep(false));
            }
            Ok(Decision::Write(
                true,
                MembersEventKind::Left,
                Some(req.user_id.clone()),
            ))
        })
        .await
        .map(|(room, left, events)| Outcome {
            reply: LeaveReply { room, left },
            events,
        })
    }

    /// `update_user`: changes a member's name, instrument or colour.
    #[tracing::instrument(skip_all, fields(code = %req.code, user_id = %req.user_id))]
    pub async fn update_user(
        &self,
        req: UpdateUser,
    ) -> Result<Outcome<UpdateUserReply>, ErrorBody> {
        let (room, user, events) = self
            .change(&req.code, |room| {
                let Some(p) = room.participants.iter_mut().find(|p| p.id == req.user_id) else {
                    return Err(ErrorBody::new(
                        ErrorCode::NotFound,
                        "not a member of this room",
                    ));
                };
                let before = p.clone();
                if let Some(n) = &req.display_name {
                    p.display_name = n.clone();
                }
                if let Some(i) = req.instrument {
                    p.instrument = i;
                }
                if let Some(c) = &req.color {
                    p.color = c.clone();
                }
                if *p == before {
                    return Ok(Decision::Keep(p.clone()));
                }
                Ok(Decision::Write(
                    p.clone(),
                    MembersEventKind::Updated,
                    Some(req.user_id.clone()),
                ))
            })
            .await?;
        if !events.is_empty() {
            self.remember(&user, &room.code).await;
        }
        Ok(Outcome {
            reply: UpdateUserReply { room, user },
            events,
        })
    }

    /// Deletes expired rooms now (the service also runs this periodically).
    pub async fn purge_expired(&self) -> Result<u64, StoreError> {
        self.store.purge_expired(self.clock.now()).await
    }

    /// Records the user's latest name and instrument as their profile. Best effort: the room
    /// change is already committed, and a missing profile only changes a future default.
    async fn remember(&self, user: &Participant, room: &RoomCode) {
        let profile = UserProfile {
            id: user.id.clone(),
            display_name: user.display_name.clone(),
            instrument: user.instrument,
            joined_at: user.joined_at,
            last_room: room.clone(),
        };
        if let Err(e) = self.store.upsert_profile(&profile).await {
            tracing::warn!(error = %e, user_id = %user.id, "could not save user profile");
        }
    }

    /// Read → decide → write-if-unchanged, retried on lost races. Returns the room as
    /// committed (or as read, when nothing changed), the decision's value and the events.
    async fn change<T>(
        &self,
        code: &RoomCode,
        mut decide: impl FnMut(&mut Room) -> Result<Decision<T>, ErrorBody>,
    ) -> Result<(Room, T, Vec<MembersEvent>), ErrorBody> {
        for attempt in 0..CHANGE_ATTEMPTS {
            let now = self.clock.now();
            let current = self.store.find(code, now).await?.ok_or_else(not_found)?;
            let mut room = current.room.clone();
            let (value, events) = match decide(&mut room)? {
                Decision::Keep(value) => return Ok((current.room, value, Vec::new())),
                Decision::Write(value, kind, user_id) => {
                    room.revision = current.room.revision + 1;
                    room.last_activity = now;
                    let event = MembersEvent {
                        kind,
                        user_id,
                        room: room.clone(),
                    };
                    (value, vec![event])
                }
                Decision::Renew(value, user_id) => {
                    // The leave as it would have been (revision + 1, without the member),
                    // then the join (revision + 2, the room as stored), so that every
                    // reader applies them in order and ends with the member in.
                    let mut without = room.clone();
                    without.participants.retain(|p| p.id != user_id);
                    without.revision = current.room.revision + 1;
                    without.last_activity = now;
                    room.revision = current.room.revision + 2;
                    room.last_activity = now;
                    let left = MembersEvent {
                        kind: MembersEventKind::Left,
                        user_id: Some(user_id.clone()),
                        room: without,
                    };
                    let joined = MembersEvent {
                        kind: MembersEventKind::Joined,
                        user_id: Some(user_id),
                        room: room.clone(),
                    };
                    (value, vec![left, joined])
                }
            };
            let expire_at = room.participants.is_empty().then(|| now.plus(self.idle));
            let next = StoredRoom { room, expire_at };
            if self.store.replace(&next, current.room.revision).await? {
                return Ok((next.room, value, events));
            }
            // Lost the race: back off a little, growing with contention, and retry.
            let jitter = rand::rng().random_range(0..=u64::from(attempt.min(10)) + 1);
            tokio::time::sleep(Duration::from_millis(jitter)).await;
        }
        Err(ErrorBody::new(
            ErrorCode::Conflict,
            "room is changing too fast, try again",
        ))
    }
}
