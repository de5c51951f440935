//! Rewriting of SSRC, sequence numbers and timestamps so that a subscriber sees one continuous
//! stream per track, whichever simulcast layer is behind it at the moment.
//!
//! Each layer a browser sends has its own SSRC, sequence space and timestamp offset. When the
//! SFU switches a subscriber from one layer to another (always at a keyframe), the outgoing
//! sequence number continues at last + 1 and the outgoing timestamp advances by the wall-clock
//! time since the last packet, so the receiver's jitter buffer and decoder see no gap and no jump.
//!
//! Packets the SFU drops on purpose (a publisher's padding, sent to probe its own uplink) take
//! no outgoing sequence number either: [`Rewriter::skip`] shifts what follows, so the receiver
//! sees no gap to NACK.

use std::collections::VecDeque;
use std::time::Instant;

/// Most sequence shifts remembered per layer: a packet older than the oldest one is dropped as
/// too late. 64 runs of dropped packets is far more than any reordering window.
const MAX_SHIFTS: usize = 64;

/// `a` is newer than `b` in 16-bit sequence space (RFC 1982 serial arithmetic).
pub fn seq_newer(a: u16, b: u16) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000
}

/// Rewrites one incoming layer at a time into the outgoing stream of one subscriber.
#[derive(Debug)]
pub struct Rewriter {
    clock_rate: u32,
    state: Option<State>,
}

#[derive(Debug, Clone)]
struct State {
    /// Incoming sequence number of the first packet forwarded from the current layer.
    switch_seq: u16,
    /// `(from, offset)`, oldest first: incoming packets from `from` on (up to the next entry)
    /// go out as `seq + offset`. The first entry starts at `switch_seq`.
    shifts: VecDeque<(u16, u16)>,
    /// The newest incoming sequence number seen (forwarded or skipped).
    highest_in: u16,
    ts_offset: u32,
    last_out_seq: u16,
    last_out_ts: u32,
    last_out_at: Instant,
}

impl Rewriter {
    /// A rewriter for a stream whose RTP clock runs at `clock_rate` Hz.
    pub fn new(clock_rate: u32) -> Self {
        Self {
            clock_rate: clock_rate.max(1),
            state: None,
        }
    }

    /// Start forwarding a (new) layer from the packet `(seq, ts)` received at `now`.
    /// The first output packet follows the last one sent without a gap.
    pub fn switch(&mut self, now: Instant, seq: u16, ts: u32) {
        let (out_seq, out_ts) = match &self.state {
            None => (seq, ts),
            Some(prev) => {
                let elapsed = now.saturating_duration_since(prev.last_out_at);
                let ticks = (elapsed.as_micros() * u128::from(self.clock_rate) / 1_000_000)
                    .clamp(1, u128::from(u32::MAX / 2)) as u32;
                (
                    prev.last_out_seq.wrapping_add(1),
                    prev.last_out_ts.wrapping_add(ticks),
                )
            }
        };
        self.state = Some(State {
            switch_seq: seq,
            shifts: VecDeque::from([(seq, out_seq.wrapping_sub(seq))]),
            highest_in: seq,
            ts_offset: out_ts.wrapping_sub(ts),
            last_out_seq: out_seq.wrapping_sub(1),
            last_out_ts: out_ts,
            last_out_at: now,
        });
    }

    /// The outgoing sequence number the next new packet will get, once a layer has started.
    pub fn next_seq(&self) -> Option<u16> {
        self.state.as_ref().map(|s| s.last_out_seq.wrapping_add(1))
    }

    /// Drop the incoming packet `seq` of the current layer without giving it an outgoing
    /// sequence number: later packets shift down by one. A packet older than the newest one
    /// seen cannot be skipped any more (what followed it is already out) and is just dropped.
    pub fn skip(&mut self, seq: u16) {
        let Some(state) = self.state.as_mut() else {
            return;
        };
        if !seq_newer(seq, state.highest_in) {
            return;
        }
        state.highest_in = seq;
        let next = seq.wrapping_add(1);
        let Some(&(from, offset)) = state.shifts.back() else {
            return;
        };
        if from == seq && state.shifts.len() > 1 {
            // A run of skipped packets: one entry.
            if let Some(last) = state.shifts.back_mut() {
                *last = (next, offset.wrapping_sub(1));
            }
        } else {
            state.shifts.push_back((next, offset.wrapping_sub(1)));
            if state.shifts.len() > MAX_SHIFTS {
                state.shifts.pop_front();
            }
        }
    }

