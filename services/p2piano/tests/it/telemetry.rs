//! Telemetry of the split deployment: `p2piano rooms`, `p2piano presence` and two
//! `p2piano edge` processes on NATS and the MongoDB-wire server.
//!
//! - One client event is one trace across the processes: the spans they export over OTLP to
//!   a collector in this test (an OTLP/HTTP protobuf receiver) link up from the edge that
//!   got the event, through presence and rooms, to the delivery on the other edge.
//! - Every service's `/metrics` moves with the traffic: events in and out by name, rate-limit
//!   hits, bus request and MongoDB latency, requests per operation.

use crate::support;

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use p2piano_testkit::sio::{Got, SioClient};
use prost::Message as _;
use serde_json::{Value, json};
use support::{Guard, http, lines, p2piano, port_of, wait_for_line};
use tokio::sync::Notify;

/// How long a test waits for any one frame, span or metric.
const WAIT: Duration = Duration::from_secs(15);

// --- the split deployment -------------------------------------------------------------------

/// One service process, killed when the test ends.
struct Process {
    _child: Guard,
    /// Its log lines (kept, so that the process can keep writing them).
    _logs: Receiver<String>,
}

/// Rooms, presence and two edges as separate processes on the test's NATS and MongoDB, with
/// their own subject prefix and database.
struct Split {
    /// Public ports of edge-1 and edge-2.
    edges: [u16; 2],
    /// Their admin ports (`/metrics`).
    edge_admins: [u16; 2],
    /// Admin port of rooms (`/metrics`).
    rooms_admin: u16,
    /// Admin port of presence (`/metrics`).
    presence_admin: u16,
    _processes: Vec<Process>,
}

impl Split {
    /// Starts the four processes with `extra` environment on top of the deployment's, and
    /// returns once each has logged that it is up.
    fn start(extra: &[(&str, String)]) -> Split {
        let name = p2piano_testkit::unique_name("telemetry");
        let base = [
            ("NATS_URL", p2piano_testkit::nats_url()),
            ("MONGO_URI", p2piano_testkit::mongo_uri()),
            ("P2PIANO_SUBJECT_PREFIX", name.clone()),
            ("P2PIANO_MONGO_DB", name),
            (
                "COOKIE_SECRET",
                "telemetry-test-cookie-secret-0123456789abcdef".to_owned(),
            ),
            ("P2PIANO_COOKIE_SECURE", "false".to_owned()),
            ("P2PIANO_ADMIN_ADDR", "127.0.0.1:0".to_owned()),
            ("PORT", "0".to_owned()),
        ];
        let spawn = |role: &str, instance: &str| {
            let mut env: Vec<(&str, String)> = base.to_vec();
            env.extend(extra.iter().cloned());
            env.push(("P2PIANO_EDGE_ID", instance.to_owned()));
            env.push((
                "OTEL_RESOURCE_ATTRIBUTES",
                format!("service.instance.id={instance}"),
            ));
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let mut child = Guard(
                p2piano(&[role], &env)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("p2piano starts"),
            );
            let logs = lines(child.0.stdout.take().expect("stdout"));
            let _ = lines(child.0.stderr.take().expect("stderr"));
            (child, logs)
        };
        // Started together, waited for one by one: the edges need nothing of the others to
        // come up.
        let started = [
            ("rooms", "rooms", "p2piano rooms started"),
            ("presence", "presence", "p2piano presence started"),
            ("edge", "edge-1", "p2piano edge started"),
            ("edge", "edge-2", "p2piano edge started"),
        ]
        .map(|(role, instance, ready)| (spawn(role, instance), ready));
        let mut ports = Vec::new();
        let mut admins = Vec::new();
        let mut processes = Vec::new();
        for ((child, logs), ready) in started {
            let line = wait_for_line(&logs, ready);
            ports.push(port_of(&line));
            admins.push(
                line.split_once("admin_port=")
                    .map_or(0, |(_, rest)| port_of(&format!("port={rest}"))),
            );
            processes.push(Process {
                _child: child,
                _logs: logs,
            });
        }
        Split {
            rooms_admin: ports[0],
            presence_admin: ports[1],
            edges: [ports[2], ports[3]],
            edge_admins: [admins[2], admins[3]],
            _processes: processes,
        }
    }
}

