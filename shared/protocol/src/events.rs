//! Membership events the rooms service publishes on `<prefix>.room.<code>.members` after
//! every committed change, so that edges keep each room's member set without asking.

use serde::{Deserialize, Serialize};

use crate::room::Room;
use crate::validate::UserId;

/// What changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MembersEventKind {
    /// `userId` joined (a rejoin of a current member publishes nothing).
    Joined,
    /// `userId` left.
    Left,
    /// `userId` changed their name, instrument or colour.
    Updated,
    /// The owner changed the room's settings.
    Settings,
}

/// A membership event: the kind, the member it is about, and the room after the change
/// (its `revision` orders events of one room).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MembersEvent {
    /// What changed.
    pub kind: MembersEventKind,
    /// The member concerned; absent for settings changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<UserId>,
    /// The room after the change.
    pub room: Room,
}
