//! Simulcast layer choice per subscriber: from the subscriber's bandwidth estimate, the size it
//! asked for and the layers the publisher is actually sending, with hysteresis so that a noisy
//! estimate does not flap between layers (each switch costs a keyframe).

use std::time::{Duration, Instant};

/// Measures a layer's bitrate over a sliding window of whole-second buckets.
#[derive(Debug, Clone)]
pub struct RateMeter {
    /// Start of the current bucket.
    bucket_start: Option<Instant>,
    bucket_bytes: u64,
    /// Bits per second measured over the last complete bucket.
    last_bps: u64,
    last_packet: Option<Instant>,
}

const BUCKET: Duration = Duration::from_secs(1);

impl Default for RateMeter {
    fn default() -> Self {
        Self::new()
    }
}

impl RateMeter {
    /// An empty meter.
    pub fn new() -> Self {
        Self {
            bucket_start: None,
            bucket_bytes: 0,
            last_bps: 0,
            last_packet: None,
        }
    }

    /// Count a packet of `bytes` payload received at `now`.
    pub fn record(&mut self, now: Instant, bytes: usize) {
        self.roll(now);
        self.bucket_start.get_or_insert(now);
        self.bucket_bytes += bytes as u64;
        self.last_packet = Some(now);
    }

    fn roll(&mut self, now: Instant) {
        if let Some(start) = self.bucket_start {
            let elapsed = now.saturating_duration_since(start);
            if elapsed >= BUCKET {
                // A gap of more than one bucket means the layer was idle: its rate is what the
                // closed bucket held, spread over the time it covered.
                let micros = elapsed.as_micros().max(1) as u64;
                self.last_bps = self.bucket_bytes * 8 * 1_000_000 / micros;
                self.bucket_start = Some(now);
                self.bucket_bytes = 0;
            }
        }
    }

    /// Bits per second, or an estimate from the open bucket before the first one closes.
    pub fn bps(&self, now: Instant) -> u64 {
        match self.bucket_start {
            Some(start) if self.last_bps == 0 => {
                let micros = now
                    .saturating_duration_since(start)
                    .as_micros()
                    .max(100_000) as u64;
                self.bucket_bytes * 8 * 1_000_000 / micros
            }
            _ => self.last_bps,
        }
    }

    /// Whether a packet arrived within `window` before `now`.
    pub fn active(&self, now: Instant, window: Duration) -> bool {
        self.last_packet
            .is_some_and(|last| now.saturating_duration_since(last) <= window)
    }
}

/// What the chooser knows about one layer, lowest quality first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerView {
    /// Measured bitrate in bit/s.
    pub bps: u64,
    /// Frame height in pixels, when the publisher declared it.
    pub height: Option<u32>,
    /// Whether the publisher is sending it right now.
    pub active: bool,
}

/// Tuning of layer selection. The defaults suit a mountain link: climb slowly, fall fast.
#[derive(Debug, Clone, Copy)]
pub struct LayerPolicy {
    /// Fraction of the estimate a higher layer may use before we climb to it. Default 0.8:
    /// leaves room for audio, RTCP and retransmissions.
    pub up_headroom: f64,
    /// Fraction of the estimate the current layer may use before we fall. Default 1.0.
    pub stay_headroom: f64,
    /// How long a higher layer must keep fitting before we climb. Default 3 s: long enough to
    /// ride out one optimistic estimate, short enough that a good link soon looks good.
    pub up_hold: Duration,
    /// The estimate assumed before the first one arrives, in bit/s. Default 600 kbit/s: a
    /// middle layer, so a call starts quickly but not by congesting a thin link.
    pub initial_estimate_bps: u64,
    /// A climb that has to fall back within this time failed: the estimate was optimistic.
    /// Default 5 s. (GCC's estimate keeps growing while the SFU sends less than the link
    /// carries, so only sending the higher layer shows whether it fits.)
    pub climb_trial: Duration,
    /// How long a layer that failed its climb is not tried again; doubled after each failure
    /// in a row, up to `max_retry_backoff`. Default 10 s: a failed climb costs the subscriber a
    /// short freeze, which should not come back every few seconds on a capped link.
    pub retry_backoff: Duration,
    /// Longest wait before a failed layer is tried again. Default 80 s: a link that got better
    /// is still used within a minute or two.
    pub max_retry_backoff: Duration,
}

impl Default for LayerPolicy {
    fn default() -> Self {
        Self {
            up_headroom: 0.8,
            stay_headroom: 1.0,
            up_hold: Duration::from_secs(3),
            initial_estimate_bps: 600_000,
            climb_trial: Duration::from_secs(5),
            retry_backoff: Duration::from_secs(10),
            max_retry_backoff: Duration::from_secs(80),
        }
    }
}

