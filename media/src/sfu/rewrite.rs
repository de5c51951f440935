//! Rewriting of SSRC, sequence numbers and timestamps so that a subscriber sees one continuous
//! stream per track, whichever simulcast layer is behind it at the moment.
//!
//! Each layer a browser sends has its own SSRC, sequence space and timestamp offset. When the
//! SFU switches a subscriber from one layer to another (always at a keyframe), the outgoing
//! sequence number continues at last + 1 and the outgoing timestamp advances by the wall-clock
//! time since the last packet, so the receiver's jitter buffer and decoder see no gap and no jump.

use std::time::Instant;

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

#[derive(Debug, Clone, Copy)]
struct State {
    /// Incoming sequence number of the first packet forwarded from the current layer.
    switch_seq: u16,
    seq_offset: u16,
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
        let (out_seq, out_ts) = match self.state {
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
            seq_offset: out_seq.wrapping_sub(seq),
            ts_offset: out_ts.wrapping_sub(ts),
            last_out_seq: out_seq.wrapping_sub(1),
            last_out_ts: out_ts,
            last_out_at: now,
        });
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
        let out_seq = seq.wrapping_add(state.seq_offset);
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
    fn reordered_packets_keep_their_relative_order_across_wrap() {
        let t0 = Instant::now();
        let mut rewriter = Rewriter::new(48_000);
        rewriter.switch(t0, 65_534, 0);
        assert_eq!(rewriter.rewrite(t0, 65_534, 0), Some((65_534, 0)));
        assert_eq!(rewriter.rewrite(t0, 0, 1_920), Some((0, 1_920)));
        assert_eq!(rewriter.rewrite(t0, 65_535, 960), Some((65_535, 960)));
    }
}
