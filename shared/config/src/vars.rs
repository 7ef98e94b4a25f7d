//! The table of environment variables: which variable feeds which field, and how its text
//! is read. Loading, error messages and validation all name variables from this one table.

/// Prefix of this service's own environment variables (`P2PIANO_PORT` is not one: `PORT`
/// keeps the original service's name). Exposed so that tools and docs can list them.
pub const ENV_PREFIX: &str = "P2PIANO_";

/// Environment variable naming the optional TOML file layered between the defaults and
/// the environment. Exposed so that a caller can mention it in its own messages.
pub const CONFIG_FILE_VAR: &str = "P2PIANO_CONFIG";

/// How the text of an environment variable becomes a configuration value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Kept verbatim (trimmed), even when it looks like a number (`COOKIE_SECRET=1234...`).
    /// Empty means unset, so the default applies.
    Text,
    /// Like [`Kind::Text`], but empty means `None`, overriding the TOML file.
    OptionalText,
    /// Like [`Kind::Text`], lower-cased, for keywords such as `json`.
    Keyword,
    /// Parsed by figment (numbers, booleans). Empty means unset.
    Parsed,
    /// A comma-separated list. Empty means unset.
    List,
}

/// One environment variable and the configuration field it sets.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Var {
    /// Full variable name, upper case.
    pub(crate) env: &'static str,
    /// Field of [`crate::Config`] (and key in the TOML file).
    pub(crate) key: &'static str,
    /// How its text is read.
    pub(crate) kind: Kind,
}

const fn var(env: &'static str, key: &'static str, kind: Kind) -> Var {
    Var { env, key, kind }
}

pub(crate) const NODE_ENV: &str = "NODE_ENV";
pub(crate) const PORT: &str = "PORT";
pub(crate) const CORS_ORIGIN: &str = "CORS_ORIGIN";
pub(crate) const COOKIE_SECRET: &str = "COOKIE_SECRET";
pub(crate) const MONGO_URI: &str = "MONGO_URI";
pub(crate) const NATS_URL: &str = "NATS_URL";
pub(crate) const MONGO_DB: &str = "P2PIANO_MONGO_DB";
pub(crate) const MONGO_TIMEOUT_MS: &str = "P2PIANO_MONGO_TIMEOUT_MS";
pub(crate) const SUBJECT_PREFIX: &str = "P2PIANO_SUBJECT_PREFIX";
pub(crate) const EDGE_ID: &str = "P2PIANO_EDGE_ID";
pub(crate) const REQUEST_TIMEOUT_MS: &str = "P2PIANO_REQUEST_TIMEOUT_MS";
pub(crate) const ROOM_IDLE_SECS: &str = "P2PIANO_ROOM_IDLE_SECS";
pub(crate) const SESSION_TTL_SECS: &str = "P2PIANO_SESSION_TTL_SECS";
pub(crate) const HEARTBEAT_MS: &str = "P2PIANO_HEARTBEAT_MS";
pub(crate) const EDGE_TIMEOUT_MS: &str = "P2PIANO_EDGE_TIMEOUT_MS";
pub(crate) const DRAIN_TIMEOUT_MS: &str = "P2PIANO_DRAIN_TIMEOUT_MS";
/// Replicas of the presence KV buckets.
pub(crate) const KV_REPLICAS: &str = "P2PIANO_KV_REPLICAS";
pub(crate) const ROOM_STORE: &str = "P2PIANO_ROOM_STORE";
pub(crate) const OTEL_EXPORTER_OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// Every variable read from the environment.
pub(crate) const VARS: &[Var] = &[
    var(NODE_ENV, "node_env", Kind::Text),
    var(PORT, "port", Kind::Parsed),
    var(CORS_ORIGIN, "cors_origin", Kind::List),
    var(COOKIE_SECRET, "cookie_secret", Kind::OptionalText),
    var("P2PIANO_COOKIE_SECURE", "cookie_secure", Kind::Parsed),
    var(MONGO_URI, "mongo_uri", Kind::OptionalText),
    var("MONGO_USERNAME", "mongo_username", Kind::OptionalText),
    var("MONGO_PASSWORD", "mongo_password", Kind::OptionalText),
    var(MONGO_DB, "mongo_db", Kind::OptionalText),
    var(MONGO_TIMEOUT_MS, "mongo_timeout_ms", Kind::Parsed),
    var(ROOM_STORE, "room_store", Kind::Keyword),
    var(NATS_URL, "nats_url", Kind::OptionalText),
    var(SUBJECT_PREFIX, "subject_prefix", Kind::Text),
    var("P2PIANO_ADMIN_ADDR", "admin_addr", Kind::OptionalText),
    var(EDGE_ID, "edge_id", Kind::OptionalText),
    var("P2PIANO_MESH_ADDR", "mesh_addr", Kind::OptionalText),
    var(
        "P2PIANO_MESH_ADVERTISE",
        "mesh_advertise",
        Kind::OptionalText,
    ),
    var(REQUEST_TIMEOUT_MS, "request_timeout_ms", Kind::Parsed),
    var(ROOM_IDLE_SECS, "room_idle_secs", Kind::Parsed),
    var(SESSION_TTL_SECS, "session_ttl_secs", Kind::Parsed),
    var("P2PIANO_IP_CONNECT_RATE", "ip_connect_rate", Kind::Parsed),
    var("P2PIANO_IP_CONNECT_BURST", "ip_connect_burst", Kind::Parsed),
    var("P2PIANO_MAX_CONNECTIONS", "max_connections", Kind::Parsed),
    var(
        "P2PIANO_MAX_CONNECTIONS_PER_IP",
        "max_connections_per_ip",
        Kind::Parsed,
    ),
    var("P2PIANO_TRUSTED_PROXIES", "trusted_proxies", Kind::List),
    var("P2PIANO_BODY_TIMEOUT_MS", "body_timeout_ms", Kind::Parsed),
    var(
        "P2PIANO_CONNECT_TIMEOUT_MS",
        "connect_timeout_ms",
        Kind::Parsed,
    ),
    var("P2PIANO_LEAVE_GRACE_MS", "leave_grace_ms", Kind::Parsed),
    var(HEARTBEAT_MS, "heartbeat_ms", Kind::Parsed),
    var(EDGE_TIMEOUT_MS, "edge_timeout_ms", Kind::Parsed),
    var(DRAIN_TIMEOUT_MS, "drain_timeout_ms", Kind::Parsed),
    var(KV_REPLICAS, "kv_replicas", Kind::Parsed),
    var("P2PIANO_LOG_FORMAT", "log_format", Kind::Keyword),
    var("P2PIANO_LOG", "log_level", Kind::Text),
    var(
        OTEL_EXPORTER_OTLP_ENDPOINT,
        "otel_exporter_otlp_endpoint",
        Kind::OptionalText,
    ),
    var("OTEL_SERVICE_NAME", "service_name", Kind::OptionalText),
];

