//! The client dialect's events (namespace `/api`), validated as docs/protocol.md lists them.

use p2piano_protocol::UserId;
use serde_json::{Map, Value};

use super::{
    Action, MAX_LATENCY_BYTES, MAX_SIGNAL_BYTES, MAX_SYNC_MESSAGE, MAX_TICK_TYPE, Refusal,
    json_len, opt_color, opt_display_name, opt_instrument, parse_targets,
};
use crate::socket::limits::Class;

fn int_in(obj: &Map<String, Value>, field: &str, max: u64) -> Result<Value, Refusal> {
    match obj.get(field).and_then(Value::as_u64) {
        Some(n) if n <= max => Ok(Value::from(n)),
        _ => Err(Refusal::invalid(format!(
            "{field} must be an integer from 0 to {max}"
        ))),
    }
}

/// The payload minus the routing fields, for events relayed as the client sent them.
fn without_routing(obj: &Map<String, Value>) -> Value {
    let mut data = obj.clone();
    data.remove("targetUserIds");
    data.remove("userId");
    Value::Object(data)
}

/// Validates the data of a relayed client-dialect event (also used for service-dialect
/// `peer-message`s of the same type, which web clients receive). Returns the data to relay.
pub fn relay_data(event: &str, obj: &Map<String, Value>) -> Result<(Class, Value), Refusal> {
    let mut data = Map::new();
    let class = match event {
        "KEY_DOWN" => {
            data.insert("note".into(), int_in(obj, "note", 127)?);
            data.insert("velocity".into(), int_in(obj, "velocity", 127)?);
            Class::KeyDown
        }
        "KEY_UP" => {
            data.insert("note".into(), int_in(obj, "note", 127)?);
            Class::KeyUp
        }
        "SUSTAIN_DOWN" | "SUSTAIN_UP" => Class::Pedal,
        "METRONOME_TICK" => {
            match obj.get("type").and_then(Value::as_str) {
                Some(t) if t.chars().count() <= MAX_TICK_TYPE => {
                    data.insert("type".into(), t.into())
                }
                _ => {
                    return Err(Refusal::invalid(format!(
                        "type must be a string of at most {MAX_TICK_TYPE} characters"
                    )));
                }
            };
            Class::Other
        }
        "LATENCY_PING" | "LATENCY_PONG" => {
            let data = without_routing(obj);
            if json_len(&data) > MAX_LATENCY_BYTES {
                return Err(Refusal::too_large(format!(
                    "{event} payload must be at most {MAX_LATENCY_BYTES} bytes"
                )));
            }
            return Ok((Class::Other, data));
        }
        "AUTOMERGE_PROTOCOL" => {
            let sync = obj
                .get("syncMessage")
                .and_then(Value::as_array)
                .ok_or_else(|| {
                    Refusal::invalid("syncMessage must be a list of bytes (0 to 255)")
                })?;
            if sync.len() > MAX_SYNC_MESSAGE {
                return Err(Refusal::too_large(format!(
                    "syncMessage must be at most {MAX_SYNC_MESSAGE} bytes"
                )));
            }
            if !sync.iter().all(|b| b.as_u64().is_some_and(|b| b <= 255)) {
                return Err(Refusal::invalid(
                    "syncMessage must be a list of bytes (0 to 255)",
                ));
            }
            return Ok((Class::Crdt, without_routing(obj)));
        }
        _ => return Err(Refusal::invalid(format!("unknown event {event}"))),
    };
    Ok((class, Value::Object(data)))
}

/// Validates one client-dialect event from the sender `me`.
pub fn parse(event: &str, payload: Option<&Value>, me: &UserId) -> Result<Action, Refusal> {
    let obj = payload
        .and_then(Value::as_object)
        .ok_or_else(|| Refusal::invalid(format!("{event} needs an object payload")))?;
    match event {
        "SIGNAL" => {
            let to = obj
                .get("userId")
                .and_then(Value::as_str)
                .and_then(|s| UserId::parse(s).ok())
                .ok_or_else(|| Refusal::invalid("userId must be the target's user id"))?;
            let signal = obj
                .get("signalData")
                .filter(|v| v.is_object())
                .cloned()
                .ok_or_else(|| Refusal::invalid("signalData must be an object"))?;
            if json_len(&signal) > MAX_SIGNAL_BYTES {
                return Err(Refusal::too_large(format!(
                    "signalData must be at most {MAX_SIGNAL_BYTES} bytes"
                )));
            }
            Ok(Action::Signal { to, signal })
        }
        "USER_UPDATE" => {
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
        _ => {
            let (class, data) = relay_data(event, obj)?;
            let to = parse_targets(obj.get("targetUserIds"), "targetUserIds")?;
            Ok(Action::Relay {
                class,
                event: event.to_owned(),
                to: Some(to),
                data,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn me() -> UserId {
        UserId::parse("00000000-0000-4000-8000-000000000001").unwrap()
    }

    const T: &str = "00000000-0000-4000-8000-000000000002";

    #[test]
    fn notes_are_validated_and_stripped() {
        let a = parse("KEY_DOWN", Some(&json!({"note": 60, "velocity": 100, "targetUserIds": [T], "extra": 1, "userId": "x"})), &me()).unwrap();
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
                parse("KEY_DOWN", Some(&bad), &me()).unwrap_err().status,
                400,
                "{bad}"
            );
        }
        assert!(parse("KEY_DOWN", Some(&json!("x")), &me()).is_err());
        assert!(parse("KEY_DOWN", None, &me()).is_err());
        assert_eq!(
            parse("EXPLODE", Some(&json!({"targetUserIds": []})), &me())
                .unwrap_err()
                .status,
            400
        );
    }

    #[test]
    fn signals_crdt_and_updates() {
        let s = parse(
            "SIGNAL",
            Some(&json!({"userId": T, "signalData": {"type": "candidate", "candidate": {}}})),
            &me(),
        )
        .unwrap();
        assert!(matches!(s, Action::Signal { .. }));
        let big = json!({"userId": T, "signalData": {"sdp": "x".repeat(17 * 1024)}});
        assert_eq!(parse("SIGNAL", Some(&big), &me()).unwrap_err().status, 413);
        let sync = parse(
            "AUTOMERGE_PROTOCOL",
            Some(&json!({"syncMessage": [0, 255], "targetUserIds": [T]})),
            &me(),
        )
        .unwrap();
        assert_eq!(sync.class(), Class::Crdt);
        assert_eq!(
            parse(
                "AUTOMERGE_PROTOCOL",
                Some(&json!({"syncMessage": [256], "targetUserIds": []})),
                &me()
            )
            .unwrap_err()
            .status,
            400
        );
        let other = parse(
            "USER_UPDATE",
            Some(&json!({"userId": T, "displayName": "X"})),
            &me(),
        )
        .unwrap_err();
        assert_eq!(other.status, 403);
        let own = parse("USER_UPDATE", Some(&json!({"userId": me().as_str(), "displayName": "X", "color": "#fff", "instrument": "SYNTH"})), &me()).unwrap();
        assert!(matches!(own, Action::UpdateUser { .. }));
        assert_eq!(
            parse("USER_UPDATE", Some(&json!({"color": "red"})), &me())
                .unwrap_err()
                .status,
            400
        );
    }
}
