//! The bus error type: one struct with a typed kind, modeled after async-nats' `Error<Kind>`.
//!
//! Callers branch on [`BusErrorKind`] (e.g. map `Timeout`/`NoResponders` to an `unavailable`
//! reply) while the boxed source keeps the backend's own detail for logs.

use std::fmt;

/// A boxed error from the backend (async-nats) or a plain message, kept for logs.
type Source = Box<dyn std::error::Error + Send + Sync>;

/// What went wrong, coarsely, so that callers can decide what to do without parsing text.
///
/// Both bus implementations map their failures onto these same kinds, which is what lets the
/// service code (and the shared behaviour tests) treat them identically.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BusErrorKind {
    /// A request got no reply within its timeout: a responder exists but did not answer.
    Timeout,
    /// A request found no subscriber at all on its subject; reported at once, not after the
    /// timeout, so that callers fail fast when a service is not running.
    NoResponders,
    /// The connection to the server is down or could not be made.
    Disconnected,
    /// A subject or queue group name was malformed; rejected before anything is sent.
    InvalidSubject,
    /// Anything else (payload too large, invalid header, a closed client, ...).
    Other,
}

impl fmt::Display for BusErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Timeout => "timeout",
            Self::NoResponders => "no responders",
            Self::Disconnected => "disconnected",
            Self::InvalidSubject => "invalid subject",
            Self::Other => "error",
        })
    }
}

/// An error from a [`Bus`](crate::Bus) or [`Subscription`](crate::Subscription) operation.
///
/// Carries a [`BusErrorKind`] to match on and, usually, a source with the detail. Displays as
/// `bus {kind}: {source}` (or `bus {kind}` when there is no source).
#[derive(Debug, thiserror::Error)]
#[error("bus {kind}{}", SourceSuffix(.source.as_deref()))]
pub struct BusError {
    kind: BusErrorKind,
    #[source]
    source: Option<Source>,
}

/// Formats `: {source}` when there is a source, nothing otherwise.
struct SourceSuffix<'a>(Option<&'a (dyn std::error::Error + Send + Sync)>);

impl fmt::Display for SourceSuffix<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(source) => write!(f, ": {source}"),
            None => Ok(()),
        }
    }
}

impl BusError {
    /// An error of `kind` with no further detail, for cases whose kind says it all.
    pub fn new(kind: BusErrorKind) -> Self {
        Self { kind, source: None }
    }

    /// An error of `kind` caused by `source` (another error, or a message as `&str`/`String`),
    /// so that logs keep the backend's own explanation.
    pub fn with_source(
        kind: BusErrorKind,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self {
            kind,
            source: Some(source.into()),
        }
    }

    /// A request that was not answered in time; callers typically retry or report
    /// `unavailable`.
    pub fn timeout() -> Self {
        Self::new(BusErrorKind::Timeout)
    }

    /// A request to a subject nobody listens on; the target service is not running.
    pub fn no_responders() -> Self {
        Self::new(BusErrorKind::NoResponders)
    }

    /// The connection is down or could not be made, with the underlying cause.
    pub fn disconnected(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::with_source(BusErrorKind::Disconnected, source)
    }

    /// A malformed subject or queue group; `reason` says which and why.
    pub fn invalid_subject(reason: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::with_source(BusErrorKind::InvalidSubject, reason)
    }

    /// Any other failure, with its cause.
    pub fn other(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::with_source(BusErrorKind::Other, source)
    }

    /// The kind of failure, to branch on without parsing the message.
    pub fn kind(&self) -> BusErrorKind {
        self.kind
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn display_includes_kind_and_source() {
        let err = BusError::invalid_subject("\"a..b\": empty token");
        assert_eq!(err.kind(), BusErrorKind::InvalidSubject);
        assert_eq!(
            err.to_string(),
            "bus invalid subject: \"a..b\": empty token"
        );
        assert!(err.source().is_some());
    }

    #[test]
    fn display_without_source() {
        let err = BusError::timeout();
        assert_eq!(err.to_string(), "bus timeout");
        assert!(err.source().is_none());
        assert_eq!(BusError::no_responders().to_string(), "bus no responders");
    }
}
