//! Sockets: which one each session has now, replacing an older one, the grace period after
//! a socket's transport is lost, the leave when nobody came back, and the leave at once when
//! the page went away.

use std::sync::Arc;

use bytes::Bytes;
use p2piano_protocol::presence::{
    ConnRef, Connect, ConnectReply, Disconnect, DisconnectReply, EdgeControl, new_page_id,
};
use p2piano_protocol::{ErrorBody, RoomCode, Timestamp, UserId};

use crate::kv::KvError;
use crate::presence::{CAS_ATTEMPTS, Presence, too_busy};
use crate::records::{ConnRecord, ConnState};

/// Whether a new socket of the session continues the membership of the previous socket,
/// whose record is (effectively) in `state`: yes while that socket is open (a second socket
/// takes over silently) or when the same page comes back within its grace period; no for
/// another page after the grace period began, or once the leave is being announced.
fn continues_membership(state: &ConnState, same_page: bool) -> bool {
    match state {
        ConnState::Live => true,
        ConnState::Grace { .. } => same_page,
        ConnState::Leaving { .. } => false,
    }
}

impl Presence {
    /// `connect`: this socket is now the session's current one.
    #[tracing::instrument(skip_all, fields(edge_id = %req.edge_id, conn_id = %req.conn_id, code = ?req.room_code))]
    pub async fn connect(self: &Arc<Self>, req: Connect) -> Result<ConnectReply, ErrorBody> {
        // The edge has just looked the session up (and so refreshed it); it passes the
        // public id along, which spares a read here.
        let user_id = match req.user_id.clone() {
            Some(u) => u,
            None => self.touch_session(&req.session_id).await?.user_id,
        };
        let key = crate::keys::session_key(&req.session_id);
        for attempt in 0..CAS_ATTEMPTS {
            let current = self.conn_or_absent(&key, attempt > 0).await?;
            let same_page = current
                .as_ref()
                .is_some_and(|(_, old)| old.pid.is_some() && old.pid == req.pid);
            let old_state = current.as_ref().map(|(_, old)| self.effective(old));
            // Without a room, the session keeps the room it is still a member of: through a
            // socket that is still open (a second socket), or through the same page coming
            // back within its grace period.
            let carried = match (&current, &old_state) {
                (Some((_, old)), Some(state)) if continues_membership(state, same_page) => {
                    old.room_code.clone()
                }
                _ => None,
            };
            let pid = match &current {
                Some((_, old)) if same_page => old.pid.clone(),
                _ => None,
            }
            .unwrap_or_else(new_page_id);
            let next = ConnRecord {
                user_id: user_id.clone(),
                edge_id: req.edge_id.clone(),
                conn_id: req.conn_id.clone(),
                room_code: req.room_code.clone().or(carried),
                pid: Some(pid.clone()),
                state: ConnState::Live,
            };
            match self
                .write_conn(&key, &next, current.as_ref().map(|(rev, _)| *rev))
                .await
            {
                Ok(_) => {}
                Err(KvError::WrongRevision) => continue,
                Err(e) => return Err(e.into()),
            }
            let (Some((_, old)), Some(old_state)) = (current, old_state) else {
                return Ok(ConnectReply {
                    user_id,
                    replaced: None,
                    reconnect: false,
                    pid: Some(pid),
                    renew: false,
                });
            };
            let mut reply = self
                .after_takeover(&req, user_id, old, old_state, same_page)
                .await;
            reply.pid = Some(pid);
            return Ok(reply);
        }
        Err(too_busy())
    }

