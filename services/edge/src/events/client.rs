//! The client dialect's events (namespace `/api`), validated as docs/protocol.md lists them.
//! Payloads are taken by value: what is relayed is the sender's own map with the routing
//! fields removed, never a copy.

use p2piano_protocol::UserId;
use serde_json::{Map, Value};

use super::{
    Action, Event, Handling, MAX_BPM, MAX_LATENCY_BYTES, MAX_SYNC_MESSAGE, MAX_TICK_TYPE, MIN_BPM,
    Refusal, json_fits, opt_color, opt_display_name, opt_instrument, parse_targets,
};

fn int_in(obj: &Map<String, Value>, field: &str, min: u64, max: u64) -> Result<Value, Refusal> {
    match obj.get(field).and_then(Value::as_u64) {
        Some(n) if (min..=max).contains(&n) => Ok(Value::from(n)),
        _ => Err(Refusal::invalid(format!(
            "{field} must be an integer from {min} to {max}"
        ))),
    }
}

/// The payload minus the routing fields, for events relayed as the client sent them.
fn without_routing(mut obj: Map<String, Value>) -> Value {
    obj.remove("targetUserIds");
    obj.remove("userId");
    Value::Object(obj)
}

/// Validates the data of a relayed client-dialect event (also used for service-dialect
/// `peer-message`s of the same type, which web clients receive). Returns the data to relay:
/// only the fields the event has (a note's `note` and `velocity`), or, for events whose
/// fields the edge does not interpret (latency probes, CRDT sync), the sender's map less
/// its routing fields.
pub fn relay_data(event: Event, obj: Map<String, Value>) -> Result<Value, Refusal> {
    let mut data = Map::new();
    match event {
        Event::KeyDown => {
            data.insert("note".into(), int_in(&obj, "note", 0, 127)?);
            data.insert("velocity".into(), int_in(&obj, "velocity", 0, 127)?);
        }
        Event::KeyUp => {
            data.insert("note".into(), int_in(&obj, "note", 0, 127)?);
        }
        Event::SustainDown | Event::SustainUp | Event::MetronomeStart | Event::MetronomeStop => {}
        Event::SetBpm => {
            data.insert("bpm".into(), int_in(&obj, "bpm", MIN_BPM, MAX_BPM)?);
        }
        Event::MetronomeTick => match obj.get("type").and_then(Value::as_str) {
            Some(t) if t.chars().count() <= MAX_TICK_TYPE => {
                data.insert("type".into(), t.into());
            }
            _ => {
                return Err(Refusal::invalid(format!(
                    "type must be a string of at most {MAX_TICK_TYPE} characters"
                )));
            }
        },
        Event::LatencyPing | Event::LatencyPong => {
            let data = without_routing(obj);
            if !json_fits(&data, MAX_LATENCY_BYTES) {
                return Err(Refusal::too_large(format!(
                    "{} payload must be at most {MAX_LATENCY_BYTES} bytes",
                    event.name()
                )));
            }
            return Ok(data);
        }
        Event::AutomergeProtocol => {
            let bad = || Refusal::invalid("syncMessage must be a list of bytes (0 to 255)");
            let sync = obj
                .get("syncMessage")
                .and_then(Value::as_array)
                .ok_or_else(bad)?;
            if sync.len() > MAX_SYNC_MESSAGE {
                return Err(Refusal::too_large(format!(
                    "syncMessage must be at most {MAX_SYNC_MESSAGE} bytes"
                )));
            }
            if !sync.iter().all(|b| b.as_u64().is_some_and(|b| b <= 255)) {
                return Err(bad());
            }
            return Ok(without_routing(obj));
        }
        other => return Err(Refusal::invalid(format!("unknown event {}", other.name()))),
    }
    Ok(Value::Object(data))
}

