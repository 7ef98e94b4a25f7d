//! Which MongoDB database a configuration points at.

use p2piano_config::Config;

fn database(uri: Option<&str>, db: Option<&str>) -> String {
    Config {
        mongo_uri: uri.map(str::to_owned),
        mongo_db: db.map(str::to_owned),
        ..Config::default()
    }
    .mongo_database()
}

#[test]
fn database_from_uri_path() {
    assert_eq!(database(Some("mongodb://h:1/mydb?x=y"), None), "mydb");
    assert_eq!(
        database(Some("mongodb://u:p@h1:1,h2:2/rooms"), None),
        "rooms"
    );
    assert_eq!(
        database(Some("mongodb+srv://cluster.example/prod"), None),
        "prod"
    );
}

#[test]
fn fallback_is_p2piano() {
    assert_eq!(database(Some("mongodb://h:1/"), None), "p2piano");
    assert_eq!(database(Some("mongodb://h:1"), None), "p2piano");
    assert_eq!(
        database(Some("mongodb://h:1/?replicaSet=rs0"), None),
        "p2piano"
    );
    assert_eq!(database(None, None), "p2piano");
}

#[test]
fn explicit_database_wins() {
    assert_eq!(
        database(Some("mongodb://h:1/mydb"), Some("override")),
        "override"
    );
    assert_eq!(database(None, Some("override")), "override");
    assert_eq!(database(Some("mongodb://h:1/mydb"), Some("  ")), "mydb");
}
