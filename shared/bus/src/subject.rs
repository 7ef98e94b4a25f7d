//! Subject syntax: validation (shared by both backends) and wildcard matching rules.
//!
//! A subject is tokens separated by `.`. A subscription pattern may use `*` as a whole token
//! (exactly one token) and `>` as the whole last token (one or more trailing tokens). The
//! checks are stricter than nats-server's (which treats `a*` as a literal token) so that a typo
//! fails loudly instead of silently matching nothing, and identical in both backends because
//! [`Bus`](crate::Bus) runs them before delegating.

use crate::error::BusError;

/// Why a subject was rejected, for the error message.
fn invalid(subject: &str, why: &str) -> BusError {
    BusError::invalid_subject(format!("{subject:?}: {why}"))
}

/// Checks the parts both kinds of subject share: non-empty, no whitespace, no empty token.
fn validate_tokens(subject: &str) -> Result<(), BusError> {
    if subject.is_empty() {
        return Err(invalid(subject, "empty subject"));
    }
    if subject.chars().any(char::is_whitespace) {
        return Err(invalid(subject, "contains whitespace"));
    }
    if subject.split('.').any(str::is_empty) {
        return Err(invalid(subject, "empty token"));
    }
    Ok(())
}

/// Validates a subject to publish to: tokens without wildcards.
pub(crate) fn validate_publish(subject: &str) -> Result<(), BusError> {
    validate_tokens(subject)?;
    if subject.contains(['*', '>']) {
        return Err(invalid(
            subject,
            "wildcards are not allowed when publishing",
        ));
    }
    Ok(())
}

/// Validates a subscription pattern: `*` only as a whole token, `>` only as the whole last one.
pub(crate) fn validate_subscribe(subject: &str) -> Result<(), BusError> {
    validate_tokens(subject)?;
    let mut tokens = subject.split('.').peekable();
    while let Some(token) = tokens.next() {
        let last = tokens.peek().is_none();
        match token {
            "*" => {}
            ">" if last => {}
            ">" => return Err(invalid(subject, "'>' must be the last token")),
            t if t.contains(['*', '>']) => {
                return Err(invalid(subject, "a wildcard must be a whole token"));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Validates a queue group name: non-empty, no whitespace (as NATS requires).
pub(crate) fn validate_queue_group(group: &str) -> Result<(), BusError> {
    if group.is_empty() {
        return Err(BusError::invalid_subject("empty queue group name"));
    }
    if group.chars().any(char::is_whitespace) {
        return Err(BusError::invalid_subject(format!(
            "queue group {group:?}: contains whitespace"
        )));
    }
    Ok(())
}

/// Whether `pattern` matches `subject` token by token; the plain definition the trie in
/// [`sublist`](crate::sublist) must agree with, used as its test oracle.
#[cfg(test)]
pub(crate) fn matches(pattern: &str, subject: &str) -> bool {
    let mut subject_tokens = subject.split('.');
    for p in pattern.split('.') {
        match (p, subject_tokens.next()) {
            (">", Some(_)) => return true,
            (_, None) => return false,
            ("*", Some(_)) => {}
            (p, Some(s)) if p == s => {}
            _ => return false,
        }
    }
    subject_tokens.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BusErrorKind;

    fn rejected(result: Result<(), BusError>) -> bool {
        matches!(result, Err(e) if e.kind() == BusErrorKind::InvalidSubject)
    }

    #[test]
    fn publish_subjects() {
        for ok in [
            "a",
            "a.b",
            "p2piano.room.abcde.relay",
            "_INBOX.x1",
            "a-b_c.d:e",
        ] {
            assert!(validate_publish(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", ".", "a.", ".a", "a..b", "a b", "a\tb", "a\n", "*", "a.*", "a.>", "a*", "b>",
        ] {
            assert!(rejected(validate_publish(bad)), "{bad:?}");
        }
    }

    #[test]
    fn subscribe_subjects() {
        for ok in ["a", "a.*", "*.b", "*", ">", "a.>", "*.*.>", "room.*.relay"] {
            assert!(validate_subscribe(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "a..b", "a b", "a.>.b", ">.a", "a*", "a.b>", "a.**", ".>",
        ] {
            assert!(rejected(validate_subscribe(bad)), "{bad:?}");
        }
    }

    #[test]
    fn queue_groups() {
        assert!(validate_queue_group("rooms").is_ok());
        assert!(rejected(validate_queue_group("")));
        assert!(rejected(validate_queue_group("a b")));
    }

    #[test]
    fn matching() {
        assert!(matches("a.b", "a.b"));
        assert!(!matches("a.b", "a.c"));
        assert!(!matches("a.b", "a.b.c"));
        assert!(!matches("a.b.c", "a.b"));
        assert!(matches("a.*", "a.b"));
        assert!(!matches("a.*", "a"));
        assert!(!matches("a.*", "a.b.c"));
        assert!(matches("*.b", "a.b"));
        assert!(matches("a.>", "a.b"));
        assert!(matches("a.>", "a.b.c"));
        assert!(!matches("a.>", "a"));
        assert!(matches(">", "a"));
        assert!(matches("*.>", "a.b"));
        assert!(!matches("*.>", "a"));
    }
}
