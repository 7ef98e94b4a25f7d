//! Sessions at the edge: the signed `sessionId` cookie, bearer tokens, and lookups and
//! creation through presence.
//!
//! The cookie value is `<sessionId>.<signature>`, the signature being HMAC-SHA256 of the
//! session id under `COOKIE_SECRET`, base64url without padding, checked in constant time.
//! A value with a bad signature is treated as no cookie at all, so a forged or altered
//! cookie earns a fresh session, never someone else's. The same signed value is accepted
//! as `Authorization: Bearer <value>` and as the `sessionId` of a socket's namespace
//! connect; there, a bare session id is accepted too, since a 128-bit secret that the
//! client holds needs no signature to be unguessable (the signature only keeps cookie
//! values from being made up).

use std::net::IpAddr;
use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue, header};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use p2piano_protocol::presence::{SessionCreate, SessionInfo};
use p2piano_protocol::{ErrorBody, ErrorCode, SessionId, UserId};
use sha2::Sha256;

use super::limits::IpLimits;
use crate::rpc::Rpc;

/// Name of the session cookie, as the original service set it.
pub const SESSION_COOKIE: &str = "sessionId";

/// Cookie lifetime: 30 days, in seconds (the original meant 30 days but wrote
/// milliseconds into `Max-Age`). The session itself expires after 24 h without use;
/// an expired session's cookie simply earns a new session.
pub const COOKIE_MAX_AGE_SECS: u64 = 30 * 24 * 3600;

/// Longest `User-Agent` kept with a session (operators' information only).
const USER_AGENT_MAX: usize = 256;

type HmacSha256 = Hmac<Sha256>;

/// Signs and verifies session cookie values with `COOKIE_SECRET`.
#[derive(Clone)]
pub struct CookieSigner {
    key: Arc<[u8]>,
}

impl std::fmt::Debug for CookieSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CookieSigner(<secret>)")
    }
}

impl CookieSigner {
    /// A signer with this secret (production requires at least 32 characters; the
    /// configuration checks that at start-up).
    pub fn new(secret: &[u8]) -> Self {
        Self {
            key: Arc::from(secret),
        }
    }

    fn mac(&self, id: &SessionId) -> HmacSha256 {
        // HMAC takes keys of any length.
        let mut mac = HmacSha256::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!());
        mac.update(id.expose().as_bytes());
        mac
    }

    /// The cookie value for a session: `<id>.<signature>`.
    pub fn sign(&self, id: &SessionId) -> String {
        let tag = self.mac(id).finalize().into_bytes();
        format!("{}.{}", id.expose(), URL_SAFE_NO_PAD.encode(tag))
    }

    /// The session id of a signed value, if the signature is right (constant-time check;
    /// a non-canonical base64 signature is refused as well).
    pub fn verify(&self, value: &str) -> Option<SessionId> {
        let (id, sig) = value.split_once('.')?;
        let id = SessionId::parse(id).ok()?;
        let sig = URL_SAFE_NO_PAD.decode(sig).ok()?;
        self.mac(&id).verify_slice(&sig).ok()?;
        Some(id)
    }
}

/// A session resolved (or made) for an HTTP request.
#[derive(Clone, Debug)]
pub struct HttpSession {
    /// The secret, for nothing but presence calls.
    pub id: SessionId,
    /// The public id: the owner of rooms it creates, what other members see.
    pub user_id: UserId,
    /// `Set-Cookie` to send when the session is new.
    pub set_cookie: Option<HeaderValue>,
}

/// Finds the session a request or socket presents, or makes one, through presence.
#[derive(Clone, Debug)]
pub struct SessionAuth {
    rpc: Rpc,
    signer: CookieSigner,
    secure: bool,
    ip_limits: Arc<IpLimits>,
}

impl SessionAuth {
    /// `secure` adds the cookie's `Secure` attribute (off only for plain-http development).
    /// `ip_limits` bounds new sessions per client address (shared with the socket upgrades).
    pub fn new(rpc: Rpc, signer: CookieSigner, secure: bool, ip_limits: Arc<IpLimits>) -> Self {
        Self {
            rpc,
            signer,
            secure,
            ip_limits,
        }
    }

    /// Connection attempts per client address.
    pub fn ip_limits(&self) -> &IpLimits {
        &self.ip_limits
    }

    /// The signer, for tools and tests that need a valid cookie.
    pub fn signer(&self) -> &CookieSigner {
        &self.signer
    }