    /// What follows a connect that replaced an earlier record of the session, which was
    /// (effectively) in `old_state`.
    async fn after_takeover(
        &self,
        req: &Connect,
        user: UserId,
        old: ConnRecord,
        old_state: ConnState,
        same_page: bool,
    ) -> ConnectReply {
        let same_socket = old.edge_id == req.edge_id && old.conn_id == req.conn_id;
        let replaced = match old_state {
            ConnState::Live if !same_socket => {
                self.metrics.replaced.inc();
                self.send_control(
                    &old.edge_id,
                    &EdgeControl::Replace {
                        conn_id: old.conn_id.clone(),
                    },
                )
                .await;
                Some(ConnRef {
                    edge_id: old.edge_id.clone(),
                    conn_id: old.conn_id.clone(),
                })
            }
            _ => None,
        };
        let mut reply = ConnectReply {
            user_id: user,
            replaced,
            reconnect: false,
            pid: None,
            renew: false,
        };
        let Some(old_room) = old.room_code.as_ref() else {
            return reply;
        };
        let requested = req.room_code.as_ref();
        if continues_membership(&old_state, same_page) {
            if requested == Some(old_room) {
                reply.reconnect = true;
                if matches!(old_state, ConnState::Grace { .. }) {
                    self.metrics.reconnects.inc();
                }
            } else if requested.is_some() {
                // The session moved to another room: its old membership ends now, no grace.
                self.leave_room(old_room, &reply.user_id, self.now()).await;
            }
            return reply;
        }
        match old_state {
            // Another page than the one in its grace period (a reload): joining the same
            // room again renews the membership, which announces a leave and a join; for
            // another room, or none yet, the old membership ends now.
            ConnState::Grace { .. } => {
                self.metrics.new_pages.inc();
                if requested == Some(old_room) {
                    reply.renew = true;
                } else {
                    self.leave_room(old_room, &reply.user_id, self.now()).await;
                }
            }
            // A leave being announced (by this replica or another): finished here too
            // before this socket joins the same room, so that the join cannot reach rooms
            // before the leave and be undone by it. Rooms' leave is idempotent.
            ConnState::Leaving { since } if requested == Some(old_room) => {
                self.leave_room(old_room, &reply.user_id, since).await;
            }
            _ => {}
        }
        reply
    }

    /// `disconnect`: if this socket is still the session's current one, start the grace
    /// period, or, when the page went away (`leave`), end its membership at once; a stale
    /// disconnect (an older, replaced socket) changes nothing but the budgets it carries,
    /// which are kept with the session either way.
    #[tracing::instrument(skip_all, fields(edge_id = %req.edge_id, conn_id = %req.conn_id, leave = req.leave))]
    pub async fn disconnect(
        self: &Arc<Self>,
        req: Disconnect,
    ) -> Result<DisconnectReply, ErrorBody> {
        if let Some(budget) = req.budget.clone() {
            self.keep_budget(&req.session_id, budget).await;
        }
        let key = crate::keys::session_key(&req.session_id);
        let is_it = |r: &ConnRecord| r.edge_id == req.edge_id && r.conn_id == req.conn_id;
        if req.leave {
            let left = self.leave_now(&key, is_it).await?;
            return Ok(DisconnectReply {
                grace_started: false,
                left,
            });
        }
        let started = self.start_grace(&key, is_it).await?;
        Ok(DisconnectReply {
            grace_started: started,
            left: false,
        })
    }

    /// Ends `key`'s membership now if `is_it` accepts its record (open or in its grace
    /// period): claims the leave as the grace expiry does, announces it through rooms and
    /// forgets the socket. False when the record is another socket's or already leaving.
    pub(crate) async fn leave_now(
        self: &Arc<Self>,
        key: &str,
        is_it: impl Fn(&ConnRecord) -> bool,
    ) -> Result<bool, ErrorBody> {
        let since = self.now();
        let claimed = self
            .change_conn(key, |mut record| {
                if matches!(record.state, ConnState::Leaving { .. }) || !is_it(&record) {
                    return None;
                }
                record.state = ConnState::Leaving { since };
                Some(record)
            })
            .await?;
        let Some((record, revision)) = claimed else {
            return Ok(false);
        };
        self.metrics.pages_gone.inc();
        self.finish_leave(key, &record, revision).await;
        Ok(true)
    }

