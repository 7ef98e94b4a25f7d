//! Loading: defaults, the TOML file, the environment, and errors naming the variable.

use std::net::SocketAddr;
use std::time::Duration;

use figment::Jail;
use p2piano_config::{Config, ConfigError, LogFormat, NodeEnv, RoomStore, Secret};

/// Runs `test` in a figment jail (its own environment and working directory).
#[allow(clippy::result_large_err)] // Jail's closure must return figment's large error type.
fn in_jail(test: impl FnOnce(&mut Jail)) {
    Jail::expect_with(|jail| {
        test(jail);
        Ok(())
    });
}

fn load(_jail: &mut Jail) -> Result<Config, ConfigError> {
    Config::load()
}

/// Loads inside a jail (taking it proves the environment is the jail's).
fn expect_load(jail: &mut Jail) -> Config {
    load(jail).unwrap_or_else(|err| panic!("load failed: {err}"))
}

#[test]
fn defaults() {
    in_jail(|jail| {
        jail.clear_env();
        let config = expect_load(jail);
        assert_eq!(config.node_env, NodeEnv::Development);
        assert!(!config.is_production());
        assert_eq!(config.port, 3001);
        assert_eq!(config.cors_origin, vec!["http://localhost:5173"]);
        assert!(config.cookie_secret.is_none());
        assert!(config.cookie_secure);
        assert_eq!(config.mongo_uri, None);
        assert_eq!(config.mongo_timeout, Duration::from_millis(2000));
        assert_eq!(config.nats_url, None);
        assert_eq!(config.subject_prefix, "p2piano");
        assert_eq!(config.admin_addr, None);
        assert_eq!(config.request_timeout, Duration::from_millis(5000));
        assert_eq!(config.room_idle, Duration::from_secs(5400));
        assert_eq!(config.session_ttl, Duration::from_secs(86400));
        assert_eq!(config.leave_grace, Duration::from_millis(5000));
        assert_eq!(config.heartbeat, Duration::from_millis(1000));
        assert_eq!(config.edge_timeout, Duration::from_millis(3000));
        assert_eq!(config.drain_timeout, Duration::from_millis(20000));
        assert_eq!(config.log_format, LogFormat::Text);
        assert_eq!(config.log_level, "info");
        assert_eq!(config.otel_exporter_otlp_endpoint, None);
        assert_eq!(config.service_name, None);
        assert_eq!(config.mongo_database(), "p2piano");
    });
}

