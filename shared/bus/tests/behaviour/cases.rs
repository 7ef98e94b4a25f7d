//! The behaviour cases, each a generic async fn run against both backends by `suite!`.
//!
//! "Not received" is checked without sleeping: messages from one publisher arrive in order,
//! so after publishing something that must not match, a matching sentinel is published and
//! must be the next message received.

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use p2piano_bus::{Bus, BusError, BusErrorKind, BusKind, Headers, Message, Subscription};

use crate::{DEADLINE, Env, assert_ends, recv, text};

fn kind_of<T: std::fmt::Debug>(result: Result<T, BusError>) -> BusErrorKind {
    result.expect_err("expected an error").kind()
}

pub(crate) async fn reports_its_backend(env: Env) {
    let bus = env.connect().await;
    assert!(bus.is_connected());
    if env.is_nats() {
        assert_eq!(bus.kind(), BusKind::Nats);
        assert!(bus.nats_client().is_some());
    } else {
        assert_eq!(bus.kind(), BusKind::InProcess);
        assert!(bus.nats_client().is_none());
    }
    bus.flush().await.unwrap();
    assert_eq!(bus.dropped_messages(), 0);
}

pub(crate) async fn publish_subscribe_exact_subject(env: Env) {
    let (publisher, subscriber) = (env.connect().await, env.connect().await);
    let subject = env.subject("room.abcde.relay");
    let mut sub = subscriber.subscribe(&subject).await.unwrap();

    let mut headers = Headers::new();
    headers.insert(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    );
    headers.insert("X-Kind", "note");
    let payload = Bytes::from_static(br#"{"note":60,"velocity":127}"#);
    publisher
        .publish_with_headers(&subject, headers.clone(), payload.clone())
        .await
        .unwrap();
    publisher
        .publish(&subject, Bytes::from_static(b""))
        .await
        .unwrap();

    let msg = recv(&mut sub).await;
    assert_eq!(msg.subject, subject);
    assert_eq!(msg.reply, None);
    assert_eq!(msg.headers, headers);
    assert_eq!(msg.payload, payload);

    let empty = recv(&mut sub).await;
    assert!(empty.headers.is_empty());
    assert!(empty.payload.is_empty());

    // A sibling subject is not delivered.
    publisher
        .publish(
            &env.subject("room.abcde.members"),
            Bytes::from_static(b"no"),
        )
        .await
        .unwrap();
    publisher
        .publish(&subject, Bytes::from_static(b"yes"))
        .await
        .unwrap();
    assert_eq!(text(&recv(&mut sub).await), "yes");
}

/// Publishes each of `subjects` with its own name as payload, from one publisher (in order).
async fn publish_names(bus: &Bus, subjects: &[String]) {
    for s in subjects {
        bus.publish(s, Bytes::from(s.clone())).await.unwrap();
    }
}

pub(crate) async fn star_matches_exactly_one_token(env: Env) {
    let (publisher, subscriber) = (env.connect().await, env.connect().await);
    let mut sub = subscriber.subscribe(&env.subject("p.*")).await.unwrap();
    let mut mid = subscriber.subscribe(&env.subject("m.*.x")).await.unwrap();
    let s = |rest: &str| env.subject(rest);

    // Zero tokens and two tokens do not match; the sentinel one token does.
    publish_names(&publisher, &[s("p"), s("p.a.b"), s("q.a"), s("p.a")]).await;
    assert_eq!(text(&recv(&mut sub).await), s("p.a"));
    publish_names(
        &publisher,
        &[s("m.x"), s("m.a.b.x"), s("m.a.y"), s("m.a.x")],
    )
    .await;
    assert_eq!(text(&recv(&mut mid).await), s("m.a.x"));
    publish_names(&publisher, &[s("p.b")]).await;
    assert_eq!(text(&recv(&mut sub).await), s("p.b"));
}

pub(crate) async fn gt_matches_one_or_more_trailing_tokens(env: Env) {
    let (publisher, subscriber) = (env.connect().await, env.connect().await);
    let mut sub = subscriber.subscribe(&env.subject("g.>")).await.unwrap();
    let s = |rest: &str| env.subject(rest);

    publish_names(&publisher, &[s("g"), s("g.a"), s("h.a"), s("g.a.b.c")]).await;
    assert_eq!(text(&recv(&mut sub).await), s("g.a"));
    assert_eq!(text(&recv(&mut sub).await), s("g.a.b.c"));
    // Zero trailing tokens does not match: the sentinel comes next.
    publish_names(&publisher, &[s("g"), s("g.z")]).await;
    assert_eq!(text(&recv(&mut sub).await), s("g.z"));
}

pub(crate) async fn plain_subscribers_each_get_every_message(env: Env) {
    let publisher = env.connect().await;
    let subject = env.subject("fan.out");
    let mut subs = Vec::new();
    for _ in 0..3 {
        subs.push(env.connect().await.subscribe(&subject).await.unwrap());
    }
    // Two subscriptions on one connection count separately too.
    subs.push(publisher.subscribe(&env.subject("fan.*")).await.unwrap());
    for i in 0..20 {
        publisher
            .publish(&subject, Bytes::from(i.to_string()))
            .await
            .unwrap();
    }
    for sub in &mut subs {
        for i in 0..20 {
            assert_eq!(text(&recv(sub).await), i.to_string());
        }
    }
}

/// Receives from all `subs` until `total` messages arrived; returns (member index, payload).
async fn collect_from(subs: &mut [Subscription], total: usize) -> Vec<(usize, String)> {
    let mut merged = futures::stream::select_all(
        subs.iter_mut()
            .enumerate()
            .map(|(i, s)| s.map(move |m: Message| (i, text(&m).to_owned()))),
    );
    let mut got = Vec::with_capacity(total);
    while got.len() < total {
        match tokio::time::timeout(DEADLINE, merged.next()).await {
            Ok(Some(item)) => got.push(item),
            Ok(None) => panic!("all group members ended after {} messages", got.len()),
            Err(_) => panic!("only {} of {total} messages within {DEADLINE:?}", got.len()),
        }
    }
    got
}

/// Drains every subscription and returns how many more messages they still yielded.
async fn leftovers(subs: &mut [Subscription]) -> usize {
    let mut extra = 0;
    for sub in subs {
        sub.drain().await.unwrap();
        while tokio::time::timeout(DEADLINE, sub.next())
            .await
            .expect("drained stream ends")
            .is_some()
        {
            extra += 1;
        }
    }
    extra
}

/// The payloads `0..n` as a set, to compare against what a group received.
fn ids(n: usize) -> BTreeSet<String> {
    (0..n).map(|i| i.to_string()).collect()
}

pub(crate) async fn queue_group_delivers_each_message_once(env: Env) {
    const N: usize = 300;
    let publisher = env.connect().await;
    let subject = env.subject("rpc.rooms.join");
    let mut members = Vec::new();
    for _ in 0..3 {
        let bus = env.connect().await;
        members.push(bus.queue_subscribe(&subject, "rooms").await.unwrap());
    }
    let mut plain = env.connect().await.subscribe(&subject).await.unwrap();

    for i in 0..N {
        publisher
            .publish(&subject, Bytes::from(i.to_string()))
            .await
            .unwrap();
    }
    let got = collect_from(&mut members, N).await;
    publisher.flush().await.unwrap();
    assert_eq!(
        leftovers(&mut members).await,
        0,
        "a message was delivered twice"
    );
    let distinct: BTreeSet<String> = got.iter().map(|(_, p)| p.clone()).collect();
    assert_eq!(distinct, ids(N), "every message exactly once");
    for member in 0..3 {
        // Random choice among 3 for 300 messages: each member gets some (p(fail) ~ 1e-52).
        assert!(
            got.iter().any(|(i, _)| *i == member),
            "member {member} got none"
        );
    }
    for i in 0..N {
        assert_eq!(text(&recv(&mut plain).await), i.to_string());
    }
}

pub(crate) async fn distinct_queue_groups_each_get_every_message(env: Env) {
    const N: usize = 100;
    let publisher = env.connect().await;
    let subject = env.subject("rpc.presence.connect");
    let mut group_a = Vec::new();
    let mut group_b = Vec::new();
    for _ in 0..2 {
        group_a.push(
            env.connect()
                .await
                .queue_subscribe(&subject, "a")
                .await
                .unwrap(),
        );
        // Members of a group may use different, overlapping patterns.
        let wildcard = env.subject("rpc.presence.*");
        group_b.push(
            env.connect()
                .await
                .queue_subscribe(&wildcard, "b")
                .await
                .unwrap(),
        );
    }
    let mut plain = env.connect().await.subscribe(&subject).await.unwrap();
    for i in 0..N {
        publisher
            .publish(&subject, Bytes::from(i.to_string()))
            .await
            .unwrap();
    }
    for group in [&mut group_a, &mut group_b] {
        let got = collect_from(group, N).await;
        let distinct: BTreeSet<String> = got.into_iter().map(|(_, p)| p).collect();
        assert_eq!(distinct, ids(N));
    }
    publisher.flush().await.unwrap();
    assert_eq!(leftovers(&mut group_a).await, 0);
    assert_eq!(leftovers(&mut group_b).await, 0);
    for i in 0..N {
        assert_eq!(text(&recv(&mut plain).await), i.to_string());
    }
}

pub(crate) async fn order_is_kept_for_10000_messages(env: Env) {
    const N: usize = 10_000;
    let (publisher, subscriber) = (env.connect().await, env.connect().await);
    let subject = env.subject("order");
    let mut sub = subscriber.subscribe(&subject).await.unwrap();
    for i in 0..N {
        publisher
            .publish(&subject, Bytes::from(i.to_string()))
            .await
            .unwrap();
    }
    for i in 0..N {
        assert_eq!(text(&recv(&mut sub).await), i.to_string());
    }
    assert_eq!(subscriber.dropped_messages(), 0);
}

/// Answers every request on `sub` with `echo:<payload>` and the request's headers.
fn spawn_echo_responder(bus: Bus, mut sub: Subscription) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            let reply = msg.reply.clone().expect("a request has a reply subject");
            let body = format!("echo:{}", text(&msg));
            bus.publish_with_headers(&reply, msg.headers.clone(), Bytes::from(body))
                .await
                .unwrap();
        }
    })
}