/// A room created over HTTP on `edge`: (its creator's cookie, its code).
fn create_room(edge: u16) -> (String, String) {
    let r = http(edge, "POST", "/api/room", &[]);
    assert_eq!(r.status, 201, "{r:?}");
    let code = r.json()["roomId"].as_str().expect("roomId").to_owned();
    (r.cookie().expect("a session cookie"), code)
}

/// A new session that looked at room `code` over HTTP on `edge`: its cookie.
fn visit_room(edge: u16, code: &str) -> String {
    let r = http(edge, "GET", &format!("/api/room/{code}"), &[]);
    assert_eq!(r.status, 200, "{r:?}");
    r.cookie().expect("a session cookie")
}

/// A web client (namespace `/api`) with session `cookie` joined to room `code` on `edge`;
/// returns it with its user id.
async fn join(edge: u16, code: &str, cookie: &str, name: &str) -> (SioClient, String) {
    let mut client = SioClient::open(
        edge,
        &format!("roomId={code}&displayName={name}"),
        &[("Cookie", cookie)],
    )
    .await
    .expect("socket opens");
    match client.connect("/api", None).await {
        Got::Connected(_) => {}
        other => panic!("{name} could not join: {other:?}"),
    }
    let welcome = client.expect("ROOM_JOIN").await;
    let me = welcome["userId"].as_str().expect("userId").to_owned();
    (client, me)
}

/// Reads `client`'s events until `name` arrives, skipping the others; returns its payload.
async fn until_event(client: &mut SioClient, name: &str) -> Value {
    loop {
        match client.next().await {
            Got::Event(n, payload) if n == name => return payload,
            Got::Closed(code) => panic!("closed ({code:?}) while waiting for {name}"),
            _ => continue,
        }
    }
}

// --- traces -----------------------------------------------------------------------------

/// A span as the collector received it.
#[derive(Clone, Debug)]
struct Span {
    /// `service.name` of its resource.
    service: String,
    /// `service.instance.id` of its resource (`edge-1`, `rooms`, ...).
    instance: String,
    name: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    /// Empty for a root span.
    parent: Vec<u8>,
    /// Attributes, as text.
    attributes: HashMap<String, String>,
}

