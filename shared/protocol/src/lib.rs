//! Wire types shared by every p2piano service: the room model in its three shapes (stored,
//! service dialect, client dialect), the bus RPC requests and replies, membership events,
//! subject builders, input validation and the closed set of error codes.
//!
//! Everything that crosses a process boundary is defined here once, so that the edge, the
//! rooms service and the presence service cannot disagree about a field name or a limit.

pub mod budget;
pub mod call;
pub mod error;
pub mod events;
pub mod mesh;
pub mod presence;
pub mod relay;
pub mod room;
pub mod rpc;
pub mod subjects;
pub mod time;
pub mod validate;

pub use call::{Call, Op};
pub use error::{ErrorBody, ErrorCode, Reply};
pub use events::{MembersEvent, MembersEventKind};
pub use presence::SessionId;
pub use room::{ClientRoom, ClientUser, Participant, Room, RoomSettings, RoomView, SettingsPatch};
pub use subjects::{PresenceOp, RoomsOp, Subjects};
pub use time::Timestamp;
pub use validate::{Color, DisplayName, Instrument, RoomCode, UserId, ValidationError};
