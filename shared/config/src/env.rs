//! The environment layer: a figment provider that reads the variables of [`crate::vars`].
//!
//! figment's own `Env` provider parses every value (`COOKIE_SECRET=12345` would become a
//! number and fail to load as a string, `CORS_ORIGIN=a,b` would stay one string), so this
//! provider uses `Env` to select the variables and then reads each value by its kind.

use figment::providers::Env;
use figment::value::{Dict, Empty, Map, Value};
use figment::{Error, Metadata, Profile, Provider};

use crate::vars::{self, CONFIG_FILE_VAR, ENV_PREFIX, Kind, Var};

/// Provider for the environment layer.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct EnvLayer;

impl EnvLayer {
    /// Every known variable that is set, with its value as figment should see it.
    fn values() -> Vec<(&'static Var, Value)> {
        let unprefixed = vars::unprefixed();
        let raw = Env::raw().only(&unprefixed);
        let config_file = &CONFIG_FILE_VAR[ENV_PREFIX.len()..];
        let prefixed = Env::prefixed(ENV_PREFIX).ignore(&[config_file]);

        let raw = raw
            .iter()
            .map(|(key, value)| (key.as_str().to_owned(), value));
        let prefixed = prefixed
            .iter()
            .map(|(key, value)| (format!("{ENV_PREFIX}{}", key.as_str()), value));

        raw.chain(prefixed)
            .filter_map(|(name, text)| {
                let var = vars::by_env(&name)?;
                Some((var, read(var.kind, &text)?))
            })
            .collect()
    }
}

/// Turns a variable's text into a value; `None` leaves the field to the lower layers.
fn read(kind: Kind, text: &str) -> Option<Value> {
    let text = text.trim();
    if text.is_empty() {
        return (kind == Kind::OptionalText).then(|| Value::from(Empty::None));
    }
    Some(match kind {
        Kind::Text | Kind::OptionalText => Value::from(text.to_owned()),
        Kind::Keyword => Value::from(text.to_ascii_lowercase()),
        Kind::Parsed => text.parse().unwrap_or_else(|never| match never {}),
        Kind::List => Value::from(
            text.split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(str::to_owned)
                .collect::<Vec<_>>(),
        ),
    })
}

impl Provider for EnvLayer {
    fn metadata(&self) -> Metadata {
        Metadata::named("environment variable")
            .interpolater(|_: &Profile, keys: &[&str]| vars::env_for_key(&keys.join(".")))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, Error> {
        let dict: Dict = Self::values()
            .into_iter()
            .map(|(var, value)| (var.key.to_owned(), value))
            .collect();
        Ok(Map::from([(Profile::Default, dict)]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_optional_text_is_none_and_other_empties_are_unset() {
        assert_eq!(
            read(Kind::OptionalText, "  "),
            Some(Value::from(Empty::None))
        );
        assert_eq!(read(Kind::Text, ""), None);
        assert_eq!(read(Kind::Parsed, ""), None);
        assert_eq!(read(Kind::List, ""), None);
    }

    #[test]
    fn text_stays_text_and_lists_split() {
        assert_eq!(
            read(Kind::Text, "12345"),
            Some(Value::from("12345".to_owned()))
        );
        assert_eq!(
            read(Kind::Keyword, "JSON"),
            Some(Value::from("json".to_owned()))
        );
        assert_eq!(read(Kind::Parsed, "3001"), Some(Value::from(3001u16)));
        assert_eq!(
            read(Kind::List, " a , b,,"),
            Some(Value::from(vec!["a".to_owned(), "b".to_owned()]))
        );
    }
}