#[test]
fn environment_overrides_defaults() {
    in_jail(|jail| {
        jail.clear_env();
        jail.set_env("PORT", "4000");
        jail.set_env("COOKIE_SECRET", "12345678901234567890123456789012");
        jail.set_env("MONGO_URI", "mongodb://h:1/rooms");
        jail.set_env("MONGO_USERNAME", "user");
        jail.set_env("MONGO_PASSWORD", "true");
        jail.set_env("NATS_URL", "nats://127.0.0.1:4222");
        jail.set_env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
        jail.set_env("OTEL_SERVICE_NAME", "edge-1");
        jail.set_env("P2PIANO_COOKIE_SECURE", "false");
        jail.set_env("P2PIANO_MONGO_DB", "other");
        jail.set_env("P2PIANO_MONGO_TIMEOUT_MS", "250");
        jail.set_env("P2PIANO_SUBJECT_PREFIX", "test.run-1");
        jail.set_env("P2PIANO_ADMIN_ADDR", "127.0.0.1:9999");
        jail.set_env("P2PIANO_EDGE_ID", "edge-a");
        jail.set_env("P2PIANO_REQUEST_TIMEOUT_MS", "100");
        jail.set_env("P2PIANO_ROOM_IDLE_SECS", "60");
        jail.set_env("P2PIANO_SESSION_TTL_SECS", "120");
        jail.set_env("P2PIANO_LEAVE_GRACE_MS", "0");
        jail.set_env("P2PIANO_HEARTBEAT_MS", "200");
        jail.set_env("P2PIANO_EDGE_TIMEOUT_MS", "900");
        jail.set_env("P2PIANO_DRAIN_TIMEOUT_MS", "1500");
        jail.set_env("P2PIANO_LOG_FORMAT", "JSON");
        jail.set_env("P2PIANO_LOG", "debug,hyper=warn");
        let config = expect_load(jail);
        assert_eq!(config.port, 4000);
        // Digits and booleans stay text where text is expected.
        assert_eq!(
            config.cookie_secret.as_ref().map(Secret::expose),
            Some("12345678901234567890123456789012")
        );
        assert_eq!(
            config.mongo_password.as_ref().map(Secret::expose),
            Some("true")
        );
        assert_eq!(config.mongo_uri.as_deref(), Some("mongodb://h:1/rooms"));
        assert_eq!(config.mongo_username.as_deref(), Some("user"));
        assert_eq!(config.nats_url.as_deref(), Some("nats://127.0.0.1:4222"));
        assert_eq!(
            config.otel_exporter_otlp_endpoint.as_deref(),
            Some("http://collector:4318")
        );
        assert_eq!(config.service_name.as_deref(), Some("edge-1"));
        assert!(!config.cookie_secure);
        assert_eq!(config.mongo_db.as_deref(), Some("other"));
        assert_eq!(config.mongo_database(), "other");
        assert_eq!(config.mongo_timeout, Duration::from_millis(250));
        assert_eq!(config.subject_prefix, "test.run-1");
        assert_eq!(
            config.admin_addr,
            Some("127.0.0.1:9999".parse::<SocketAddr>().unwrap())
        );
        assert_eq!(config.edge_id.as_deref(), Some("edge-a"));
        assert_eq!(config.request_timeout, Duration::from_millis(100));
        assert_eq!(config.room_idle, Duration::from_secs(60));
        assert_eq!(config.session_ttl, Duration::from_secs(120));
        assert_eq!(config.leave_grace, Duration::ZERO);
        assert_eq!(config.heartbeat, Duration::from_millis(200));
        assert_eq!(config.edge_timeout, Duration::from_millis(900));
        assert_eq!(config.drain_timeout, Duration::from_millis(1500));
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.log_level, "debug,hyper=warn");
    });
}

#[test]
fn production_defaults_to_json_logs_unless_told_otherwise() {
    in_jail(|jail| {
        jail.clear_env();
        jail.set_env("NODE_ENV", "production");
        let config = expect_load(jail);
        assert!(config.is_production());
        assert_eq!(config.log_format, LogFormat::Json);

        jail.set_env("P2PIANO_LOG_FORMAT", "text");
        assert_eq!(expect_load(jail).log_format, LogFormat::Text);
    });
}

#[test]
fn toml_file_is_overridden_by_environment() {
    in_jail(|jail| {
        jail.clear_env();
        jail.create_file(
            "p2piano.toml",
            r#"
                node_env = "production"
                port = 5000
                cors_origin = ["https://a.example", "https://b.example"]
                mongo_uri = "mongodb://file:1/filedb"
                subject_prefix = "from-file"
                heartbeat_ms = 500
            "#,
        )
        .expect("create file");
        jail.set_env("P2PIANO_CONFIG", "p2piano.toml");
        jail.set_env("PORT", "6000");
        jail.set_env("MONGO_URI", "");
        let config = expect_load(jail);
        assert_eq!(config.node_env, NodeEnv::Production);
        assert_eq!(
            config.log_format,
            LogFormat::Json,
            "production set in the file"
        );
        assert_eq!(config.port, 6000, "environment wins over the file");
        assert_eq!(
            config.cors_origin,
            vec!["https://a.example", "https://b.example"]
        );
        assert_eq!(
            config.mongo_uri, None,
            "an empty variable unsets the file's value"
        );
        assert_eq!(config.subject_prefix, "from-file");
        assert_eq!(config.heartbeat, Duration::from_millis(500));
        assert_eq!(
            config.edge_timeout,
            Duration::from_millis(3000),
            "defaults still apply"
        );
    });
}

#[test]
fn missing_config_file_is_an_error_naming_the_variable() {
    in_jail(|jail| {
        jail.clear_env();
        jail.set_env("P2PIANO_CONFIG", "nowhere.toml");
        let err = load(jail).expect_err("a named file that does not exist must fail");
        assert!(matches!(err, ConfigError::Load(_)));
        let message = err.to_string();
        assert!(message.contains("P2PIANO_CONFIG"), "{message}");
        assert!(message.contains("nowhere.toml"), "{message}");
    });
}