/// The per-subscriber state of layer selection: remembers since when a climb has looked good,
/// whether the last climb held, and which layer must not be tried again for a while.
#[derive(Debug, Clone, Default)]
pub struct LayerChooser {
    up_since: Option<(usize, Instant)>,
    /// The last climb (to which layer, when) until it has held for `climb_trial`.
    climb: Option<(usize, Instant)>,
    /// The lowest layer whose climb failed, and until when no climb may reach it.
    blocked: Option<(usize, Instant)>,
    /// The layer whose climbs failed last, and the wait after its last failure. Cleared when a
    /// climb to that layer (or above) holds.
    failed: Option<(usize, Duration)>,
    /// Whether the last choice fell because the current layer no longer fits the estimate.
    congested: bool,
}

impl LayerChooser {
    /// The layer the subscriber should receive now, or `None` when no layer is active.
    ///
    /// `estimate_bps` is the subscriber's bandwidth estimate (None = not known yet),
    /// `max_height` the largest frame it wants, `current` the layer it receives.
    pub fn choose(
        &mut self,
        now: Instant,
        policy: &LayerPolicy,
        layers: &[LayerView],
        estimate_bps: Option<u64>,
        max_height: Option<u32>,
        current: Option<usize>,
    ) -> Option<usize> {
        self.congested = false;
        let estimate = estimate_bps.unwrap_or(policy.initial_estimate_bps) as f64;
        let fits_size = |layer: &LayerView| match (layer.height, max_height) {
            (Some(height), Some(max)) => height <= max,
            _ => true,
        };
        let candidates: Vec<usize> = (0..layers.len())
            .filter(|&i| layers[i].active && fits_size(&layers[i]))
            .collect();
        let candidates = if candidates.is_empty() {
            // Nothing fits the size asked for: the smallest active layer is the best we have.
            (0..layers.len())
                .filter(|&i| layers[i].active)
                .take(1)
                .collect()
        } else {
            candidates
        };
        let lowest = *candidates.first()?;
        let best_within = |headroom: f64| {
            candidates
                .iter()
                .copied()
                .filter(|&i| layers[i].bps as f64 <= estimate * headroom)
                .max()
                .unwrap_or(lowest)
        };

        // Fall at once when the current layer no longer fits (or is gone or too large).
        let current = match current {
            Some(c) if candidates.contains(&c) => c,
            _ => {
                self.up_since = None;
                return Some(best_within(policy.stay_headroom));
            }
        };
        if layers[current].bps as f64 > estimate * policy.stay_headroom && current != lowest {
            self.up_since = None;
            self.congested = true;
            if let Some((layer, at)) = self.climb.take()
                && layer == current
                && now.saturating_duration_since(at) < policy.climb_trial
            {
                // The climb to this layer failed: do not try it again for a while, and for
                // longer each time it fails again.
                let backoff = match self.failed {
                    Some((layer, last)) if layer == current => {
                        (last * 2).min(policy.max_retry_backoff)
                    }
                    _ => policy.retry_backoff,
                };
                self.failed = Some((current, backoff));
                self.blocked = Some((current, now + backoff));
            }
            return Some(best_within(policy.stay_headroom));
        }
        if let Some((layer, at)) = self.climb
            && now.saturating_duration_since(at) >= policy.climb_trial
        {
            // The last climb held: the link carries that layer.
            self.climb = None;
            if layer == current && self.failed.is_some_and(|(f, _)| f <= layer) {
                self.failed = None;
                self.blocked = None;
            }
        }

        // Climb only after the higher layer has fitted for `up_hold`, and not to a layer whose
        // climb failed recently.
        // TODO(#4): probe the link (padding or RTX at the higher layer's rate) before climbing,
        // so that a failed climb costs no frozen picture.
        if self.blocked.is_some_and(|(_, until)| now >= until) {
            self.blocked = None;
        }
        let up = match self.blocked {
            Some((b, _)) => candidates
                .iter()
                .copied()
                .filter(|&i| i < b && layers[i].bps as f64 <= estimate * policy.up_headroom)
                .max()
                .unwrap_or(lowest),
            None => best_within(policy.up_headroom),
        };
        if up <= current {
            self.up_since = None;
            return Some(current);
        }
        match self.up_since {
            Some((layer, since)) if layer == up => {
                if now.saturating_duration_since(since) >= policy.up_hold {
                    self.up_since = None;
                    self.climb = Some((up, now));
                    Some(up)
                } else {
                    Some(current)
                }
            }
            _ => {
                self.up_since = Some((up, now));
                Some(current)
            }
        }
    }

