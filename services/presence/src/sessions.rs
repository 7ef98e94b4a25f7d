//! Sessions: a secret id for the cookie, a public user id for everyone else, and an idle
//! expiry that use refreshes.

use p2piano_protocol::budget::BudgetSnapshot;
use p2piano_protocol::presence::{SessionCreate, SessionCreated, SessionGet, SessionInfo};
use p2piano_protocol::{ErrorBody, ErrorCode, SessionId, UserId};

use crate::kv::KvError;
use crate::presence::{CAS_ATTEMPTS, Presence};
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
            budget: None,
        };
        let value = encode(&record)?;
        loop {
            let id = SessionId::random();
            match self
                .buckets
                .sessions
                .create(&crate::keys::session_key(&id), value.clone())
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
        let now = self.now();
        self.touch_session(&req.session_id)
            .await
            .map(|r| SessionInfo {
                user_id: r.user_id,
                created_at: r.created_at,
                last_seen: r.last_seen,
                budget: r.budget.filter(|b| b.is_relevant(now)),
            })
    }

    /// Keeps the budgets a session's closing socket left behind in its record, where the
    /// next `session_get` finds them whichever edge makes it. Best effort: a session that
    /// is gone, or a store that fails, only loses the hand-off (the edge's own table still
    /// holds the budgets there), so failures are logged and not returned.
    #[tracing::instrument(skip_all)]
    pub(crate) async fn keep_budget(&self, id: &SessionId, budget: BudgetSnapshot) {
        let key = crate::keys::session_key(id);
        for _ in 0..CAS_ATTEMPTS {
            let entry = match self.buckets.sessions.get(&key).await {
                Ok(Some(entry)) => entry,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "budget hand-off not kept");
                    return;
                }
            };
            let Some(mut record) = decode::<SessionRecord>(&key, &entry.value) else {
                return;
            };
            if record.budget.as_ref().is_some_and(|b| b.at > budget.at) {
                return;
            }
            record.budget = Some(budget.clone());
            match self.rewrite_session(&key, &record, entry.revision).await {
                Ok(_) => {
                    self.metrics.budgets_kept.inc();
                    return;
                }
                Err(KvError::WrongRevision) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "budget hand-off not kept");
                    return;
                }
            }
        }
    }

    /// Writes `record` over the session at `key` if it is still at `revision`.
    async fn rewrite_session(
        &self,
        key: &str,
        record: &SessionRecord,
        revision: u64,
    ) -> Result<u64, KvError> {
        let value = encode(record)?;
        self.buckets.sessions.update(key, value, revision).await
    }

    /// Reads a session and refreshes its expiry when the last refresh is old enough.
    pub(crate) async fn touch_session(&self, id: &SessionId) -> Result<SessionRecord, ErrorBody> {
        let key = crate::keys::session_key(id);
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
            match self.rewrite_session(&key, &record, entry.revision).await {
                // Someone else refreshed it just now: as good.
                Ok(_) | Err(KvError::WrongRevision) => {}
                Err(e) => tracing::warn!(error = %e, "session refresh failed"),
            }
        }
        Ok(record)
    }
}
