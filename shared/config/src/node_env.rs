//! `NODE_ENV`, the deployment environment.

use std::convert::Infallible;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The value of `NODE_ENV`, kept from the original Node.js service so that existing
/// deployments keep working.
///
/// Only production changes behaviour (strict start-up checks, JSON logs by default), and
/// it is recognised in any case (`Production`, `PRODUCTION`). Any other value is accepted,
/// as Node.js tooling does, and treated as not production; [`NodeEnv::Other`] keeps it so
/// that it can be logged as given.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum NodeEnv {
    /// `development`, the default: lenient checks and readable logs.
    #[default]
    Development,
    /// `production` (any case): the strict checks of [`crate::Config::validate`].
    Production,
    /// `test`, as test runners set it; behaves like development.
    Test,
    /// Any other value (trimmed, case kept); behaves like development.
    Other(String),
}

impl NodeEnv {
    /// Whether this is production, the one value that turns on the strict checks.
    pub fn is_production(&self) -> bool {
        *self == NodeEnv::Production
    }

    /// The value as written in `NODE_ENV` (lower case for the known ones).
    pub fn as_str(&self) -> &str {
        match self {
            NodeEnv::Development => "development",
            NodeEnv::Production => "production",
            NodeEnv::Test => "test",
            NodeEnv::Other(text) => text,
        }
    }
}

impl From<&str> for NodeEnv {
    /// Reads a `NODE_ENV` value: trimmed, known names in any case; never fails.
    fn from(text: &str) -> Self {
        let text = text.trim();
        [NodeEnv::Development, NodeEnv::Production, NodeEnv::Test]
            .into_iter()
            .find(|known| known.as_str().eq_ignore_ascii_case(text))
            .unwrap_or_else(|| NodeEnv::Other(text.to_owned()))
    }
}

impl FromStr for NodeEnv {
    type Err = Infallible;

    /// Same as [`NodeEnv::from`]: every string is some environment.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(NodeEnv::from(text))
    }
}

impl fmt::Display for NodeEnv {
    /// [`NodeEnv::as_str`], for log lines.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for NodeEnv {
    /// Reads a string with [`NodeEnv::from`].
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(|text| NodeEnv::from(text.as_str()))
    }
}

impl Serialize for NodeEnv {
    /// Writes [`NodeEnv::as_str`], which reads back as the same value.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn production_in_any_case() {
        for text in ["production", "Production", " PRODUCTION "] {
            assert_eq!(NodeEnv::from(text), NodeEnv::Production, "{text:?}");
            assert!(NodeEnv::from(text).is_production());
        }
    }

    #[test]
    fn other_values_are_kept_and_not_production() {
        assert_eq!(NodeEnv::from("Development"), NodeEnv::Development);
        assert_eq!(NodeEnv::from("test"), NodeEnv::Test);
        let staging = NodeEnv::from(" Staging ");
        assert_eq!(staging, NodeEnv::Other("Staging".to_owned()));
        assert!(!staging.is_production());
        assert_eq!(staging.to_string(), "Staging");
    }
}