    /// The `Set-Cookie` value for a session.
    pub fn set_cookie(&self, id: &SessionId) -> HeaderValue {
        let secure = if self.secure { "; Secure" } else { "" };
        let value = format!(
            "{SESSION_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={COOKIE_MAX_AGE_SECS}{secure}",
            self.signer.sign(id)
        );
        // Hex, base64url and fixed ASCII only.
        HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// The credentials presented, most specific first: an explicit one (a socket's connect
    /// auth), then `Authorization: Bearer`, then every `sessionId` cookie. Values that cannot
    /// be valid are dropped here, without a request to presence.
    fn candidates(&self, explicit: Option<&str>, headers: &HeaderMap) -> Vec<SessionId> {
        let token = |v: &str| self.signer.verify(v).or_else(|| SessionId::parse(v).ok());
        let mut out = Vec::new();
        out.extend(explicit.and_then(token));
        let bearer = headers
            .get_all(header::AUTHORIZATION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| {
                let (scheme, rest) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            })
            .filter_map(token);
        out.extend(bearer);
        let cookies = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .filter(|(name, _)| *name == SESSION_COOKIE)
            .filter_map(|(_, value)| self.signer.verify(value.trim().trim_matches('"')));
        out.extend(cookies);
        out.dedup();
        out
    }

    /// Whether `headers` carry a `sessionId` cookie with a wrong signature (forged or
    /// altered): recorded as a security event where the request is refused or given a new
    /// session.
    pub fn has_forged_cookie(&self, headers: &HeaderMap) -> bool {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .filter(|(name, _)| *name == SESSION_COOKIE)
            .any(|(_, value)| self.signer.verify(value.trim().trim_matches('"')).is_none())
    }

    /// Records a forged session cookie from `ip` as a security event, if `headers` carry one.
    pub fn note_forged(&self, headers: &HeaderMap, ip: IpAddr) {
        if self.has_forged_cookie(headers) {
            self.rpc.metrics().security.record(
                crate::security::Kind::BadSession,
                ip,
                None,
                "session cookie with a wrong signature",
            );
        }
    }

    /// The first presented session that presence knows (refreshing its expiry), `None`
    /// when there is none, an error when presence cannot be asked.
    #[tracing::instrument(skip_all)]
    pub async fn resolve_with(
        &self,
        explicit: Option<&str>,
        headers: &HeaderMap,
    ) -> Result<Option<(SessionId, SessionInfo)>, ErrorBody> {
        for id in self.candidates(explicit, headers) {
            match self.rpc.session_get(&id).await {
                Ok(info) => return Ok(Some((id, info))),
                Err(e) if matches!(e.code, ErrorCode::NotFound | ErrorCode::Invalid) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// The request's session, or a new one with its `Set-Cookie`.
    #[tracing::instrument(skip_all)]
    pub async fn get_or_create(
        &self,
        headers: &HeaderMap,
        ip: IpAddr,
    ) -> Result<HttpSession, ErrorBody> {
        if let Some((id, info)) = self.resolve_with(None, headers).await? {
            return Ok(HttpSession {
                id,
                user_id: info.user_id,
                set_cookie: None,
            });
        }
        self.note_forged(headers, ip);
        if let Err(wait) = self.ip_limits.check(ip) {
            tracing::debug!(%ip, ?wait, "new session refused: address over its limit");
            return Err(ErrorBody::new(
                ErrorCode::RateLimited,
                "Too many new sessions from this address",
            ));
        }
        let user_agent = headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.chars().take(USER_AGENT_MAX).collect());
        let created = self
            .rpc
            .session_create(&SessionCreate {
                ip: Some(ip.to_string()),
                user_agent,
            })
            .await?;
        tracing::debug!(user_id = %created.user_id, "new session");
        let set_cookie = Some(self.set_cookie(&created.session_id));
        Ok(HttpSession {
            id: created.session_id,
            user_id: created.user_id,
            set_cookie,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_values_verify_and_tampering_is_refused() {
        let signer = CookieSigner::new(b"a-secret-of-at-least-thirty-two-bytes!!");
        let id = SessionId::random();
        let value = signer.sign(&id);
        assert_eq!(signer.verify(&value), Some(id.clone()));
        // Any changed character of the id or the signature is refused.
        for i in 0..value.len() {
            let mut bytes = value.clone().into_bytes();
            bytes[i] = if bytes[i] == b'a' { b'b' } else { b'a' };
            let altered = String::from_utf8(bytes).unwrap();
            if altered != value {
                assert_eq!(signer.verify(&altered), None, "{altered}");
            }
        }
        // Another secret, a bare id, and junk are refused.
        assert_eq!(
            CookieSigner::new(b"another-secret-another-secret-xx").verify(&value),
            None
        );
        assert_eq!(signer.verify(id.expose()), None);
        assert_eq!(signer.verify(""), None);
        assert_eq!(signer.verify("."), None);
        assert_eq!(format!("{signer:?}"), "CookieSigner(<secret>)");
    }
}
