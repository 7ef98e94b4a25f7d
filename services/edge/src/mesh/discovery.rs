//! How the edges find each other's relay links through the bus: from the heartbeats every
//! edge sends (which name its links, and say when it stops), and from a starting edge's
//! roll call, which every running edge answers at once, so that the starting edge knows
//! them all, with their links up, before it serves its first player.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use p2piano_bus::{Bus, BusError, Headers, Message};
use p2piano_protocol::Subjects;
use p2piano_protocol::mesh::MeshPeer;
use p2piano_protocol::presence::Heartbeat;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{LinkState, Mesh};

/// How long a roll call waits after the last answer for another one.
const ROLL_QUIET: Duration = Duration::from_millis(100);

fn me(mesh: &Mesh) -> Bytes {
    let me = MeshPeer {
        edge_id: mesh.edge_id().to_owned(),
        addr: mesh.addr().to_owned(),
    };
    Bytes::from(serde_json::to_vec(&me).expect("a peer serializes"))
}

/// Subscribes to the heartbeats and roll calls of the other edges and follows them until
/// `stop`: an edge heard of gets a link, an edge that says it stops is forgotten, and a
/// roll call is answered. Returns once subscribed.
pub async fn run_discovery(
    mesh: Arc<Mesh>,
    bus: Bus,
    subjects: &Subjects,
    stop: CancellationToken,
) -> Result<(), BusError> {
    let mut beats = bus.subscribe(&subjects.all_edge_heartbeats()).await?;
    let mut rolls = bus.subscribe(&subjects.mesh_roll()).await?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                m = beats.next() => match m {
                    Some(m) => heartbeat(&mesh, &m),
                    None => return,
                },
                m = rolls.next() => match m {
                    Some(m) => answer_roll(&mesh, &bus, &m).await,
                    None => return,
                },
            }
        }
    });
    Ok(())
}

fn heartbeat(mesh: &Arc<Mesh>, msg: &Message) {
    let Ok(hb) = serde_json::from_slice::<Heartbeat>(&msg.payload) else {
        return;
    };
    if hb.stopping {
        if hb.edge_id != mesh.edge_id() {
            tracing::info!(peer = %hb.edge_id, "edge stopping: forgotten");
            mesh.forget(&hb.edge_id);
        }
    } else if let Some(addr) = &hb.mesh {
        mesh.heard(&hb.edge_id, addr);
    }
}

async fn answer_roll(mesh: &Arc<Mesh>, bus: &Bus, msg: &Message) {
    let Ok(caller) = serde_json::from_slice::<MeshPeer>(&msg.payload) else {
        return;
    };
    if caller.edge_id == mesh.edge_id() {
        return;
    }
    mesh.heard(&caller.edge_id, &caller.addr);
    if let Some(reply) = &msg.reply
        && let Err(e) = bus.publish(reply, me(mesh)).await
    {
        tracing::warn!(error = %e, "roll call not answered");
    }
}

/// Calls the roll: asks every running edge where its links are, takes the answers until
/// none has come for a moment, then waits until the links to those edges are up, all
/// within `within`. Returns how many edges answered.
#[tracing::instrument(skip_all)]
pub async fn roll_call(
    mesh: &Arc<Mesh>,
    bus: &Bus,
    subjects: &Subjects,
    within: Duration,
) -> Result<usize, BusError> {
    let inbox = subjects.mesh_roll_reply(mesh.edge_id());
    let mut answers = bus.subscribe(&inbox).await?;
    bus.publish_with_reply(&subjects.mesh_roll(), &inbox, Headers::new(), me(mesh))
        .await?;
    let deadline = Instant::now() + within;
    let mut heard = Vec::new();
    loop {
        let quiet = (Instant::now() + ROLL_QUIET).min(deadline);
        match tokio::time::timeout_at(quiet, answers.next()).await {
            Ok(Some(m)) => {
                if let Ok(p) = serde_json::from_slice::<MeshPeer>(&m.payload)
                    && mesh.heard(&p.edge_id, &p.addr).is_some()
                {
                    heard.push(p.edge_id);
                }
            }
            Ok(None) | Err(_) => break,
        }
    }
    let _ = answers.unsubscribe().await;
    loop {
        let changed = mesh.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let known = mesh.peers();
        let waiting = heard
            .iter()
            .any(|id| known.iter().any(|(p, s)| p == id && *s != LinkState::Up));
        if !waiting || tokio::time::timeout_at(deadline, changed).await.is_err() {
            break;
        }
    }
    tracing::info!(
        edges = heard.len(),
        links_up = mesh.links_up(),
        "roll called"
    );
    Ok(heard.len())
}

