//! Sequence numbers carried in notes, and the loss/reorder accounting of one
//! (sender, receiver) pair.
//!
//! The server relays `KEY_DOWN` as `{note, velocity, userId}` and `KEY_UP` as
//! `{note, userId}` and drops any other field, so the sequence rides in the note itself.
//! A sender's events are numbered k = 0, 1, 2, ...: even k is a `KEY_DOWN` of pair
//! p = k / 2 carrying p mod 16384 in 14 bits (note = high 7 bits, velocity = low 7 bits),
//! odd k is the matching `KEY_UP` carrying p mod 128 in its note. A receiver rebuilds the
//! full k as the value nearest to the one it expects next that agrees with those bits.

/// Pairs per wrap of a `KEY_DOWN`'s 14 bits.
pub const DOWN_MODULUS: u64 = 1 << 14;
/// Pairs per wrap of a `KEY_UP`'s 7 bits.
pub const UP_MODULUS: u64 = 1 << 7;

/// Whether event k of a sender is a `KEY_DOWN` (else a `KEY_UP`).
pub fn is_down(k: u64) -> bool {
    k.is_multiple_of(2)
}

/// `(note, velocity)` of the `KEY_DOWN` for event k (even).
pub fn pack_down(k: u64) -> (u8, u8) {
    let p = (k / 2) % DOWN_MODULUS;
    (((p >> 7) & 127) as u8, (p & 127) as u8)
}

/// The note of the `KEY_UP` for event k (odd).
pub fn pack_up(k: u64) -> u8 {
    ((k / 2) % UP_MODULUS) as u8
}

/// The value nearest to `expected` that is congruent to `observed` modulo `modulus`
/// (never negative).
pub fn unwrap_near(expected: u64, observed: u64, modulus: u64) -> u64 {
    let observed = observed % modulus;
    let base = expected - expected % modulus + observed;
    let mut best = base;
    for cand in [base.checked_sub(modulus), base.checked_add(modulus)]
        .into_iter()
        .flatten()
    {
        if cand.abs_diff(expected) < best.abs_diff(expected) {
            best = cand;
        }
    }
    best
}

/// The full event number of a received `KEY_DOWN`, given the next one expected.
pub fn decode_down(note: u8, velocity: u8, expected: u64) -> u64 {
    let p = (u64::from(note & 127) << 7) | u64::from(velocity & 127);
    2 * unwrap_near(expected / 2, p, DOWN_MODULUS)
}

/// The full event number of a received `KEY_UP`, given the next one expected.
pub fn decode_up(note: u8, expected: u64) -> u64 {
    2 * unwrap_near(expected / 2, u64::from(note & 127), UP_MODULUS) + 1
}

/// What one receiver saw of one sender.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PairTrack {
    /// The next event number expected.
    pub next: u64,
    /// Events received (including late ones).
    pub received: u64,
    /// Events skipped over and not (yet) seen.
    pub lost: u64,
    /// Events that arrived after a later one.
    pub reordered: u64,
}

impl PairTrack {
    /// Accounts event `k`: in order, after a gap (the gap counts as lost), or late (counts
    /// as reordered, and no longer as lost).
    pub fn observe(&mut self, k: u64) {
        self.received += 1;
        if k == self.next {
            self.next += 1;
        } else if k > self.next {
            self.lost += k - self.next;
            self.next = k + 1;
        } else {
            self.reordered += 1;
            self.lost = self.lost.saturating_sub(1);
        }
    }

    /// Closes the books once the sender has sent `sent` events in all: those never seen
    /// at the end count as lost.
    pub fn finish(&mut self, sent: u64) {
        self.lost += sent.saturating_sub(self.next);
        self.next = self.next.max(sent);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_round_trips_across_wraps() {
        let mut expected = 0;
        for k in 0..(DOWN_MODULUS * 2 * 3 + 17) {
            let got = if is_down(k) {
                let (n, v) = pack_down(k);
                assert!(n < 128 && v < 128);
                decode_down(n, v, expected)
            } else {
                decode_up(pack_up(k), expected)
            };
            assert_eq!(got, k);
            expected = k + 1;
        }
    }

    #[test]
    fn decoding_tolerates_small_gaps_and_late_events() {
        // Expecting 1000, a KEY_DOWN for 1010 (5 pairs ahead) and one for 990 (late).
        let (n, v) = pack_down(1010);
        assert_eq!(decode_down(n, v, 1000), 1010);
        let (n, v) = pack_down(990);
        assert_eq!(decode_down(n, v, 1000), 990);
        assert_eq!(decode_up(pack_up(1011), 1000), 1011);
        assert_eq!(decode_up(pack_up(989), 1000), 989);
        // Near zero nothing goes negative.
        assert_eq!(decode_up(pack_up(1), 0), 1);
        let (n, v) = pack_down(0);
        assert_eq!(decode_down(n, v, 0), 0);
    }

    #[test]
    fn unwrap_picks_the_nearest() {
        assert_eq!(unwrap_near(130, 1, 128), 129);
        assert_eq!(unwrap_near(130, 127, 128), 127);
        assert_eq!(unwrap_near(0, 127, 128), 127);
        assert_eq!(unwrap_near(5, 5, 128), 5);
        assert_eq!(unwrap_near(16383, 0, 16384), 16384);
    }

    #[test]
    fn in_order_has_no_loss() {
        let mut t = PairTrack::default();
        for k in 0..100 {
            t.observe(k);
        }
        t.finish(100);
        assert_eq!((t.received, t.lost, t.reordered), (100, 0, 0));
    }

    #[test]
    fn gaps_are_lost_and_late_ones_reordered() {
        let mut t = PairTrack::default();
        for k in [0, 1, 3, 4, 2, 7] {
            t.observe(k);
        }
        // 2 was late (reordered, not lost); 5 and 6 never came.
        assert_eq!((t.received, t.lost, t.reordered), (6, 2, 1));
        t.finish(10);
        // 8 and 9 were sent and never came either.
        assert_eq!((t.lost, t.next), (4, 10));
    }

    #[test]
    fn tail_loss_counts() {
        let mut t = PairTrack::default();
        t.finish(5);
        assert_eq!(t.lost, 5);
    }
}
