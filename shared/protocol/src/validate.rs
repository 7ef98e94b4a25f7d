//! Validated value types for everything a client or another service can send.
//!
//! Each type can only be built through its parser, and deserializing one runs the same
//! parser, so a value that reached a handler is already known to be valid: a room code has
//! 5 characters of the alphabet, a display name is 1–50 characters after trimming, and so
//! on. Limits live here and nowhere else.

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::error::{ErrorBody, ErrorCode};

/// The characters room codes are made of: lower-case letters and digits without the ones
/// that are easy to confuse when read aloud or typed (`i`, `l`, `o`, `0`, `1`).
pub const ROOM_CODE_ALPHABET: &str = "abcdefghjkmnpqrstuvwxyz23456789";
/// Length of a room code.
pub const ROOM_CODE_LEN: usize = 5;
/// Longest display name, in characters, after trimming.
pub const DISPLAY_NAME_MAX: usize = 50;
/// Display name given to a member who did not choose one.
pub const DEFAULT_DISPLAY_NAME: &str = "Anonymous";
/// Longest room name, in characters, after trimming.
pub const ROOM_NAME_MAX: usize = 50;
/// Participant limit of a room whose settings do not say otherwise.
pub const DEFAULT_MAX_PARTICIPANTS: u8 = 8;
/// Highest participant limit a room may be given.
pub const MAX_PARTICIPANTS_LIMIT: u8 = 16;

/// Why a value was refused. Every variant names the field, so that the message sent back
/// tells the client exactly what to fix.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// Not 5 characters of [`ROOM_CODE_ALPHABET`].
    #[error("room code must be {ROOM_CODE_LEN} characters of {ROOM_CODE_ALPHABET}")]
    RoomCode,
    /// Empty or longer than [`DISPLAY_NAME_MAX`] after trimming, or has control characters.
    #[error("displayName must be 1 to {DISPLAY_NAME_MAX} characters, without control characters")]
    DisplayName,
    /// Not one of the instruments the client knows.
    #[error("instrument must be one of {}", Instrument::NAMES.join(", "))]
    Instrument,
    /// Not `#rgb`, `#rrggbb` or `#rrggbbaa`.
    #[error("color must be #rgb, #rrggbb or #rrggbbaa")]
    Color,
    /// Not a UUID.
    #[error("{0} must be a UUID")]
    UserId(&'static str),
    /// Room name longer than [`ROOM_NAME_MAX`] or with control characters.
    #[error("settings.name must be at most {ROOM_NAME_MAX} characters, without control characters")]
    RoomName,
    /// Participant limit outside 1..=16.
    #[error("settings.maxParticipants must be between 1 and {MAX_PARTICIPANTS_LIMIT}")]
    MaxParticipants,
    /// Not 32 lower-case hex digits.
    #[error("sessionId must be 32 lower-case hex digits")]
    SessionId,
    /// A subject prefix or token that NATS would not accept.
    #[error("{0} must be dot-separated tokens of letters, digits, '_' and '-'")]
    SubjectToken(&'static str),
}

impl From<ValidationError> for ErrorBody {
    fn from(e: ValidationError) -> Self {
        ErrorBody::new(ErrorCode::Invalid, e.to_string())
    }
}

/// Declares a string newtype that deserializes through its validating parser.
macro_rules! validated_string {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The validated text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = ValidationError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::parse(&s)
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

validated_string!(
    /// A room code: 5 characters of [`ROOM_CODE_ALPHABET`], case-sensitive (codes are
    /// always lower case; accepting other spellings would make two codes name one room).
    RoomCode
);

impl RoomCode {
    /// Parses a room code, refusing anything that is not exactly 5 alphabet characters.
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        let ok = s.len() == ROOM_CODE_LEN
            && s.bytes()
                .all(|b| ROOM_CODE_ALPHABET.as_bytes().contains(&b));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(ValidationError::RoomCode)
        }
    }

    /// A uniformly random code. Collisions are handled by the store's unique index and a retry.
    pub fn random(rng: &mut impl rand::Rng) -> Self {
        let alphabet = ROOM_CODE_ALPHABET.as_bytes();
        let code = (0..ROOM_CODE_LEN)
            .map(|_| alphabet[rng.random_range(0..alphabet.len())] as char)
            .collect();
        Self(code)
    }
}

validated_string!(
    /// A member's display name: trimmed, 1–50 characters, no control characters.
    DisplayName
);

impl DisplayName {
    /// Trims and checks a display name.
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        let t = s.trim();
        let n = t.chars().count();
        if n == 0 || n > DISPLAY_NAME_MAX || t.chars().any(char::is_control) {
            return Err(ValidationError::DisplayName);
        }
        Ok(Self(t.to_owned()))
    }

    /// The name given to members who did not choose one.
    pub fn anonymous() -> Self {
        Self(DEFAULT_DISPLAY_NAME.to_owned())
    }
}

validated_string!(
    /// A colour as `#rgb`, `#rrggbb` or `#rrggbbaa` (hex digits, kept as sent).
    Color
);

impl Color {
    /// Checks the colour syntax.
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        let hex = s.strip_prefix('#').ok_or(ValidationError::Color)?;
        let ok = matches!(hex.len(), 3 | 6 | 8) && hex.bytes().all(|b| b.is_ascii_hexdigit());
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(ValidationError::Color)
        }
    }

    /// The colour in `#rrggbbaa` lower-case form, so that `#FFF` and `#ffffffff` compare equal
    /// when deciding which palette colours are taken.
    pub fn canonical(&self) -> String {
        let hex = &self.0[1..];
        let full: String = match hex.len() {
            3 => hex
                .chars()
                .flat_map(|c| [c, c])
                .chain("ff".chars())
                .collect(),
            6 => format!("{hex}ff"),
            _ => hex.to_owned(),
        };
        format!("#{}", full.to_ascii_lowercase())
    }
}