/// Validates one client-dialect event from the sender `me`.
pub fn parse(name: &str, payload: Option<Value>, me: &UserId) -> Result<Action, Refusal> {
    let Some(event) = Event::of(crate::dialect::Dialect::Client, name) else {
        return Err(Refusal::invalid(format!("unknown event {name}")));
    };
    let Some(Value::Object(mut obj)) = payload else {
        return Err(Refusal::invalid(format!("{name} needs an object payload")));
    };
    match event.handling() {
        Handling::Signal => super::signal(&mut obj, "userId", "the target's user id", "signalData"),
        Handling::UpdateUser => {
            if let Some(claimed) = obj.get("userId").filter(|v| !v.is_null()) {
                let own = claimed
                    .as_str()
                    .and_then(|s| UserId::parse(s).ok())
                    .is_some_and(|u| &u == me);
                if !own {
                    return Err(Refusal::forbidden(
                        "USER_UPDATE may only change your own profile",
                    ));
                }
            }
            Ok(Action::UpdateUser {
                display_name: opt_display_name(obj.get("displayName"))?,
                color: opt_color(obj.get("color"))?,
                instrument: opt_instrument(obj.get("instrument"))?,
            })
        }
        Handling::Relay => {
            let to = parse_targets(obj.get("targetUserIds"), "targetUserIds")?;
            let data = relay_data(event, obj)?;
            Ok(Action::Relay {
                class: event.class(),
                event: event.name().to_owned(),
                to: Some(to),
                data,
            })
        }
        Handling::Join | Handling::Leave | Handling::PeerMessage => {
            Err(Refusal::invalid(format!("unknown event {name}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::socket::limits::Class;
    use serde_json::json;

    fn me() -> UserId {
        UserId::parse("00000000-0000-4000-8000-000000000001").unwrap()
    }

    const T: &str = "00000000-0000-4000-8000-000000000002";

    #[test]
    fn notes_are_validated_and_stripped() {
        let a = parse("KEY_DOWN", Some(json!({"note": 60, "velocity": 100, "targetUserIds": [T], "extra": 1, "userId": "x"})), &me()).unwrap();
        let Action::Relay {
            class,
            event,
            to,
            data,
        } = a
        else {
            panic!()
        };
        assert_eq!((class, event.as_str()), (Class::KeyDown, "KEY_DOWN"));
        assert_eq!(to.unwrap().len(), 1);
        assert_eq!(data, json!({"note": 60, "velocity": 100}));
        for bad in [
            json!({"note": 128, "velocity": 1, "targetUserIds": []}),
            json!({"note": -1, "velocity": 1, "targetUserIds": []}),
            json!({"note": "60", "velocity": 1, "targetUserIds": []}),
            json!({"note": 60.5, "velocity": 1, "targetUserIds": []}),
            json!({"note": 60, "velocity": 1}),
            json!({"note": 60, "velocity": 1, "targetUserIds": "all"}),
            json!({"note": 60, "velocity": 1, "targetUserIds": ["nope"]}),
            json!({"note": 60, "velocity": 1, "targetUserIds": vec![T; 51]}),
        ] {
            assert_eq!(
                parse("KEY_DOWN", Some(bad.clone()), &me())
                    .unwrap_err()
                    .status(),
                400,
                "{bad}"
            );
        }
        assert!(parse("KEY_DOWN", Some(json!("x")), &me()).is_err());
        assert!(parse("KEY_DOWN", None, &me()).is_err());
        assert_eq!(
            parse("EXPLODE", Some(json!({"targetUserIds": []})), &me())
                .unwrap_err()
                .status(),
            400
        );
    }

    #[test]
    fn signals_crdt_and_updates() {
        let s = parse(
            "SIGNAL",
            Some(json!({"userId": T, "signalData": {"type": "candidate", "candidate": {}}})),
            &me(),
        )
        .unwrap();
        assert!(matches!(s, Action::Signal { .. }));
        let big = json!({"userId": T, "signalData": {"sdp": "x".repeat(17 * 1024)}});
        assert_eq!(parse("SIGNAL", Some(big), &me()).unwrap_err().status(), 413);
        let sync = parse(
            "AUTOMERGE_PROTOCOL",
            Some(json!({"syncMessage": [0, 255], "targetUserIds": [T]})),
            &me(),
        )
        .unwrap();
        assert_eq!(sync.class(), Class::Crdt);
        assert_eq!(
            parse(
                "AUTOMERGE_PROTOCOL",
                Some(json!({"syncMessage": [256], "targetUserIds": []})),
                &me()
            )
            .unwrap_err()
            .status(),
            400
        );
        let other = parse(
            "USER_UPDATE",
            Some(json!({"userId": T, "displayName": "X"})),
            &me(),
        )
        .unwrap_err();
        assert_eq!(other.status(), 403);
        let own = parse("USER_UPDATE", Some(json!({"userId": me().as_str(), "displayName": "X", "color": "#fff", "instrument": "SYNTH"})), &me()).unwrap();
        assert!(matches!(own, Action::UpdateUser { .. }));
        assert_eq!(
            parse("USER_UPDATE", Some(json!({"color": "red"})), &me())
                .unwrap_err()
                .status(),
            400
        );
    }

    /// The web client of July 2025 sends the metronome's start, stop and tempo over the
    /// socket when no WebRTC link is up: relayed like a tick, the tempo an integer in range.
    #[test]
    fn metronome_start_stop_and_tempo_are_relayed() {
        for (name, payload, relayed) in [
            (
                "METRONOME_START",
                json!({"targetUserIds": [T], "x": 1}),
                json!({}),
            ),
            ("METRONOME_STOP", json!({"targetUserIds": []}), json!({})),
            (
                "SET_BPM",
                json!({"bpm": 120, "targetUserIds": [T]}),
                json!({"bpm": 120}),
            ),
        ] {
            let Ok(Action::Relay { class, data, .. }) = parse(name, Some(payload), &me()) else {
                panic!("{name} refused")
            };
            assert_eq!((class, data), (Class::Other, relayed), "{name}");
        }
        for bpm in [
            json!(0),
            json!(1000),
            json!(120.5),
            json!("120"),
            json!(null),
        ] {
            let bad = json!({"bpm": bpm, "targetUserIds": []});
            assert_eq!(
                parse("SET_BPM", Some(bad), &me()).unwrap_err().status(),
                400,
                "{bpm}"
            );
        }
    }
}
