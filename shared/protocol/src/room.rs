//! The room model in the shapes it takes on the way out.
//!
//! - [`Room`]: the full record on the bus (rooms service → edges), with the owner and a
//!   revision that grows with every committed change, so that an edge can ignore a
//!   membership event older than the one it has already applied.
//! - [`RoomView`]: the service dialect's room (REST `/rooms`, namespace `/`).
//! - [`ClientRoom`]: the p2piano web client's room (`/api/room`, namespace `/api`).

use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};

use crate::time::Timestamp;
use crate::validate::{
    Color, DEFAULT_MAX_PARTICIPANTS, DisplayName, Instrument, MAX_PARTICIPANTS_LIMIT,
    ROOM_NAME_MAX, RoomCode, UserId, ValidationError,
};

/// One member of a room as every shape shows it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Participant {
    /// Public user id.
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "3f1c2d9e-8a4b-4c1d-9e2f-5a6b7c8d9e0f"))]
    pub id: UserId,
    /// Name shown to the others.
    #[cfg_attr(feature = "openapi", schema(value_type = String, min_length = 1, max_length = 50))]
    pub display_name: DisplayName,
    /// Instrument the member plays.
    pub instrument: Instrument,
    /// Colour of the member's keys, unique in the room while the palette lasts.
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "#5dadecff"))]
    pub color: Color,
    /// When the member joined this room.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub joined_at: Timestamp,
}

/// A room's settings. Only the owner may change them.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomSettings {
    /// Optional room name shown by clients; `null` when unnamed.
    pub name: Option<String>,
    /// Joins beyond this many members are refused with `full`. Lowering it below the
    /// current count removes nobody; it only stops new joins.
    pub max_participants: u8,
    /// When true, only current members may (re)join; newcomers get `forbidden`.
    pub locked: bool,
}

impl Default for RoomSettings {
    fn default() -> Self {
        Self {
            name: None,
            max_participants: DEFAULT_MAX_PARTICIPANTS,
            locked: false,
        }
    }
}

/// A partial settings update: absent fields keep their value; an empty or blank `name`
/// clears the name. Unknown fields are refused so that a typo is not silently ignored.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SettingsPatch {
    /// New room name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// New participant limit, 1–16.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_participants: Option<u8>,
    /// New lock state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locked: Option<bool>,
}

impl RoomSettings {
    /// Returns these settings with `patch` merged in, or the first field that is invalid.
    pub fn apply(&self, patch: &SettingsPatch) -> Result<RoomSettings, ValidationError> {
        let mut next = self.clone();
        if let Some(name) = &patch.name {
            let t = name.trim();
            if t.chars().count() > ROOM_NAME_MAX || t.chars().any(char::is_control) {
                return Err(ValidationError::RoomName);
            }
            next.name = (!t.is_empty()).then(|| t.to_owned());
        }
        if let Some(max) = patch.max_participants {
            if !(1..=MAX_PARTICIPANTS_LIMIT).contains(&max) {
                return Err(ValidationError::MaxParticipants);
            }
            next.max_participants = max;
        }
        if let Some(locked) = patch.locked {
            next.locked = locked;
        }
        Ok(next)
    }
}

/// The full room record carried on the bus.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Room {
    /// The 5-letter code that names the room.
    pub code: RoomCode,
    /// When the room was created.
    pub created_at: Timestamp,
    /// When the room last changed (membership, profile or settings).
    pub last_activity: Timestamp,
    /// Public user id of the creator, the only one allowed to change settings.
    pub owner_id: UserId,
    /// Current members in join order.
    pub participants: Vec<Participant>,
    /// The room's settings.
    pub settings: RoomSettings,
    /// Grows by one with every committed change; lets readers order events.
    pub revision: u64,
}

impl Room {
    /// The member with this id, if present.
    pub fn participant(&self, id: &UserId) -> Option<&Participant> {
        self.participants.iter().find(|p| &p.id == id)
    }

    /// Whether this user is a member.
    pub fn is_member(&self, id: &UserId) -> bool {
        self.participant(id).is_some()
    }

    /// The service dialect's view of this room.
    pub fn to_view(&self) -> RoomView {
        RoomView {
            code: self.code.clone(),
            created_at: self.created_at,
            last_activity: self.last_activity,
            participants: self.participants.clone(),
            settings: self.settings.clone(),
        }
    }

    /// The p2piano web client's view of this room.
    pub fn to_client(&self) -> ClientRoom {
        ClientRoom {
            room_id: self.code.clone(),
            users: self.participants.iter().map(ClientUser::from).collect(),
            created_at: self.created_at,
        }
    }
}

