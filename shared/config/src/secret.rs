//! A string that must not end up in logs.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What [`Secret`]'s `Debug` and `Display` print instead of the value.
const REDACTED: &str = "[redacted]";

/// A secret setting (`COOKIE_SECRET`, `MONGO_PASSWORD`).
///
/// Its own type so that printing a configuration, a struct that holds it, or the secret
/// itself (`{:?}` or `{}`) never shows the value: code has to ask for it by name with
/// [`Secret::expose`], which makes every place that handles the clear text easy to find.
///
/// `Serialize` writes the clear text, because figment's defaults layer is built by
/// serializing [`crate::Config::default`]; do not serialize a configuration for display.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value; used by tests and by callers that build a configuration in code.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The clear text, for the one place that needs it (signing cookies, logging in to the
    /// database).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    /// Same as [`Secret::new`], so that `Some("…".into())` builds an optional secret.
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl From<&str> for Secret {
    /// Same as [`Secret::new`], so that `Some("…".into())` builds an optional secret.
    fn from(value: &str) -> Self {
        Secret(value.to_owned())
    }
}

impl fmt::Debug for Secret {
    /// `[redacted]`, whatever the value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    /// `[redacted]`, whatever the value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl<'de> Deserialize<'de> for Secret {
    /// Reads the secret from a plain string, as the environment and TOML give it.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

impl Serialize for Secret {
    /// Writes the clear text, so that a configuration round-trips through figment.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printing_hides_the_value() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), "[redacted]");
        assert_eq!(format!("{secret}"), "[redacted]");
        assert_eq!(format!("{:?}", Some(secret.clone())), "Some([redacted])");
        assert_eq!(secret.expose(), "hunter2");
    }
}
