//! One behaviour suite for both bus backends.
//!
//! Every case in [`cases`] is a generic async fn taking an [`Env`]; the `suite!` macro
//! instantiates each of them twice, in `mod nats` (a real nats-server from
//! `p2piano_testkit::nats_url()`, one client connection per [`Env::connect`]) and in
//! `mod in_process` (clones of one `Bus::in_process()`). Passing both proves the two backends
//! have the same observable semantics. NATS-only cases (server going away) are in
//! [`nats_only`]. Tests wait on events with deadlines, never on fixed sleeps.

mod cases;
mod nats_only;

use std::time::Duration;

use futures::StreamExt;
use p2piano_bus::{Bus, Message, Subscription};

/// Upper bound for anything a test waits on; generous for slow CI machines.
pub(crate) const DEADLINE: Duration = Duration::from_secs(10);

/// Where a case runs: which backend, and a subject prefix of its own.
pub(crate) struct Env {
    backend: Backend,
    prefix: String,
}

enum Backend {
    Nats { url: String },
    InProcess(Bus),
}

impl Env {
    pub(crate) fn nats() -> Env {
        Env {
            backend: Backend::Nats {
                url: p2piano_testkit::nats_url(),
            },
            prefix: p2piano_testkit::unique_name("bus"),
        }
    }

    pub(crate) fn in_process() -> Env {
        Env {
            backend: Backend::InProcess(Bus::in_process()),
            prefix: p2piano_testkit::unique_name("bus"),
        }
    }

    /// A new independent client of the same bus: a new NATS connection, or a clone of the
    /// in-process bus.
    pub(crate) async fn connect(&self) -> Bus {
        match &self.backend {
            Backend::Nats { url } => Bus::connect_nats(url, &self.prefix)
                .await
                .expect("connect to the test nats-server"),
            Backend::InProcess(bus) => bus.clone(),
        }
    }

    pub(crate) fn is_nats(&self) -> bool {
        matches!(self.backend, Backend::Nats { .. })
    }

    /// `rest` under this test's own prefix.
    pub(crate) fn subject(&self, rest: &str) -> String {
        format!("{}.{rest}", self.prefix)
    }
}

/// The next message, failing the test if none comes before the deadline or the stream ends.
pub(crate) async fn recv(sub: &mut Subscription) -> Message {
    match tokio::time::timeout(DEADLINE, sub.next()).await {
        Ok(Some(msg)) => msg,
        Ok(None) => panic!("subscription {} ended unexpectedly", sub.subject()),
        Err(_) => panic!("no message on {} within {DEADLINE:?}", sub.subject()),
    }
}

/// Asserts that the stream ends (yields `None`) before the deadline.
pub(crate) async fn assert_ends(sub: &mut Subscription) {
    match tokio::time::timeout(DEADLINE, sub.next()).await {
        Ok(None) => {}
        Ok(Some(msg)) => panic!("expected the end of {}, got {msg:?}", sub.subject()),
        Err(_) => panic!("{} did not end within {DEADLINE:?}", sub.subject()),
    }
}

/// The payload as text.
pub(crate) fn text(msg: &Message) -> &str {
    std::str::from_utf8(&msg.payload).expect("utf-8 payload")
}

macro_rules! suite {
    ($($case:ident),* $(,)?) => {
        mod nats {
            $(
                #[tokio::test]
                async fn $case() {
                    crate::cases::$case(crate::Env::nats()).await;
                }
            )*
        }
        mod in_process {
            $(
                #[tokio::test]
                async fn $case() {
                    crate::cases::$case(crate::Env::in_process()).await;
                }
            )*
        }
    };
}

suite!(
    reports_its_backend,
    publish_subscribe_exact_subject,
    star_matches_exactly_one_token,
    gt_matches_one_or_more_trailing_tokens,
    plain_subscribers_each_get_every_message,
    queue_group_delivers_each_message_once,
    distinct_queue_groups_each_get_every_message,
    order_is_kept_for_10000_messages,
    request_reply_echoes_headers,
    request_by_hand_with_publish_with_reply,
    request_without_subscriber_is_no_responders,
    request_to_silent_subscriber_times_out,
    invalid_subjects_are_rejected,
    unsubscribe_ends_stream_at_once,
    drain_yields_buffered_then_ends,
    dropping_subscription_stops_delivery,
    values_are_handed_over_in_process_and_sent_as_json_over_nats,
    a_no_echo_handle_never_hears_itself,
);