pub(crate) async fn request_reply_echoes_headers(env: Env) {
    let (client, server) = (env.connect().await, env.connect().await);
    let subject = env.subject("rpc.rooms.get");
    let sub = server.queue_subscribe(&subject, "rooms").await.unwrap();
    let responder = spawn_echo_responder(server, sub);

    for i in 0..5 {
        let mut headers = Headers::new();
        headers.insert("traceparent", format!("00-{i:032x}-{i:016x}-01"));
        let reply = client
            .request(
                &subject,
                headers.clone(),
                Bytes::from(format!("req{i}")),
                DEADLINE,
            )
            .await
            .unwrap();
        assert_eq!(text(&reply), format!("echo:req{i}"));
        assert_eq!(reply.headers, headers);
    }
    responder.abort();
}

pub(crate) async fn request_by_hand_with_publish_with_reply(env: Env) {
    let (client, server) = (env.connect().await, env.connect().await);
    let subject = env.subject("rpc.by_hand");
    let inbox = env.subject("inbox");
    let mut replies = client.subscribe(&inbox).await.unwrap();
    let responder = spawn_echo_responder(server.clone(), server.subscribe(&subject).await.unwrap());

    client
        .publish_with_reply(&subject, &inbox, Headers::new(), Bytes::from_static(b"hi"))
        .await
        .unwrap();
    let reply = recv(&mut replies).await;
    assert_eq!(reply.subject, inbox);
    assert_eq!(text(&reply), "echo:hi");

    // Nobody listens here: nothing comes back to the inbox (NATS's internal "no responders"
    // status is not a message), so the next message is the sentinel.
    client
        .publish_with_reply(
            &env.subject("nobody"),
            &inbox,
            Headers::new(),
            Bytes::from_static(b"lost"),
        )
        .await
        .unwrap();
    client
        .publish(&inbox, Bytes::from_static(b"sentinel"))
        .await
        .unwrap();
    assert_eq!(text(&recv(&mut replies).await), "sentinel");
    responder.abort();
}

