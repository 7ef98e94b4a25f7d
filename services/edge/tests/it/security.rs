//! Attacks on the edge that the other suites do not already try (docs/RELIABILITY.md,
//! "Attacks and bad input", lists them all with the test that covers each): injection into
//! another room, expired and forged sessions, foreign origins, per-session and per-address
//! limits (room-code guessing, session and socket floods), slow handshakes, and hostile
//! JSON and framing. Each test fails when the protection it names is removed.

use crate::support;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use p2piano_edge::CookieSigner;
use p2piano_edge::SocketSettings;
use p2piano_protocol::SessionId;
use serde_json::{Value, json};
use support::client::Got;
use support::{Cluster, Mode, SioClient, request, web};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

#[p2piano_testkit::both_modes(
    nats = Mode::Nats,
    in_process = Mode::InProcess,
)]
mod cases {
    use super::*;

    pub async fn injection_into_another_room_reaches_nobody(mode: Mode) {
        let c = Cluster::start(mode).await;
        let (cookie_a, code) = c.session_with_room(0).await;
        let (cookie_x, other) = c.session_with_room(1).await;
        let (mut a, _) = web(&c, 0, &cookie_a, &code).await;
        let (mut x, x_id) = web(&c, 1, &cookie_x, &other).await;
        // A service-dialect member of the other room too, on the attacker's edge.
        let cookie_sx = c.session_for(0, &other).await;
        let mut sx = SioClient::open(c.edge(0), "", &[("Cookie", &cookie_sx)])
            .await
            .unwrap();
        assert!(matches!(sx.connect("/", None).await, Got::Connected(_)));
        let joined = sx.emit_ack("join-room", json!({"code": other}), 1).await;
        assert_eq!(joined["ok"], true, "{joined}");
        let sx_id = joined["you"]["id"].as_str().unwrap().to_owned();
        assert_eq!(x.expect("USER_CONNECT").await["userId"], sx_id);

        // Every relayed client event, aimed at members of the other room.
        let outsiders = json!([x_id, sx_id]);
        let attacks = [
            (
                "KEY_DOWN",
                json!({"note": 1, "velocity": 1, "targetUserIds": outsiders}),
            ),
            ("KEY_UP", json!({"note": 1, "targetUserIds": outsiders})),
            ("SUSTAIN_DOWN", json!({"targetUserIds": outsiders})),
            ("SUSTAIN_UP", json!({"targetUserIds": outsiders})),
            (
                "METRONOME_TICK",
                json!({"type": "beat", "targetUserIds": outsiders}),
            ),
            ("LATENCY_PING", json!({"t": 1, "targetUserIds": outsiders})),
            ("LATENCY_PONG", json!({"t": 1, "targetUserIds": outsiders})),
            (
                "AUTOMERGE_PROTOCOL",
                json!({"syncMessage": [1, 2], "targetUserIds": outsiders}),
            ),
            (
                "SIGNAL",
                json!({"userId": x_id, "signalData": {"type": "offer", "sdp": "v=0"}}),
            ),
            (
                "SIGNAL",
                json!({"userId": sx_id, "signalData": {"type": "offer", "sdp": "v=0"}}),
            ),
        ];
        // Dropped without an answer in the client dialect (as the original does: the web client
        // logs every exception as an error) and counted.
        let dropped = support::metric(c.admin(0), "p2piano_edge_dropped_targets_total").await;
        for (name, payload) in attacks {
            a.emit(name, payload).await;
        }
        // Someone else's profile is refused: the first exception `a` gets is this one.
        a.emit(
            "USER_UPDATE",
            json!({"userId": x_id, "displayName": "Hijacked", "color": "#fff", "instrument": "PIANO"}),
        )
        .await;
        let e = a.expect("exception").await;
        assert_eq!(
            (e["code"].as_u64(), e["event"].as_str()),
            (Some(403), Some("USER_UPDATE")),
            "{e}"
        );
        assert_eq!(
            support::metric(c.admin(0), "p2piano_edge_dropped_targets_total").await - dropped,
            18.0,
            "two outsiders for each of 8 events, one for each of 2 signals"
        );
        // The same from the service dialect.
        let cookie_s = c.session_for(0, &code).await;
        let mut s = SioClient::open(c.edge(0), "", &[("Cookie", &cookie_s)])
            .await
            .unwrap();
        assert!(matches!(s.connect("/", None).await, Got::Connected(_)));
        assert_eq!(
            s.emit_ack("join-room", json!({"code": code}), 1).await["ok"],
            true
        );
        let refused = |v: Value| v["error"]["code"].as_str().map(str::to_owned);
        let signal = json!({"to": x_id, "signal": {"type": "offer"}});
        assert_eq!(
            refused(s.emit_ack("webrtc-signal", signal, 2).await).as_deref(),
            Some("forbidden")
        );
        let message = json!({"to": [sx_id], "type": "chat", "data": "hi"});
        assert_eq!(
            refused(s.emit_ack("peer-message", message, 3).await).as_deref(),
            Some("forbidden")
        );
        // Nothing of it arrived: the next thing either victim hears is a join in its own room.
        let cookie_y = c.session_for(1, &other).await;
        let (_y, y_id) = web(&c, 1, &cookie_y, &other).await;
        let got = x.next().await;
        assert!(
            matches!(&got, Got::Event(n, p) if n == "USER_CONNECT" && p["userId"] == y_id),
            "{got:?}"
        );
        let got = sx.next().await;
        assert!(
            matches!(&got, Got::Event(n, p) if n == "user-joined" && p["user"]["id"] == y_id),
            "{got:?}"
        );
    }
}

