//! When each event was sent, per sender, shared with the receivers (all players live in
//! this process): a ring of the last [`RING`] send instants indexed by event number, each
//! tagged with its number so a receiver never takes an overwritten slot for its event.

use std::sync::atomic::{AtomicU64, Ordering};

/// Events remembered per sender (at 100 events/s, ten seconds).
pub const RING: usize = 1024;

/// One sender's log.
#[derive(Debug)]
pub struct SendLog {
    at: Box<[AtomicU64]>,
    tag: Box<[AtomicU64]>,
    sent: AtomicU64,
}

impl Default for SendLog {
    fn default() -> Self {
        Self::new()
    }
}

impl SendLog {
    /// An empty log.
    pub fn new() -> Self {
        let ring = || (0..RING).map(|_| AtomicU64::new(0)).collect();
        Self {
            at: ring(),
            tag: ring(),
            sent: AtomicU64::new(0),
        }
    }

    /// Notes that event `k` is being sent at `nanos` (since the run's base instant).
    /// Events are recorded in order by their one sender.
    pub fn record(&self, k: u64, nanos: u64) {
        let slot = (k % RING as u64) as usize;
        self.at[slot].store(nanos, Ordering::Relaxed);
        self.tag[slot].store(k + 1, Ordering::Release);
        self.sent.store(k + 1, Ordering::Release);
    }

    /// When event `k` was sent, unless it is no longer (or not yet) in the ring.
    pub fn sent_at(&self, k: u64) -> Option<u64> {
        let slot = (k % RING as u64) as usize;
        (self.tag[slot].load(Ordering::Acquire) == k + 1)
            .then(|| self.at[slot].load(Ordering::Relaxed))
    }

    /// Events sent so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_the_last_ring_of_events() {
        let log = SendLog::new();
        assert_eq!(log.sent_at(0), None);
        for k in 0..(RING as u64 + 10) {
            log.record(k, 1000 + k);
        }
        assert_eq!(log.sent(), RING as u64 + 10);
        // Overwritten slots are not mistaken for their old events.
        assert_eq!(log.sent_at(5), None);
        assert_eq!(log.sent_at(RING as u64 + 5), Some(1000 + RING as u64 + 5));
        assert_eq!(log.sent_at(20), Some(1020));
        // Not sent yet.
        assert_eq!(log.sent_at(RING as u64 + 20), None);
    }
}
