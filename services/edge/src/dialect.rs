//! The two dialects of docs/protocol.md at the edge's outermost layer: how a membership event,
//! a relayed event or an error is written for a client of each.
//!
//! - [`Dialect::Client`]: the p2piano web client, namespace `/api`, upper-case events;
//! - [`Dialect::Service`]: this service's own API, namespace `/`, kebab-case events with acks.
//!
//! Every function here encodes one frame that the caller shares across all local
//! recipients of that dialect.

use axum::extract::ws::Utf8Bytes;
use p2piano_protocol::relay::{Relay, RelayKind};
use p2piano_protocol::{ErrorCode, MembersEvent, MembersEventKind, Timestamp, UserId};
use serde_json::{Value, json};

use crate::events::Event;
use crate::sio;

/// Which protocol a socket speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// The p2piano web client (namespace `/api`).
    Client,
    /// The service's own dialect (namespace `/`).
    Service,
}

/// A membership event as one dialect writes it, shared by all local recipients of that
/// dialect.
#[derive(Clone, Debug)]
pub struct MembersFrame {
    /// The event name, e.g. `USER_CONNECT` (a fixed set, so usable as a metric label).
    pub name: &'static str,
    /// The encoded frame.
    pub frame: Utf8Bytes,
    /// The user who must not get it: the joiner or leaver themselves.
    pub exclude: Option<UserId>,
}

impl Dialect {
    /// The namespace of the dialect.
    pub fn namespace(self) -> &'static str {
        match self {
            Dialect::Client => "/api",
            Dialect::Service => "/",
        }
    }

    /// The dialect served on a namespace, if any.
    pub fn of_namespace(ns: &str) -> Option<Self> {
        match ns {
            "/api" => Some(Dialect::Client),
            "/" => Some(Dialect::Service),
            _ => None,
        }
    }

    /// One event frame in this dialect's namespace.
    pub fn event(self, name: &str, payload: Option<&Value>) -> Utf8Bytes {
        let args: Vec<&Value> = payload.into_iter().collect();
        Utf8Bytes::from(sio::encode_event(self.namespace(), name, &args))
    }

    /// The frame for a membership event with its event name (for the metrics), and the user
    /// who must not get it (the joiner gets its own welcome instead). `None` when this
    /// dialect has no such event.
    pub fn members_frame(self, e: &MembersEvent) -> Option<MembersFrame> {
        let user = e.user_id.clone();
        match self {
            Dialect::Client => {
                let room = serde_json::to_value(e.room.to_client()).ok()?;
                let name = match e.kind {
                    MembersEventKind::Joined => "USER_CONNECT",
                    MembersEventKind::Left => "USER_DISCONNECT",
                    MembersEventKind::Updated => "USER_UPDATE",
                    MembersEventKind::Settings => return None,
                };
                let payload = json!({"userId": user, "room": room});
                let exclude = (e.kind != MembersEventKind::Updated)
                    .then_some(user)
                    .flatten();
                Some(MembersFrame {
                    name,
                    frame: self.event(name, Some(&payload)),
                    exclude,
                })
            }
            Dialect::Service => {
                let room = serde_json::to_value(e.room.to_view()).ok()?;
                let participant = user.as_ref().and_then(|u| e.room.participant(u));
                let (name, payload) = match e.kind {
                    MembersEventKind::Joined => {
                        ("user-joined", json!({"user": participant, "room": room}))
                    }
                    MembersEventKind::Left => ("user-left", json!({"userId": user, "room": room})),
                    MembersEventKind::Updated => {
                        ("user-updated", json!({"user": participant, "room": room}))
                    }
                    MembersEventKind::Settings => ("room-updated", json!({"room": room})),
                };
                let exclude = matches!(e.kind, MembersEventKind::Joined | MembersEventKind::Left)
                    .then_some(user)
                    .flatten();
                Some(MembersFrame {
                    name,
                    frame: self.event(name, Some(&payload)),
                    exclude,
                })
            }
        }
    }

    /// The frame for a relayed event with its event name (for the metrics); `None` when
    /// this dialect cannot receive it (a service-dialect `peer-message` type the web client
    /// does not know).
    pub fn relay_frame(self, r: &Relay) -> Option<(&'static str, Utf8Bytes)> {
        match (self, r.kind) {
            (Dialect::Client, RelayKind::Event) => {
                let name = Event::client_relay(&r.event)?.name();
                let Value::Object(data) = &r.data else {
                    return None;
                };
                let frame = sio::encode_client_relay(self.namespace(), name, data, r.from.as_str());
                Some((name, Utf8Bytes::from(frame)))
            }
            (Dialect::Client, RelayKind::Signal) => {
                let payload = json!({"signalData": r.data, "userId": r.from});
                Some(("SIGNAL", self.event("SIGNAL", Some(&payload))))
            }
            (Dialect::Service, RelayKind::Event) => {
                let payload = json!({"from": r.from, "type": r.event, "data": r.data});
                Some(("peer-message", self.event("peer-message", Some(&payload))))
            }
            (Dialect::Service, RelayKind::Signal) => {
                let payload = json!({"from": r.from, "signal": r.data});
                Some(("webrtc-signal", self.event("webrtc-signal", Some(&payload))))
            }
        }
    }

    /// An error for the sender of `event`: `exception` in the client dialect (with the
    /// code's HTTP status as its number), `error` in the service dialect (with the code's
    /// name).
    pub fn error_frame(self, event: &str, code: ErrorCode, message: &str) -> Utf8Bytes {
        match self {
            Dialect::Client => self.event(
                "exception",
                Some(&json!({
                    "status": "error",
                    "code": code.http_status(),
                    "message": message,
                    "event": event,
                    "timestamp": Timestamp::now(),
                })),
            ),
            Dialect::Service => self.event(
                "error",
                Some(&json!({"code": code.as_str(), "message": message, "event": event})),
            ),
        }
    }

    /// The frames that tell a replaced socket why it is being closed, then `41`.
    pub fn replaced_frames(self) -> [Utf8Bytes; 2] {
        let name = match self {
            Dialect::Client => "NEWER_CONNECTION",
            Dialect::Service => "session-replaced",
        };
        [
            self.event(name, None),
            Utf8Bytes::from(sio::encode_disconnect(self.namespace())),
        ]
    }
}
