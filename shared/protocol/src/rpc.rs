//! Requests and replies of the rooms service RPCs (`<prefix>.rpc.rooms.<op>`).
//!
//! Every field is a validated type, so a request that deserializes is a valid request; a
//! malformed one is answered with `invalid` and the serde message. Unknown fields are
//! tolerated so that a newer edge can talk to an older rooms service during a rolling update.

use serde::{Deserialize, Serialize};

use crate::room::{Participant, Room, SettingsPatch};
use crate::time::Timestamp;
use crate::validate::{Color, DisplayName, Instrument, RoomCode, UserId};

/// `create`: make a new room owned by `ownerId`. Reply: the [`Room`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateRoom {
    /// Public id of the creator.
    pub owner_id: UserId,
    /// Initial settings, merged into the defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<SettingsPatch>,
}

/// `get`: read a room. Reply: the [`Room`] or `not_found`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetRoom {
    /// Room code.
    pub code: RoomCode,
}

/// `update`: change settings; only the owner may. Reply: the [`Room`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateRoom {
    /// Room code.
    pub code: RoomCode,
    /// Public id of the caller, checked against the owner.
    pub by: UserId,
    /// The partial settings to merge.
    pub settings: SettingsPatch,
}

/// `join`: add a member (idempotent). Reply: [`JoinReply`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinRoom {
    /// Room code.
    pub code: RoomCode,
    /// Public id of the joiner.
    pub user_id: UserId,
    /// Name to show; defaults to the user's profile name, else "Anonymous".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<DisplayName>,
    /// Instrument; defaults to the user's profile instrument, else `PIANO`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instrument: Option<Instrument>,
    /// A new page of a current member (a reload whose old socket was in its grace
    /// period): the others are told the member left and joined again (two events), so
    /// that they rebuild their links to the new page. The member keeps their place (no
    /// newcomer can take it in between) and may do this in a locked or full room.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub renew: bool,
    /// Presence puts back a member that it announced as left while their socket was open
    /// all along (their edge was wrongly believed dead): allowed into a locked or full room.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub restore: bool,
}

/// Reply to `join`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinReply {
    /// The room after the join.
    pub room: Room,
    /// The joiner's own entry.
    pub user: Participant,
    /// True when the user was already a member: nothing changed and no event was published.
    pub rejoined: bool,
}

/// `leave`: remove a member (idempotent). Reply: [`LeaveReply`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaveRoom {
    /// Room code.
    pub code: RoomCode,
    /// Public id of the member leaving.
    pub user_id: UserId,
    /// Only if the member joined at or before this time: presence's leaves carry the time it
    /// decided them, so that a leave that reaches rooms late cannot remove the member's
    /// newer membership (the same session back from another page a moment later).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub joined_before: Option<Timestamp>,
}

/// Reply to `leave`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaveReply {
    /// The room after the leave.
    pub room: Room,
    /// False when the user was not a member (nothing changed, nothing published).
    pub left: bool,
}

/// `update_user`: change a member's profile in a room. Reply: [`UpdateUserReply`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateUser {
    /// Room code.
    pub code: RoomCode,
    /// The member to update (the edge only ever sends the caller's own id).
    pub user_id: UserId,
    /// New display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<DisplayName>,
    /// New instrument.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instrument: Option<Instrument>,
    /// New colour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<Color>,
}

/// Reply to `update_user`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateUserReply {
    /// The room after the change.
    pub room: Room,
    /// The member's entry after the change.
    pub user: Participant,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn requests_validate_while_parsing() {
        let ok: JoinRoom = serde_json::from_value(json!({
            "code": "fxa3x", "userId": "00000000-0000-4000-8000-000000000001",
            "displayName": "  Ada ", "instrument": "SYNTH", "futureField": 1
        }))
        .unwrap();
        assert_eq!(ok.display_name.unwrap().as_str(), "Ada");
        for bad in [
            json!({"code": "FXA3X", "userId": "00000000-0000-4000-8000-000000000001"}),
            json!({"code": "fxa3x", "userId": "bob"}),
            json!({"code": "fxa3x", "userId": "00000000-0000-4000-8000-000000000001", "instrument": "KAZOO"}),
            json!({"code": "fxa3x", "userId": "00000000-0000-4000-8000-000000000001", "displayName": ""}),
            json!({"code": "fxa3x"}),
            json!([1, 2]),
        ] {
            assert!(
                serde_json::from_value::<JoinRoom>(bad.clone()).is_err(),
                "{bad}"
            );
        }
        assert!(
            serde_json::from_value::<UpdateUser>(json!({
                "code": "fxa3x", "userId": "00000000-0000-4000-8000-000000000001", "color": "red"
            }))
            .is_err()
        );
    }
}
