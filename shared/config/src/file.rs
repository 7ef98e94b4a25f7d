//! The file layer: the TOML file named by `P2PIANO_CONFIG`, when that variable is set.

use std::path::{Path, PathBuf};

use figment::providers::{Data, Format, Toml};
use figment::value::{Dict, Map};
use figment::{Error, Figment, Metadata, Profile, Provider};

use crate::defaults::known_keys;
use crate::vars::{self, CONFIG_FILE_VAR};

/// The path named by `P2PIANO_CONFIG`, if it is set and not empty.
pub(crate) fn config_path() -> Option<PathBuf> {
    std::env::var_os(CONFIG_FILE_VAR)
        .filter(|path| !path.is_empty())
        .map(PathBuf::from)
}

/// Merges the TOML file at `path` into `figment`.
///
/// figment quietly skips a missing file, but a file someone named on purpose and that is
/// not there is a mistake worth stopping for, so a missing file becomes a load error.
pub(crate) fn merge_file(figment: Figment, path: &Path) -> Figment {
    if path.is_file() {
        figment.merge(CheckedToml(Toml::file_exact(path)))
    } else {
        figment.merge(MissingFile(path.to_owned()))
    }
}

/// The TOML file, refusing keys that are not settings.
///
/// figment ignores keys no field asks for, so a misspelt key (`leave_grace` for
/// `leave_grace_ms`) would silently leave the default in place. Unknown environment
/// variables stay ignored: the environment holds many unrelated variables, a file holds
/// only what someone wrote for this service.
struct CheckedToml(Data<Toml>);

impl Provider for CheckedToml {
    /// The TOML file's own metadata, so that type errors name the file.
    fn metadata(&self) -> Metadata {
        self.0.metadata()
    }

    fn data(&self) -> Result<Map<Profile, Dict>, Error> {
        let data = self.0.data()?;
        let known = known_keys();
        let unknown: Vec<String> = data
            .values()
            .flat_map(Dict::keys)
            .filter(|key| !known.contains(key))
            .map(|key| describe(key, &known))
            .collect();
        match unknown.as_slice() {
            [] => Ok(data),
            [one] => Err(Error::from(format!("unknown configuration key {one}"))),
            many => Err(Error::from(format!(
                "unknown configuration keys {}",
                many.join(", ")
            ))),
        }
    }
}

/// An unknown key in backquotes, with the key probably meant when there is one.
fn describe(key: &str, known: &[String]) -> String {
    match suggestion(key, known) {
        Some(meant) => format!("`{key}` (did you mean `{meant}`?)"),
        None => format!("`{key}`"),
    }
}

/// The known key an unknown one most likely stands for: the key of an environment
/// variable name (`P2PIANO_LOG` → `log_level`), the same key in other case, or the key
/// with its unit added (`leave_grace` → `leave_grace_ms`).
fn suggestion<'a>(key: &str, known: &'a [String]) -> Option<&'a str> {
    if let Some(var) = vars::by_env(key) {
        return known.iter().map(String::as_str).find(|k| *k == var.key);
    }
    let lower = key.to_ascii_lowercase();
    known
        .iter()
        .map(String::as_str)
        .find(|k| *k == lower || *k == format!("{lower}_ms") || *k == format!("{lower}_secs"))
}

/// A provider that fails, standing for a configuration file that cannot be found.
#[derive(Debug)]
struct MissingFile(PathBuf);

impl Provider for MissingFile {
    fn metadata(&self) -> Metadata {
        Metadata::named("configuration file")
    }

    fn data(&self) -> Result<Map<Profile, Dict>, Error> {
        Err(Error::from(format!(
            "the file named by {CONFIG_FILE_VAR} does not exist: {}",
            self.0.display()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        let known = known_keys();
        assert_eq!(suggestion("leave_grace", &known), Some("leave_grace_ms"));
        assert_eq!(suggestion("room_idle", &known), Some("room_idle_secs"));
        assert_eq!(suggestion("P2PIANO_LOG", &known), Some("log_level"));
        assert_eq!(suggestion("Port", &known), Some("port"));
        assert_eq!(suggestion("colour", &known), None);
    }
}
