//! The service dialect's commands (namespace `/`), validated into actions. Payloads are
//! taken by value, so that a relayed `data` or `signal` is moved, never copied.

use p2piano_protocol::RoomCode;
use serde_json::{Map, Value};

use super::client::relay_data;
use super::{
    Action, Event, Handling, MAX_PEER_DATA_BYTES, MAX_PEER_TYPE, Refusal, json_fits, opt_color,
    opt_display_name, opt_instrument, parse_targets,
};
use crate::dialect::Dialect;
use crate::socket::limits::Class;

/// Validates one service-dialect command.
pub fn parse(name: &str, payload: Option<Value>) -> Result<Action, Refusal> {
    let Some(event) = Event::of(Dialect::Service, name) else {
        return Err(Refusal::invalid(format!("unknown event {name}")));
    };
    let mut obj = match payload {
        Some(Value::Object(o)) => o,
        None | Some(Value::Null) if event == Event::LeaveRoom => Map::new(),
        _ => return Err(Refusal::invalid(format!("{name} needs an object payload"))),
    };
    match event.handling() {
        Handling::Join => {
            let code = obj
                .get("code")
                .and_then(Value::as_str)
                .and_then(|c| RoomCode::parse(c).ok())
                .ok_or_else(|| Refusal::invalid("code must be a 5-letter room code"))?;
            Ok(Action::Join {
                code,
                display_name: opt_display_name(obj.get("displayName"))?,
                instrument: opt_instrument(obj.get("instrument"))?,
            })
        }
        Handling::Leave => Ok(Action::Leave),
        Handling::UpdateUser => Ok(Action::UpdateUser {
            display_name: opt_display_name(obj.get("displayName"))?,
            color: opt_color(obj.get("color"))?,
            instrument: opt_instrument(obj.get("instrument"))?,
        }),
        Handling::Signal => super::signal(&mut obj, "to", "a user id", "signal"),
        Handling::PeerMessage => {
            let kind = match obj.remove("type") {
                Some(Value::String(t)) if !t.is_empty() && t.chars().count() <= MAX_PEER_TYPE => t,
                _ => {
                    return Err(Refusal::invalid(format!(
                        "type must be a string of 1 to {MAX_PEER_TYPE} characters"
                    )));
                }
            };
            let to = match obj.get("to") {
                None | Some(Value::Null) => None,
                v => Some(parse_targets(v, "to")?),
            };
            let data = obj.remove("data").unwrap_or(Value::Null);
            // Types the web client knows are held to its rules, since web clients get them.
            let (class, data) = match Event::client_relay(&kind) {
                Some(client) => {
                    let fields = match data {
                        Value::Object(m) => m,
                        _ => Map::new(),
                    };
                    (client.class(), relay_data(client, fields)?)
                }
                None => {
                    if !json_fits(&data, MAX_PEER_DATA_BYTES) {
                        return Err(Refusal::too_large(format!(
                            "data must be at most {MAX_PEER_DATA_BYTES} bytes"
                        )));
                    }
                    (Class::Other, data)
                }
            };
            Ok(Action::Relay {
                class,
                event: kind,
                to,
                data,
            })
        }
        Handling::Relay => Err(Refusal::invalid(format!("unknown event {name}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn commands() {
        assert!(matches!(
            parse("join-room", Some(json!({"code": "fxa3x"}))),
            Ok(Action::Join { .. })
        ));
        assert_eq!(
            parse("join-room", Some(json!({"code": "FXA3X"})))
                .unwrap_err()
                .status(),
            400
        );
        assert_eq!(parse("leave-room", None), Ok(Action::Leave));
        let m = parse(
            "peer-message",
            Some(json!({"type": "chat", "data": {"text": "hi"}})),
        )
        .unwrap();
        assert!(matches!(m, Action::Relay { to: None, .. }));
        let bad_note = json!({"type": "KEY_DOWN", "data": {"note": 300, "velocity": 1}});
        assert_eq!(
            parse("peer-message", Some(bad_note)).unwrap_err().status(),
            400
        );
        assert_eq!(
            parse("peer-message", Some(json!({"type": "", "data": 1})))
                .unwrap_err()
                .status(),
            400
        );
        assert_eq!(
            parse("teleport", Some(json!({}))).unwrap_err().status(),
            400
        );
    }
}