/// The room in the service dialect (REST `/rooms`, Socket.IO namespace `/`).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomView {
    /// Room code.
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "fxa3x"))]
    pub code: RoomCode,
    /// Creation time.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: Timestamp,
    /// Last change.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub last_activity: Timestamp,
    /// Members in join order.
    pub participants: Vec<Participant>,
    /// Settings.
    pub settings: RoomSettings,
}

/// A member as the p2piano web client expects it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientUser {
    /// Public user id.
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "3f1c2d9e-8a4b-4c1d-9e2f-5a6b7c8d9e0f"))]
    pub user_id: UserId,
    /// Display name.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub display_name: DisplayName,
    /// Colour.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub color: Color,
    /// Instrument.
    pub instrument: Instrument,
}

impl From<&Participant> for ClientUser {
    fn from(p: &Participant) -> Self {
        Self {
            user_id: p.id.clone(),
            display_name: p.display_name.clone(),
            color: p.color.clone(),
            instrument: p.instrument,
        }
    }
}

/// The room as the p2piano web client expects it: `{"roomId","users":{id: user},"createdAt"}`.
/// `users` is an object keyed by user id, written in join order.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientRoom {
    /// Room code.
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "fxa3x"))]
    pub room_id: RoomCode,
    /// Members in join order, written as an object keyed by user id.
    #[serde(serialize_with = "users_as_map")]
    #[cfg_attr(feature = "openapi", schema(value_type = std::collections::BTreeMap<String, ClientUser>))]
    pub users: Vec<ClientUser>,
    /// Creation time.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: Timestamp,
}

fn users_as_map<S: Serializer>(users: &[ClientUser], s: S) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(users.len()))?;
    for u in users {
        map.serialize_entry(u.user_id.as_str(), u)?;
    }
    map.end()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Room {
        let t = Timestamp::from_millis(1_795_000_000_000);
        let p = |id: &str, name: &str| Participant {
            id: UserId::parse(id).unwrap(),
            display_name: DisplayName::parse(name).unwrap(),
            instrument: Instrument::Piano,
            color: Color::parse("#5dadecff").unwrap(),
            joined_at: t,
        };
        Room {
            code: RoomCode::parse("fxa3x").unwrap(),
            created_at: t,
            last_activity: t,
            owner_id: UserId::parse("00000000-0000-4000-8000-000000000001").unwrap(),
            participants: vec![
                p("00000000-0000-4000-8000-000000000002", "Zed"),
                p("00000000-0000-4000-8000-000000000001", "Ada"),
            ],
            settings: RoomSettings::default(),
            revision: 3,
        }
    }

    #[test]
    fn service_view_has_exactly_the_documented_fields() {
        let v = serde_json::to_value(sample().to_view()).unwrap();
        let keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        assert_eq!(
            keys,
            [
                "code",
                "createdAt",
                "lastActivity",
                "participants",
                "settings"
            ]
        );
        assert_eq!(
            v["participants"][0],
            json!({"id":"00000000-0000-4000-8000-000000000002","displayName":"Zed",
                   "instrument":"PIANO","color":"#5dadecff","joinedAt":"2026-11-18T11:06:40.000Z"})
        );
        assert_eq!(
            v["settings"],
            json!({"name":null,"maxParticipants":8,"locked":false})
        );
    }

    #[test]
    fn client_room_keys_users_by_id_in_join_order() {
        let text = serde_json::to_string(&sample().to_client()).unwrap();
        let zed = text.find("000000000002\":").unwrap();
        let ada = text.find("000000000001\":").unwrap();
        assert!(zed < ada, "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["roomId"], "fxa3x");
        assert_eq!(
            v["users"]["00000000-0000-4000-8000-000000000001"],
            json!({"userId":"00000000-0000-4000-8000-000000000001","displayName":"Ada",
                   "color":"#5dadecff","instrument":"PIANO"})
        );
    }

    #[test]
    fn bus_room_round_trips() {
        let r = sample();
        let back: Room = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn settings_patch_rules() {
        let s = RoomSettings::default();
        let named = s
            .apply(&SettingsPatch {
                name: Some("  Jam  ".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(named.name.as_deref(), Some("Jam"));
        let cleared = named
            .apply(&SettingsPatch {
                name: Some(" ".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(cleared.name, None);
        for bad in [0u8, 17] {
            let p = SettingsPatch {
                max_participants: Some(bad),
                ..Default::default()
            };
            assert_eq!(s.apply(&p), Err(ValidationError::MaxParticipants));
        }
        let long = SettingsPatch {
            name: Some("x".repeat(51)),
            ..Default::default()
        };
        assert_eq!(s.apply(&long), Err(ValidationError::RoomName));
        assert!(serde_json::from_value::<SettingsPatch>(json!({"lockd": true})).is_err());
    }
}