    /// Whether the last [`choose`](Self::choose) fell because the current layer no longer fits
    /// the estimate (rather than for a size asked for or a layer the publisher stopped).
    pub fn congested(&self) -> bool {
        self.congested
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layers() -> Vec<LayerView> {
        [(150_000, 180), (500_000, 360), (1_500_000, 720)]
            .into_iter()
            .map(|(bps, height)| LayerView {
                bps,
                height: Some(height),
                active: true,
            })
            .collect()
    }

    #[test]
    fn the_first_choice_is_the_best_layer_within_the_estimate() {
        let now = Instant::now();
        let policy = LayerPolicy::default();
        let mut chooser = LayerChooser::default();
        let pick = |c: &mut LayerChooser, est| c.choose(now, &policy, &layers(), est, None, None);
        assert_eq!(pick(&mut chooser, Some(3_000_000)), Some(2));
        assert_eq!(pick(&mut chooser, Some(700_000)), Some(1));
        assert_eq!(pick(&mut chooser, Some(100_000)), Some(0));
        assert_eq!(
            pick(&mut chooser, None),
            Some(1),
            "initial estimate is 600 kbit/s"
        );
    }

    #[test]
    fn requested_size_caps_the_layer() {
        let now = Instant::now();
        let mut chooser = LayerChooser::default();
        let choice = chooser.choose(
            now,
            &LayerPolicy::default(),
            &layers(),
            Some(10_000_000),
            Some(360),
            None,
        );
        assert_eq!(choice, Some(1));
        // Smaller than every layer: the smallest one.
        let choice = chooser.choose(
            now,
            &LayerPolicy::default(),
            &layers(),
            None,
            Some(90),
            None,
        );
        assert_eq!(choice, Some(0));
    }

    #[test]
    fn climbing_waits_for_the_hold_time_but_falling_is_immediate() {
        let t0 = Instant::now();
        let policy = LayerPolicy::default();
        let mut chooser = LayerChooser::default();
        let step = |c: &mut LayerChooser, t, est, cur| {
            c.choose(t, &policy, &layers(), Some(est), None, Some(cur))
        };

        // On layer 0 with room for layer 2: stays until 3 s of good estimates have passed.
        assert_eq!(step(&mut chooser, t0, 2_500_000, 0), Some(0));
        assert_eq!(
            step(&mut chooser, t0 + Duration::from_secs(2), 2_500_000, 0),
            Some(0)
        );
        assert_eq!(
            step(&mut chooser, t0 + Duration::from_secs(3), 2_500_000, 0),
            Some(2)
        );

        // On layer 2, the estimate drops below its rate: down at once, to what fits.
        assert_eq!(
            step(&mut chooser, t0 + Duration::from_secs(4), 600_000, 2),
            Some(1)
        );
    }

    #[test]
    fn an_estimate_hovering_near_a_boundary_does_not_flap() {
        let t0 = Instant::now();
        let policy = LayerPolicy::default();
        let mut chooser = LayerChooser::default();
        // Layer 1 runs at 500 kbit/s. Estimates between 500 and 625 kbit/s keep layer 1 but are
        // not enough to climb back to it from layer 0 (needs 500/0.8 = 625).
        let mut current = 1;
        for (i, est) in [550_000, 510_000, 600_000, 520_000, 590_000]
            .iter()
            .enumerate()
        {
            let t = t0 + Duration::from_secs(i as u64);
            current = chooser
                .choose(t, &policy, &layers(), Some(*est), None, Some(current))
                .unwrap();
            assert_eq!(current, 1);
        }
        current = 0;
        for (i, est) in [550_000, 510_000, 600_000, 520_000, 590_000]
            .iter()
            .enumerate()
        {
            let t = t0 + Duration::from_secs(10 + i as u64);
            current = chooser
                .choose(t, &policy, &layers(), Some(*est), None, Some(current))
                .unwrap();
            assert_eq!(current, 0);
        }
    }

    #[test]
    fn inactive_layers_are_skipped() {
        let now = Instant::now();
        let mut views = layers();
        views[2].active = false;
        let mut chooser = LayerChooser::default();
        let choice = chooser.choose(
            now,
            &LayerPolicy::default(),
            &views,
            Some(10_000_000),
            None,
            Some(2),
        );
        assert_eq!(choice, Some(1));
        for view in &mut views {
            view.active = false;
        }
        assert_eq!(
            chooser.choose(now, &LayerPolicy::default(), &views, None, None, Some(1)),
            None
        );
    }

    #[test]
    fn a_climb_that_falls_back_is_not_tried_again_until_its_backoff_ends() {
        let t0 = Instant::now();
        let policy = LayerPolicy::default();
        let mut chooser = LayerChooser::default();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut step =
            |t, est, cur| chooser.choose(t, &policy, &layers(), Some(est), None, Some(cur));

        // An optimistic estimate lifts layer 0 to layer 1 after the hold time...
        assert_eq!(step(at(0), 700_000, 0), Some(0));
        assert_eq!(step(at(3), 700_000, 0), Some(1));
        // ... which the link cannot carry: the estimate falls within the trial, back to 0.
        assert_eq!(step(at(5), 300_000, 1), Some(0));
        // The estimate grows again, but layer 1 stays blocked for 10 s.
        assert_eq!(step(at(6), 900_000, 0), Some(0));
        assert_eq!(step(at(12), 900_000, 0), Some(0));
        // After the backoff, the climb is tried again (hold time first).
        assert_eq!(step(at(15), 900_000, 0), Some(0));
        assert_eq!(step(at(18), 900_000, 0), Some(1));
        // It fails again: now 20 s.
        assert_eq!(step(at(19), 300_000, 1), Some(0));
        assert_eq!(step(at(30), 900_000, 0), Some(0));
        assert_eq!(step(at(38), 900_000, 0), Some(0));
        assert_eq!(step(at(39), 900_000, 0), Some(0));
        assert_eq!(step(at(42), 900_000, 0), Some(1));
        // This time it holds beyond the trial: a later failure starts from 10 s again.
        assert_eq!(step(at(48), 900_000, 1), Some(1));
        assert_eq!(step(at(60), 3_000_000, 1), Some(1));
        assert_eq!(step(at(63), 3_000_000, 1), Some(2));
        assert_eq!(step(at(64), 900_000, 2), Some(1));
        assert_eq!(step(at(73), 3_000_000, 1), Some(1));
        assert_eq!(step(at(74), 3_000_000, 1), Some(1));
        assert_eq!(step(at(77), 3_000_000, 1), Some(2));
    }

    #[test]
    fn a_lower_layer_that_holds_does_not_shorten_the_wait_for_a_higher_one() {
        let t0 = Instant::now();
        let policy = LayerPolicy::default();
        let mut chooser = LayerChooser::default();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut step =
            |t, est, cur| chooser.choose(t, &policy, &layers(), Some(est), None, Some(cur));

        // Layer 1 holds; the climb to layer 2 fails twice: the second wait is 20 s, although
        // layer 1 held in between.
        assert_eq!(step(at(0), 3_000_000, 1), Some(1));
        assert_eq!(step(at(3), 3_000_000, 1), Some(2));
        assert_eq!(step(at(4), 300_000, 2), Some(0), "blocked 10 s");
        assert_eq!(step(at(5), 700_000, 0), Some(0));
        assert_eq!(step(at(8), 700_000, 0), Some(1));
        assert_eq!(
            step(at(14), 3_000_000, 1),
            Some(1),
            "layer 1 held; 2 still blocked"
        );
        assert_eq!(step(at(17), 3_000_000, 1), Some(2));
        assert_eq!(step(at(18), 600_000, 2), Some(1), "blocked 20 s");
        assert_eq!(step(at(30), 3_000_000, 1), Some(1));
        assert_eq!(step(at(37), 3_000_000, 1), Some(1));
        assert_eq!(step(at(38), 3_000_000, 1), Some(1));
        assert_eq!(step(at(41), 3_000_000, 1), Some(2));
    }

    #[test]
    fn only_a_fall_for_the_estimate_counts_as_congestion() {
        let now = Instant::now();
        let policy = LayerPolicy::default();
        let mut chooser = LayerChooser::default();
        assert_eq!(
            chooser.choose(now, &policy, &layers(), Some(300_000), None, Some(2)),
            Some(0)
        );
        assert!(chooser.congested());
        assert_eq!(
            chooser.choose(now, &policy, &layers(), Some(3_000_000), Some(180), Some(2)),
            Some(0)
        );
        assert!(
            !chooser.congested(),
            "a smaller size asked for is no congestion"
        );
    }

    #[test]
    fn rate_meter_measures_per_second() {
        let t0 = Instant::now();
        let mut meter = RateMeter::new();
        for i in 0..100 {
            meter.record(t0 + Duration::from_millis(i * 10), 1_250);
        }
        meter.record(t0 + Duration::from_millis(1_000), 1_250);
        let bps = meter.bps(t0 + Duration::from_millis(1_000));
        assert!((990_000..=1_010_000).contains(&bps), "{bps}");
        assert!(meter.active(t0 + Duration::from_millis(1_500), Duration::from_secs(1)));
        assert!(!meter.active(t0 + Duration::from_millis(2_500), Duration::from_secs(1)));
    }
}
