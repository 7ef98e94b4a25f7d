//! Sessions: a secret id for the cookie, a public user id for everyone else, and an idle
//! expiry that use refreshes.

use p2piano_protocol::presence::{SessionCreate, SessionCreated, SessionGet, SessionInfo};
use p2piano_protocol::{ErrorBody, ErrorCode, SessionId, UserId};

use crate::kv::KvError;
use crate::presence::Presence;
use crate::records::{SessionRecord, decode, encode};

fn not_found() -> ErrorBody {
    ErrorBody::new(ErrorCode::NotFound, "session not found")
}

impl Presence {
    /// `session_create`: a fresh secret and public id.
    #[tracing::instrument(skip_all)]
    pub async fn session_create(&self, req: SessionCreate) -> Result<SessionCreated, ErrorBody> {
        let now = self.now();
        let record = SessionRecord {
            user_id: UserId::random(),
            created_at: now,
            last_seen: now,
            ip: req.ip.map(|s| s.chars().take(64).collect()),
            user_agent: req.user_agent.map(|s| s.chars().take(256).collect()),
        };
        loop {
            let id = SessionId::random();
            match self
                .buckets
                .sessions
                .create(&id.storage_key(), encode(&record))
                .await
            {
                Ok(_) => {
                    return Ok(SessionCreated {
                        session_id: id,
                        user_id: record.user_id,
                        created_at: now,
                    });
                }
                // 2^-128: a collision means the RNG is broken, but retrying is still right.
                Err(KvError::WrongRevision) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// `session_get`: the session, its idle expiry refreshed; `not_found` once expired.
    #[tracing::instrument(skip_all)]
    pub async fn session_get(&self, req: SessionGet) -> Result<SessionInfo, ErrorBody> {
        self.touch_session(&req.session_id)
            .await
            .map(|r| SessionInfo {
                user_id: r.user_id,
                created_at: r.created_at,
                last_seen: r.last_seen,
            })
    }

    /// Reads a session and refreshes its expiry when the last refresh is old enough.
    pub(crate) async fn touch_session(&self, id: &SessionId) -> Result<SessionRecord, ErrorBody> {
        let key = id.storage_key();
        let entry = self
            .buckets
            .sessions
            .get(&key)
            .await?
            .ok_or_else(not_found)?;
        let mut record: SessionRecord = decode(&key, &entry.value).ok_or_else(not_found)?;
        let now = self.now();
        let age = now.millis() - record.last_seen.millis();
        if age >= self.settings.refresh_every().as_millis() as i64 {
            record.last_seen = now;
            match self
                .buckets
                .sessions
                .update(&key, encode(&record), entry.revision)
                .await
            {
                // Someone else refreshed it just now: as good.
                Ok(_) | Err(KvError::WrongRevision) => {}
                Err(e) => tracing::warn!(error = %e, "session refresh failed"),
            }
        }
        Ok(record)
    }
}