macro_rules! in_process {
    ($($case:ident),* $(,)?) => {
        $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $case() {
            super::$case().await
        })*
    };
}

mod two_edges {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn budgets_follow_the_session_to_another_edge() {
        super::budgets_follow_the_session_to_another_edge().await
    }
}

mod one_edge {
    in_process!(
        expired_and_forged_sessions_are_refused,
        foreign_origins_get_403_on_upgrade,
        room_code_guessing_is_rate_limited,
        connection_attempts_are_limited_per_address,
        slow_handshakes_are_cut_off,
        hostile_json_and_framing_hurt_only_the_sender,
        openapi_documents_what_the_limits_answer,
        budgets_are_per_session_not_per_socket,
        more_than_one_origin_is_refused,
        json_routes_want_json_bodies,
        near_its_connection_cap_the_edge_is_not_ready,
        behind_a_trusted_proxy_each_client_has_its_own_cap,
        a_full_room_behind_one_nat_meets_no_limit,
    );
}

/// The next event that is not a membership change.
async fn next_event(s: &mut SioClient) -> (String, Value) {
    loop {
        match s.next().await {
            Got::Event(n, _) if n == "USER_CONNECT" || n == "USER_DISCONNECT" => continue,
            Got::Event(n, p) => return (n, p),
            other => panic!("expected an event, got {other:?}"),
        }
    }
}

async fn expired_and_forged_sessions_are_refused() {
    let c = Cluster::start_configured(Mode::InProcess, SocketSettings::default(), |config| {
        config.session_ttl = Duration::from_secs(1);
    })
    .await;
    let port = c.edge(0);
    let (cookie, code) = c.session_with_room(0).await;
    let path = format!("/rooms/{code}");
    let value = cookie.strip_prefix("sessionId=").unwrap().to_owned();
    let (id, _) = value.split_once('.').unwrap();
    let other_key = CookieSigner::new(b"not-the-edge-secret-not-the-edge-secret");
    let forged = [
        ("bare id", format!("sessionId={id}")),
        (
            "real id, another key",
            format!(
                "sessionId={}",
                other_key.sign(&SessionId::parse(id).unwrap())
            ),
        ),
        (
            "random id, another key",
            format!("sessionId={}", other_key.sign(&SessionId::random())),
        ),
        ("junk", "sessionId=..%00<script>".to_owned()),
    ];
    // The owner's settings change needs the owner's session; a forged one gets a new
    // session (a fresh cookie) and 403, and cannot open a socket.
    async fn refused_everywhere(c: &Cluster, path: &str, code: &str, cookie: &str, what: &str) {
        let port = c.edge(0);
        let lock = r#"{"settings":{"locked":true}}"#;
        let r = request(port, "PUT", path, &[("Cookie", cookie)], Some(lock)).await;
        assert_eq!(r.status, 403, "{what}: {}", r.body);
        let fresh = r.cookie().expect("a fresh session instead");
        assert_ne!(fresh, cookie, "{what}");
        let mut s = SioClient::open(port, &format!("roomId={code}"), &[("Cookie", cookie)])
            .await
            .unwrap();
        match s.connect("/api", None).await {
            Got::ConnectError(v) => assert_eq!(v["message"], "Session required", "{what}"),
            other => panic!("{what}: socket accepted: {other:?}"),
        }
        // The handshake's `sessionId` is the secret itself (signed or not), so the bare id
        // of a live session is a credential there: that one case is checked apart.
        let value = cookie.strip_prefix("sessionId=").unwrap();
        if what == "bare id" {
            return;
        }
        let mut s = SioClient::open(port, "", &[]).await.unwrap();
        match s.connect("/", Some(json!({ "sessionId": value }))).await {
            Got::ConnectError(_) => {}
            other => panic!("{what}: handshake auth accepted: {other:?}"),
        }
    }
    for (what, cookie) in &forged {
        refused_everywhere(&c, &path, &code, cookie, what).await;
    }
    // Each forged cookie was a security event twice (the HTTP request and the socket).
    assert_eq!(
        support::metric(
            c.admin(0),
            "p2piano_edge_security_events_total{kind=\"bad_session\"}"
        )
        .await,
        (2 * forged.len()) as f64
    );
    // Only the real secret opens a socket through the handshake's `sessionId`: a random
    // id of the right shape does not.
    let mut s = SioClient::open(port, "", &[]).await.unwrap();
    let random = SessionId::random();
    assert!(matches!(
        s.connect("/", Some(json!({ "sessionId": random.expose() })))
            .await,
        Got::ConnectError(_)
    ));
    // The real cookie works (and so the refusals above were about the forgery).
    let r = request(port, "GET", &path, &[("Cookie", &cookie)], None).await;
    assert_eq!(r.status, 200);
    assert!(r.cookie().is_none());
    // Expired: P2PIANO_SESSION_TTL_SECS=1 and no use for longer than that.
    let last_use = Instant::now();
    // Expiry is real time passing in presence's session store (in NATS mode a KV bucket):
    // there is no event to wait on, so this one wait is on the clock, just past the TTL.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert!(last_use.elapsed() > Duration::from_secs(1));
    refused_everywhere(&c, &path, &code, &cookie, "expired").await;
    // The room is still unlocked: nothing above changed it.
    let r = request(port, "GET", &path, &[], None).await;
    assert_eq!(r.json()["settings"]["locked"], false);
}