/// The colours handed out on join, in order: the next one not used by a current member.
/// The first five are the original service's; sixteen in all, one per possible member.
pub const PALETTE: [&str; 16] = [
    "#5dadecff",
    "#c287e8ff",
    "#ff7a00ff",
    "#4fb477ff",
    "#f0b67fff",
    "#e84855ff",
    "#2ec4b6ff",
    "#f9dc5cff",
    "#a1c181ff",
    "#ff99c8ff",
    "#7b9e89ff",
    "#b388ebff",
    "#fe938cff",
    "#3d5a80ff",
    "#9b5de5ff",
    "#00bbf9ff",
];

/// Picks the first palette colour that none of `taken` uses; when all are taken (members
/// chose palette colours themselves), cycles through the palette by member count.
pub fn next_color<'a>(taken: impl Iterator<Item = &'a Color>) -> Color {
    let taken: Vec<String> = taken.map(Color::canonical).collect();
    let pick = PALETTE
        .iter()
        .find(|c| !taken.iter().any(|t| t == *c))
        .unwrap_or(&PALETTE[taken.len() % PALETTE.len()]);
    Color((*pick).to_owned())
}

validated_string!(
    /// A public user id: a UUID (v4 when presence makes it), lower-case hyphenated. This is
    /// what other members see and target; it is never the session secret.
    UserId
);

impl UserId {
    /// Parses a UUID in any accepted spelling and keeps its canonical lower-case form.
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        Self::parse_field(s, "userId")
    }

    /// Like [`UserId::parse`], naming `field` in the error (`ownerId`, `by`, ...).
    pub fn parse_field(s: &str, field: &'static str) -> Result<Self, ValidationError> {
        uuid::Uuid::try_parse(s)
            .map(|u| Self(u.hyphenated().to_string()))
            .map_err(|_| ValidationError::UserId(field))
    }

    /// A fresh random (v4) user id.
    pub fn random() -> Self {
        Self(uuid::Uuid::new_v4().hyphenated().to_string())
    }
}

/// The instruments the p2piano client can play. The list lives here only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Instrument {
    /// Acoustic piano, the default.
    #[default]
    Piano,
    /// Synthesizer.
    Synth,
    /// Electric bass.
    ElectricBass,
}

impl Instrument {
    /// Wire names of every instrument, for error messages and docs.
    pub const NAMES: [&'static str; 3] = ["PIANO", "SYNTH", "ELECTRIC_BASS"];

    /// Parses a wire name.
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        match s {
            "PIANO" => Ok(Self::Piano),
            "SYNTH" => Ok(Self::Synth),
            "ELECTRIC_BASS" => Ok(Self::ElectricBass),
            _ => Err(ValidationError::Instrument),
        }
    }
}

/// Whether `s` is a valid NATS subject token for our subjects: non-empty ASCII letters,
/// digits, `_` and `-` (no dots, wildcards or spaces).
pub fn is_subject_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_codes() {
        assert!(RoomCode::parse("fxa3x").is_ok());
        for bad in [
            "", "fxa3", "fxa3xx", "FXA3X", "fxa1x", "fxaox", "fxa x", "fxäxx",
        ] {
            assert_eq!(
                RoomCode::parse(bad),
                Err(ValidationError::RoomCode),
                "{bad:?}"
            );
        }
        let mut rng = rand::rng();
        for _ in 0..100 {
            let c = RoomCode::random(&mut rng);
            assert!(RoomCode::parse(c.as_str()).is_ok());
        }
        assert!(serde_json::from_str::<RoomCode>("\"ABCDE\"").is_err());
    }

    #[test]
    fn display_names() {
        assert_eq!(DisplayName::parse("  Ada  ").unwrap().as_str(), "Ada");
        assert!(DisplayName::parse(&"é".repeat(50)).is_ok());
        assert!(DisplayName::parse(&"é".repeat(51)).is_err());
        assert!(DisplayName::parse("   ").is_err());
        assert!(DisplayName::parse("a\nb").is_err());
    }

    #[test]
    fn colors() {
        for ok in ["#fff", "#A0b1C2", "#5dadecff"] {
            assert!(Color::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["red", "#ff", "#fffff", "#gggggg", "fff", "#ffffffff0"] {
            assert!(Color::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Color::parse("#FFF").unwrap().canonical(), "#ffffffff");
        assert_eq!(Color::parse("#5dadec").unwrap().canonical(), "#5dadecff");
    }

    #[test]
    fn palette_hands_out_unused_colors() {
        let mut taken = Vec::new();
        for _ in 0..PALETTE.len() {
            let c = next_color(taken.iter());
            assert!(!taken.contains(&c));
            taken.push(c);
        }
        // Palette exhausted: still a palette colour.
        assert!(PALETTE.contains(&next_color(taken.iter()).as_str()));
        // A member who picked the first palette colour in another spelling takes it.
        let custom = [Color::parse("#5DADEC").unwrap()];
        assert_eq!(next_color(custom.iter()).as_str(), PALETTE[1]);
    }

    #[test]
    fn instruments_and_user_ids() {
        assert_eq!(Instrument::parse("SYNTH"), Ok(Instrument::Synth));
        assert!(Instrument::parse("KAZOO").is_err());
        assert!(serde_json::from_str::<Instrument>("\"ELECTRIC_BASS\"").is_ok());
        let id = UserId::parse("6F9619FF-8B86-D011-B42D-00C04FC964FF").unwrap();
        assert_eq!(id.as_str(), "6f9619ff-8b86-d011-b42d-00c04fc964ff");
        assert!(UserId::parse("not-a-uuid").is_err());
    }
}