#[test]
fn cors_origin_lists() {
    in_jail(|jail| {
        jail.clear_env();
        jail.set_env(
            "CORS_ORIGIN",
            " https://a.example , http://localhost:5173,,",
        );
        assert_eq!(
            expect_load(jail).cors_origin,
            vec!["https://a.example", "http://localhost:5173"]
        );

        jail.set_env("CORS_ORIGIN", "https://only.example");
        assert_eq!(expect_load(jail).cors_origin, vec!["https://only.example"]);

        jail.set_env("CORS_ORIGIN", "");
        assert_eq!(expect_load(jail).cors_origin, vec!["http://localhost:5173"]);

        jail.create_file(
            "c.toml",
            r#"cors_origin = "https://x.example,https://y.example""#,
        )
        .expect("create file");
        jail.set_env("P2PIANO_CONFIG", "c.toml");
        assert_eq!(
            expect_load(jail).cors_origin,
            vec!["https://x.example", "https://y.example"]
        );
    });
}

#[test]
fn empty_optional_variables_mean_none() {
    in_jail(|jail| {
        jail.clear_env();
        for var in [
            "COOKIE_SECRET",
            "MONGO_URI",
            "NATS_URL",
            "P2PIANO_ADMIN_ADDR",
            "P2PIANO_EDGE_ID",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ] {
            jail.set_env(var, "");
        }
        jail.set_env("PORT", "");
        let config = expect_load(jail);
        assert!(config.cookie_secret.is_none());
        assert_eq!(config.mongo_uri, None);
        assert_eq!(config.nats_url, None);
        assert_eq!(config.admin_addr, None);
        assert_eq!(config.edge_id, None);
        assert_eq!(config.otel_exporter_otlp_endpoint, None);
        assert_eq!(
            config.port, 3001,
            "an empty required variable keeps its default"
        );
    });
}

#[test]
fn bad_values_name_their_variable() {
    for (var, value) in [
        ("PORT", "abc"),
        ("PORT", "70000"),
        ("P2PIANO_REQUEST_TIMEOUT_MS", "-1"),
        ("P2PIANO_COOKIE_SECURE", "maybe"),
        ("P2PIANO_LOG_FORMAT", "xml"),
        ("P2PIANO_ADMIN_ADDR", "not-an-address"),
    ] {
        in_jail(|jail| {
            jail.clear_env();
            jail.set_env(var, value);
            let err = load(jail).expect_err(&format!("{var}={value} must fail"));
            let message = err.to_string();
            assert!(message.contains(var), "{var}={value}: {message}");
        });
    }
}

#[test]
fn unknown_prefixed_variables_are_ignored() {
    in_jail(|jail| {
        jail.clear_env();
        jail.set_env("P2PIANO_SOMETHING_ELSE", "x");
        jail.set_env("P2PIANO_LOG_LEVEL", "trace");
        assert_eq!(expect_load(jail).log_level, "info");
    });
}

#[test]
fn from_figment_accepts_a_partial_figment() {
    use figment::Figment;
    use figment::providers::Serialized;

    let figment = Figment::new()
        .merge(Serialized::default("node_env", "production"))
        .merge(Serialized::default("port", 1234));
    let config = Config::from_figment(figment).expect("partial figment loads");
    assert_eq!(config.port, 1234);
    assert_eq!(config.log_format, LogFormat::Json);
    assert_eq!(config.subject_prefix, "p2piano");
}

