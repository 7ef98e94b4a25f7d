//! The edge's HTTP API end to end (docs/protocol.md "HTTP"): health and metrics, sessions and
//! their signed cookie, both room dialects, per-session limits, CORS and security headers,
//! errors and the OpenAPI document, over the split deployment (two edges, real NATS) and in
//! process.

use crate::support;

use serde_json::{Value, json};
use support::client::Got;
use support::{Cluster, Mode, Response, SioClient, request};

#[p2piano_testkit::both_modes(
    nats = Cluster::start(Mode::Nats).await,
    in_process = Cluster::start(Mode::InProcess).await,
)]
mod cases {
    use super::*;

    pub async fn health_and_metrics(c: Cluster) {
        for (i, port) in c.edge_ports().into_iter().enumerate() {
            let r = call(port, "GET", "/health", &[], "").await;
            assert_eq!(r.status, 200, "{}", r.body);
            absent(&r, "set-cookie");
            let v = r.json();
            assert_eq!(keys(&v), ["status", "timestamp", "uptime"], "{v}");
            assert_eq!(v["status"], "ok");
            let skew = (chrono::Utc::now() - iso(&v["timestamp"])).num_seconds();
            assert!(skew.abs() < 60, "timestamp is not now: {v}");
            let up = v["uptime"].as_f64().expect("uptime is a number");
            assert!(up >= 0.0, "{v}");
            let later = call(port, "GET", "/health", &[], "").await.json();
            assert!(later["uptime"].as_f64().unwrap() >= up, "{later}");

            let r = call(port, "GET", "/health/live", &[], "").await;
            assert_eq!((r.status, r.json()), (200, json!({"status": "ok"})));
            let r = call(port, "GET", "/health/ready", &[], "").await;
            assert_eq!(r.status, 200, "{}", r.body);
            assert_eq!(r.json()["status"], "ok");
            // Metrics are on the admin listener only, never on the port the internet reaches.
            let r = call(port, "GET", "/metrics", &[], "").await;
            assert_eq!(r.status, 404, "{}", r.body);
            let admin = c.admin(i);
            let r = call(admin, "GET", "/metrics", &[], "").await;
            assert_eq!(r.status, 200, "{}", r.body);
            assert!(r.body.contains("p2piano_edge_connections"), "{}", r.body);
            assert!(
                r.body.contains("p2piano_bus_dropped_messages_total 0"),
                "the bus's drops are exported: {}",
                r.body
            );
            let r = call(admin, "GET", "/health/ready", &[], "").await;
            assert_eq!(r.status, 200, "{}", r.body);
        }
    }

    pub async fn sessions_and_cookies(c: Cluster) {
        let (a, b) = (c.edge(0), c.edge(1));
        let r = call(a, "POST", "/rooms", &[], "").await;
        let path = format!("/rooms/{}", room(&r, 201)["code"].as_str().unwrap());
        let set = r.header("set-cookie").expect("a new session's Set-Cookie");
        let mut parts = set.split(';').map(str::trim);
        let cookie = parts.next().unwrap().to_owned();
        let mut attrs: Vec<&str> = parts.collect();
        attrs.sort();
        let want = ["HttpOnly", "Max-Age=2592000", "Path=/", "SameSite=Strict"];
        assert_eq!(attrs, want, "{set}");
        assert!(!set.to_ascii_lowercase().contains("secure"), "{set}");
        let value = cookie.strip_prefix("sessionId=").expect(set).to_owned();
        let (id, sig) = value.split_once('.').expect("<id>.<signature>");
        assert_eq!(id.len(), 32, "{value}");
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{value}");
        assert!(!sig.is_empty(), "{value}");

        // The cookie is the same session on either edge: no new cookie, and the owner.
        let r = call(
            b,
            "PUT",
            &path,
            &[("Cookie", &cookie)],
            r#"{"settings":{"name":"Mine"}}"#,
        )
        .await;
        assert_eq!(room(&r, 200)["settings"]["name"], "Mine");
        absent(&r, "set-cookie");
        let r = call(a, "GET", &path, &[("Cookie", &cookie)], "").await;
        room(&r, 200);
        absent(&r, "set-cookie");

        // The same value as a bearer token.
        let bearer = format!("Bearer {value}");
        let r = call(a, "PUT", &path, &[("Authorization", &bearer)], LOCK).await;
        let v = room(&r, 200);
        absent(&r, "set-cookie");
        let want = json!({"name": "Mine", "maxParticipants": 8, "locked": true});
        assert_eq!(v["settings"], want);

        // One changed character of the signature (or of the id) makes the value worthless.
        let flip = |i: usize| {
            let mut b = value.as_bytes().to_vec();
            b[i] = if b[i] == b'a' { b'b' } else { b'a' };
            String::from_utf8(b).unwrap()
        };
        for tampered in [flip(id.len() + 1), flip(0)] {
            assert_ne!(tampered, value);
            let forged = format!("sessionId={tampered}");
            let r = call(b, "GET", &path, &[("Cookie", &forged)], "").await;
            room(&r, 200);
            let fresh = r.cookie().expect("a forged cookie earns a fresh session");
            assert!(fresh != cookie && fresh != forged, "{fresh}");
            let r = call(a, "PUT", &path, &[("Cookie", &forged)], UNLOCK).await;
            error(&r, 403);
            assert!(
                r.cookie().is_some(),
                "refused requests get their cookie too"
            );
            let bearer = format!("Bearer {tampered}");
            error(
                &call(a, "PUT", &path, &[("Authorization", &bearer)], UNLOCK).await,
                403,
            );
        }
        let v = room(&call(a, "GET", &path, &[], "").await, 200);
        assert_eq!(v["settings"], want, "forged sessions changed nothing");
    }