pub(crate) async fn request_without_subscriber_is_no_responders(env: Env) {
    let client = env.connect().await;
    // A long timeout: the kind proves it did not wait for it.
    let result = client
        .request(
            &env.subject("rpc.nobody"),
            Headers::new(),
            Bytes::from_static(b"{}"),
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(kind_of(result), BusErrorKind::NoResponders);
}

pub(crate) async fn request_to_silent_subscriber_times_out(env: Env) {
    let (client, server) = (env.connect().await, env.connect().await);
    let subject = env.subject("rpc.silent");
    let _silent = server.subscribe(&subject).await.unwrap();
    let result = client
        .request(
            &subject,
            Headers::new(),
            Bytes::new(),
            Duration::from_millis(200),
        )
        .await;
    assert_eq!(kind_of(result), BusErrorKind::Timeout);
}

pub(crate) async fn invalid_subjects_are_rejected(env: Env) {
    let bus = env.connect().await;
    let invalid = BusErrorKind::InvalidSubject;
    let body = || Bytes::from_static(b"x");
    for bad in ["a..b", "", "a b", "a.*", "a.>", "a.", "*", ">", "a\tb"] {
        assert_eq!(kind_of(bus.publish(bad, body()).await), invalid, "{bad:?}");
        let with_headers = bus.publish_with_headers(bad, Headers::new(), body()).await;
        assert_eq!(kind_of(with_headers), invalid, "{bad:?}");
        let timeout = Duration::from_millis(200);
        let req = bus.request(bad, Headers::new(), body(), timeout).await;
        assert_eq!(kind_of(req), invalid, "{bad:?}");
        let bad_reply = bus
            .publish_with_reply("a.b", bad, Headers::new(), body())
            .await;
        assert_eq!(kind_of(bad_reply), invalid, "reply {bad:?}");
    }
    for bad in ["a.>.b", "", "a b", "a..b", ">.a", "a*", "a.b>"] {
        assert_eq!(kind_of(bus.subscribe(bad).await), invalid, "{bad:?}");
        assert_eq!(
            kind_of(bus.queue_subscribe(bad, "g").await),
            invalid,
            "{bad:?}"
        );
    }
    for bad_group in ["", "a b"] {
        let result = bus.queue_subscribe(&env.subject("q"), bad_group).await;
        assert_eq!(kind_of(result), invalid, "group {bad_group:?}");
    }
    // Headers that cannot go on the wire are rejected too, the same way on both backends.
    let bad_headers = Headers::from_iter([("bad name", "v")]);
    let result = bus
        .publish_with_headers(&env.subject("h"), bad_headers, body())
        .await;
    assert_eq!(kind_of(result), BusErrorKind::Other);
    // Valid wildcard subscriptions are accepted.
    for good in ["*", "*.x.>", "a.*.c"] {
        bus.subscribe(&env.subject(good)).await.unwrap();
    }
}

pub(crate) async fn unsubscribe_ends_stream_at_once(env: Env) {
    let bus = env.connect().await;
    let subject = env.subject("unsub");
    let mut sub = bus.subscribe(&subject).await.unwrap();
    let mut witness = bus.subscribe(&subject).await.unwrap();
    for i in 0..3 {
        bus.publish(&subject, Bytes::from(i.to_string()))
            .await
            .unwrap();
    }
    bus.flush().await.unwrap();
    for _ in 0..3 {
        recv(&mut witness).await;
    }

    sub.unsubscribe().await.unwrap();
    // Buffered messages are discarded: the stream ends now.
    assert_ends(&mut sub).await;
    bus.publish(&subject, Bytes::from_static(b"later"))
        .await
        .unwrap();
    assert_eq!(text(&recv(&mut witness).await), "later");
    assert_ends(&mut sub).await;
    // Unsubscribing twice is harmless.
    sub.unsubscribe().await.unwrap();

    // And the interest is gone from the bus.
    drop(witness);
    bus.flush().await.unwrap();
    let result = bus
        .request(&subject, Headers::new(), Bytes::new(), DEADLINE)
        .await;
    assert_eq!(kind_of(result), BusErrorKind::NoResponders);
}

pub(crate) async fn drain_yields_buffered_then_ends(env: Env) {
    let (publisher, subscriber) = (env.connect().await, env.connect().await);
    let subject = env.subject("drain");
    let mut sub = subscriber.subscribe(&subject).await.unwrap();
    for i in 0..5 {
        publisher
            .publish(&subject, Bytes::from(i.to_string()))
            .await
            .unwrap();
    }
    // Once the server has routed them, they count as delivered to the subscription.
    publisher.flush().await.unwrap();

    sub.drain().await.unwrap();
    for i in 0..5 {
        assert_eq!(text(&recv(&mut sub).await), i.to_string());
    }
    assert_ends(&mut sub).await;

    // Nothing published after the drain is received, and the interest is gone.
    let mut witness = subscriber.subscribe(&subject).await.unwrap();
    publisher
        .publish(&subject, Bytes::from_static(b"after"))
        .await
        .unwrap();
    assert_eq!(text(&recv(&mut witness).await), "after");
    assert_ends(&mut sub).await;
    drop(witness);
    subscriber.flush().await.unwrap();
    let result = publisher
        .request(&subject, Headers::new(), Bytes::new(), DEADLINE)
        .await;
    assert_eq!(kind_of(result), BusErrorKind::NoResponders);
}

pub(crate) async fn dropping_subscription_stops_delivery(env: Env) {
    let (client, server) = (env.connect().await, env.connect().await);
    let subject = env.subject("rpc.dropped");
    let events = env.subject("events");
    let sub = server.subscribe(&subject).await.unwrap();
    let dropped_events = server.subscribe(&events).await.unwrap();
    let mut witness = client.subscribe(&events).await.unwrap();
    drop(sub);
    drop(dropped_events);
    // The server has processed the unsubscriptions once the dropping client's flush returns.
    server.flush().await.unwrap();

    client
        .publish(&events, Bytes::from_static(b"later"))
        .await
        .unwrap();
    assert_eq!(text(&recv(&mut witness).await), "later");
    let result = client
        .request(&subject, Headers::new(), Bytes::new(), DEADLINE)
        .await;
    assert_eq!(kind_of(result), BusErrorKind::NoResponders);
}

pub(crate) async fn values_are_handed_over_in_process_and_sent_as_json_over_nats(env: Env) {
    let (publisher, subscriber) = (env.connect().await, env.connect().await);
    let subject = env.subject("room.abcde.relay");
    let mut sub = subscriber.subscribe(&subject).await.unwrap();
    let value = std::sync::Arc::new(serde_json::json!({"note": 60, "velocity": 127}));
    publisher
        .publish_value(&subject, Headers::new(), value.clone())
        .await
        .unwrap();
    let msg = recv(&mut sub).await;
    let got = msg.value::<serde_json::Value>().unwrap();
    assert_eq!(*got, *value);
    if env.is_nats() {
        assert!(msg.local.is_none());
        let sent: serde_json::Value = serde_json::from_slice(&msg.payload).unwrap();
        assert_eq!(sent, *value);
    } else {
        assert!(
            std::sync::Arc::ptr_eq(&got, &value),
            "the publisher's value itself, not a copy"
        );
        assert!(msg.payload.is_empty());
        // Read as another type, a local value is an error, never a wrong value.
        assert!(msg.value::<String>().is_err());
    }
}

pub(crate) async fn a_no_echo_handle_never_hears_itself(env: Env) {
    let quiet = env.connect().await.no_echo("no-echo-test").await.unwrap();
    let other = env.connect().await;
    let subject = env.subject("room.abcde.relay");
    let mut own = quiet.subscribe(&subject).await.unwrap();
    let mut theirs = other.subscribe(&subject).await.unwrap();
    quiet
        .publish(&subject, Bytes::from_static(b"mine"))
        .await
        .unwrap();
    // Routed before anything published after this returns.
    quiet.flush().await.unwrap();
    other
        .publish(&subject, Bytes::from_static(b"yours"))
        .await
        .unwrap();
    assert_eq!(text(&recv(&mut theirs).await), "mine");
    assert_eq!(text(&recv(&mut theirs).await), "yours");
    // Had its own message come back, it would have come first.
    assert_eq!(text(&recv(&mut own).await), "yours");

    // Its subscriptions are in effect when `subscribe` returns, though its barrier cannot
    // rely on hearing itself.
    let later = env.subject("room.fghij.relay");
    let mut sub = quiet.subscribe(&later).await.unwrap();
    other
        .publish(&later, Bytes::from_static(b"seen"))
        .await
        .unwrap();
    assert_eq!(text(&recv(&mut sub).await), "seen");
}
