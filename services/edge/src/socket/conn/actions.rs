//! A socket's client events: validated into actions, counted against the session's
//! budgets, carried out (relays, signals, profile and room changes), and answered (an ack,
//! or a refusal in the dialect's own form).

use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use p2piano_bus::Headers;
use p2piano_protocol::relay::{Relay, RelayKind};
use p2piano_protocol::rpc::UpdateUser;
use p2piano_protocol::{ErrorCode, UserId};
use serde_json::{Value, json};
use tracing::Instrument as _;

use super::{Conn, Fatal};
use crate::dialect::Dialect;
use crate::events::{self, Action, Refusal};
use crate::fanout::LocalRoom;
use crate::sio;
use crate::socket::limits::Verdict;

impl Conn {
    /// Handles one client event in an `edge.event` span, the root of the event's trace: the
    /// RPCs it makes and the relay it publishes carry the span's context, so that the
    /// services' spans and the deliveries on every edge join it. Named by the event's known
    /// name (see [`events::known_event`]), with how it ended as `outcome`.
    pub(super) async fn on_event(
        &mut self,
        dialect: Dialect,
        name: &str,
        payload: Option<Value>,
        ack: Option<u64>,
    ) -> Result<(), Fatal> {
        let span = tracing::info_span!(
            target: p2piano_telemetry::TRACE_TARGET,
            parent: None,
            "edge.event",
            otel.kind = "server",
            event = events::known_event(name),
            outcome = tracing::field::Empty,
        );
        self.handle_event(dialect, name, payload, ack)
            .instrument(span)
            .await
    }

    pub(super) async fn handle_event(
        &mut self,
        dialect: Dialect,
        name: &str,
        payload: Option<Value>,
        ack: Option<u64>,
    ) -> Result<(), Fatal> {
        self.edge.metrics.event_in(name);
        let Some((_, me)) = self.session.clone() else {
            return Err(Fatal(1002, "no session"));
        };
        let action = match dialect {
            Dialect::Client => events::client::parse(name, payload, &me),
            Dialect::Service => events::service::parse(name, payload),
        };
        let action = match action {
            Ok(a) => a,
            Err(r) => {
                self.edge.metrics.rejected.inc();
                outcome(r.code_name());
                self.refuse(name, ack, r).await;
                return Ok(());
            }
        };
        let Some(budget) = self.budget.as_ref() else {
            return Err(Fatal(1002, "no session"));
        };
        match budget.check(action.class()) {
            Verdict::Allow => {}
            Verdict::Refuse => {
                self.edge.metrics.rate_limited.inc();
                outcome("rate_limited");
                let r = Refusal::new(
                    ErrorCode::RateLimited,
                    "Rate limit exceeded. Please slow down.",
                );
                self.refuse(name, ack, r).await;
                return Ok(());
            }
            Verdict::Disconnect => {
                outcome("disconnected");
                // The close itself is the security event (recorded where the socket closes).
                self.edge.budgets.cool_down(&me);
                return Err(Fatal(1008, "rate limits exceeded for too long"));
            }
        }
        match self.act(dialect, name, action, &me).await {
            Ok(reply) => {
                outcome("ok");
                self.ack(ack, reply.unwrap_or_else(|| json!({"ok": true})))
                    .await
            }
            Err(r) => {
                outcome(r.code_name());
                self.refuse(name, ack, r).await
            }
        }
        Ok(())
    }

    /// Carries out a valid action; `Ok(Some(v))` is the ack body for the service dialect.
    pub(super) async fn act(
        &mut self,
        dialect: Dialect,
        name: &str,
        action: Action,
        me: &UserId,
    ) -> Result<Option<Value>, Refusal> {
        match action {
            Action::Relay {
                event, to, data, ..
            } => {
                let room = self.room()?;
                let to = match to {
                    Some(list) => {
                        let members = self.same_room(dialect, name, &room, list, me).await?;
                        if members.is_empty() {
                            return Ok(None);
                        }
                        Some(members)
                    }
                    None => None,
                };
                let relay = Relay {
                    from: me.clone(),
                    to,
                    kind: RelayKind::Event,
                    event,
                    data,
                };
                self.publish(&room, relay).await?;
                Ok(None)
            }
            Action::Signal { to, signal } => {
                let room = self.room()?;
                if self
                    .same_room(dialect, name, &room, vec![to.clone()], me)
                    .await?
                    .is_empty()
                {
                    return Ok(None);
                }
                let relay = Relay {
                    from: me.clone(),
                    to: Some(vec![to]),
                    kind: RelayKind::Signal,
                    event: "SIGNAL".into(),
                    data: signal,
                };
                self.publish(&room, relay).await?;
                Ok(None)
            }
            other => Box::pin(self.act_control(dialect, name, other, me)).await,
        }
    }