    pub async fn service_dialect_rooms(c: Cluster) {
        let (a, b) = (c.edge(0), c.edge(1));
        let (owner, v) = new_room(a).await;
        assert_eq!(v["participants"], json!([]));
        let want = json!({"name": null, "maxParticipants": 8, "locked": false});
        assert_eq!(v["settings"], want);
        let me: &[(&str, &str)] = &[("Cookie", &owner)];

        let body = r#"{"settings":{"name":"Jam","maxParticipants":4}}"#;
        let jam = room(&call(a, "POST", "/rooms", me, body).await, 201);
        let want = json!({"name": "Jam", "maxParticipants": 4, "locked": false});
        assert_eq!(jam["settings"], want);
        assert_ne!(jam["code"], v["code"]);
        let path = format!("/rooms/{}", jam["code"].as_str().unwrap());

        for bad in [
            r#"{"settings":{"maxParticipants":0}}"#,
            r#"{"settings":{"maxParticipants":17}}"#,
            r#"{"settings":{"colour":"red"}}"#,
            r#"{"bogus":1}"#,
            r#"{"settings":"#,
        ] {
            error(&call(a, "POST", "/rooms", me, bad).await, 400);
        }

        // Reads, on both edges, give the room as it was created.
        for port in [a, b] {
            assert_eq!(room(&call(port, "GET", &path, me, "").await, 200), jam);
        }
        error(&call(a, "GET", "/rooms/zzzzz", me, "").await, 404);
        for bad in ["NOPE!", "abc", "abcdef", "abcd1"] {
            error(&call(a, "GET", &format!("/rooms/{bad}"), me, "").await, 400);
        }

        // Updates: merged by the owner, refused to anyone else.
        let locked = room(&call(b, "PUT", &path, me, LOCK).await, 200);
        assert_eq!(
            (&locked["code"], &locked["createdAt"]),
            (&jam["code"], &jam["createdAt"])
        );
        let want = json!({"name": "Jam", "maxParticipants": 4, "locked": true});
        assert_eq!(locked["settings"], want);
        assert_eq!(room(&call(a, "GET", &path, me, "").await, 200), locked);
        let (stranger, _) = new_room(b).await;
        let big = format!(r#"{{"settings":{{"name":"{}"}}}}"#, "x".repeat(16 * 1024));
        let cases: [(&str, &str, Headers, &str, u16); 11] = [
            ("PUT", &path, &[("Cookie", &stranger)], UNLOCK, 403),
            ("PUT", &path, &[], UNLOCK, 403),
            ("PUT", &path, me, "{}", 400),
            ("PUT", &path, me, "", 400),
            (
                "PUT",
                &path,
                me,
                r#"{"settings":{"maxParticipants":0}}"#,
                400,
            ),
            ("PUT", &path, me, r#"{"settings":{"nope":1}}"#, 400),
            ("PUT", &path, me, r#"{"settings":"#, 400),
            ("PUT", "/rooms/zzzzz", me, LOCK, 404),
            ("PUT", "/rooms/NOPE!", me, LOCK, 400),
            // Over 16 KiB: 413, even though the JSON itself is well formed.
            ("PUT", &path, me, &big, 413),
            ("POST", "/rooms", me, &big, 413),
        ];
        for (method, path, hs, body, status) in cases {
            error(&call(a, method, path, hs, body).await, status);
        }
        assert_eq!(room(&call(a, "GET", &path, me, "").await, 200), locked);
    }

    pub async fn client_dialect_rooms(c: Cluster) {
        let (a, b) = (c.edge(0), c.edge(1));
        let r = call(a, "POST", "/api/room", &[], "").await;
        assert_eq!(r.status, 201, "{}", r.body);
        let cookie = r.cookie().expect("a session cookie");
        let v = r.json();
        assert_eq!(keys(&v), ["roomId"], "{v}");
        let id = v["roomId"].as_str().unwrap().to_owned();
        assert!(is_code(&id), "{id}");
        let me: &[(&str, &str)] = &[("Cookie", &cookie)];

        for port in [a, b] {
            let r = call(port, "GET", &format!("/api/room/{id}"), me, "").await;
            assert_eq!(r.status, 200, "{}", r.body);
            let v = r.json();
            assert_eq!(keys(&v), ["createdAt", "roomId", "users"], "{v}");
            assert_eq!((&v["roomId"], &v["users"]), (&json!(id), &json!({})));
            iso(&v["createdAt"]);
            // The same room in the service dialect.
            let s = room(
                &call(port, "GET", &format!("/rooms/{id}"), me, "").await,
                200,
            );
            assert_eq!(
                (&s["code"], &s["createdAt"]),
                (&v["roomId"], &v["createdAt"])
            );
        }
        for bad in ["zzzzz", "NOPE!", "abc"] {
            let r = call(a, "GET", &format!("/api/room/{bad}"), me, "").await;
            assert_eq!(r.status, 404, "{bad}: {}", r.body);
            assert_eq!(
                r.json(),
                json!({"statusCode": 404, "message": "Room not found"})
            );
        }
    }

    pub async fn rate_limits(c: Cluster) {
        let port = c.edge(0);
        let (cookie, first) = new_room(port).await;
        let me: &[(&str, &str)] = &[("Cookie", &cookie)];
        for i in 2..=10 {
            let r = call(port, "POST", "/rooms", me, "").await;
            assert_eq!(r.status, 201, "create {i}: {}", r.body);
        }
        // Both dialects' creations share the budget.
        for path in ["/rooms", "/api/room"] {
            let r = call(port, "POST", path, me, "").await;
            error(&r, 429);
            let wait = r.header("retry-after").expect("Retry-After");
            let wait: u64 = wait.parse().expect("Retry-After in whole seconds");
            assert!((1..=60).contains(&wait), "Retry-After: {wait}");
        }
        // Another session has its own budget; reads have theirs.
        room(&call(port, "POST", "/rooms", &[], "").await, 201);
        let path = format!("/rooms/{}", first["code"].as_str().unwrap());
        assert_eq!(room(&call(port, "GET", &path, me, "").await, 200), first);
    }

    pub async fn cors_and_security_headers(c: Cluster) {
        let port = c.edge(0);
        let preflight = |origin: &'static str| async move {
            let hs = [
                ("Origin", origin),
                ("Access-Control-Request-Method", "POST"),
                ("Access-Control-Request-Headers", "content-type"),
            ];
            call(port, "OPTIONS", "/rooms", &hs, "").await
        };
        let r = preflight(ORIGIN).await;
        assert!((200..300).contains(&r.status), "{} {}", r.status, r.body);
        assert_eq!(r.header("access-control-allow-origin"), Some(ORIGIN));
        assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
        let methods = r.header("access-control-allow-methods").unwrap_or_default();
        assert!(methods.contains("POST"), "{methods}");
        absent(
            &preflight("https://evil.example").await,
            "access-control-allow-origin",
        );

        let r = call(port, "GET", "/health", &[("Origin", ORIGIN)], "").await;
        assert_eq!(r.header("access-control-allow-origin"), Some(ORIGIN));
        assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
        let r = call(
            port,
            "GET",
            "/health",
            &[("Origin", "https://evil.example")],
            "",
        )
        .await;
        assert_eq!(r.status, 200);
        absent(&r, "access-control-allow-origin");

        let responses = [
            (call(port, "GET", "/health", &[], "").await, 200),
            (call(port, "GET", "/nope", &[], "").await, 404),
            (call(port, "POST", "/rooms", &[], "").await, 201),
            (call(port, "GET", "/rooms/zzzzz", &[], "").await, 404),
        ];
        for (r, status) in &responses {
            assert_eq!(r.status, *status, "{}", r.body);
            assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
            assert_eq!(r.header("x-frame-options"), Some("DENY"));
            let csp = r.header("content-security-policy").unwrap_or_default();
            assert!(csp.contains("default-src 'self'"), "{csp}");
            assert_eq!(r.header("referrer-policy"), Some("no-referrer"));
            absent(r, "strict-transport-security");
        }
    }

    pub async fn unknown_routes_and_methods(c: Cluster) {
        let port = c.edge(0);
        let r = call(port, "GET", "/nope", &[], "").await;
        assert_eq!(r.status, 404, "{}", r.body);
        let want = json!({"statusCode": 404, "error": "Not Found", "message": "Cannot GET /nope"});
        assert_eq!(r.json(), want);
        let r = call(port, "DELETE", "/rooms", &[], "").await;
        error(&r, 405);
        assert_eq!(r.json()["message"], "Cannot DELETE /rooms");
        error(&call(port, "GET", "/rooms", &[], "").await, 405);
        error(&call(port, "DELETE", "/rooms/zzzzz", &[], "").await, 405);
    }

    pub async fn openapi_and_docs(c: Cluster) {
        let port = c.edge(0);
        let r = call(port, "GET", "/openapi.json", &[], "").await;
        assert_eq!(r.status, 200, "{}", r.body);
        let ct = r.header("content-type").unwrap_or_default();
        assert!(ct.starts_with("application/json"), "{ct}");
        let doc = r.json();
        let version = doc["openapi"].as_str().unwrap_or_default();
        assert!(version.starts_with("3."), "{version}");
        for (path, method) in [
            ("/rooms", "post"),
            ("/rooms/{code}", "get"),
            ("/rooms/{code}", "put"),
            ("/api/room", "post"),
            ("/api/room/{id}", "get"),
            ("/health", "get"),
        ] {
            assert!(
                doc["paths"][path][method].is_object(),
                "{method} {path} missing"
            );
        }

        let r = call(port, "GET", "/docs", &[], "").await;
        assert_eq!(r.status, 200, "{}", r.body);
        let ct = r.header("content-type").unwrap_or_default();
        assert!(ct.starts_with("text/html"), "{ct}");
        assert!(r.body.contains("/docs/docs.js"), "{}", r.body);
        let r = call(port, "GET", "/docs/docs.js", &[], "").await;
        assert_eq!(r.status, 200, "{}", r.body);
        let ct = r.header("content-type").unwrap_or_default();
        assert!(ct.contains("javascript"), "{ct}");
        assert!(!r.body.trim().is_empty());
    }

    pub async fn session_secret_never_in_room_bodies(c: Cluster) {
        let (a, b) = (c.edge(0), c.edge(1));
        let (cookie, code) = c.session_with_room(0).await;
        let value = cookie.strip_prefix("sessionId=").unwrap();
        let (secret, sig) = value.split_once('.').unwrap();
        let me: &[(&str, &str)] = &[("Cookie", &cookie)];

        // Join the room, so that the session's user shows up as a participant.
        let mut s = SioClient::open(b, &format!("roomId={code}&displayName=Player"), me)
            .await
            .expect("socket opens");
        match s.connect("/api", None).await {
            Got::Connected(_) => {}
            other => panic!("connect failed: {other:?}"),
        }
        let user = s.expect("ROOM_JOIN").await["userId"]
            .as_str()
            .unwrap()
            .to_owned();

        let mut bodies = Vec::new();
        let r = call(a, "POST", "/rooms", me, r#"{"settings":{"name":"Mine"}}"#).await;
        bodies.push(room(&r, 201).to_string());
        let r = call(a, "POST", "/api/room", me, "").await;
        assert_eq!(r.status, 201, "{}", r.body);
        bodies.push(r.body);
        for port in [a, b] {
            let v = room(
                &call(port, "GET", &format!("/rooms/{code}"), me, "").await,
                200,
            );
            assert_eq!(v["participants"][0]["id"], user.as_str(), "{v}");
            bodies.push(v.to_string());
            // The web client's view lists the member to others, never to itself.
            let r = call(port, "GET", &format!("/api/room/{code}"), &[], "").await;
            assert_eq!(r.status, 200, "{}", r.body);
            assert!(r.json()["users"][&user].is_object(), "{}", r.body);
            bodies.push(r.body);
            let r = call(port, "GET", &format!("/api/room/{code}"), me, "").await;
            assert_eq!(r.status, 200, "{}", r.body);
            assert_eq!(r.json()["users"], json!({}), "{}", r.body);
            bodies.push(r.body);
        }
        let r = call(a, "PUT", &format!("/rooms/{code}"), me, LOCK).await;
        bodies.push(room(&r, 200).to_string());
        assert!(!user.contains(secret), "the public id is not the secret");
        let secret = secret.to_ascii_lowercase();
        for body in &bodies {
            let lower = body.to_ascii_lowercase();
            assert!(!lower.contains(&secret), "session id leaked: {body}");
            assert!(!body.contains(sig), "cookie signature leaked: {body}");
        }
        s.close().await;
    }
}

const ORIGIN: &str = "http://localhost:5173";
const ALPHABET: &str = "abcdefghjkmnpqrstuvwxyz23456789";

/// The sorted keys of a JSON object.
fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect();
    k.sort();
    k
}

fn is_code(s: &str) -> bool {
    s.len() == 5 && s.chars().all(|c| ALPHABET.contains(c))
}

/// An ISO-8601 UTC timestamp, parsed.
fn iso(v: &Value) -> chrono::DateTime<chrono::Utc> {
    let s = v.as_str().unwrap_or_else(|| panic!("not a string: {v}"));
    assert!(s.ends_with('Z'), "not UTC: {s}");
    chrono::DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("not ISO-8601 ({e}): {s}"))
        .with_timezone(&chrono::Utc)
}

/// Asserts the service room shape exactly and returns the room.
fn room(r: &Response, status: u16) -> Value {
    assert_eq!(r.status, status, "{}", r.body);
    let v = r.json();
    let want = [
        "code",
        "createdAt",
        "lastActivity",
        "participants",
        "settings",
    ];
    assert_eq!(keys(&v), want, "{v}");
    assert!(is_code(v["code"].as_str().unwrap()), "{v}");
    iso(&v["createdAt"]);
    iso(&v["lastActivity"]);
    assert!(v["participants"].is_array(), "{v}");
    assert_eq!(
        keys(&v["settings"]),
        ["locked", "maxParticipants", "name"],
        "{v}"
    );
    v
}

/// Asserts the JSON error shape `{"statusCode","error","message"}` with this status.
fn error(r: &Response, status: u16) {
    assert_eq!(r.status, status, "{}", r.body);
    let ct = r.header("content-type").unwrap_or_default();
    assert!(ct.starts_with("application/json"), "{ct}");
    let v = r.json();
    assert_eq!(keys(&v), ["error", "message", "statusCode"], "{v}");
    assert_eq!(v["statusCode"], status, "{v}");
    let reason = match status {
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        _ => unreachable!("{status}"),
    };
    assert_eq!(v["error"], reason, "{v}");
    assert!(!v["message"].as_str().unwrap().is_empty(), "{v}");
}

fn absent(r: &Response, name: &str) {
    assert!(r.header(name).is_none(), "{name}: {:?}", r.headers);
}

/// Request headers.
type Headers<'a> = &'a [(&'a str, &'a str)];

/// One request; an empty `body` sends none.
async fn call(port: u16, method: &str, path: &str, hs: &[(&str, &str)], body: &str) -> Response {
    request(port, method, path, hs, (!body.is_empty()).then_some(body)).await
}

/// Creates a room over `POST /rooms` as a new session: (cookie pair, room).
async fn new_room(port: u16) -> (String, Value) {
    let r = call(port, "POST", "/rooms", &[], "").await;
    let v = room(&r, 201);
    (r.cookie().expect("a session cookie"), v)
}

const LOCK: &str = r#"{"settings":{"locked":true}}"#;
const UNLOCK: &str = r#"{"settings":{"locked":false}}"#;
