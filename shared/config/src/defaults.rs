//! The defaults layer, the bottom of the figment.

use figment::providers::Serialized;
use figment::value::{Dict, Map};
use figment::{Error, Metadata, Profile, Provider};

use crate::Config;

/// Provider for [`Config::default`] without `log_format`, whose default depends on
/// `NODE_ENV` and is therefore filled in only after the other layers are known.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Defaults;

/// Key left out of [`Defaults`].
pub(crate) const LOG_FORMAT_KEY: &str = "log_format";

impl Provider for Defaults {
    fn metadata(&self) -> Metadata {
        Metadata::named("built-in defaults")
    }

    fn data(&self) -> Result<Map<Profile, Dict>, Error> {
        let mut data = Serialized::defaults(Config::default()).data()?;
        for dict in data.values_mut() {
            dict.remove(LOG_FORMAT_KEY);
        }
        Ok(data)
    }
}
