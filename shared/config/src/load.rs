//! Building the layered figment and extracting a [`Config`] from it.

use figment::Figment;
use figment::providers::Serialized;

use crate::defaults::{Defaults, LOG_FORMAT_KEY};
use crate::env::EnvLayer;
use crate::file::{config_path, merge_file};
use crate::{Config, ConfigError, LogFormat, NodeEnv};

impl Config {
    /// Loads the configuration of this process: defaults, then the `P2PIANO_CONFIG` TOML
    /// file if set, then the environment. Only types are checked here; call
    /// [`Config::validate`] for the start-up checks.
    pub fn load() -> Result<Config, ConfigError> {
        Self::from_figment(Self::figment())
    }

    /// The layered figment [`Config::load`] extracts from, exposed so that tests (with
    /// `figment::Jail`) and callers that need an extra layer can build on it.
    #[track_caller]
    pub fn figment() -> Figment {
        let figment = Figment::from(Defaults);
        let figment = match config_path() {
            Some(path) => merge_file(figment, &path),
            None => figment,
        };
        figment.merge(EnvLayer)
    }

    /// Extracts a configuration from any figment; fields it lacks take their defaults, and
    /// `log_format` defaults to JSON when `node_env` is production.
    pub fn from_figment(figment: Figment) -> Result<Config, ConfigError> {
        let production = figment
            .find_value("node_env")
            .ok()
            .and_then(|value| value.into_string())
            .is_some_and(|node_env| NodeEnv::from(node_env.as_str()).is_production());
        let format = if production {
            LogFormat::Json
        } else {
            LogFormat::Text
        };
        let figment = figment.join(Serialized::default(LOG_FORMAT_KEY, format));
        Ok(figment.extract()?)
    }
}
