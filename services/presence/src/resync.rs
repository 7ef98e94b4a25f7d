//! Reconciliation with what an edge actually holds: the edge re-asserts its sockets (all of
//! them after presence declared it dead, the sockets of some digest buckets when their
//! digests disagree), and presence makes its records agree.
//!
//! For each socket the edge holds:
//! - its record is live: nothing to do;
//! - in its grace period (a false death, a disconnect that went astray): live again;
//! - missing, or leaving (its leave was announced while the socket was open): recreated,
//!   and the member restored to the room (rooms announces the join again);
//! - another socket of the session is live (the session moved on meanwhile): the edge is
//!   told to close this one as replaced.
//!
//! And the records of live sockets on that edge that the edge no longer holds (written
//! before presence asked, so not a socket that registered while the edge made its list)
//! enter their grace period, as if their disconnect had arrived.

use std::collections::HashSet;
use std::sync::Arc;

use futures::StreamExt;
use p2piano_protocol::ErrorBody;
use p2piano_protocol::presence::{HeldSocket, Resync, ResyncReply};

use crate::kv::KvError;
use crate::presence::{CAS_ATTEMPTS, Presence, too_busy};
use crate::records::{ConnRecord, ConnState};

/// Sockets of one part re-asserted at once.
const IN_FLIGHT: usize = 32;

/// What became of one re-asserted socket.
#[derive(Debug, PartialEq, Eq)]
enum Asserted {
    Unchanged,
    Restored,
    Rejoined,
    Stale,
}

impl Presence {
    /// `resync`: one part of an edge's re-assertion.
    #[tracing::instrument(skip_all, fields(edge_id = %req.edge_id, sockets = req.sockets.len()))]
    pub async fn resync(self: &Arc<Self>, req: Resync) -> Result<ResyncReply, ErrorBody> {
        let edge = req.edge_id.as_str();
        let results: Vec<(String, Result<Asserted, ErrorBody>)> =
            futures::stream::iter(req.sockets)
                .map(|socket| async move {
                    let conn = socket.conn_id.clone();
                    (conn, self.assert_socket(edge, socket).await)
                })
                .buffer_unordered(IN_FLIGHT)
                .collect()
                .await;
        let mut reply = ResyncReply::default();
        for (conn, result) in results {
            match result? {
                Asserted::Unchanged => {}
                Asserted::Restored => reply.restored += 1,
                Asserted::Rejoined => {
                    reply.restored += 1;
                    reply.rejoined += 1;
                }
                Asserted::Stale => reply.stale.push(conn),
            }
        }
        if let Some(held) = &req.held {
            let held: HashSet<&str> = held.iter().map(String::as_str).collect();
            for key in self
                .index
                .orphans(edge, req.before, req.buckets.as_deref(), &held)
            {
                let gone = self
                    .start_grace(&key, |r| {
                        r.edge_id == edge && !held.contains(r.conn_id.as_str())
                    })
                    .await?;
                reply.retired += u64::from(gone);
            }
        }
        self.metrics.resynced.inc_by(reply.restored);
        if reply.restored + reply.retired > 0 || !reply.stale.is_empty() {
            tracing::warn!(
                restored = reply.restored,
                rejoined = reply.rejoined,
                stale = reply.stale.len(),
                retired = reply.retired,
                "records made to agree with the sockets the edge holds"
            );
        }
        Ok(reply)
    }

    /// Makes the record of one socket the edge holds say so.
    async fn assert_socket(&self, edge: &str, s: HeldSocket) -> Result<Asserted, ErrorBody> {
        let key = crate::keys::session_key(&s.session_id);
        for attempt in 0..CAS_ATTEMPTS {
            let current = self.conn_of(&key, attempt > 0).await?;
            let ours = |r: &ConnRecord| r.edge_id == edge && r.conn_id == s.conn_id;
            let (expected, announced) = match &current {
                Some((_, r)) if ours(r) && r.state == ConnState::Live => {
                    return Ok(Asserted::Unchanged);
                }
                Some((rev, r)) if ours(r) => {
                    (Some(*rev), matches!(r.state, ConnState::Leaving { .. }))
                }
                // The session's current socket is another one, open: this one is stale.
                Some((_, r)) if self.effective(r) == ConnState::Live => {
                    return Ok(Asserted::Stale);
                }
                // Another socket's record that is gone or going: this open one takes over.
                Some((rev, r)) => (Some(*rev), matches!(r.state, ConnState::Leaving { .. })),
                None => (None, true),
            };
            let record = ConnRecord {
                user_id: s.user_id.clone(),
                edge_id: edge.to_owned(),
                conn_id: s.conn_id.clone(),
                room_code: s.room_code.clone(),
                pid: s.pid.clone(),
                state: ConnState::Live,
            };
            match self.write_conn(&key, &record, expected).await {
                Ok(_) => {}
                Err(KvError::WrongRevision) => continue,
                Err(e) => return Err(e.into()),
            }
            let Some(code) = s.room_code.as_ref().filter(|_| announced) else {
                return Ok(Asserted::Restored);
            };
            if let Some((_, r)) = &current
                && let ConnState::Leaving { since } = r.state
            {
                // A leave may still be on its way to rooms: finish it first, so that it
                // cannot land after the restore and undo it.
                self.leave_room(code, &s.user_id, since).await;
            }
            // The member was (or is being) announced as left: put them back.
            return match self.rooms.restore(code, &s.user_id).await {
                Ok(true) => Ok(Asserted::Rejoined),
                Ok(false) => Ok(Asserted::Restored),
                Err(e) => {
                    tracing::warn!(error = %e, code = %code, "member not restored yet");
                    Ok(Asserted::Restored)
                }
            };
        }
        Err(too_busy())
    }
}
