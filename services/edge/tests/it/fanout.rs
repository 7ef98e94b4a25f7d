//! An edge hands the relays of its own sockets to its other local members itself, and the
//! bus carries them only to the other edges (a no-echo handle): every member gets each note
//! exactly once, in the order played, whichever edge it is on.

use crate::support;

use serde_json::json;
use support::client::Got;
use support::{Cluster, Mode, web};

#[p2piano_testkit::both_modes(
    nats = Cluster::start(Mode::Nats).await,
    in_process = Cluster::start(Mode::InProcess).await,
)]
mod cases {
    use super::*;

    pub async fn each_member_gets_each_note_once_in_order(c: Cluster) {
        let (cookie_a, code) = c.session_with_room(0).await;
        let (mut a, a_id) = web(&c, 0, &cookie_a, &code).await;
        let (mut x, x_id) = web(&c, 0, &c.session_for(0, &code).await, &code).await;
        let (mut b, b_id) = web(&c, 1, &c.session_for(1, &code).await, &code).await;
        assert_eq!(a.expect("USER_CONNECT").await["userId"], x_id);
        assert_eq!(a.expect("USER_CONNECT").await["userId"], b_id);
        assert_eq!(x.expect("USER_CONNECT").await["userId"], b_id);
        let notes = 0..20;
        for note in notes.clone() {
            a.emit(
                "KEY_DOWN",
                json!({"note": note, "velocity": 64, "targetUserIds": [x_id, b_id]}),
            )
            .await;
        }
        for s in [&mut x, &mut b] {
            for note in notes.clone() {
                assert_eq!(
                    s.next().await,
                    Got::Event(
                        "KEY_DOWN".into(),
                        json!({"note": note, "velocity": 64, "userId": a_id})
                    )
                );
            }
        }
        // b answers only once it has every note, and its answer crosses the bus after anything
        // the bus routed for a's notes: had a's notes also come back to a's own edge, x would
        // see them again before b's answer.
        b.emit("KEY_UP", json!({"note": 99, "targetUserIds": [x_id]}))
            .await;
        assert_eq!(
            x.next().await,
            Got::Event("KEY_UP".into(), json!({"note": 99, "userId": b_id}))
        );
    }
}