#[cfg(test)]
mod tests {
    use p2piano_protocol::Timestamp;

    use super::*;
    use crate::mesh::tests::until;
    use crate::mesh::{MeshIdentity, MeshSettings};
    use crate::metrics::EdgeMetrics;

    async fn mesh(id: &str, stop: &CancellationToken) -> Arc<Mesh> {
        let identity = MeshIdentity {
            edge_id: id.into(),
            listen: "127.0.0.1:0".parse().unwrap(),
            advertise: None,
            secret: b"test-mesh-secret".to_vec(),
        };
        let metrics = EdgeMetrics::new(&p2piano_telemetry::Metrics::new("test"));
        Mesh::start(
            identity,
            Arc::default(),
            MeshSettings::default(),
            metrics,
            stop.clone(),
        )
        .await
        .unwrap()
    }

    fn beat(edge_id: &str, mesh: Option<String>, stopping: bool) -> Bytes {
        let hb = Heartbeat {
            edge_id: edge_id.into(),
            connections: 0,
            at: Timestamp::now(),
            stopping,
            generation: 0,
            digest: None,
            mesh,
        };
        Bytes::from(serde_json::to_vec(&hb).unwrap())
    }

    /// A shared in-process bus, the subjects, and the stop of every mesh of a test.
    fn setup() -> (Bus, Subjects, CancellationToken) {
        (
            Bus::in_process(),
            Subjects::new("t").unwrap(),
            CancellationToken::new(),
        )
    }

    /// A mesh that follows the bus's heartbeats and roll calls.
    async fn discovering(
        id: &str,
        bus: &Bus,
        subjects: &Subjects,
        stop: &CancellationToken,
    ) -> Arc<Mesh> {
        let m = mesh(id, stop).await;
        run_discovery(m.clone(), bus.clone(), subjects, stop.clone())
            .await
            .unwrap();
        m
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_starting_edge_has_its_links_up_once_the_roll_is_called() {
        let (bus, subjects, stop) = setup();
        let _stop = stop.clone().drop_guard();
        let a = discovering("a", &bus, &subjects, &stop).await;
        let b = discovering("b", &bus, &subjects, &stop).await;
        // No heartbeat has been sent: only the roll call introduces b to a, and it returns
        // with b's link to a up.
        let answered = roll_call(&b, &bus, &subjects, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(answered, 1);
        assert_eq!(b.peers(), [("a".to_owned(), LinkState::Up)]);
        until("a dialed b back", || {
            a.peers() == [("b".to_owned(), LinkState::Up)]
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn heartbeats_introduce_edges_and_a_stopping_one_forgets_its_edge() {
        let (bus, subjects, stop) = setup();
        let _stop = stop.clone().drop_guard();
        let a = discovering("a", &bus, &subjects, &stop).await;
        let c = mesh("c", &stop).await;
        let c_beat = beat("c", Some(c.addr().to_owned()), false);
        bus.publish(&subjects.edge_heartbeat("c"), c_beat)
            .await
            .unwrap();
        until("a linked to c from its heartbeat", || {
            a.peers() == [("c".to_owned(), LinkState::Up)]
        })
        .await;
        // A heartbeat without an address (an edge without links) introduces nobody.
        bus.publish(&subjects.edge_heartbeat("old"), beat("old", None, false))
            .await
            .unwrap();
        bus.publish(&subjects.edge_heartbeat("c"), beat("c", None, true))
            .await
            .unwrap();
        until("c forgotten", || a.peers().is_empty()).await;
    }
}
