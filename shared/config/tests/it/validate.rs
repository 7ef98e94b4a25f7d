//! Start-up checks: production requirements per role, rules for every environment, and
//! all problems reported together.

use std::time::Duration;

use p2piano_config::{Config, ConfigError, NodeEnv, Role, RoomStore};

const GOOD_SECRET: &str = "0123456789abcdef0123456789abcdef";

fn production() -> Config {
    Config {
        node_env: NodeEnv::Production,
        cookie_secret: Some(GOOD_SECRET.into()),
        mongo_uri: Some("mongodb://mongo:27017/p2piano".into()),
        nats_url: Some("nats://nats:4222".into()),
        ..Config::default()
    }
}

fn variables(result: Result<(), ConfigError>) -> Vec<&'static str> {
    match result {
        Ok(()) => Vec::new(),
        Err(err) => {
            let message = err.to_string();
            let problems = err.problems().to_vec();
            assert!(
                !problems.is_empty(),
                "expected validation problems, got {message}"
            );
            for problem in &problems {
                assert!(message.contains(&problem.to_string()), "{message}");
            }
            problems.iter().map(|p| p.variable).collect()
        }
    }
}

#[test]
fn defaults_are_valid_for_every_role_in_development() {
    for role in [Role::Edge, Role::Rooms, Role::Presence, Role::All] {
        assert_eq!(
            variables(Config::default().validate(role)),
            Vec::<&str>::new(),
            "{role}"
        );
    }
}

#[test]
fn complete_production_config_is_valid_for_every_role() {
    for role in [Role::Edge, Role::Rooms, Role::Presence, Role::All] {
        assert_eq!(
            variables(production().validate(role)),
            Vec::<&str>::new(),
            "{role}"
        );
    }
}

#[test]
fn production_requires_cookie_secret_for_edge_and_all() {
    let config = Config {
        cookie_secret: None,
        ..production()
    };
    assert_eq!(variables(config.validate(Role::Edge)), ["COOKIE_SECRET"]);
    assert_eq!(variables(config.validate(Role::All)), ["COOKIE_SECRET"]);
    assert!(config.validate(Role::Rooms).is_ok());
    assert!(config.validate(Role::Presence).is_ok());

    let short = Config {
        cookie_secret: Some("too-short".into()),
        ..production()
    };
    let err = short.validate(Role::Edge).unwrap_err();
    assert_eq!(err.problems()[0].variable, "COOKIE_SECRET");
    assert!(err.problems()[0].message.contains("32"), "{err}");

    let exactly_32 = Config {
        cookie_secret: Some("x".repeat(32).into()),
        ..production()
    };
    assert!(exactly_32.validate(Role::Edge).is_ok());
}

#[test]
fn production_requires_mongo_uri_for_rooms_and_split_like_all() {
    let config = Config {
        mongo_uri: None,
        ..production()
    };
    assert_eq!(variables(config.validate(Role::Rooms)), ["MONGO_URI"]);
    assert_eq!(
        variables(config.validate(Role::All)),
        ["MONGO_URI"],
        "All on NATS needs Mongo"
    );
    assert!(config.validate(Role::Edge).is_ok());
    assert!(config.validate(Role::Presence).is_ok());

    let embedded = Config {
        mongo_uri: None,
        nats_url: None,
        ..production()
    };
    assert!(
        embedded.validate(Role::All).is_ok(),
        "embedded All uses memory stores"
    );
}

#[test]
fn production_requires_nats_url_for_split_services() {
    let config = Config {
        nats_url: None,
        ..production()
    };
    for role in [Role::Edge, Role::Rooms, Role::Presence] {
        assert_eq!(variables(config.validate(role)), ["NATS_URL"], "{role}");
    }
    assert!(config.validate(Role::All).is_ok());
}

#[test]
fn development_requires_none_of_the_production_variables() {
    let config = Config::default();
    assert!(config.cookie_secret.is_none() && config.nats_url.is_none());
    assert!(config.validate(Role::Edge).is_ok());
    assert!(config.validate(Role::Rooms).is_ok());
}

#[test]
fn subject_prefix_syntax() {
    for bad in ["", "a..b", "a b", "p2piano.>", "*", "a."] {
        let config = Config {
            subject_prefix: bad.into(),
            ..Config::default()
        };
        assert_eq!(
            variables(config.validate(Role::All)),
            ["P2PIANO_SUBJECT_PREFIX"],
            "{bad:?}"
        );
    }
    let ok = Config {
        subject_prefix: "test_1.run-2".into(),
        ..Config::default()
    };
    assert!(ok.validate(Role::All).is_ok());
}