    /// Whether a layer has been started.
    pub fn is_started(&self) -> bool {
        self.state.is_some()
    }

    /// The outgoing `(seq, ts)` for an incoming packet of the current layer, or `None` when the
    /// packet predates the switch to this layer (it belongs to a frame the subscriber never got).
    pub fn rewrite(&mut self, now: Instant, seq: u16, ts: u32) -> Option<(u16, u32)> {
        let state = self.state.as_mut()?;
        if seq != state.switch_seq && !seq_newer(seq, state.switch_seq) {
            return None;
        }
        // The newest shift that starts at or before this packet.
        let offset = state
            .shifts
            .iter()
            .rev()
            .find(|(from, _)| seq == *from || seq_newer(seq, *from))
            .map(|(_, offset)| *offset)?;
        if seq_newer(seq, state.highest_in) {
            state.highest_in = seq;
        }
        let out_seq = seq.wrapping_add(offset);
        let out_ts = ts.wrapping_add(state.ts_offset);
        if seq_newer(out_seq, state.last_out_seq) {
            state.last_out_seq = out_seq;
            state.last_out_ts = out_ts;
            state.last_out_at = now;
        }
        Some((out_seq, out_ts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn serial_comparison_wraps() {
        assert!(seq_newer(1, 65535));
        assert!(!seq_newer(65535, 1));
        assert!(!seq_newer(7, 7));
    }

    #[test]
    fn a_layer_switch_continues_sequence_and_advances_time() {
        let t0 = Instant::now();
        let mut rewriter = Rewriter::new(90_000);
        rewriter.switch(t0, 100, 5_000);
        assert_eq!(rewriter.rewrite(t0, 100, 5_000), Some((100, 5_000)));
        assert_eq!(rewriter.rewrite(t0, 101, 5_000), Some((101, 5_000)));

        // 33 ms later the subscriber moves to a layer with unrelated numbering.
        let t1 = t0 + Duration::from_millis(33);
        rewriter.switch(t1, 40_000, 1_000_000);
        assert_eq!(
            rewriter.rewrite(t1, 40_000, 1_000_000),
            Some((102, 5_000 + 2_970))
        );
        assert_eq!(
            rewriter.rewrite(t1, 40_001, 1_003_000),
            Some((103, 7_970 + 3_000))
        );
        // A late packet of the new layer from before the switch point is dropped.
        assert_eq!(rewriter.rewrite(t1, 39_999, 997_000), None);
    }

    #[test]
    fn skipped_packets_leave_no_gap() {
        let t0 = Instant::now();
        let mut rewriter = Rewriter::new(90_000);
        rewriter.switch(t0, 10, 0);
        assert_eq!(rewriter.rewrite(t0, 10, 0).map(|r| r.0), Some(10));
        rewriter.skip(11);
        rewriter.skip(12);
        assert_eq!(rewriter.rewrite(t0, 13, 0).map(|r| r.0), Some(11));
        rewriter.skip(14);
        // 15 comes late, after 16: each keeps its place.
        assert_eq!(rewriter.rewrite(t0, 16, 0).map(|r| r.0), Some(13));
        assert_eq!(rewriter.rewrite(t0, 15, 0).map(|r| r.0), Some(12));
        // A skip of an old packet changes nothing.
        rewriter.skip(12);
        assert_eq!(rewriter.rewrite(t0, 17, 0).map(|r| r.0), Some(14));
        assert_eq!(rewriter.next_seq(), Some(15));
    }

    #[test]
    fn a_packet_older_than_every_remembered_shift_is_dropped() {
        let t0 = Instant::now();
        let mut rewriter = Rewriter::new(90_000);
        rewriter.switch(t0, 0, 0);
        for i in 0..=MAX_SHIFTS as u16 {
            // Skip every other packet: each skip is a shift of its own.
            rewriter.skip(2 * i + 1);
            assert!(rewriter.rewrite(t0, 2 * i + 2, 0).is_some());
        }
        assert_eq!(rewriter.rewrite(t0, 2, 0), None, "too late to place");
    }

    #[test]
    fn reordered_packets_keep_their_relative_order_across_wrap() {
        let t0 = Instant::now();
        let mut rewriter = Rewriter::new(48_000);
        rewriter.switch(t0, 65_534, 0);
        assert_eq!(rewriter.rewrite(t0, 65_534, 0), Some((65_534, 0)));
        assert_eq!(rewriter.rewrite(t0, 0, 1_920), Some((0, 1_920)));
        assert_eq!(rewriter.rewrite(t0, 65_535, 960), Some((65_535, 960)));
    }
}