/// The variables without the `P2PIANO_` prefix, as the original service named them.
pub(crate) fn unprefixed() -> Vec<&'static str> {
    VARS.iter()
        .map(|v| v.env)
        .filter(|env| !env.starts_with(ENV_PREFIX))
        .collect()
}

/// Looks a variable up by its full name, ignoring case as figment's `Env` does.
pub(crate) fn by_env(name: &str) -> Option<&'static Var> {
    VARS.iter().find(|v| v.env.eq_ignore_ascii_case(name))
}

/// The variable that sets a field, for error messages; the key itself when none does.
pub(crate) fn env_for_key(key: &str) -> String {
    VARS.iter()
        .find(|v| v.key == key)
        .map_or_else(|| key.to_owned(), |v| v.env.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_keys_are_unique() {
        for (i, a) in VARS.iter().enumerate() {
            for b in &VARS[i + 1..] {
                assert_ne!(a.env, b.env);
                assert_ne!(a.key, b.key);
            }
        }
    }

    /// The README promises that a TOML key is its variable's name in lower case without
    /// `P2PIANO_`, except for the two listed there; keep the table to that promise.
    #[test]
    fn keys_follow_the_readme_rule() {
        for var in VARS {
            let rule = var
                .env
                .strip_prefix(ENV_PREFIX)
                .unwrap_or(var.env)
                .to_ascii_lowercase();
            let expected = match var.env {
                "P2PIANO_LOG" => "log_level",
                "OTEL_SERVICE_NAME" => "service_name",
                _ => &rule,
            };
            assert_eq!(var.key, expected, "{}", var.env);
        }
    }

    #[test]
    fn lookups() {
        assert_eq!(by_env("p2piano_log").map(|v| v.key), Some("log_level"));
        assert_eq!(env_for_key("service_name"), "OTEL_SERVICE_NAME");
        assert_eq!(env_for_key("unknown"), "unknown");
        assert!(unprefixed().contains(&"PORT"));
        assert!(!unprefixed().contains(&"P2PIANO_LOG"));
    }
}
