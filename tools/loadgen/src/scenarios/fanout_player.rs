//! One fan-out player: sends KEY_DOWN/KEY_UP to the others in its room at the planned
//! rate, and accounts every note it receives (latency, loss, reordering).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Deserialize;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::client::{Client, Frame, Seen, split_event};
use crate::report::{histogram, merge};
use crate::sendlog::SendLog;
use crate::seq::{PairTrack, decode_down, decode_up, is_down, pack_down, pack_up};

/// What all players share once everyone has joined.
#[derive(Debug)]
pub struct Plan {
    /// Origin of every timestamp (nanoseconds since it).
    pub base: Instant,
    /// Per player: when it sent each event.
    pub logs: Vec<SendLog>,
    /// Public user id to player index.
    pub index_of: HashMap<String, u32>,
    /// Per player: the players it sends to (the others of its room that joined).
    pub peers: Vec<Vec<u32>>,
    /// Per player: the end of its event frames, `"targetUserIds":[...]}]`.
    pub suffix: Vec<String>,
    /// When sending starts and ends.
    pub start: Instant,
    /// See `start`.
    pub end: Instant,
    /// Time between two events of one player.
    pub period: Duration,
    /// Notes received by all players so far.
    pub received: AtomicU64,
}

impl Plan {
    /// Nanoseconds since `base`.
    pub fn now_nanos(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Deliveries expected for what has been sent so far.
    pub fn expected(&self) -> u64 {
        self.logs
            .iter()
            .zip(&self.peers)
            .map(|(log, peers)| log.sent() * peers.len() as u64)
            .sum()
    }
}

/// What one player did and saw (summed over players for the report).
#[derive(Debug)]
pub struct PlayerStats {
    /// Events sent.
    pub sent: u64,
    /// Notes received.
    pub received: u64,
    /// Events never received (per sender-receiver pair, summed).
    pub lost: u64,
    /// Events received after a later one.
    pub reordered: u64,
    /// Notes whose send time was no longer known (or that could not be attributed).
    pub unmatched: u64,
    /// `exception` events with code 429.
    pub exceptions_429: u64,
    /// Other `exception` events.
    pub exceptions_other: u64,
    /// Whether the socket closed before the end.
    pub closed_early: bool,
    /// Latency in microseconds.
    pub latency: Histogram<u64>,
    /// Membership events and the like.
    pub seen: Seen,
}

impl Default for PlayerStats {
    fn default() -> Self {
        Self {
            sent: 0,
            received: 0,
            lost: 0,
            reordered: 0,
            unmatched: 0,
            exceptions_429: 0,
            exceptions_other: 0,
            closed_early: false,
            latency: histogram(),
            seen: Seen::default(),
        }
    }
}

impl PlayerStats {
    /// Adds `o` into `self`.
    pub fn absorb(&mut self, o: &PlayerStats) {
        self.sent += o.sent;
        self.received += o.received;
        self.lost += o.lost;
        self.reordered += o.reordered;
        self.unmatched += o.unmatched;
        self.exceptions_429 += o.exceptions_429;
        self.exceptions_other += o.exceptions_other;
        self.closed_early |= o.closed_early;
        merge(&mut self.latency, &o.latency);
        self.seen.user_connect += o.seen.user_connect;
        self.seen.user_disconnect += o.seen.user_disconnect;
        self.seen.other += o.seen.other;
    }
}

#[derive(Deserialize)]
struct Relayed<'a> {
    note: u8,
    #[serde(default)]
    velocity: u8,
    #[serde(rename = "userId", borrow)]
    user_id: &'a str,
}

#[derive(Deserialize)]
struct Exception {
    code: u16,
}

/// Plays until `stop`: sends from `plan.start` to `plan.end`, receives until stopped.
pub async fn play(
    mut client: Client,
    me: usize,
    plan: Arc<Plan>,
    stop: CancellationToken,
) -> PlayerStats {
    let mut stats = PlayerStats::default();
    let mut tracks: Vec<(u32, PairTrack)> = plan.peers[me]
        .iter()
        .map(|&p| (p, PairTrack::default()))
        .collect();
    // Spread the players' ticks over one period (golden-ratio steps).
    let phase = plan.period.mul_f64((me as f64 * 0.618_033_988_75).fract());
    let mut tick = tokio::time::interval_at((plan.start + phase).into(), plan.period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut sending = !plan.peers[me].is_empty();
    let suffix = plan.suffix[me].as_str();
    let log = &plan.logs[me];
    let mut k = 0u64;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick(), if sending => {
                if Instant::now() >= plan.end {
                    sending = false;
                    continue;
                }
                let frame = if is_down(k) {
                    let (note, velocity) = pack_down(k);
                    format!("42/api,[\"KEY_DOWN\",{{\"note\":{note},\"velocity\":{velocity},{suffix}")
                } else {
                    format!("42/api,[\"KEY_UP\",{{\"note\":{},{suffix}", pack_up(k))
                };
                log.record(k, plan.now_nanos());
                k += 1;
                if client.send(frame).await.is_err() {
                    stats.closed_early = true;
                    break;
                }
            }
            frame = client.next() => match frame {
                Frame::Event(text) => receive(&text, &plan, &mut tracks, &mut stats),
                Frame::Closed(_) | Frame::Disconnected => {
                    stats.closed_early = true;
                    break;
                }
            },
        }
    }
    stats.sent = k;
    for (sender, track) in &mut tracks {
        track.finish(plan.logs[*sender as usize].sent());
        stats.lost += track.lost;
        stats.reordered += track.reordered;
    }
    if !stats.closed_early {
        client.leave().await;
    }
    stats
}

fn receive(text: &str, plan: &Plan, tracks: &mut [(u32, PairTrack)], stats: &mut PlayerStats) {
    let Some((name, payload)) = split_event(text) else {
        return;
    };
    let down = match name {
        "KEY_DOWN" => true,
        "KEY_UP" => false,
        "exception" => {
            match serde_json::from_str::<Exception>(payload) {
                Ok(e) if e.code == 429 => stats.exceptions_429 += 1,
                _ => stats.exceptions_other += 1,
            }
            return;
        }
        _ => {
            stats.seen.count(text);
            return;
        }
    };
    let now = plan.now_nanos();
    stats.received += 1;
    plan.received.fetch_add(1, Ordering::Relaxed);
    let Ok(r) = serde_json::from_str::<Relayed>(payload) else {
        stats.unmatched += 1;
        return;
    };
    let Some(&sender) = plan.index_of.get(r.user_id) else {
        stats.unmatched += 1;
        return;
    };
    let Some((_, track)) = tracks.iter_mut().find(|(s, _)| *s == sender) else {
        stats.unmatched += 1;
        return;
    };
    let k = if down {
        decode_down(r.note, r.velocity, track.next)
    } else {
        decode_up(r.note, track.next)
    };
    track.observe(k);
    match plan.logs[sender as usize].sent_at(k) {
        Some(at) => {
            let micros = (now.saturating_sub(at) / 1000).max(1);
            let _ = stats.latency.record(micros);
        }
        None => stats.unmatched += 1,
    }
}
