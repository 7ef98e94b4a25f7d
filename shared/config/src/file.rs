//! The file layer: the TOML file named by `P2PIANO_CONFIG`, when that variable is set.

use std::path::{Path, PathBuf};

use figment::providers::{Format, Toml};
use figment::value::{Dict, Map};
use figment::{Error, Figment, Metadata, Profile, Provider};

use crate::vars::CONFIG_FILE_VAR;

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
        figment.merge(Toml::file_exact(path))
    } else {
        figment.merge(MissingFile(path.to_owned()))
    }
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