impl Span {
    fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// What the collector received so far, and a wake-up for each export.
#[derive(Clone, Default)]
struct Collected {
    spans: Arc<Mutex<Vec<Span>>>,
    arrived: Arc<Notify>,
}

impl Collected {
    /// Waits until `found` finds what it looks for in the spans received, and returns it;
    /// fails after [`WAIT`] with `what` and a summary of the spans.
    async fn until<T>(&self, what: &str, found: impl Fn(&[Span]) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let arrived = self.arrived.notified();
            if let Some(t) = found(&self.spans.lock().unwrap()) {
                return t;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                let spans = self.spans.lock().unwrap();
                let summary: Vec<String> = spans
                    .iter()
                    .map(|s| {
                        format!(
                            "{} {} trace={} span={} parent={} {:?}",
                            s.instance,
                            s.name,
                            hex(&s.trace_id),
                            hex(&s.span_id),
                            hex(&s.parent),
                            s.attributes
                        )
                    })
                    .collect();
                panic!(
                    "no {what} among the spans received:\n{}",
                    summary.join("\n")
                );
            }
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(value: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attributes(list: &[KeyValue]) -> HashMap<String, String> {
    list.iter()
        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
        .collect()
}

/// `POST /v1/traces`: an OTLP/HTTP protobuf export.
async fn receive(State(collected): State<Collected>, body: axum::body::Bytes) -> Response {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let mut received = Vec::new();
    for resource_spans in request.resource_spans {
        let resource = attributes(
            &resource_spans
                .resource
                .map(|r| r.attributes)
                .unwrap_or_default(),
        );
        let service = resource.get("service.name").cloned().unwrap_or_default();
        let instance = resource
            .get("service.instance.id")
            .cloned()
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                received.push(Span {
                    service: service.clone(),
                    instance: instance.clone(),
                    name: span.name,
                    trace_id: span.trace_id,
                    span_id: span.span_id,
                    parent: span.parent_span_id,
                    attributes: attributes(&span.attributes),
                });
            }
        }
    }
    collected.spans.lock().unwrap().extend(received);
    collected.arrived.notify_waiters();
    (
        [(header::CONTENT_TYPE, "application/x-protobuf")],
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
        .into_response()
}

/// An OTLP/HTTP collector on a port of its own: its base URL and what it receives.
async fn collector() -> (String, Collected) {
    let collected = Collected::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let app = axum::Router::new()
        .route("/v1/traces", axum::routing::post(receive))
        .with_state(collected.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, collected)
}

/// The one span that `matches`, if exactly one does (several would make the test ambiguous).
fn one(spans: &[Span], matches: impl Fn(&Span) -> bool) -> Option<&Span> {
    let mut found = spans.iter().filter(|s| matches(s));
    let first = found.next()?;
    assert!(found.next().is_none(), "more than one span like {first:?}");
    Some(first)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_event_is_one_trace_across_the_split_services() {
    let (endpoint, collected) = collector().await;
    let split = Split::start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        // Export every 100 ms instead of every 5 s.
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
    ]);
    let [edge1, edge2] = split.edges;

    // Bea waits on edge-2; Al joins on edge-1, then plays a note to her.
    let (al_cookie, code) = create_room(edge1);
    let bea_cookie = visit_room(edge2, &code);
    let (mut bea, bea_id) = join(edge2, &code, &bea_cookie, "Bea").await;
    let (mut al, al_id) = join(edge1, &code, &al_cookie, "Al").await;
    let connected = until_event(&mut bea, "USER_CONNECT").await;
    assert_eq!(connected["userId"], al_id.as_str());
    al.emit(
        "KEY_DOWN",
        json!({"note": 60, "velocity": 100, "targetUserIds": [bea_id]}),
    )
    .await;
    let note = until_event(&mut bea, "KEY_DOWN").await;
    assert_eq!(note["note"], 60);

    // Al's join: the connect on edge-1 is the root; its RPCs are its children; presence's
    // and rooms' spans are children of those RPCs; edge-2 delivers the membership event that
    // rooms published as a child of rooms' span.
    let join = collected
        .until(
            "Al's join traced through edge, presence and rooms to edge-2",
            |spans| {
                let connect = one(spans, |s| {
                    s.name == "edge.connect" && s.instance == "edge-1"
                })?;
                let trace: Vec<&Span> = spans
                    .iter()
                    .filter(|s| s.trace_id == connect.trace_id)
                    .collect();
                let find = |name: &str, instance: &str, key: &str, value: &str| {
                    trace
                        .iter()
                        .find(|s| {
                            s.name == name && s.instance == instance && s.attr(key) == Some(value)
                        })
                        .map(|s| (*s).clone())
                };
                Some((
                    connect.clone(),
                    find("edge.rpc", "edge-1", "op", "join")?,
                    find("rooms.rpc", "rooms", "op", "join")?,
                    find("edge.rpc", "edge-1", "op", "connect")?,
                    find("presence.rpc", "presence", "op", "connect")?,
                    find("edge.deliver", "edge-2", "kind", "members")?,
                ))
            },
        )
        .await;
    let (connect, edge_join, rooms_join, edge_connect, presence_connect, delivered) = join;
    assert!(
        connect.parent.is_empty(),
        "the client's connect is the root"
    );
    assert_eq!(connect.service, "p2piano-edge");
    assert_eq!(connect.attr("dialect"), Some("client"));
    assert_eq!(connect.attr("code"), Some(code.as_str()));
    assert_eq!(
        edge_join.parent, connect.span_id,
        "edge's join RPC in the connect"
    );
    assert_eq!(edge_connect.parent, connect.span_id);
    assert_eq!(rooms_join.service, "p2piano-rooms");
    assert_eq!(
        rooms_join.parent, edge_join.span_id,
        "rooms' span is the child of the edge's RPC client span"
    );
    assert_eq!(presence_connect.service, "p2piano-presence");
    assert_eq!(presence_connect.parent, edge_connect.span_id);
    assert_eq!(delivered.service, "p2piano-edge");
    assert_eq!(
        delivered.parent, rooms_join.span_id,
        "edge-2 delivers rooms' membership event in rooms' trace"
    );
    assert_eq!(delivered.attr("event"), Some("Joined"));
    assert_eq!(delivered.attr("delivered"), Some("1"), "to Bea");
    // No secret in any exported span: session ids live in cookies only.
    let spans = collected.spans.lock().unwrap().clone();
    for cookie in [&al_cookie, &bea_cookie] {
        let secret = cookie.split_once('=').map_or("", |(_, v)| v);
        let secret = secret.split('.').next().unwrap_or_default();
        assert!(secret.len() > 8, "{cookie}");
        for span in &spans {
            assert!(
                !span.attributes.values().any(|v| v.contains(secret)),
                "a session secret in {span:?}"
            );
        }
    }

    // Al's note: the event on edge-1 is the root, and edge-2's delivery to Bea is its child.
    let (event, delivery) = collected
        .until("Al's note delivered on edge-2 in Al's trace", |spans| {
            let event = one(spans, |s| {
                s.name == "edge.event" && s.attr("event") == Some("KEY_DOWN")
            })?;
            let delivery = spans.iter().find(|s| {
                s.name == "edge.deliver" && s.instance == "edge-2" && s.trace_id == event.trace_id
            })?;
            Some((event.clone(), delivery.clone()))
        })
        .await;
    assert_eq!(event.instance, "edge-1");
    assert!(event.parent.is_empty(), "the client event is the root");
    assert_eq!(event.attr("outcome"), Some("ok"));
    assert_eq!(delivery.parent, event.span_id);
    assert_eq!(delivery.attr("kind"), Some("relay"));
    assert_eq!(delivery.attr("event"), Some("KEY_DOWN"));
    assert_eq!(delivery.attr("delivered"), Some("1"), "to Bea");
    assert_eq!(delivery.attr("code"), Some(code.as_str()));

    al.close().await;
    bea.close().await;
}

// --- metrics ----------------------------------------------------------------------------

/// The samples of a `/metrics` page: series (name and labels as written) to value.
fn scrape(port: u16) -> HashMap<String, f64> {
    let r = http(port, "GET", "/metrics", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// How a series must have moved between two scrapes.
enum Moved {
    /// Grown by exactly this much.
    By(f64),
    /// Grown by at least this much.
    AtLeast(f64),
    /// Now equal to this (a gauge).
    Now(f64),
}

/// The expectations on one service's `/metrics`.
struct Expected {
    service: &'static str,
    port: u16,
    before: HashMap<String, f64>,
    series: Vec<(&'static str, Moved)>,
}

impl Expected {
    fn new(service: &'static str, port: u16, series: Vec<(&'static str, Moved)>) -> Self {
        Expected {
            service,
            port,
            before: scrape(port),
            series,
        }
    }

    /// What is not (yet) as expected.
    fn unmet(&self) -> Vec<String> {
        let after = scrape(self.port);
        let value = |map: &HashMap<String, f64>, series: &str| map.get(series).copied();
        self.series
            .iter()
            .filter_map(|(series, moved)| {
                let before = value(&self.before, series).unwrap_or(0.0);
                let now = value(&after, series);
                let ok = match (moved, now) {
                    (_, None) => false,
                    (Moved::By(d), Some(now)) => now - before == *d,
                    (Moved::AtLeast(d), Some(now)) => now - before >= *d,
                    (Moved::Now(v), Some(now)) => now == *v,
                };
                let (service, got) = (self.service, now.map(|n| n - before));
                (!ok).then(|| format!("{service}: {series} moved by {got:?} (was {before})"))
            })
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_counts_the_traffic_it_handles() {
    use Moved::{AtLeast, By, Now};

    let split = Split::start(&[]);
    let [edge1, edge2] = split.edges;
    let [admin1, admin2] = split.edge_admins;
    let expected = [
        Expected::new(
            "edge-1",
            admin1,
            vec![
                ("p2piano_edge_connections", Now(1.0)),
                ("p2piano_edge_rooms", Now(1.0)),
                (r#"p2piano_edge_events_in_total{event="KEY_DOWN"}"#, By(3.0)),
                (
                    r#"p2piano_edge_events_in_total{event="METRONOME_TICK"}"#,
                    By(201.0),
                ),
                (r#"p2piano_edge_events_in_total{event="unknown"}"#, By(1.0)),
                ("p2piano_edge_rate_limited_total", By(1.0)),
                ("p2piano_edge_rejected_total", By(1.0)),
                (
                    r#"p2piano_edge_bus_request_duration_seconds_count{service="rooms",op="create"}"#,
                    By(1.0),
                ),
                (
                    r#"p2piano_edge_bus_request_duration_seconds_count{service="rooms",op="join"}"#,
                    By(1.0),
                ),
                (
                    r#"p2piano_edge_bus_request_duration_seconds_count{service="presence",op="session_create"}"#,
                    By(1.0),
                ),
                (
                    r#"p2piano_edge_bus_request_duration_seconds_count{service="presence",op="connect"}"#,
                    By(1.0),
                ),
            ],
        ),
        Expected::new(
            "edge-2",
            admin2,
            vec![
                ("p2piano_edge_connections", Now(1.0)),
                (
                    r#"p2piano_edge_delivered_total{event="USER_CONNECT"}"#,
                    By(1.0),
                ),
                (r#"p2piano_edge_delivered_total{event="KEY_DOWN"}"#, By(3.0)),
                (
                    r#"p2piano_edge_delivered_total{event="METRONOME_TICK"}"#,
                    By(200.0),
                ),
                (
                    r#"p2piano_edge_bus_request_duration_seconds_count{service="rooms",op="join"}"#,
                    By(1.0),
                ),
                (
                    r#"p2piano_edge_bus_request_duration_seconds_sum{service="rooms",op="join"}"#,
                    AtLeast(f64::MIN_POSITIVE),
                ),
            ],
        ),
        Expected::new(
            "rooms",
            split.rooms_admin,
            vec![
                (
                    r#"p2piano_rooms_requests_total{op="create",outcome="ok"}"#,
                    By(1.0),
                ),
                (
                    r#"p2piano_rooms_requests_total{op="join",outcome="ok"}"#,
                    By(2.0),
                ),
                (
                    r#"p2piano_rooms_request_duration_seconds_count{op="join"}"#,
                    By(2.0),
                ),
                ("p2piano_rooms_events_published_total", By(2.0)),
                (
                    r#"p2piano_rooms_mongo_duration_seconds_count{op="insert"}"#,
                    By(1.0),
                ),
                (
                    r#"p2piano_rooms_mongo_duration_seconds_count{op="replace"}"#,
                    AtLeast(2.0),
                ),
                (
                    r#"p2piano_rooms_mongo_duration_seconds_count{op="upsert_profile"}"#,
                    AtLeast(2.0),
                ),
                (
                    r#"p2piano_rooms_mongo_duration_seconds_sum{op="find"}"#,
                    AtLeast(f64::MIN_POSITIVE),
                ),
            ],
        ),
        Expected::new(
            "presence",
            split.presence_admin,
            vec![
                (
                    r#"p2piano_presence_requests_total{op="session_create",outcome="ok"}"#,
                    By(2.0),
                ),
                (
                    r#"p2piano_presence_requests_total{op="connect",outcome="ok"}"#,
                    By(2.0),
                ),
                (
                    r#"p2piano_presence_requests_total{op="session_get",outcome="ok"}"#,
                    AtLeast(2.0),
                ),
            ],
        ),
    ];

    // A room, two members on two edges, three notes, a made-up event, and a rate-limit hit.
    let (al_cookie, code) = create_room(edge1);
    let bea_cookie = visit_room(edge2, &code);
    let (mut bea, bea_id) = join(edge2, &code, &bea_cookie, "Bea").await;
    let (mut al, _) = join(edge1, &code, &al_cookie, "Al").await;
    until_event(&mut bea, "USER_CONNECT").await;
    for note in [60, 64, 67] {
        al.emit(
            "KEY_DOWN",
            json!({"note": note, "velocity": 90, "targetUserIds": [bea_id]}),
        )
        .await;
    }
    al.emit("MADE_UP_EVENT", json!({"targetUserIds": []})).await;
    // Other events may be sent 200 times in 10 s; the 201st is refused.
    for _ in 0..201 {
        al.emit(
            "METRONOME_TICK",
            json!({"type": "beat", "targetUserIds": [bea_id]}),
        )
        .await;
    }
    let refused = until_event(&mut al, "exception").await;
    assert_eq!(refused["event"], "MADE_UP_EVENT", "{refused}");
    let refused = until_event(&mut al, "exception").await;
    assert_eq!(refused["code"], 429, "{refused}");
    let mut ticks = 0;
    while ticks < 200 {
        let _ = until_event(&mut bea, "METRONOME_TICK").await;
        ticks += 1;
    }

    // Replies can reach the client a moment before the service counts them: poll.
    let deadline = Instant::now() + WAIT;
    loop {
        let unmet: Vec<String> = expected.iter().flat_map(Expected::unmet).collect();
        if unmet.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "metrics did not move as expected:\n{}",
            unmet.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    al.close().await;
    bea.close().await;
}
