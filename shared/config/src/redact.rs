//! `Debug` for [`Config`] that hides secrets, so that the configuration can be logged at
//! start-up without leaking the cookie secret or database credentials.
//!
//! The [`crate::Secret`] fields hide themselves; this impl exists for the passwords that
//! can hide inside connection strings (`MONGO_URI`, `NATS_URL`), which stay plain strings
//! because the drivers take them whole.

use std::fmt;

use crate::Config;
use crate::mongo::redact_uri;

/// A comma-separated list of URLs (as `NATS_URL` allows), each redacted.
fn redact_urls(urls: &str) -> String {
    urls.split(',')
        .map(redact_uri)
        .collect::<Vec<_>>()
        .join(",")
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("node_env", &self.node_env)
            .field("port", &self.port)
            .field("cors_origin", &self.cors_origin)
            .field("cookie_secret", &self.cookie_secret)
            .field("cookie_secure", &self.cookie_secure)
            .field("mongo_uri", &self.mongo_uri.as_deref().map(redact_uri))
            .field("mongo_username", &self.mongo_username)
            .field("mongo_password", &self.mongo_password)
            .field("mongo_db", &self.mongo_db)
            .field("mongo_timeout", &self.mongo_timeout)
            .field("nats_url", &self.nats_url.as_deref().map(redact_urls))
            .field("subject_prefix", &self.subject_prefix)
            .field("admin_addr", &self.admin_addr)
            .field("edge_id", &self.edge_id)
            .field("mesh_addr", &self.mesh_addr)
            .field("mesh_advertise", &self.mesh_advertise)
            .field("request_timeout", &self.request_timeout)
            .field("room_idle", &self.room_idle)
            .field("session_ttl", &self.session_ttl)
            .field("ip_connect_rate", &self.ip_connect_rate)
            .field("ip_connect_burst", &self.ip_connect_burst)
            .field("room_store", &self.room_store)
            .field("max_connections", &self.max_connections)
            .field("max_connections_per_ip", &self.max_connections_per_ip)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("body_timeout", &self.body_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("leave_grace", &self.leave_grace)
            .field("heartbeat", &self.heartbeat)
            .field("edge_timeout", &self.edge_timeout)
            .field("drain_timeout", &self.drain_timeout)
            .field("kv_replicas", &self.kv_replicas)
            .field("log_format", &self.log_format)
            .field("log_level", &self.log_level)
            .field(
                "otel_exporter_otlp_endpoint",
                &self.otel_exporter_otlp_endpoint,
            )
            .field("service_name", &self.service_name)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_not_printed() {
        let config = Config {
            cookie_secret: Some("cookie-secret-value".into()),
            mongo_password: Some("mongo-password-value".into()),
            mongo_uri: Some("mongodb://u:uri-password@h:1/db".into()),
            nats_url: Some("nats://a:4222,nats://n:nats-password@h:4222".into()),
            ..Config::default()
        };
        let printed = format!("{config:?}");
        for secret in [
            "cookie-secret-value",
            "mongo-password-value",
            "uri-password",
            "nats-password",
        ] {
            assert!(!printed.contains(secret), "{secret} leaked: {printed}");
        }
        assert!(printed.contains("mongodb://u:***@h:1/db"));
        assert!(
            printed.contains("cookie_secret: Some([redacted])"),
            "{printed}"
        );
    }
}
