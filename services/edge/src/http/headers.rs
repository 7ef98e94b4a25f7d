//! CORS and the security headers of every response, as a careful production service
//! sends them (the original used helmet's defaults; these are stricter where the edge
//! allows it).

use axum::Router;
use axum::http::{HeaderName, HeaderValue, Method, header};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::set_header::SetResponseHeaderLayer;

/// Content-Security-Policy of the edge's own pages (`/docs`, the demo page): scripts,
/// styles and connections to this origin only, no framing, no plugins.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; base-uri 'self'; connect-src 'self'; \
font-src 'self'; form-action 'self'; frame-ancestors 'none'; img-src 'self' data:; \
object-src 'none'; script-src 'self'; style-src 'self'";

/// HSTS for deployments behind TLS (sent when cookies are `Secure`, i.e. not in plain-http
/// development, where it would pin a developer's browser to https for localhost).
const HSTS: &str = "max-age=31536000; includeSubDomains";

fn fixed_headers(hsts: bool) -> Vec<(HeaderName, &'static str)> {
    let mut h = vec![
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
        (
            HeaderName::from_static("cross-origin-resource-policy"),
            "same-site",
        ),
        (HeaderName::from_static("origin-agent-cluster"), "?1"),
        (HeaderName::from_static("x-dns-prefetch-control"), "off"),
        (
            HeaderName::from_static("x-permitted-cross-domain-policies"),
            "none",
        ),
        (
            HeaderName::from_static("permissions-policy"),
            "camera=(), geolocation=(), microphone=(), payment=(), usb=()",
        ),
        // Rooms and sessions change under the client; nothing here may be cached unless a
        // route says otherwise (static assets do).
        (header::CACHE_CONTROL, "no-store"),
    ];
    if hsts {
        h.push((header::STRICT_TRANSPORT_SECURITY, HSTS));
    }
    h
}

/// Wraps `router` with CORS for `origins` (with credentials, so the web client's cookie
/// works) and the security headers. Origins were validated at start-up; any that still
/// cannot be a header value is skipped with a warning.
pub fn apply_layers(mut router: Router, origins: &[String], hsts: bool) -> Router {
    for (name, value) in fixed_headers(hsts) {
        router = router.layer(SetResponseHeaderLayer::if_not_present(
            name,
            HeaderValue::from_static(value),
        ));
    }
    let allowed: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| match HeaderValue::from_str(o) {
            Ok(v) if o != "*" => Some(v),
            _ => {
                tracing::warn!(origin = %o, "CORS origin skipped: not a single origin");
                None
            }
        })
        .collect();
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::list(allowed))
        .allow_credentials(true)
        .allow_methods([Method::GET, Method::HEAD, Method::POST, Method::PUT])
        .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION])
        .max_age(std::time::Duration::from_secs(600));
    router.layer(cors)
}