    /// Compare-and-set of `key`'s record: `change` gets the current record and returns
    /// what to write in its place, or `None` to leave it be. A lost race reads the record
    /// again (fresh, past the index) and asks `change` again. The record as written and
    /// its new revision; `None` when there is no record or `change` declined.
    async fn change_conn(
        &self,
        key: &str,
        change: impl Fn(ConnRecord) -> Option<ConnRecord>,
    ) -> Result<Option<(ConnRecord, u64)>, ErrorBody> {
        for attempt in 0..CAS_ATTEMPTS {
            let Some((revision, record)) = self.conn_of(key, attempt > 0).await? else {
                return Ok(None);
            };
            let Some(record) = change(record) else {
                return Ok(None);
            };
            match self.write_conn(key, &record, Some(revision)).await {
                Ok(written) => return Ok(Some((record, written))),
                Err(KvError::WrongRevision) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(too_busy())
    }

    /// After a won `leaving` claim (revision `claimed`): announces the leave through rooms
    /// and forgets the socket. If rooms cannot be reached the record stays `leaving`, and a
    /// sweep retries it once the claim is stale.
    async fn finish_leave(&self, key: &str, record: &ConnRecord, claimed: u64) {
        let decided = match record.state {
            ConnState::Leaving { since } => since,
            _ => self.now(),
        };
        let done = match &record.room_code {
            Some(code) => self.leave_room(code, &record.user_id, decided).await,
            None => true,
        };
        if done {
            // Only forget the socket if nothing changed since the claim (a connect may
            // have taken the key over; then it is that socket's record now).
            let _ = self.delete_conn(key, claimed).await;
        }
    }

    /// Moves `key` from live to grace if `is_it` accepts the live record; schedules the end.
    pub(crate) async fn start_grace(
        self: &Arc<Self>,
        key: &str,
        is_it: impl Fn(&ConnRecord) -> bool,
    ) -> Result<bool, ErrorBody> {
        let until = self.now().plus(self.settings.grace);
        let moved = self
            .change_conn(key, |mut record| {
                if self.effective(&record) != ConnState::Live || !is_it(&record) {
                    return None;
                }
                record.state = ConnState::Grace { until };
                Some(record)
            })
            .await?;
        if moved.is_none() {
            return Ok(false);
        }
        self.metrics.grace_started.inc();
        self.schedule(key.to_owned(), until);
        Ok(true)
    }

    /// The end of a grace period (its own, or its dead edge's), or the retry of an
    /// abandoned leave: if the record is still in grace past its deadline, claim the leave,
    /// announce it through rooms, and forget the socket.
    #[tracing::instrument(skip_all)]
    pub(crate) async fn expire(self: &Arc<Self>, key: &str) {
        // The index's view first; a lost compare-and-set reads the record once more, in
        // case only the index was behind.
        for fresh in [false, true] {
            let Ok(Some((revision, mut record))) = self.conn_of(key, fresh).await else {
                return;
            };
            let now = self.now();
            let due = match self.effective(&record) {
                ConnState::Live => false,
                ConnState::Grace { until } => {
                    if until > now {
                        self.schedule(key.to_owned(), until);
                    }
                    until <= now
                }
                ConnState::Leaving { since } => {
                    now.millis() - since.millis()
                        >= self.settings.stale_leaving().as_millis() as i64
                }
            };
            if !due {
                return;
            }
            record.state = ConnState::Leaving { since: now };
            match self.write_conn(key, &record, Some(revision)).await {
                Ok(claimed) => return self.finish_leave(key, &record, claimed).await,
                // Another replica claimed it, or the session came back (or the index was
                // behind): look again.
                Err(KvError::WrongRevision) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "grace expiry not recorded; the sweep retries");
                    return;
                }
            }
        }
    }

    /// Asks rooms to remove the user, if their membership began no later than `decided`
    /// (when this leave was decided; a late leave then cannot undo a newer membership); true
    /// when done (or nothing to do), false to retry later.
    pub(crate) async fn leave_room(
        &self,
        code: &RoomCode,
        user: &UserId,
        decided: Timestamp,
    ) -> bool {
        match self.rooms.leave(code, user, Some(decided)).await {
            Ok(left) => {
                if left {
                    self.metrics.leaves.inc();
                }
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, code = %code, "leave not announced yet, will retry");
                false
            }
        }
    }

    /// Goes over the index: schedules timers for grace periods this replica did not start
    /// (another replica's, or from before a restart), retries abandoned leaves, and ends the
    /// grace of the sockets of edges that died (here or in another replica) and are due.
    #[tracing::instrument(skip_all)]
    pub(crate) async fn sweep(self: &Arc<Self>) {
        let now = self.now();
        let mut dead_due = std::collections::HashSet::new();
        for (key, indexed) in self.index.all_conns() {
            let record = &indexed.record;
            match self.effective(record) {
                ConnState::Live => {}
                ConnState::Grace { until } if record.state == ConnState::Live => {
                    // Live on a dead edge: that edge's timer ends them all at once.
                    if until <= now {
                        dead_due.insert(record.edge_id.clone());
                    }
                }
                ConnState::Grace { until } => self.schedule(key, until),
                ConnState::Leaving { since } => {
                    let stale = self.settings.stale_leaving().as_millis() as i64;
                    if now.millis() - since.millis() >= stale {
                        self.expire(&key).await;
                    }
                }
            }
        }
        for edge in dead_due {
            self.expire_edge_later(&edge, now);
        }
    }

    /// Publishes a control message for one edge (best effort: a dead edge needs no telling).
    pub(crate) async fn send_control(&self, edge_id: &str, control: &EdgeControl) {
        let body = match serde_json::to_vec(control) {
            Ok(b) => Bytes::from(b),
            Err(e) => {
                tracing::error!(error = %e, "edge control not encodable");
                return;
            }
        };
        if let Err(e) = self
            .bus
            .publish(&self.subjects.edge_control(edge_id), body)
            .await
        {
            tracing::warn!(error = %e, edge_id, "could not send edge control");
        }
    }
}