    /// The rarer actions (profile changes, joins, leaves), which wait on RPCs. They run in
    /// their own boxed future so that the socket task's state, which is sized for its
    /// largest await, stays small: it lives as long as the socket, these only while they
    /// run.
    pub(super) async fn act_control(
        &mut self,
        dialect: Dialect,
        name: &str,
        action: Action,
        me: &UserId,
    ) -> Result<Option<Value>, Refusal> {
        match action {
            Action::Relay { .. } | Action::Signal { .. } => {
                Err(Refusal::invalid(format!("unexpected event {name}")))
            }
            Action::UpdateUser {
                display_name,
                color,
                instrument,
            } => {
                let room = self.room()?;
                let req = UpdateUser {
                    code: room.code().clone(),
                    user_id: me.clone(),
                    display_name,
                    instrument,
                    color,
                };
                let reply = self
                    .edge
                    .rpc
                    .update_user(&req)
                    .await
                    .map_err(Refusal::from)?;
                Ok(Some(json!({"ok": true, "user": reply.user})))
            }
            Action::Join {
                code,
                display_name,
                instrument,
            } => {
                if dialect != Dialect::Service {
                    return Err(Refusal::invalid(format!("unknown event {name}")));
                }
                self.leave(true).await;
                let (room, reply) = self
                    .join(&code, display_name, instrument, dialect)
                    .await
                    .map_err(Refusal::from)?;
                self.enter(room, me.clone(), dialect, None);
                Ok(Some(
                    json!({"ok": true, "room": reply.room.to_view(), "you": reply.user}),
                ))
            }
            Action::Leave => {
                if self.joined.is_none() {
                    return Err(Refusal::invalid("not in a room"));
                }
                self.leave(true).await;
                Ok(None)
            }
        }
    }

    pub(super) fn room(&self) -> Result<Arc<LocalRoom>, Refusal> {
        self.joined
            .as_ref()
            .map(|j| j.room.clone())
            .ok_or_else(|| Refusal::forbidden("join a room first"))
    }

    /// Keeps the targets that are members of the room, other than the sender (nothing is
    /// ever relayed back to its sender, whatever the targets say). Targets outside the room
    /// are dropped: quietly in the client dialect, whose web client keeps addressing players
    /// for a while after they left (counted, logged at debug), and reported to the sender in
    /// the service dialect, whose clients ask for acknowledgements (an error when no target
    /// is left).
    pub(super) async fn same_room(
        &self,
        dialect: Dialect,
        name: &str,
        room: &LocalRoom,
        targets: Vec<UserId>,
        me: &UserId,
    ) -> Result<Vec<UserId>, Refusal> {
        let (members, outsiders): (Vec<UserId>, Vec<UserId>) = targets
            .into_iter()
            .filter(|t| t != me)
            .partition(|t| room.is_member(t));
        if outsiders.is_empty() {
            return Ok(members);
        }
        if dialect == Dialect::Client {
            self.edge
                .metrics
                .dropped_targets
                .inc_by(outsiders.len() as u64);
            tracing::debug!(
                event = events::known_event(name),
                dropped = outsiders.len(),
                "targets outside the room dropped"
            );
            return Ok(members);
        }
        let refusal = Refusal::forbidden(format!(
            "{} target(s) are not members of your room",
            outsiders.len()
        ));
        if members.is_empty() {
            return Err(refusal);
        }
        self.refuse(name, None, refusal).await;
        Ok(members)
    }

    /// Relays to the room: to this edge's other members at once, and over the bus to the
    /// other edges, with the current event's trace context in its headers so that every
    /// edge's delivery joins the sender's trace.
    pub(super) async fn publish(&self, room: &LocalRoom, relay: Relay) -> Result<(), Refusal> {
        let mut headers = Headers::new();
        p2piano_telemetry::inject_context(&mut headers);
        self.edge
            .registry
            .relay(room, relay, headers)
            .await
            .map(|_| ())
            .map_err(|e| {
                tracing::debug!(error = %e, "relay not published");
                Refusal::new(ErrorCode::Unavailable, "relay unavailable, try again")
            })
    }

    pub(super) async fn ack(&self, ack: Option<u64>, body: Value) {
        if let (Some(id), Some(dialect)) = (ack, self.dialect) {
            self.send(Utf8Bytes::from(sio::encode_ack(
                dialect.namespace(),
                id,
                &[&body],
            )))
            .await;
        }
    }

    pub(super) async fn refuse(&self, event: &str, ack: Option<u64>, r: Refusal) {
        let dialect = self.dialect.unwrap_or(Dialect::Client);
        match (dialect, ack) {
            (Dialect::Service, Some(id)) => {
                let body =
                    json!({"ok": false, "error": {"code": r.code_name(), "message": r.message}});
                self.send(Utf8Bytes::from(sio::encode_ack(
                    dialect.namespace(),
                    id,
                    &[&body],
                )))
                .await;
            }
            _ => {
                self.send(dialect.error_frame(event, r.code, &r.message))
                    .await
            }
        }
    }
}

/// Records how the current client event ended on its `edge.event` span.
fn outcome(outcome: &'static str) {
    tracing::Span::current().record("outcome", outcome);
}
