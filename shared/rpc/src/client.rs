//! The one client of the services' RPCs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use p2piano_bus::{Bus, BusError, Headers};
use p2piano_protocol::{Call, ErrorBody, ErrorCode, Op, Reply, Subjects};

/// Why a call failed. Callers branch on it: a refusal is the service's answer (pass it on),
/// the others mean the service could not be asked (retry later, or answer `unavailable`).
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The service answered with an error.
    #[error("{0}")]
    Refused(ErrorBody),
    /// No answer: no responders, a timeout, the bus down.
    #[error("{service} did not answer: {source}")]
    Unreachable {
        /// The service asked.
        service: &'static str,
        /// What the bus said.
        source: BusError,
    },
    /// An answer this version cannot read.
    #[error("unreadable reply from {service}: {reason}")]
    Unreadable {
        /// The service asked.
        service: &'static str,
        /// serde's reason.
        reason: String,
    },
}

impl CallError {
    /// The error for a client: the service's own, or `unavailable` when it could not be
    /// asked (the details are in the log, not in the answer).
    pub fn into_body(self) -> ErrorBody {
        match self {
            CallError::Refused(e) => e,
            CallError::Unreachable { service, .. } | CallError::Unreadable { service, .. } => {
                ErrorBody::new(
                    ErrorCode::Unavailable,
                    format!("{service} is unavailable, try again later"),
                )
            }
        }
    }

    /// The service's error code, when it answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            CallError::Refused(e) => Some(e.code),
            _ => None,
        }
    }
}

/// Observes each call's round trip (failures included): service, operation, duration.
pub type Observer = Arc<dyn Fn(&'static str, &'static str, Duration) + Send + Sync>;

/// Sends typed requests to the rooms and presence services and reads their replies.
#[derive(Clone)]
pub struct RpcClient {
    bus: Bus,
    subjects: Subjects,
    timeout: Duration,
    observe: Option<Observer>,
}

impl std::fmt::Debug for RpcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcClient")
            .field("subjects", &self.subjects)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RpcClient {
    /// A client on `bus`; every call waits at most `timeout` for its answer.
    pub fn new(bus: Bus, subjects: Subjects, timeout: Duration) -> Self {
        Self {
            bus,
            subjects,
            timeout,
            observe: None,
        }
    }

    /// The same client, reporting each call's round trip to `observe` (a latency histogram).
    pub fn observed(mut self, observe: Observer) -> Self {
        self.observe = Some(observe);
        self
    }

    /// The bus in use.
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// The subjects in use.
    pub fn subjects(&self) -> &Subjects {
        &self.subjects
    }

    /// Sends `req` to its operation's subject, with the current span's trace context in the
    /// headers, and reads the reply as the operation's reply type.
    pub async fn call<C: Call>(&self, req: &C) -> Result<C::Reply, CallError> {
        let op: Op = C::OP;
        let service = op.service();
        let body = serde_json::to_vec(req)
            .map_err(|e| CallError::Refused(ErrorBody::new(ErrorCode::Invalid, e.to_string())))?;
        let mut headers = Headers::new();
        p2piano_telemetry::inject_context(&mut headers);
        let started = Instant::now();
        let result = self
            .bus
            .request(
                &op.subject(&self.subjects),
                headers,
                body.into(),
                self.timeout,
            )
            .await;
        if let Some(observe) = &self.observe {
            observe(service, op.as_str(), started.elapsed());
        }
        let msg = result.map_err(|source| {
            tracing::warn!(error = %source, service, op = op.as_str(), "rpc failed");
            CallError::Unreachable { service, source }
        })?;
        match serde_json::from_slice::<Reply<C::Reply>>(&msg.payload) {
            Ok(reply) => reply.into_result().map_err(CallError::Refused),
            Err(e) => {
                tracing::warn!(error = %e, service, op = op.as_str(), "unreadable rpc reply");
                Err(CallError::Unreadable {
                    service,
                    reason: e.to_string(),
                })
            }
        }
    }
}
