//! The keys presence stores its records under, built in one place.

use p2piano_protocol::SessionId;
use sha2::{Digest, Sha256};

/// Where presence stores a session: the hex SHA-256 of its secret. One-way, so that a dump
/// of the KV buckets does not let anyone act as the user; the secret itself is only ever
/// in the cookie and in requests.
pub fn session_key(id: &SessionId) -> String {
    let digest = Sha256::digest(id.expose().as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_stored_under_a_hash_of_its_secret() {
        let id = SessionId::random();
        let key = session_key(&id);
        assert_eq!(key.len(), 64);
        assert!(!key.contains(id.expose()));
        assert_eq!(key, session_key(&SessionId::parse(id.expose()).unwrap()));
        assert_ne!(key, session_key(&SessionId::random()));
        // The hash is SHA-256, as records written by earlier versions were keyed.
        let known = SessionId::parse(&"0".repeat(32)).unwrap();
        assert_eq!(
            session_key(&known),
            "84e0c0eafaa95a34c293f278ac52e45ce537bab5e752a00e6959a13ae103b65a"
        );
    }
}
