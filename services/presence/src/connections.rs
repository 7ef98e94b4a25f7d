//! Sockets: which one each session has now, replacing an older one, the grace period after
//! a socket closes, and the leave when nobody came back.

use std::sync::Arc;

use bytes::Bytes;
use p2piano_protocol::presence::{
    ConnRef, Connect, ConnectReply, Disconnect, DisconnectReply, EdgeControl, new_page_id,
};
use p2piano_protocol::{ErrorBody, RoomCode, UserId};

use crate::kv::{Entry, KvError};
use crate::presence::{CAS_ATTEMPTS, Presence, too_busy};
use crate::records::{ConnRecord, ConnState, decode, encode};

/// Whether a new socket of the session continues the membership of the previous socket,
/// whose record is in `state`: yes while that socket is open (a second socket takes over
/// silently) or when the same page comes back within its grace period; no for another page
/// after the grace period began, or once the leave is being announced.
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
        let session = self.touch_session(&req.session_id).await?;
        let key = req.session_id.storage_key();
        for _ in 0..CAS_ATTEMPTS {
            let current = self.read_conn(&key).await?;
            let same_page = current
                .as_ref()
                .is_some_and(|(_, old)| old.pid.is_some() && old.pid == req.pid);
            // Without a room, the session keeps the room it is still a member of: through a
            // socket that is still open (a second socket), or through the same page coming
            // back within its grace period.
            let carried = current.as_ref().and_then(|(_, old)| {
                continues_membership(&old.state, same_page)
                    .then(|| old.room_code.clone())
                    .flatten()
            });
            let pid = match &current {
                Some((_, old)) if same_page => old.pid.clone(),
                _ => None,
            }
            .unwrap_or_else(new_page_id);
            let next = ConnRecord {
                user_id: session.user_id.clone(),
                edge_id: req.edge_id.clone(),
                conn_id: req.conn_id.clone(),
                room_code: req.room_code.clone().or(carried),
                pid: Some(pid.clone()),
                state: ConnState::Live,
            };
            let written = match &current {
                None => self.buckets.connections.create(&key, encode(&next)).await,
                Some((entry, _)) => {
                    self.buckets
                        .connections
                        .update(&key, encode(&next), entry.revision)
                        .await
                }
            };
            match written {
                Ok(_) => {}
                Err(KvError::WrongRevision) => continue,
                Err(e) => return Err(e.into()),
            }
            let Some((_, old)) = current else {
                return Ok(ConnectReply {
                    user_id: session.user_id,
                    replaced: None,
                    reconnect: false,
                    pid: Some(pid),
                });
            };
            let mut reply = self
                .after_takeover(&req, session.user_id, old, same_page)
                .await;
            reply.pid = Some(pid);
            return Ok(reply);
        }
        Err(too_busy())
    }

    /// What follows a connect that replaced an earlier record of the session.
    async fn after_takeover(
        &self,
        req: &Connect,
        user: UserId,
        old: ConnRecord,
        same_page: bool,
    ) -> ConnectReply {
        let same_socket = old.edge_id == req.edge_id && old.conn_id == req.conn_id;
        let replaced = match old.state {
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
        let member_of = if continues_membership(&old.state, same_page) {
            old.room_code.as_ref()
        } else {
            self.end_old_membership(req, &user, &old).await;
            None
        };
        let Some(requested) = req.room_code.as_ref() else {
            // No room asked for yet: nothing to leave, nothing rejoined.
            return ConnectReply {
                user_id: user,
                replaced,
                reconnect: false,
                pid: None,
            };
        };
        let reconnect = member_of == Some(requested);
        if reconnect && matches!(old.state, ConnState::Grace { .. }) {
            self.metrics.reconnects.inc();
        }
        if let Some(previous) = member_of.filter(|r| *r != requested) {
            // The session moved to another room: its old membership ends now, no grace.
            self.leave_room(previous, &user).await;
        }
        ConnectReply {
            user_id: user,
            replaced,
            reconnect,
            pid: None,
        }
    }

    /// The previous socket's membership does not carry over to this one; make sure it has
    /// ended before the caller joins, so that rooms announces a leave and then a join.
    ///
    /// - In its grace period, and this is another page (a reload, a new tab after the old
    ///   one closed without a close frame): the leave is announced now.
    /// - `leaving` (a leave being announced, by this replica or another): it is finished
    ///   here too, before this socket joins the same room, so that the join cannot reach
    ///   rooms before the leave and be undone by it. Rooms' leave is idempotent, so the
    ///   second call announces nothing twice.
    async fn end_old_membership(&self, req: &Connect, user: &UserId, old: &ConnRecord) {
        let Some(code) = old.room_code.as_ref() else {
            return;
        };
        match old.state {
            ConnState::Grace { .. } => {
                self.metrics.new_pages.inc();
                self.leave_room(code, user).await;
            }
            ConnState::Leaving { .. } if req.room_code.as_ref() == Some(code) => {
                self.leave_room(code, user).await;
            }
            _ => {}
        }
    }

    /// `disconnect`: if this socket is still the session's current one, start the grace
    /// period, or, when the page went away (`leave`), end its membership at once; a stale
    /// disconnect (an older, replaced socket) changes nothing.
    #[tracing::instrument(skip_all, fields(edge_id = %req.edge_id, conn_id = %req.conn_id, leave = req.leave))]
    pub async fn disconnect(
        self: &Arc<Self>,
        req: Disconnect,
    ) -> Result<DisconnectReply, ErrorBody> {
        let key = req.session_id.storage_key();
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
        for _ in 0..CAS_ATTEMPTS {
            let Some((entry, mut record)) = self.read_conn(key).await? else {
                return Ok(false);
            };
            if matches!(record.state, ConnState::Leaving { .. }) || !is_it(&record) {
                return Ok(false);
            }
            record.state = ConnState::Leaving { since: self.now() };
            match self
                .buckets
                .connections
                .update(key, encode(&record), entry.revision)
                .await
            {
                Ok(claimed) => {
                    self.metrics.pages_gone.inc();
                    self.finish_leave(key, &record, claimed).await;
                    return Ok(true);
                }
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
        let done = match &record.room_code {
            Some(code) => self.leave_room(code, &record.user_id).await,
            None => true,
        };
        if done {
            // Only forget the socket if nothing changed since the claim (a connect may
            // have taken the key over; then it is that socket's record now).
            let _ = self.buckets.connections.delete(key, Some(claimed)).await;
        }
    }

    /// Moves `key` from live to grace if `is_it` accepts the live record; schedules the end.
    pub(crate) async fn start_grace(
        self: &Arc<Self>,
        key: &str,
        is_it: impl Fn(&ConnRecord) -> bool,
    ) -> Result<bool, ErrorBody> {
        for _ in 0..CAS_ATTEMPTS {
            let Some((entry, mut record)) = self.read_conn(key).await? else {
                return Ok(false);
            };
            if record.state != ConnState::Live || !is_it(&record) {
                return Ok(false);
            }
            let until = self.now().plus(self.settings.grace);
            record.state = ConnState::Grace { until };
            match self
                .buckets
                .connections
                .update(key, encode(&record), entry.revision)
                .await
            {
                Ok(_) => {
                    self.metrics.grace_started.inc();
                    self.schedule(key.to_owned(), until);
                    return Ok(true);
                }
                Err(KvError::WrongRevision) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(too_busy())
    }

    /// The end of a grace period (or the retry of an abandoned leave): if the record is
    /// still in grace past its deadline, claim the leave, announce it through rooms, and
    /// forget the socket.
    #[tracing::instrument(skip_all)]
    pub(crate) async fn expire(self: &Arc<Self>, key: &str) {
        let Ok(Some((entry, mut record))) = self.read_conn(key).await else {
            return;
        };
        let now = self.now();
        let due = match record.state {
            ConnState::Live => false,
            ConnState::Grace { until } => until <= now,
            ConnState::Leaving { since } => {
                now.millis() - since.millis() >= self.settings.stale_leaving().as_millis() as i64
            }
        };
        if !due {
            if let ConnState::Grace { until } = record.state {
                self.schedule(key.to_owned(), until);
            }
            return;
        }
        record.state = ConnState::Leaving { since: now };
        let claimed = match self
            .buckets
            .connections
            .update(key, encode(&record), entry.revision)
            .await
        {
            Ok(rev) => rev,
            // Another replica claimed it, or the session came back: not ours to announce.
            Err(_) => return,
        };
        self.finish_leave(key, &record, claimed).await;
    }

    /// Asks rooms to remove the user; true when done (or nothing to do), false to retry later.
    async fn leave_room(&self, code: &RoomCode, user: &UserId) -> bool {
        match self.rooms.leave(code, user).await {
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

    /// Scans every connection record: schedules timers for grace periods this replica did
    /// not start (another replica's, or from before a restart) and retries abandoned leaves.
    #[tracing::instrument(skip_all)]
    pub(crate) async fn sweep(self: &Arc<Self>) {
        let keys = match self.buckets.connections.keys().await {
            Ok(k) => k,
            Err(e) => {
                tracing::debug!(error = %e, "sweep skipped");
                return;
            }
        };
        let dead = self.dead_edges().await;
        for key in keys {
            let Ok(Some((_, record))) = self.read_conn(&key).await else {
                continue;
            };
            match record.state {
                // A socket on an edge declared dead that edge_gone did not get to (it failed
                // half-way, or the socket registered as the edge died).
                ConnState::Live if dead.contains(&record.edge_id) => {
                    let edge = record.edge_id.clone();
                    if let Err(e) = self.start_grace(&key, |r| r.edge_id == edge).await {
                        tracing::debug!(error = %e, "socket of a dead edge not moved yet");
                    }
                }
                ConnState::Live => {}
                ConnState::Grace { until } => self.schedule(key, until),
                ConnState::Leaving { .. } => self.expire(&key).await,
            }
        }
    }

    /// Edges recorded as dead.
    async fn dead_edges(&self) -> std::collections::HashSet<String> {
        let mut dead = std::collections::HashSet::new();
        for edge in self.buckets.edges.keys().await.unwrap_or_default() {
            if let Ok(Some(e)) = self.buckets.edges.get(&edge).await
                && decode::<crate::records::EdgeRecord>(&edge, &e.value).is_some_and(|r| !r.alive)
            {
                dead.insert(edge);
            }
        }
        dead
    }

    /// The record of `key` with its entry, if present and readable.
    pub(crate) async fn read_conn(
        &self,
        key: &str,
    ) -> Result<Option<(Entry, ConnRecord)>, KvError> {
        Ok(self
            .buckets
            .connections
            .get(key)
            .await?
            .and_then(|e| decode(key, &e.value).map(|r| (e, r))))
    }

    /// Publishes a control message for one edge (best effort: a dead edge needs no telling).
    async fn send_control(&self, edge_id: &str, control: &EdgeControl) {
        let body = Bytes::from(serde_json::to_vec(control).unwrap_or_default());
        if let Err(e) = self
            .bus
            .publish(&self.subjects.edge_control(edge_id), body)
            .await
        {
            tracing::warn!(error = %e, edge_id, "could not send edge control");
        }
    }
}