#[test]
fn room_store_parses_mongo_and_memory_and_refuses_anything_else() {
    in_jail(|jail| {
        jail.clear_env();
        assert_eq!(expect_load(jail).room_store, RoomStore::Mongo);
        jail.set_env("P2PIANO_ROOM_STORE", "Memory");
        assert_eq!(expect_load(jail).room_store, RoomStore::Memory);
        jail.set_env("P2PIANO_ROOM_STORE", "mongo");
        assert_eq!(expect_load(jail).room_store, RoomStore::Mongo);

        jail.set_env("P2PIANO_ROOM_STORE", "redis");
        let message = load(jail).expect_err("redis is no room store").to_string();
        assert!(message.contains("P2PIANO_ROOM_STORE"), "{message}");
        assert!(
            message.contains("\"redis\" is not a room store (mongo or memory)"),
            "{message}"
        );

        jail.set_env("P2PIANO_ROOM_STORE", "");
        jail.create_file("r.toml", r#"room_store = "sqlite""#)
            .expect("create file");
        jail.set_env("P2PIANO_CONFIG", "r.toml");
        let message = load(jail).expect_err("sqlite is no room store").to_string();
        assert!(message.contains("room_store"), "{message}");
        assert!(message.contains("sqlite"), "{message}");
    });
}

#[test]
fn durations_are_read_from_whole_numbers_in_the_unit_of_their_key() {
    in_jail(|jail| {
        jail.clear_env();
        jail.create_file(
            "d.toml",
            "leave_grace_ms = 750\nroom_idle_secs = 90\nsession_ttl_secs = 7",
        )
        .expect("create file");
        jail.set_env("P2PIANO_CONFIG", "d.toml");
        jail.set_env("P2PIANO_BODY_TIMEOUT_MS", "1234");
        let config = expect_load(jail);
        assert_eq!(config.leave_grace, Duration::from_millis(750));
        assert_eq!(config.room_idle, Duration::from_secs(90));
        assert_eq!(config.session_ttl, Duration::from_secs(7));
        assert_eq!(config.body_timeout, Duration::from_millis(1234));

        // Callers that add a layer merge the same integer keys.
        let figment = Config::figment()
            .merge(("leave_grace_ms", 600))
            .merge(("session_ttl_secs", 1));
        let config = Config::from_figment(figment).expect("merged figment loads");
        assert_eq!(config.leave_grace, Duration::from_millis(600));
        assert_eq!(config.session_ttl, Duration::from_secs(1));

        jail.set_env("P2PIANO_CONFIG", "");
        jail.set_env("P2PIANO_LEAVE_GRACE_MS", "1.5");
        let message = load(jail).expect_err("a fraction is refused").to_string();
        assert!(message.contains("P2PIANO_LEAVE_GRACE_MS"), "{message}");
    });
}

#[test]
fn unknown_keys_in_the_file_are_refused_by_name() {
    in_jail(|jail| {
        jail.clear_env();
        jail.create_file(
            "p2piano.toml",
            "port = 5000\nleave_grace = 600\nsubject_prefix = \"ok\"",
        )
        .expect("create file");
        jail.set_env("P2PIANO_CONFIG", "p2piano.toml");
        let err = load(jail).expect_err("an unknown key must fail");
        assert!(matches!(err, ConfigError::Load(_)));
        let message = err.to_string();
        assert!(
            message.contains("unknown configuration key `leave_grace`"),
            "{message}"
        );
        assert!(
            message.contains("`leave_grace_ms`"),
            "suggestion: {message}"
        );
        assert!(message.contains("p2piano.toml"), "{message}");

        jail.create_file("two.toml", "P2PIANO_LOG = \"debug\"\n[edge]\nport = 1")
            .expect("create file");
        jail.set_env("P2PIANO_CONFIG", "two.toml");
        let message = load(jail).expect_err("unknown keys must fail").to_string();
        assert!(message.contains("`P2PIANO_LOG`"), "{message}");
        assert!(message.contains("`log_level`"), "{message}");
        assert!(message.contains("`edge`"), "{message}");
    });
}

#[test]
fn a_file_with_every_kind_of_value_loads() {
    in_jail(|jail| {
        jail.clear_env();
        jail.create_file(
            "full.toml",
            r#"
                node_env = "staging"
                cookie_secret = "file-secret"
                mongo_password = "file-password"
                room_store = "memory"
                admin_addr = "127.0.0.1:9500"
                trusted_proxies = ["10.0.0.0/8"]
                drain_timeout_ms = 2500
                log_format = "json"
                log_level = "debug"
            "#,
        )
        .expect("create file");
        jail.set_env("P2PIANO_CONFIG", "full.toml");
        jail.set_env("UNRELATED_VARIABLE", "ignored");
        let config = expect_load(jail);
        assert_eq!(config.node_env, NodeEnv::Other("staging".to_owned()));
        assert!(!config.is_production());
        assert_eq!(
            config.cookie_secret.as_ref().map(Secret::expose),
            Some("file-secret")
        );
        assert_eq!(config.room_store, RoomStore::Memory);
        assert_eq!(config.drain_timeout, Duration::from_millis(2500));
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.trusted_proxies, vec!["10.0.0.0/8"]);
    });
}

