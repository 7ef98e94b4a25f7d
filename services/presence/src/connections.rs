//! Sockets: which one each session has now, replacing an older one, the grace period after
//! a socket closes, and the leave when nobody came back.

use std::sync::Arc;

use bytes::Bytes;
use p2piano_protocol::presence::{
    ConnRef, Connect, ConnectReply, Disconnect, DisconnectReply, EdgeControl,
};
use p2piano_protocol::{ErrorBody, RoomCode, UserId};

use crate::kv::{Entry, KvError};
use crate::presence::{CAS_ATTEMPTS, Presence, too_busy};
use crate::records::{ConnRecord, ConnState, decode, encode};

impl Presence {
    /// `connect`: this socket is now the session's current one.
    #[tracing::instrument(skip_all, fields(edge_id = %req.edge_id, conn_id = %req.conn_id, code = ?req.room_code))]
    pub async fn connect(self: &Arc<Self>, req: Connect) -> Result<ConnectReply, ErrorBody> {
        let session = self.touch_session(&req.session_id).await?;
        let key = req.session_id.storage_key();
        for _ in 0..CAS_ATTEMPTS {
            let current = self.read_conn(&key).await?;
            // Without a room, the session keeps the room it is still a member of.
            let carried = current.as_ref().and_then(|(_, old)| match old.state {
                ConnState::Leaving { .. } => None,
                _ => old.room_code.clone(),
            });
            let next = ConnRecord {
                user_id: session.user_id.clone(),
                edge_id: req.edge_id.clone(),
                conn_id: req.conn_id.clone(),
                room_code: req.room_code.clone().or(carried),
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
                });
            };
            return Ok(self.after_takeover(&req, session.user_id, old).await);
        }
        Err(too_busy())
    }

    /// What follows a connect that replaced an earlier record of the session.
    async fn after_takeover(&self, req: &Connect, user: UserId, old: ConnRecord) -> ConnectReply {
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
        // A `leaving` record means the leave is (being) announced: the member is gone.
        let member_of = match old.state {
            ConnState::Leaving { .. } => None,
            _ => old.room_code.as_ref(),
        };
        let Some(requested) = req.room_code.as_ref() else {
            // No room asked for yet: nothing to leave, nothing rejoined.
            return ConnectReply {
                user_id: user,
                replaced,
                reconnect: false,
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
        }
    }

    /// `disconnect`: if this socket is still the session's current one, start the grace
    /// period; a stale disconnect (an older, replaced socket) changes nothing.
    #[tracing::instrument(skip_all, fields(edge_id = %req.edge_id, conn_id = %req.conn_id))]
    pub async fn disconnect(
        self: &Arc<Self>,
        req: Disconnect,
    ) -> Result<DisconnectReply, ErrorBody> {
        let key = req.session_id.storage_key();
        let started = self
            .start_grace(&key, |r| {
                r.edge_id == req.edge_id && r.conn_id == req.conn_id
            })
            .await?;
        Ok(DisconnectReply {
            grace_started: started,
        })
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
