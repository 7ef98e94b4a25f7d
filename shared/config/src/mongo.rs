//! Reading the parts of a MongoDB connection string this crate needs.

use crate::Config;

/// Database used when neither `P2PIANO_MONGO_DB` nor `MONGO_URI` names one.
const DEFAULT_DATABASE: &str = "p2piano";

impl Config {
    /// The MongoDB database to use: `mongo_db` if set, else the path of `MONGO_URI` if it
    /// has one (`mongodb://h:1/mydb?x=y` → `mydb`), else `p2piano`. One rule in one place,
    /// so that every service and test agrees on where rooms live.
    pub fn mongo_database(&self) -> String {
        self.mongo_db
            .as_deref()
            .map(str::trim)
            .filter(|db| !db.is_empty())
            .or_else(|| self.mongo_uri.as_deref().and_then(uri_database))
            .unwrap_or(DEFAULT_DATABASE)
            .to_owned()
    }
}

/// Splits a connection string into scheme (with `://`), authority and the rest.
fn split_uri(uri: &str) -> (&str, &str, &str) {
    let (scheme, rest) = match uri.find("://") {
        Some(at) => uri.split_at(at + 3),
        None => ("", uri),
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    (scheme, authority, tail)
}

/// The database named in the path of a connection string, if any.
pub(crate) fn uri_database(uri: &str) -> Option<&str> {
    let (_, _, tail) = split_uri(uri.trim());
    let path = tail.strip_prefix('/')?;
    let db = path.split('?').next().unwrap_or_default();
    (!db.is_empty()).then_some(db)
}

/// The connection string with any password replaced, safe to log.
pub(crate) fn redact_uri(uri: &str) -> String {
    let (scheme, authority, tail) = split_uri(uri);
    match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}{user}:***@{hosts}{tail}")
        }
        None => uri.to_owned(),
    }
}

/// Whether a connection string has a scheme the MongoDB driver accepts.
pub(crate) fn has_mongo_scheme(uri: &str) -> bool {
    let uri = uri.trim();
    uri.starts_with("mongodb://") || uri.starts_with("mongodb+srv://")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_from_uri() {
        assert_eq!(uri_database("mongodb://h:1/mydb?x=y"), Some("mydb"));
        assert_eq!(uri_database("mongodb://u:p@h1:1,h2:2/db"), Some("db"));
        assert_eq!(uri_database("mongodb://h:1/"), None);
        assert_eq!(uri_database("mongodb://h:1"), None);
        assert_eq!(uri_database("mongodb://h:1/?replicaSet=rs"), None);
        assert_eq!(uri_database("mongodb://h:1?x=y"), None);
    }

    #[test]
    fn redaction_hides_the_password_only() {
        assert_eq!(
            redact_uri("mongodb://user:secret@h:1/db?x=y"),
            "mongodb://user:***@h:1/db?x=y"
        );
        assert_eq!(redact_uri("mongodb://h:1/db"), "mongodb://h:1/db");
    }

    #[test]
    fn schemes() {
        assert!(has_mongo_scheme("mongodb://h"));
        assert!(has_mongo_scheme("mongodb+srv://h"));
        assert!(!has_mongo_scheme("http://h"));
    }
}
