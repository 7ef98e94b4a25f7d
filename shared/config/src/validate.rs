//! Start-up checks: the rules a loaded configuration must follow before a role starts.

use crate::error::Problem;
use crate::mongo::has_mongo_scheme;
use crate::vars::{
    COOKIE_SECRET, CORS_ORIGIN, DRAIN_TIMEOUT_MS, EDGE_ID, EDGE_TIMEOUT_MS, HEARTBEAT_MS,
    KV_REPLICAS, MONGO_DB, MONGO_TIMEOUT_MS, MONGO_URI, NATS_URL, REQUEST_TIMEOUT_MS,
    ROOM_IDLE_SECS, ROOM_STORE, SESSION_TTL_SECS, SUBJECT_PREFIX,
};
use crate::{Config, ConfigError, Role, RoomStore, Secret};

/// Shortest cookie secret accepted in production.
const MIN_COOKIE_SECRET_LEN: usize = 32;

impl Config {
    /// Start-up checks for `role`; every problem is returned at once, each naming its
    /// variable, so that an operator fixes them in one round.
    ///
    /// In production (`NODE_ENV=production`): a missing or short (< 32 characters)
    /// `COOKIE_SECRET` (roles Edge and All), a missing `MONGO_URI` (role Rooms, and role All
    /// when `NATS_URL` is set, i.e. split-like mode), a missing `NATS_URL` (roles Edge,
    /// Rooms and Presence) and `P2PIANO_ROOM_STORE=memory` (role Rooms) are errors. In
    /// every environment: the subject prefix syntax, zero timeouts, a heartbeat not shorter
    /// than the edge timeout, malformed CORS origins, a `MONGO_URI` without a MongoDB
    /// scheme, and an edge id or database name that cannot be used. (An unknown room store
    /// never gets here: loading refuses it.)
    pub fn validate(&self, role: Role) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        if self.is_production() {
            self.check_production(role, &mut problems);
        }
        self.check_always(&mut problems);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    fn check_production(&self, role: Role, problems: &mut Vec<Problem>) {
        if matches!(role, Role::Edge | Role::All) {
            match self.cookie_secret.as_ref().map(Secret::expose) {
                None => problems.push(Problem::new(
                    COOKIE_SECRET,
                    "is required in production (it signs the session cookie)",
                )),
                Some(secret) if secret.chars().count() < MIN_COOKIE_SECRET_LEN => {
                    problems.push(Problem::new(
                        COOKIE_SECRET,
                        format!(
                            "must be at least {MIN_COOKIE_SECRET_LEN} characters in production (it has {})",
                            secret.chars().count()
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
        if role == Role::Rooms && self.room_store == RoomStore::Memory {
            problems.push(Problem::new(
                ROOM_STORE,
                "must not be memory in production (rooms would be lost on restart and not shared between replicas)",
            ));
        }
        let needs_mongo = match role {
            Role::Rooms => self.room_store == RoomStore::Mongo,
            Role::All => self.nats_url.is_some(),
            Role::Edge | Role::Presence => false,
        };
        if needs_mongo && self.mongo_uri.is_none() {
            problems.push(Problem::new(
                MONGO_URI,
                "is required in production (rooms are stored in MongoDB)",
            ));
        }
        if matches!(role, Role::Edge | Role::Rooms | Role::Presence) && self.nats_url.is_none() {
            problems.push(Problem::new(
                NATS_URL,
                format!(
                    "is required in production for the {role} service (the services talk over NATS)"
                ),
            ));
        }
    }

    fn check_always(&self, problems: &mut Vec<Problem>) {
        if let Err(message) = check_subject_tokens(&self.subject_prefix) {
            problems.push(Problem::new(SUBJECT_PREFIX, message));
        }
        if let Some(edge_id) = &self.edge_id
            && let Err(message) = check_token(edge_id)
        {
            problems.push(Problem::new(
                EDGE_ID,
                format!("{message} (it is one subject token)"),
            ));
        }
        for (variable, value) in [
            (REQUEST_TIMEOUT_MS, self.request_timeout),
            (MONGO_TIMEOUT_MS, self.mongo_timeout),
            (ROOM_IDLE_SECS, self.room_idle),
            (SESSION_TTL_SECS, self.session_ttl),
            (HEARTBEAT_MS, self.heartbeat),
            (EDGE_TIMEOUT_MS, self.edge_timeout),
            (DRAIN_TIMEOUT_MS, self.drain_timeout),
        ] {
            if value.is_zero() {
                problems.push(Problem::new(variable, "must be greater than 0"));
            }
        }
        if !(1..=5).contains(&self.kv_replicas) {
            problems.push(Problem::new(
                KV_REPLICAS,
                "must be between 1 and 5 (JetStream's limit)",
            ));
        }
        if self.heartbeat >= self.edge_timeout {
            problems.push(Problem::new(
                HEARTBEAT_MS,
                format!(
                    "must be less than {EDGE_TIMEOUT_MS} ({} >= {}), or live edges would be declared dead",
                    self.heartbeat.as_millis(),
                    self.edge_timeout.as_millis()
                ),
            ));
        }
        for origin in &self.cors_origin {
            if let Err(message) = check_origin(origin) {
                problems.push(Problem::new(CORS_ORIGIN, format!("{origin:?} {message}")));
            }
        }
        if let Some(uri) = &self.mongo_uri
            && !has_mongo_scheme(uri)
        {
            problems.push(Problem::new(
                MONGO_URI,
                "must start with mongodb:// or mongodb+srv://",
            ));
        }
        if let Some(db) = &self.mongo_db
            && let Some(bad) = db.chars().find(|c| "/\\. \"$\0".contains(*c))
        {
            problems.push(Problem::new(
                MONGO_DB,
                format!("{db:?} is not a valid database name (it contains {bad:?})"),
            ));
        }
    }
}

/// One subject token: non-empty, only `[A-Za-z0-9_-]`.
fn check_token(token: &str) -> Result<(), String> {
    if token.is_empty() {
        return Err("must not be empty".to_owned());
    }
    match token
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        Some(bad) => Err(format!(
            "{token:?} contains {bad:?}; only letters, digits, '_' and '-' are allowed"
        )),
        None => Ok(()),
    }
}

/// One or more dot-separated subject tokens.
fn check_subject_tokens(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() {
        return Err("must not be empty".to_owned());
    }
    for token in prefix.split('.') {
        if token.is_empty() {
            return Err(format!("{prefix:?} has an empty token between dots"));
        }
        check_token(token)?;
    }
    Ok(())
}

/// A browser origin: `http` or `https`, a host, an optional port, nothing else; the
/// `Origin` header never carries a path, so a configured path would never match.
fn check_origin(origin: &str) -> Result<(), &'static str> {
    if origin == "*" {
        return Err("is a wildcard, which cannot be used with credentials; list the origins");
    }
    let rest = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .ok_or("must start with http:// or https://")?;
    if rest.contains(['/', '?', '#']) {
        return Err("must not have a path (not even a trailing '/'), query or fragment");
    }
    if rest.contains('@') {
        return Err("must not contain user information");
    }
    let (host, port) = match rest.strip_prefix('[') {
        Some(v6) => {
            let (host, after) = v6.split_once(']').ok_or("has an unclosed '['")?;
            if host.is_empty()
                || !host
                    .chars()
                    .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
            {
                return Err("has an invalid IPv6 host");
            }
            match after {
                "" => (host, None),
                _ => (
                    host,
                    Some(after.strip_prefix(':').ok_or("has text after the host")?),
                ),
            }
        }
        None => match rest.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        },
    };
    if host.is_empty() {
        return Err("has no host");
    }
    if !rest.starts_with('[')
        && !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    {
        return Err("has an invalid host");
    }
    if let Some(port) = port
        && (port.is_empty()
            || !port.chars().all(|c| c.is_ascii_digit())
            || port.parse::<u16>().is_err())
    {
        return Err("has an invalid port");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        for good in [
            "http://localhost:5173",
            "https://p2piano.com",
            "https://a-b.example.org:8443",
            "http://127.0.0.1:3000",
            "http://[::1]:5173",
        ] {
            assert_eq!(check_origin(good), Ok(()), "{good}");
        }
        for bad in [
            "*",
            "localhost:5173",
            "ftp://x",
            "http://",
            "http://x/",
            "http://x/path",
            "http://x:port",
            "http://x:99999",
            "http://u@x",
            "http://x y",
            "http://[::1",
        ] {
            assert!(check_origin(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn subject_tokens() {
        assert!(check_subject_tokens("p2piano").is_ok());
        assert!(check_subject_tokens("t-1.a_b.C9").is_ok());
        for bad in ["", ".", "a.", ".a", "a..b", "a b", "a.*", "a.>", "ü"] {
            assert!(check_subject_tokens(bad).is_err(), "{bad}");
        }
    }
}