/// Sends an Engine.IO WebSocket upgrade request from `source` and returns the status and
/// the response head.
async fn upgrade_from(source: Ipv4Addr, port: u16, headers: &[(&str, &str)]) -> (u16, String) {
    let mut req = String::from(
        "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let head = exchange_from(source, port, &req).await;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head)
}

/// Writes `req` from `source` and reads the response head (up to the blank line). A raw
/// socket, not the testkit's HTTP client: these requests come from chosen loopback source
/// addresses (the per-address limits), are upgrades left open, or carry bytes the client
/// would not send (a JSON body without a `Content-Type`).
async fn exchange_from(source: Ipv4Addr, port: u16, req: &str) -> String {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((source, 0))).unwrap();
    let mut tcp = socket
        .connect(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .unwrap();
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match tokio::time::timeout(support::WAIT, tcp.read(&mut byte)).await {
            Ok(Ok(1)) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

async fn foreign_origins_get_403_on_upgrade() {
    let c = Cluster::start(Mode::InProcess).await;
    let (cookie, _) = c.session_with_room(0).await;
    let local = Ipv4Addr::LOCALHOST;
    for origin in [
        "https://evil.example",
        "null",
        "http://localhost:5173.evil.example",
        "http://127.0.0.1:1",
    ] {
        let (status, head) =
            upgrade_from(local, c.edge(0), &[("Origin", origin), ("Cookie", &cookie)]).await;
        assert_eq!(status, 403, "{origin}: {head}");
    }
    assert_eq!(
        support::metric(
            c.admin(0),
            "p2piano_edge_security_events_total{kind=\"refused_origin\"}"
        )
        .await,
        4.0
    );
    // The allowed origin, and a non-browser client without one, are upgraded.
    for headers in [
        &[
            ("Origin", "http://localhost:5173"),
            ("Cookie", cookie.as_str()),
        ][..],
        &[("Cookie", cookie.as_str())][..],
    ] {
        let (status, head) = upgrade_from(local, c.edge(0), headers).await;
        assert_eq!(status, 101, "{head}");
    }
}

/// A valid room code that is (almost certainly) no room.
fn random_code(i: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
    let mut n = i * 7919 + 104_729;
    (0..5)
        .map(|_| {
            let c = ALPHABET[n % ALPHABET.len()] as char;
            n /= ALPHABET.len();
            n += 17;
            c
        })
        .collect()
}

async fn room_code_guessing_is_rate_limited() {
    let c = Cluster::start(Mode::InProcess).await;
    let port = c.edge(0);
    // One session guessing codes: 60 reads a minute (both dialects share them), then 429.
    let first = request(
        port,
        "GET",
        &format!("/api/room/{}", random_code(0)),
        &[],
        None,
    )
    .await;
    assert_eq!(first.status, 404);
    let cookie = first.cookie().unwrap();
    let mut answered = 1;
    let limited = loop {
        let path = if answered % 2 == 0 {
            format!("/api/room/{}", random_code(answered))
        } else {
            format!("/rooms/{}", random_code(answered))
        };
        let r = request(port, "GET", &path, &[("Cookie", &cookie)], None).await;
        if r.status == 429 {
            break r;
        }
        assert_eq!(r.status, 404, "{path}: {}", r.body);
        answered += 1;
        assert!(
            answered <= 60,
            "more than 60 guesses a minute were answered"
        );
    };
    assert_eq!(answered, 60);
    let wait: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    assert_eq!(limited.json()["statusCode"], 429);
}

async fn connection_attempts_are_limited_per_address() {
    const BURST: u32 = 6;
    let c = Cluster::start_configured(Mode::InProcess, SocketSettings::default(), |config| {
        config.ip_connect_rate = 1;
        config.ip_connect_burst = BURST;
    })
    .await;
    let port = c.edge(0);
    let attacker = Ipv4Addr::new(127, 0, 0, 1);
    // Dropping the cookie to get a fresh per-session budget each time: every new session
    // takes a token of the address.
    let guess = |i: usize| {
        format!(
            "GET /api/room/{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            random_code(i)
        )
    };
    let mut kept_cookie = None;
    let mut answered = 0;
    let head = loop {
        let head = exchange_from(attacker, port, &guess(answered)).await;
        if head.starts_with("HTTP/1.1 429") {
            break head;
        }
        assert!(head.starts_with("HTTP/1.1 404"), "{head}");
        kept_cookie = header(&head, "set-cookie").map(|s| s.split(';').next().unwrap().to_owned());
        answered += 1;
        assert!(answered <= BURST as usize + 1, "no per-address limit");
    };
    assert!(answered >= BURST as usize - 1, "{answered}");
    let wait: u64 = header(&head, "retry-after").unwrap().parse().unwrap();
    assert!(wait >= 1, "{head}");
    assert!(header(&head, "set-cookie").is_none(), "no session was made");
    // Socket upgrades from that address are refused the same way.
    let (status, head) = upgrade_from(attacker, port, &[]).await;
    assert_eq!(status, 429, "{head}");
    assert!(header(&head, "retry-after").is_some(), "{head}");
    // An existing session is not a connection attempt: it still reads.
    let cookie = kept_cookie.unwrap();
    let r = request(
        port,
        "GET",
        &format!("/api/room/{}", random_code(99)),
        &[("Cookie", &cookie)],
        None,
    )
    .await;
    assert_eq!(r.status, 404);
    assert!(r.cookie().is_none());
    // Other addresses have their own budget.
    let (status, head) = upgrade_from(Ipv4Addr::new(127, 0, 0, 2), port, &[]).await;
    assert_eq!(status, 101, "{head}");
    let head = exchange_from(Ipv4Addr::new(127, 0, 0, 3), port, &guess(1000)).await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    assert!(header(&head, "set-cookie").is_some());
    // Refused attempts are counted.
    let metrics = request(c.admin(0), "GET", "/metrics", &[], None).await.body;
    let limited: f64 = metrics
        .lines()
        .find(|l| l.starts_with("p2piano_edge_http_rate_limited_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(limited >= 2.0, "{limited}");
}

async fn slow_handshakes_are_cut_off() {
    const TIMEOUT: Duration = Duration::from_millis(500);
    let settings = SocketSettings {
        header_read_timeout: TIMEOUT,
        ..SocketSettings::default()
    };
    let c = Cluster::start_with(Mode::InProcess, settings).await;
    let port = c.edge(0);
    // Connects and sends nothing.
    let started = Instant::now();
    let mut silent = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut buf = [0u8; 256];
    let read = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf))
        .await
        .expect("a silent connection is closed by the edge");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(started.elapsed() >= TIMEOUT - Duration::from_millis(50));
    // Sends its headers a byte at a time, for ever (slowloris).
    let started = Instant::now();
    let slow = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut rx, mut tx) = slow.into_split();
    let drip = async move {
        let head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ";
        for b in head.iter().chain(std::iter::repeat(&b'a')) {
            if tx.write_all(&[*b]).await.is_err() {
                break;
            }
            // The attack itself: one header byte every 20 ms.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let closed = async move {
        let mut got = Vec::new();
        loop {
            match rx.read(&mut buf).await {
                Ok(0) | Err(_) => return got,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    let got = tokio::select! {
        got = closed => got,
        () = drip => Vec::new(),
        // A deadline, not a pause: the edge must cut the client off before it.
        () = tokio::time::sleep(Duration::from_secs(5)) => panic!("a dripping client was not cut off"),
    };
    assert!(
        !String::from_utf8_lossy(&got).contains(" 200 "),
        "the dripped request was served"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(
        support::metric(c.admin(0), "p2piano_edge_header_timeouts_total").await >= 2.0,
        "both cut-offs are counted"
    );
    // Everyone else is served as before, and upgraded sockets outlive the header timeout.
    let (cookie, code) = c.session_with_room(0).await;
    let (mut a, _) = web(&c, 0, &cookie, &code).await;
    // Proving the socket outlives the header timeout needs that time to pass: on the clock.
    tokio::time::sleep(TIMEOUT * 2).await;
    a.emit("KEY_UP", json!({"note": 1, "targetUserIds": []}))
        .await;
    assert_eq!(request(port, "GET", "/health", &[], None).await.status, 200);
    a.emit("NO_SUCH_EVENT", json!({})).await;
    assert_eq!(a.expect("exception").await["code"], 400);
}

async fn hostile_json_and_framing_hurt_only_the_sender() {
    let c = Cluster::start(Mode::InProcess).await;
    let (cookie_a, code) = c.session_with_room(0).await;
    let cookie_b = c.session_for(0, &code).await;
    let (mut a, _) = web(&c, 0, &cookie_a, &code).await;
    let (mut b, b_id) = web(&c, 0, &cookie_b, &code).await;
    a.expect("USER_CONNECT").await;
    let deep_arrays = format!("{}{}", "[".repeat(30_000), "]".repeat(30_000));
    let deep_objects = format!("{}1{}", r#"{"a":"#.repeat(10_000), "}".repeat(10_000));
    let wide: serde_json::Map<String, Value> =
        (0..4000).map(|i| (format!("k{i}"), json!(i))).collect();
    let target = json!([b_id]);
    let frames = [
        (
            "deeply nested arrays",
            format!(r#"42/api,["KEY_DOWN",{deep_arrays}]"#),
            400,
        ),
        (
            "deeply nested objects",
            format!(r#"42/api,["LATENCY_PING",{deep_objects}]"#),
            400,
        ),
        (
            "nesting inside a valid event",
            format!(r#"42/api,["SIGNAL",{{"userId":"{b_id}","signalData":{deep_arrays}}}]"#),
            400,
        ),
        (
            "a wide object",
            format!(
                r#"42/api,["LATENCY_PING",{}]"#,
                json!({"pad": wide, "targetUserIds": target})
            ),
            413,
        ),
        (
            "a huge string",
            format!(
                r#"42/api,["METRONOME_TICK",{}]"#,
                json!({"type": "x".repeat(60_000), "targetUserIds": target})
            ),
            400,
        ),
        (
            "a huge number",
            format!(
                r#"42/api,["KEY_DOWN",{{"note":1{},"velocity":1,"targetUserIds":[]}}]"#,
                "0".repeat(50_000)
            ),
            400,
        ),
        (
            "a CRDT message of non-bytes",
            format!(
                r#"42/api,["AUTOMERGE_PROTOCOL",{}]"#,
                json!({"syncMessage": vec![json!(256); 10_000], "targetUserIds": target})
            ),
            400,
        ),
    ];
    for (i, (what, frame, status)) in frames.iter().enumerate() {
        assert!(frame.len() <= 64 * 1024, "{what}: {} bytes", frame.len());
        a.send_raw(frame).await;
        let e = match a.next().await {
            Got::Event(n, p) if n == "exception" => p,
            other => panic!("{what}: expected an exception, got {other:?}"),
        };
        assert_eq!(e["code"], *status, "{what}: {e}");
        // a is still up, and b, who was targeted, got only what was valid.
        a.emit(
            "KEY_DOWN",
            json!({"note": i, "velocity": 1, "targetUserIds": [b_id]}),
        )
        .await;
        let (name, payload) = next_event(&mut b).await;
        assert_eq!(
            (name.as_str(), &payload["note"]),
            ("KEY_DOWN", &json!(i)),
            "{what}"
        );
    }
    // Framing: an attachment count that does not fit any integer, and one over the limit,
    // close only the sender (1002); nothing reached b.
    for frame in [
        r#"4599999999999999999999999-/api,["KEY_DOWN",{"_placeholder":true,"num":0}]"#,
        r#"455-/api,["KEY_DOWN",{"_placeholder":true,"num":0}]"#,
    ] {
        let (mut bad, _) = web(&c, 0, &c.session_for(0, &code).await, &code).await;
        bad.send_raw(frame).await;
        assert_eq!(bad.next().await, Got::Closed(Some(1002)), "{frame}");
    }
    a.emit("KEY_UP", json!({"note": 99, "targetUserIds": [b_id]}))
        .await;
    let (name, payload) = next_event(&mut b).await;
    assert_eq!((name.as_str(), &payload["note"]), ("KEY_UP", &json!(99)));
}

/// What `make schemathesis` checks the API against: every room route documents its 429,
/// and the service dialect's room code carries its pattern (without it, generated codes are
/// almost all refused with 400 and the handlers behind are barely exercised).
async fn openapi_documents_what_the_limits_answer() {
    let c = Cluster::start(Mode::InProcess).await;
    let doc = request(c.edge(0), "GET", "/openapi.json", &[], None)
        .await
        .json();
    let paths = doc["paths"].as_object().unwrap();
    let mut room_operations = 0;
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            if !(path.starts_with("/rooms") || path.starts_with("/api/room")) {
                continue;
            }
            room_operations += 1;
            assert!(
                op["responses"]["429"].is_object(),
                "{method} {path} does not document 429"
            );
            for p in op["parameters"].as_array().into_iter().flatten() {
                if path.starts_with("/rooms/") {
                    assert_eq!(
                        p["schema"]["pattern"], "^[a-hjkmnp-z2-9]{5}$",
                        "{method} {path}"
                    );
                }
            }
        }
    }
    assert_eq!(room_operations, 5);
    // The pattern is the validator's: a generated matching code is never a 400.
    for code in ["abcde", "zz299", "hjkmn"] {
        let r = request(c.edge(0), "GET", &format!("/rooms/{code}"), &[], None).await;
        assert_eq!(r.status, 404, "{code}: {}", r.body);
    }
}

/// Spends the whole key-press budget (1,000 per 10 s, refilled evenly) and more, then
/// reconnects with the same cookie: the new socket finds the budget spent. Counted per
/// socket, a reconnect after each burst would deliver a fresh 1,000.
async fn budgets_are_per_session_not_per_socket() {
    let c = Cluster::start(Mode::InProcess).await;
    let (cookie, code) = c.session_with_room(0).await;
    let note = json!({"note": 60, "velocity": 1, "targetUserIds": []});
    let (mut a, _) = web(&c, 0, &cookie, &code).await;
    for _ in 0..1_100 {
        a.emit("KEY_DOWN", note.clone()).await;
    }
    assert_eq!(a.expect("exception").await["code"], 429);
    a.close().await;
    let (mut b, _) = web(&c, 0, &cookie, &code).await;
    for _ in 0..100 {
        b.emit("KEY_DOWN", note.clone()).await;
    }
    assert_eq!(
        b.expect("exception").await["code"],
        429,
        "the new socket of the session found its budget spent"
    );
    // Another session is not affected.
    let (other_cookie, _) = c.session_with_room(0).await;
    let (mut o, _) = web(&c, 0, &other_cookie, &code).await;
    o.emit("NO_SUCH_EVENT", json!({})).await;
    assert_eq!(o.expect("exception").await["code"], 400);
}

/// Spends the key-press budget on edge 1, closes the page, and comes back on edge 2 with
/// the same cookie: the budget travelled with the session (through presence), so the new
/// socket is refused at once instead of delivering a fresh 1,000.
async fn budgets_follow_the_session_to_another_edge() {
    let c = Cluster::start(Mode::Nats).await;
    let (cookie, code) = c.session_with_room(0).await;
    let observer = c.session_for(1, &code).await;
    let (mut o, _) = web(&c, 1, &observer, &code).await;
    let note = json!({"note": 60, "velocity": 1, "targetUserIds": []});
    let (mut a, me) = web(&c, 0, &cookie, &code).await;
    for _ in 0..1_100 {
        a.emit("KEY_DOWN", note.clone()).await;
    }
    assert_eq!(a.expect("exception").await["code"], 429);
    a.close_with(1000).await;
    // The leave is announced after presence kept the budgets the socket handed on.
    loop {
        match o.next().await {
            Got::Event(n, p) if n == "USER_DISCONNECT" && p["userId"] == me.as_str() => break,
            Got::Event(..) => continue,
            other => panic!("expected the leave, got {other:?}"),
        }
    }
    let (mut b, again) = web(&c, 1, &cookie, &code).await;
    assert_eq!(again, me, "same session");
    for _ in 0..100 {
        b.emit("KEY_DOWN", note.clone()).await;
    }
    assert_eq!(
        b.expect("exception").await["code"],
        429,
        "the session's budget was spent on the other edge"
    );
}

/// A browser sends one `Origin`; an upgrade with two is refused, even when one of them is
/// allowed.
async fn more_than_one_origin_is_refused() {
    let c = Cluster::start(Mode::InProcess).await;
    let (cookie, _) = c.session_with_room(0).await;
    let (status, head) = upgrade_from(
        Ipv4Addr::LOCALHOST,
        c.edge(0),
        &[
            ("Origin", "http://localhost:5173"),
            ("Origin", "https://evil.example"),
            ("Cookie", &cookie),
        ],
    )
    .await;
    assert_eq!(status, 403, "{head}");
}

/// A body on a JSON route must be declared `application/json` (415 otherwise); a request
/// with no body needs no `Content-Type`, as the web client creates its rooms.
async fn json_routes_want_json_bodies() {
    let c = Cluster::start(Mode::InProcess).await;
    let port = c.edge(0);
    let body = r#"{"settings":{"locked":true}}"#;
    let r = request(
        port,
        "POST",
        "/rooms",
        &[("Content-Type", "text/plain")],
        Some(body),
    )
    .await;
    assert_eq!(r.status, 415, "{}", r.body);
    // No Content-Type at all (the test helper would add one).
    let raw = format!(
        "POST /rooms HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let head = exchange_from(Ipv4Addr::LOCALHOST, port, &raw).await;
    assert!(head.starts_with("HTTP/1.1 415"), "{head}");
    let r = request(
        port,
        "POST",
        "/rooms",
        &[("Content-Type", "application/json; charset=utf-8")],
        Some(body),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = request(port, "POST", "/api/room", &[], None).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = request(port, "POST", "/rooms", &[], None).await;
    assert_eq!(r.status, 201, "{}", r.body);
}

/// With a cap of 32 connections the edge reports not ready from 30 (15/16 of it), so that
/// a balancer sends new players elsewhere, and past the cap closes new connections at once;
/// it is ready again when they go.
async fn near_its_connection_cap_the_edge_is_not_ready() {
    let c = Cluster::start_configured(Mode::InProcess, SocketSettings::default(), |config| {
        config.max_connections = 32;
        config.max_connections_per_ip = 0;
    })
    .await;
    let port = c.edge(0);
    let idle = || async {
        TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connects")
    };
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(idle().await);
    }
    // 20 idle connections and the probe's own: 21 of 32.
    assert_eq!(
        request(port, "GET", "/health/ready", &[], None)
            .await
            .status,
        200
    );
    for _ in 0..9 {
        held.push(idle().await);
    }
    // 29 and the probe: 30 of 32.
    let r = request(port, "GET", "/health/ready", &[], None).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("near the connection cap"), "{}", r.body);
    for _ in 0..3 {
        held.push(idle().await);
    }
    // 32 open: the next one is closed before a byte is read, with no answer.
    let mut over = idle().await;
    over.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .ok();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(support::WAIT, over.read_to_end(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "closed at once: {read:?} {buf:?}"
    );
    drop(held);
    // The places come back as the connections close (the edge sees each end in turn).
    let deadline = Instant::now() + support::WAIT;
    loop {
        // While the edge is still at its cap, the probe's connection is closed unanswered.
        let r = p2piano_testkit::http::try_request(port, "GET", "/health/ready", &[], None).await;
        if r.as_ref().is_ok_and(|r| r.status == 200) {
            break;
        }
        assert!(Instant::now() < deadline, "still not ready: {r:?}");
        tokio::task::yield_now().await;
    }
    assert!(
        support::metric(
            c.admin(0),
            "p2piano_edge_connections_refused_total{cap=\"total\"}"
        )
        .await
            >= 1.0
    );
    assert!(
        support::metric(
            c.admin(0),
            "p2piano_edge_security_events_total{kind=\"cap_refused\"}"
        )
        .await
            >= 1.0
    );
}

/// Opens a connection from `source` and sends a request whose body never completes (with
/// `extra` headers), so that it holds its places; `None` if it could not connect.
async fn stalled_from(source: Ipv4Addr, port: u16, extra: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((source, 0))).unwrap();
    let mut tcp = socket
        .connect(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .unwrap();
    let req = format!(
        "POST /rooms HTTP/1.1\r\nHost: x\r\n{extra}Content-Type: application/json\r\n\
         Content-Length: 100\r\n\r\n{{"
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    tcp
}

/// Whether the edge closed `tcp` without answering, within [`support::WAIT`].
async fn closed_unanswered(tcp: &mut TcpStream) -> bool {
    let mut buf = Vec::new();
    matches!(
        tokio::time::timeout(support::WAIT, tcp.read_to_end(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    ) && buf.is_empty()
}

/// Behind a trusted proxy (127.0.0.1 here) each forwarded client has its own per-address
/// cap (2 here), and the proxy's own connections are not counted as one client; from any
/// other peer (127.0.0.2) the forwarded headers are ignored.
async fn behind_a_trusted_proxy_each_client_has_its_own_cap() {
    let c = Cluster::start_configured(Mode::InProcess, SocketSettings::default(), |config| {
        config.max_connections_per_ip = 2;
        config.trusted_proxies = vec!["127.0.0.1/32".to_owned()];
    })
    .await;
    let port = c.edge(0);
    let proxy = Ipv4Addr::LOCALHOST;
    let alice = "X-Forwarded-For: 203.0.113.5\r\n";
    let _held = [
        stalled_from(proxy, port, alice).await,
        stalled_from(proxy, port, alice).await,
    ];
    // Alice's third request through the proxy is over her cap: answered 503, since the
    // proxy's connection may carry others. (Her two stalled requests hold their places once
    // the edge has read their headers: asked until then.)
    let deadline = Instant::now() + support::WAIT;
    loop {
        let head = exchange_from(
            proxy,
            port,
            &format!("GET /health HTTP/1.1\r\nHost: x\r\n{alice}\r\n"),
        )
        .await;
        if head.starts_with("HTTP/1.1 503") {
            break;
        }
        assert!(Instant::now() < deadline, "never over her cap: {head}");
    }
    // Bob, behind the same proxy, and the proxy's own health checks are served.
    let bob = "X-Forwarded-For: 198.51.100.7, 127.0.0.1\r\n";
    let head = exchange_from(
        proxy,
        port,
        &format!("GET /health HTTP/1.1\r\nHost: x\r\n{bob}\r\n"),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(request(port, "GET", "/health", &[], None).await.status, 200);
    // An untrusted peer cannot pick its address: its forwarded headers are ignored and its
    // connections count against its own address.
    let other = Ipv4Addr::new(127, 0, 0, 2);
    let _mine = [
        stalled_from(other, port, "X-Forwarded-For: 192.0.2.1\r\n").await,
        stalled_from(other, port, "X-Forwarded-For: 192.0.2.2\r\n").await,
    ];
    let mut third = stalled_from(other, port, "X-Forwarded-For: 192.0.2.3\r\n").await;
    assert!(closed_unanswered(&mut third).await, "over 127.0.0.2's cap");
}

/// The defaults are usable: a room of 16 players behind one NAT (one address, 127.0.0.1)
/// load the room over HTTP, join, play, and each reload twice (a new socket and a new
/// look at the room each time), and none of them meets a limit.
async fn a_full_room_behind_one_nat_meets_no_limit() {
    let c = Cluster::start(Mode::InProcess).await;
    let port = c.edge(0);
    let owner = request(
        port,
        "POST",
        "/rooms",
        &[],
        Some(r#"{"settings":{"maxParticipants":16}}"#),
    )
    .await;
    assert_eq!(owner.status, 201, "{}", owner.body);
    let code = owner.json()["code"].as_str().unwrap().to_owned();
    let owner_cookie = owner.cookie().unwrap();
    let mut cookies = vec![owner_cookie];
    for _ in 1..16 {
        cookies.push(c.session_for(0, &code).await);
    }
    let note = json!({"note": 60, "velocity": 1, "targetUserIds": []});
    for round in 0..3 {
        let mut players = Vec::new();
        for cookie in &cookies {
            let path = format!("/api/room/{code}");
            let r = request(port, "GET", &path, &[("Cookie", cookie)], None).await;
            assert_eq!(r.status, 200, "round {round}: {}", r.body);
            players.push(web(&c, 0, cookie, &code).await.0);
        }
        for p in &mut players {
            for _ in 0..20 {
                p.emit("KEY_DOWN", note.clone()).await;
                p.emit("KEY_UP", json!({"note": 60, "targetUserIds": []}))
                    .await;
            }
            // Nothing was refused: the next answer to this player is the 400 for a probe.
            p.emit("NO_SUCH_EVENT", json!({})).await;
            loop {
                match p.next().await {
                    Got::Event(n, d) if n == "exception" => {
                        assert_eq!(d["code"], 400, "round {round}: {d}");
                        break;
                    }
                    Got::Event(..) => continue,
                    other => panic!("round {round}: {other:?}"),
                }
            }
        }
        for p in players {
            p.close().await;
        }
    }
}
