//! The liveness judge: hears every edge's heartbeat and finds the silent ones, on a thread of
//! its own with its own bus connection ([`p2piano_bus::spawn_lane`]).
//!
//! A heartbeat that waits in a saturated runtime's queue, or a check that runs seconds late,
//! would make a busy presence declare live edges dead. Here neither waits on the main
//! runtime: the judge only records when each edge was heard and sends its verdicts (a
//! heartbeat to act on, an edge gone silent) to the main runtime, which does the work.
//!
//! The judge also knows when it itself was away: if its own check runs much later than
//! planned (the process was stopped, the node frozen, the thread starved), every edge
//! counts as heard now, since the silence it would see is its own. The same holds while its
//! bus connection is down.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use p2piano_bus::Bus;
use p2piano_protocol::presence::Heartbeat;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::presence::Presence;

/// What the judge tells the main runtime.
#[derive(Debug)]
pub enum Verdict {
    /// A heartbeat from an edge (on its own subject): act on what it says.
    Heard(Box<Heartbeat>),
    /// An edge not heard from within the timeout: declare it dead.
    Silent(String),
}

impl Verdict {
    /// The edge the verdict is about.
    pub fn edge_id(&self) -> &str {
        match self {
            Verdict::Heard(hb) => &hb.edge_id,
            Verdict::Silent(edge) => edge,
        }
    }
}

/// Starts the judge on a lane of its own. It connects (for NATS) a bus of its own, subscribes
/// to every edge's heartbeats, and checks for silence every `check_every`, until `stop`.
pub fn spawn_judge(
    presence: Arc<Presence>,
    bus: Bus,
    check_every: Duration,
    verdicts: mpsc::UnboundedSender<Verdict>,
    stop: CancellationToken,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    p2piano_bus::spawn_lane("presence-liveness", move || async move {
        let Some(bus) = connect(&bus, &stop).await else {
            return;
        };
        let subject = presence.subjects.all_edge_heartbeats();
        let mut beats = loop {
            match bus.subscribe(&subject).await {
                Ok(s) => break s,
                Err(e) => {
                    tracing::warn!(error = %e, "liveness: no heartbeat subscription yet");
                    if pause(&stop, Duration::from_secs(1)).await {
                        return;
                    }
                }
            }
        };
        let mut tick = tokio::time::interval(check_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_check = Instant::now();
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                msg = beats.next() => match msg {
                    Some(msg) => match serde_json::from_slice::<Heartbeat>(&msg.payload) {
                        Ok(hb) if msg.subject == presence.subjects.edge_heartbeat(&hb.edge_id) => {
                            presence.heard(&hb);
                            let _ = verdicts.send(Verdict::Heard(Box::new(hb)));
                        }
                        Ok(_) => tracing::warn!(subject = %msg.subject, "heartbeat for another edge's subject ignored"),
                        Err(e) => tracing::warn!(subject = %msg.subject, error = %e, "malformed heartbeat ignored"),
                    },
                    None => {
                        tracing::warn!("liveness: heartbeat subscription ended");
                        break;
                    }
                },
                _ = tick.tick() => {
                    let now = Instant::now();
                    let late = now.duration_since(last_check).saturating_sub(check_every);
                    last_check = now;
                    if late > check_every {
                        tracing::warn!(
                            late_ms = late.as_millis() as u64,
                            "liveness: this process was paused; every edge counts as heard now"
                        );
                        presence.hear_all_now();
                        continue;
                    }
                    for edge in presence.silent_edges(bus.is_connected()) {
                        let _ = verdicts.send(Verdict::Silent(edge));
                    }
                }
            }
        }
    })
}

/// The judge's own bus (a connection of its own on NATS), retried until it connects or
/// `stop`.
async fn connect(bus: &Bus, stop: &CancellationToken) -> Option<Bus> {
    loop {
        match bus.dedicated("p2piano-presence-liveness").await {
            Ok(b) => return Some(b),
            Err(e) => {
                tracing::warn!(error = %e, "liveness: bus not reached yet");
                if pause(stop, Duration::from_secs(1)).await {
                    return None;
                }
            }
        }
    }
}

/// Waits `d`; true when `stop` came first.
async fn pause(stop: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = stop.cancelled() => true,
        _ = tokio::time::sleep(d) => false,
    }
}

impl Presence {
    /// Records that `hb`'s edge was heard now (a stopping edge is forgotten instead).
    pub(crate) fn heard(&self, hb: &Heartbeat) {
        let mut heard = self.last_heard.lock().unwrap_or_else(|e| e.into_inner());
        if hb.stopping {
            heard.remove(&hb.edge_id);
        } else {
            heard.insert(hb.edge_id.clone(), Instant::now());
        }
        self.metrics
            .edges_alive
            .set(i64::try_from(heard.len()).unwrap_or(i64::MAX));
    }

    /// Every known edge counts as heard now.
    fn hear_all_now(&self) {
        let now = Instant::now();
        for at in self
            .last_heard
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values_mut()
        {
            *at = now;
        }
    }

    /// The edges not heard from within the timeout, forgotten here; the caller declares
    /// each dead. The edge of this process (`p2piano all`) is never among them. Nothing is
    /// silent while `connected` is false: cut off from the bus, the judge hears nobody,
    /// which says nothing about the edges (a NATS restart would otherwise declare every
    /// edge dead), so every known edge counts as heard now and has a whole timeout to be
    /// heard again once the bus is back.
    pub(crate) fn silent_edges(&self, connected: bool) -> Vec<String> {
        if !connected {
            self.hear_all_now();
            return Vec::new();
        }
        let now = Instant::now();
        let silent: Vec<String> = {
            let mut heard = self.last_heard.lock().unwrap_or_else(|e| e.into_inner());
            let silent: Vec<String> = heard
                .iter()
                .filter(|(id, at)| {
                    now.duration_since(**at) >= self.settings.edge_timeout
                        && self.settings.local_edge.as_deref() != Some(id.as_str())
                })
                .map(|(id, _)| id.clone())
                .collect();
            for id in &silent {
                heard.remove(id);
            }
            self.metrics
                .edges_alive
                .set(i64::try_from(heard.len()).unwrap_or(i64::MAX));
            silent
        };
        for edge in &silent {
            tracing::warn!(edge_id = %edge, "edge silent past the timeout");
        }
        silent
    }
}
