//! Built-in defaults: the bottom layer of the figment, and the fallbacks services use when
//! an optional setting is unset. Kept together so that every default lives in this crate
//! and the README's table has one place to be checked against.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use figment::providers::Serialized;
use figment::value::{Dict, Map};
use figment::{Error, Metadata, Profile, Provider};

use crate::Config;

/// NATS server the split services (and `p2piano sub`/`request`) connect to when
/// `NATS_URL` is unset: a local server, as in development. Production refuses to start the
/// split services without `NATS_URL`, so this never reaches a real deployment.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";

/// MongoDB server `p2piano rooms` connects to when `MONGO_URI` is unset: a local server, as
/// in development. Production refuses to start the rooms service without `MONGO_URI`.
pub const DEFAULT_MONGO_URI: &str = "mongodb://127.0.0.1:27017";

/// Cookie secret the edge uses outside production when `COOKIE_SECRET` is unset, so that
/// development needs no setup; production refuses to start without a real one, and
/// cookies signed with this one are only good for development.
pub const DEVELOPMENT_COOKIE_SECRET: &str = "p2piano-development-cookie-secret-not-for-production";

/// Where `p2piano rooms` serves health and `/metrics` when `P2PIANO_ADMIN_ADDR` is unset.
/// Each role has its own port so that the split services can share a host.
pub const DEFAULT_ROOMS_ADMIN_ADDR: SocketAddr = unspecified(9091);

/// Where `p2piano presence` serves health and `/metrics` when `P2PIANO_ADMIN_ADDR` is
/// unset (see [`DEFAULT_ROOMS_ADMIN_ADDR`] for why the ports differ).
pub const DEFAULT_PRESENCE_ADMIN_ADDR: SocketAddr = unspecified(9092);

/// Where `p2piano edge` serves health and `/metrics` when `P2PIANO_ADMIN_ADDR` is unset,
/// keeping metrics off the public port (see [`DEFAULT_ROOMS_ADMIN_ADDR`] for why the ports
/// differ). `p2piano all` does not use it: without the variable it serves `/metrics` on
/// `PORT`, for zero-setup local runs.
pub const DEFAULT_EDGE_ADMIN_ADDR: SocketAddr = unspecified(9093);

/// `0.0.0.0:port`.
const fn unspecified(port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port))
}

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

/// Every key a configuration file may set: the serialized names of [`Config`]'s fields
/// (including `log_format`, which [`Defaults`] leaves out), so that the list cannot drift
/// from the struct.
///
/// Serializing the defaults cannot fail in practice (a test pins the result); if it ever
/// did, [`Defaults`] fails the same way and figment reports that error first.
pub(crate) fn known_keys() -> Vec<String> {
    Serialized::defaults(Config::default())
        .data()
        .into_iter()
        .flat_map(Map::into_values)
        .flat_map(Dict::into_keys)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fallback_values() {
        assert_eq!(DEFAULT_NATS_URL, "nats://127.0.0.1:4222");
        assert_eq!(DEFAULT_ROOMS_ADMIN_ADDR.to_string(), "0.0.0.0:9091");
        assert_eq!(DEFAULT_PRESENCE_ADMIN_ADDR.to_string(), "0.0.0.0:9092");
        assert_eq!(DEFAULT_EDGE_ADMIN_ADDR.to_string(), "0.0.0.0:9093");
    }

    #[test]
    fn known_keys_are_the_variables_keys() {
        let mut known = known_keys();
        known.sort();
        let mut keys: Vec<_> = crate::vars::VARS.iter().map(|v| v.key).collect();
        keys.sort_unstable();
        assert_eq!(known, keys);
    }
}