#[test]
fn secrets_are_not_in_the_debug_output() {
    in_jail(|jail| {
        jail.clear_env();
        jail.set_env("COOKIE_SECRET", "cookie-secret-from-env-0123456789");
        jail.set_env("MONGO_PASSWORD", "mongo-password-from-env");
        let config = expect_load(jail);
        let printed = format!("{config:?}");
        assert!(!printed.contains("cookie-secret-from-env"), "{printed}");
        assert!(!printed.contains("mongo-password-from-env"), "{printed}");
        assert!(printed.contains("[redacted]"), "{printed}");
        assert_eq!(
            config.cookie_secret.as_ref().map(Secret::expose),
            Some("cookie-secret-from-env-0123456789")
        );
    });
}

/// What `to_env` writes loads back as the configuration it was written from, every
/// setting changed from its default (so a variable left out or misnamed shows).
#[test]
fn to_env_loads_back_as_the_same_configuration() {
    in_jail(|jail| {
        jail.clear_env();
        use figment::providers::{Format, Toml};
        let figment = Config::figment().merge(Toml::string(
            r#"
            node_env = "test"
            port = 4123
            cors_origin = ["https://a.example", "https://b.example"]
            cookie_secret = "a-cookie-secret-of-32-characters-or-more"
            cookie_secure = false
            mongo_uri = "mongodb://127.0.0.1:27018"
            mongo_username = "player"
            mongo_password = "a password, with a comma"
            mongo_db = "elsewhere"
            mongo_timeout_ms = 1234
            room_store = "memory"
            nats_url = "nats://127.0.0.1:4333"
            subject_prefix = "planned"
            admin_addr = "127.0.0.1:9123"
            edge_id = "edge-7"
            mesh_addr = "0.0.0.0:3101"
            mesh_advertise = "edge-7.edges:3101"
            request_timeout_ms = 2345
            room_idle_secs = 77
            session_ttl_secs = 88
            ip_connect_rate = 3
            ip_connect_burst = 4
            max_connections = 555
            max_connections_per_ip = 66
            trusted_proxies = ["10.0.0.0/8", "127.0.0.1"]
            body_timeout_ms = 3456
            connect_timeout_ms = 4567
            leave_grace_ms = 678
            heartbeat_ms = 123
            edge_timeout_ms = 789
            drain_timeout_ms = 890
            kv_replicas = 3
            log_format = "json"
            log_level = "debug,p2piano=trace"
            otel_exporter_otlp_endpoint = "http://127.0.0.1:4317"
            service_name = "planned-service"
            "#,
        ));
        let planned = Config::from_figment(figment).expect("planned configuration");
        let defaults = serde_json::to_value(expect_load(jail)).unwrap();
        let planned_json = serde_json::to_value(&planned).unwrap();
        for (key, value) in planned_json.as_object().unwrap() {
            assert_ne!(&defaults[key], value, "{key} is still its default");
        }
        for (name, value) in planned.to_env() {
            jail.set_env(name, value);
        }
        let loaded = serde_json::to_value(expect_load(jail)).unwrap();
        assert_eq!(loaded, planned_json);
    });
}

/// An unset optional setting is written empty, so that it stays unset over a TOML file
/// that sets it.
#[test]
fn to_env_unsets_what_the_file_sets() {
    in_jail(|jail| {
        jail.clear_env();
        let unset = expect_load(jail);
        assert_eq!(unset.nats_url, None);
        jail.create_file("p2piano.toml", "nats_url = \"nats://127.0.0.1:4333\"")
            .unwrap();
        jail.set_env("P2PIANO_CONFIG", "p2piano.toml");
        assert!(expect_load(jail).nats_url.is_some());
        for (name, value) in unset.to_env() {
            jail.set_env(name, value);
        }
        assert_eq!(expect_load(jail).nats_url, None);
    });
}