#[test]
fn zero_timeouts_are_rejected() {
    let config = Config {
        request_timeout: Duration::ZERO,
        mongo_timeout: Duration::ZERO,
        room_idle: Duration::ZERO,
        session_ttl: Duration::ZERO,
        drain_timeout: Duration::ZERO,
        ..Config::default()
    };
    assert_eq!(
        variables(config.validate(Role::All)),
        [
            "P2PIANO_REQUEST_TIMEOUT_MS",
            "P2PIANO_MONGO_TIMEOUT_MS",
            "P2PIANO_ROOM_IDLE_SECS",
            "P2PIANO_SESSION_TTL_SECS",
            "P2PIANO_DRAIN_TIMEOUT_MS",
        ]
    );
    let no_grace = Config {
        leave_grace: Duration::ZERO,
        ..Config::default()
    };
    assert!(
        no_grace.validate(Role::All).is_ok(),
        "a zero leave grace is allowed"
    );
}

#[test]
fn heartbeat_must_be_shorter_than_edge_timeout() {
    let config = Config {
        heartbeat: Duration::from_millis(3000),
        edge_timeout: Duration::from_millis(3000),
        ..Config::default()
    };
    let err = config.validate(Role::Edge).unwrap_err();
    let message = err.to_string();
    assert!(message.contains("P2PIANO_HEARTBEAT_MS"), "{message}");
    assert!(message.contains("P2PIANO_EDGE_TIMEOUT_MS"), "{message}");
}

#[test]
fn malformed_cors_origins_are_rejected() {
    let config = Config {
        cors_origin: vec![
            "http://localhost:5173".into(),
            "localhost:5173".into(),
            "https://app.example/".into(),
            "*".into(),
        ],
        ..Config::default()
    };
    let err = config.validate(Role::Edge).unwrap_err();
    let problems = err.problems();
    assert_eq!(problems.len(), 3, "{err}");
    assert!(problems.iter().all(|p| p.variable == "CORS_ORIGIN"));
    assert!(problems[0].message.contains("localhost:5173"), "{err}");
}

#[test]
fn other_checks_name_their_variable() {
    let config = Config {
        mongo_uri: Some("postgres://h/db".into()),
        mongo_db: Some("bad.name".into()),
        edge_id: Some("edge.1".into()),
        ..Config::default()
    };
    assert_eq!(
        variables(config.validate(Role::All)),
        ["P2PIANO_EDGE_ID", "MONGO_URI", "P2PIANO_MONGO_DB"]
    );
}

#[test]
fn all_problems_are_reported_at_once() {
    let config = Config {
        node_env: NodeEnv::Production,
        cookie_secret: Some("short".into()),
        nats_url: None,
        subject_prefix: "bad prefix".into(),
        request_timeout: Duration::ZERO,
        heartbeat: Duration::from_millis(5000),
        cors_origin: vec!["nope".into()],
        ..Config::default()
    };
    let err = config.validate(Role::Edge).unwrap_err();
    assert_eq!(
        variables(Err(err)),
        [
            "COOKIE_SECRET",
            "NATS_URL",
            "P2PIANO_SUBJECT_PREFIX",
            "P2PIANO_REQUEST_TIMEOUT_MS",
            "P2PIANO_HEARTBEAT_MS",
            "CORS_ORIGIN",
        ]
    );
    let message = config.validate(Role::Edge).unwrap_err().to_string();
    assert!(message.starts_with("invalid configuration:\n"), "{message}");
    assert_eq!(message.lines().count(), 7, "{message}");
}

#[test]
fn production_node_env_is_case_insensitive() {
    let config = Config {
        node_env: NodeEnv::from("Production"),
        ..Config::default()
    };
    assert!(config.is_production());
    assert!(config.validate(Role::Edge).is_err());
}

#[test]
fn memory_room_store_is_refused_in_production() {
    let memory = |base: Config| Config {
        room_store: RoomStore::Memory,
        ..base
    };
    // Development: memory needs no MONGO_URI.
    assert_eq!(
        variables(memory(Config::default()).validate(Role::Rooms)),
        Vec::<&str>::new()
    );
    // Production: refused for the rooms service, whatever MONGO_URI says.
    assert_eq!(
        variables(memory(production()).validate(Role::Rooms)),
        vec!["P2PIANO_ROOM_STORE"]
    );
    // Other values never get this far: loading refuses them (see tests/load.rs).
}
