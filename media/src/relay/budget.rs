//! How much media a relay link may carry, and which streams and layers fill it. Sans-IO: the
//! driver feeds samples of quinn's own path statistics and the offered streams with the time;
//! tests drive it with a virtual clock.
//!
//! - [`Estimator`]: the link's capacity estimate, capped by the site's share of its configured
//!   uplink. It falls at once to what the link delivered when quinn sees the round trip grow
//!   (a queue builds) or heavy loss (over 10 %; the random loss of a mountain link, a few
//!   percent, is not congestion and is left to FEC and retransmission). It rises slowly while
//!   the link is used near the estimate and is clean, and otherwise by *probes*: padding sent
//!   for a second on top of the media; a probe that causes no queue raises the estimate, one
//!   that does is stopped and the next waits twice as long (2 s up to 20 s).
//! - [`Allocator`]: audio first (always: a link that cannot carry audio carries nothing
//!   useful), then the base layer of every video stream, then the next layers, each tier only
//!   when the whole previous tier fits. It falls at once when the budget
//!   shrinks, but steps up only after the budget has had room for the step for
//!   [`BudgetConfig::up_hold`] (2 s).
//! - [`share`]: splits the site's uplink between its links, max-min fair by demand.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

/// Tuning of the budget. Each default says why.
#[derive(Debug, Clone, Copy)]
pub struct BudgetConfig {
    /// Part of the site's `uplink_kbps` that relay media may use. Default 0.85: the rest is for
    /// record sync, control and the site's own traffic.
    pub uplink_share: f64,
    /// First estimate of a new link, bit/s (capped by the site share). Default 1 Mbit/s: audio,
    /// base and middle video layers of one publisher, without flooding a thin line at once.
    pub initial_bps: u64,
    /// The estimate never falls below this, bit/s. Default 48 kbit/s: one audio stream.
    pub min_bps: u64,
    /// How long the budget must have room for a step before the allocator takes it. Default
    /// 2 s: one optimistic sample must not start a layer that then stops again.
    pub up_hold: Duration,
    /// Round-trip growth over the link's base RTT that means a queue is building. Default
    /// 120 ms (or a third of the base RTT if larger): above the jitter of a busy node and of
    /// keyframe bursts, well below the half-second queues of mountain routers.
    pub queue_delay: Duration,
    /// Loss fraction that counts as congestion. Default 0.10: mountain links lose a few
    /// percent at random; a link that drops one packet in ten is overloaded.
    pub congestion_loss: f64,
    /// Growth of the estimate per second while the link is used near it and clean. Default 5 %.
    pub increase_per_second: f64,
    /// First wait between a failed probe and the next; doubles up to [`Self::probe_backoff_max`].
    /// Default 2 s.
    pub probe_backoff: Duration,
    /// Longest wait between probes. Default 20 s: on a link that stays thin a probe costs a
    /// moment of queueing three times a minute; a link that widens is used within 20 s.
    pub probe_backoff_max: Duration,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            uplink_share: 0.85,
            initial_bps: 1_000_000,
            min_bps: 48_000,
            up_hold: Duration::from_secs(2),
            queue_delay: Duration::from_millis(120),
            congestion_loss: 0.10,
            increase_per_second: 0.05,
            probe_backoff: Duration::from_secs(2),
            probe_backoff_max: Duration::from_secs(20),
        }
    }
}

/// Samples in a row (at 250 ms) with a grown RTT before it counts as a queue: 1 s.
const QUEUED_SAMPLES: u32 = 4;

/// Cumulative path counters of one QUIC connection, as quinn reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PathSample {
    /// UDP bytes sent so far.
    pub sent_bytes: u64,
    /// QUIC packets sent so far.
    pub sent_packets: u64,
    /// QUIC packets declared lost so far.
    pub lost_packets: u64,
    /// Bytes of those packets.
    pub lost_bytes: u64,
    /// Smoothed round-trip time.
    pub rtt: Duration,
    /// quinn's congestion window, bytes.
    pub cwnd: u64,
}

#[derive(Debug, Clone, Copy)]
struct Probe {
    until: Instant,
    extra_bps: u64,
    total_bps: u64,
}

/// The capacity estimate of one link.
#[derive(Debug)]
pub struct Estimator {
    config: BudgetConfig,
    estimate: f64,
    samples: VecDeque<(Instant, PathSample)>,
    /// Lowest RTT per second over the last 30 s: the base RTT is their minimum.
    rtt_floor: VecDeque<(Instant, Duration)>,
    last_congestion: Option<Instant>,
    last_decrease: Option<Instant>,
    probe: Option<Probe>,
    backoff: Duration,
    next_probe: Option<Instant>,
    sent_bps: u64,
    delivered_bps: u64,
    loss: f64,
    rtt: Duration,
    /// Consecutive samples whose RTT was over the queueing threshold.
    queued_samples: u32,
}

impl Estimator {
    /// A new link's estimator.
    pub fn new(config: BudgetConfig) -> Self {
        Self {
            config,
            estimate: config.initial_bps as f64,
            samples: VecDeque::new(),
            rtt_floor: VecDeque::new(),
            last_congestion: None,
            last_decrease: None,
            probe: None,
            backoff: config.probe_backoff,
            next_probe: None,
            sent_bps: 0,
            delivered_bps: 0,
            queued_samples: 0,
            loss: 0.0,
            rtt: Duration::ZERO,
        }
    }

    /// The estimate, bit/s, within `cap`.
    pub fn estimate_bps(&self, cap: u64) -> u64 {
        (self.estimate as u64).min(cap).max(self.config.min_bps)
    }

    /// What the link sent over the last second, bit/s (UDP bytes, all overhead included).
    pub fn sent_bps(&self) -> u64 {
        self.sent_bps
    }

    /// Fraction of packets lost over the last two seconds.
    pub fn loss(&self) -> f64 {
        self.loss
    }

    /// Smoothed RTT of the last sample.
    pub fn rtt(&self) -> Duration {
        self.rtt
    }

    /// quinn's own view of the link: its congestion window over the RTT, bit/s.
    pub fn quinn_bps(&self) -> u64 {
        let sample = self.samples.back().map(|(_, s)| *s).unwrap_or_default();
        let rtt = sample.rtt.as_secs_f64();
        if rtt > 0.0 {
            (sample.cwnd as f64 * 8.0 / rtt) as u64
        } else {
            0
        }
    }

    /// The lowest RTT of the last 30 s.
    pub fn base_rtt(&self) -> Option<Duration> {
        self.rtt_floor.iter().map(|(_, r)| *r).min()
    }

    /// The padding rate of a probe under way, bit/s.
    pub fn probe_bps(&self, now: Instant) -> u64 {
        self.probe
            .filter(|p| now < p.until)
            .map_or(0, |p| p.extra_bps)
    }

    /// Whether the link showed congestion within `within` of `now`.
    pub fn congested_within(&self, now: Instant, within: Duration) -> bool {
        self.last_congestion
            .is_some_and(|t| now.saturating_duration_since(t) < within)
    }

    /// Feed one sample of quinn's counters; `cap` is the link's share of the site uplink.
    pub fn on_sample(&mut self, now: Instant, sample: PathSample, cap: u64) {
        self.rtt = sample.rtt;
        // Rates and loss over the samples of the last second (loss over two).
        self.samples.push_back((now, sample));
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) > Duration::from_secs(2))
        {
            self.samples.pop_front();
        }
        let second_ago = self
            .samples
            .iter()
            .find(|(t, _)| now.saturating_duration_since(*t) <= Duration::from_secs(1))
            .copied();
        if let Some((t0, s0)) = second_ago {
            let dt = now.saturating_duration_since(t0).as_secs_f64();
            if dt > 0.0 {
                let sent = sample.sent_bytes.saturating_sub(s0.sent_bytes);
                let lost = sample.lost_bytes.saturating_sub(s0.lost_bytes);
                self.sent_bps = (sent as f64 * 8.0 / dt) as u64;
                self.delivered_bps = (sent.saturating_sub(lost) as f64 * 8.0 / dt) as u64;
            }
        }
        let mut significant = false;
        if let Some((_, first)) = self.samples.front() {
            let sent = sample.sent_packets.saturating_sub(first.sent_packets);
            let lost = sample.lost_packets.saturating_sub(first.lost_packets);
            if sent >= 20 {
                self.loss = (lost as f64 / sent as f64).min(1.0);
                significant = true;
            }
        }
        if !sample.rtt.is_zero() {
            let second = now;
            match self.rtt_floor.back_mut() {
                Some((t, r)) if now.saturating_duration_since(*t) < Duration::from_secs(1) => {
                    *r = (*r).min(sample.rtt);
                }
                _ => self.rtt_floor.push_back((second, sample.rtt)),
            }
            while self
                .rtt_floor
                .front()
                .is_some_and(|(t, _)| now.saturating_duration_since(*t) > Duration::from_secs(30))
            {
                self.rtt_floor.pop_front();
            }
        }

        // Congestion: a queue that lasts (a keyframe's burst queues for a moment and drains;
        // overload keeps the queue full), or loss well beyond a lossy link's usual.
        let over = self
            .base_rtt()
            .is_some_and(|base| sample.rtt > base + self.config.queue_delay.max(base / 3));
        self.queued_samples = if over { self.queued_samples + 1 } else { 0 };
        let queueing = self.queued_samples >= QUEUED_SAMPLES;
        let lossy = significant && self.loss > self.config.congestion_loss;
        if queueing || lossy {
            self.last_congestion = Some(now);
            if self.probe.take().is_some() {
                self.backoff = (self.backoff * 2).min(self.config.probe_backoff_max);
            }
            self.next_probe = Some(now + self.backoff);
            // Fall towards what got through, by at most half at a time, and only once the
            // last fall has had time to show (the signal lags by a round trip or more).
            let settle = (sample.rtt * 2).max(Duration::from_millis(500));
            let due = self
                .last_decrease
                .is_none_or(|t| now.saturating_duration_since(t) >= settle);
            if due && self.sent_bps > 0 {
                let delivered = self.delivered_bps as f64 * 0.85;
                self.estimate = self.estimate.min(delivered.max(self.estimate * 0.5));
                self.last_decrease = Some(now);
            }
        } else if let Some(probe) = self.probe
            && now >= probe.until
        {
            // The probe's extra load caused no queue: the link carries at least what it sent.
            self.probe = None;
            self.backoff = self.config.probe_backoff;
            self.next_probe = Some(now + self.config.probe_backoff);
            // (A probe that was sent nearly in full proves its whole target.)
            let proven = if self.sent_bps as f64 >= 0.9 * probe.total_bps as f64 {
                probe.total_bps
            } else {
                self.sent_bps
            };
            self.estimate = self.estimate.max(proven as f64);
        } else if !self.congested_within(now, Duration::from_secs(2))
            && self.sent_bps as f64 >= 0.8 * self.estimate
        {
            let dt = self.samples.iter().rev().nth(1).map_or(0.0, |(t, _)| {
                now.saturating_duration_since(*t).as_secs_f64()
            });
            self.estimate *= 1.0 + self.config.increase_per_second * dt;
        }
        self.estimate = self
            .estimate
            .min(cap as f64)
            .max(self.config.min_bps as f64);
    }

    /// Ask for a probe towards `target_bps` in all while the media uses `used_bps`: padding
    /// fills the difference, at most half the estimate (or 64 kbit/s) above it. Started when
    /// the link has been clean for 2 s and the last failed probe's back-off has passed.
    /// Returns whether a probe is under way.
    pub fn request_probe(&mut self, now: Instant, used_bps: u64, target_bps: u64) -> bool {
        if self.probe_bps(now) > 0 {
            return true;
        }
        if self.next_probe.is_some_and(|t| now < t)
            || self.congested_within(now, Duration::from_secs(2))
            || self.samples.is_empty()
        {
            return false;
        }
        let ceiling = (self.estimate * 1.5).max(self.estimate + 64_000.0) as u64;
        let total = target_bps.min(ceiling);
        if total <= used_bps {
            return false;
        }
        let duration = (self.rtt * 3).max(Duration::from_secs(1));
        self.probe = Some(Probe {
            until: now + duration,
            extra_bps: total - used_bps,
            total_bps: total,
        });
        true
    }
}

/// One unit the allocator may admit: one layer of one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit<K> {
    /// The stream.
    pub stream: K,
    /// The layer (0 for audio).
    pub layer: u8,
    /// Audio goes before every video layer.
    pub audio: bool,
    /// Its rate with packet overhead, bit/s.
    pub bps: u64,
}

/// What the allocator decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation<K: Ord> {
    /// The units to forward.
    pub admitted: BTreeSet<(K, u8)>,
    /// Streams with an offered unit left out for lack of budget.
    pub limited: BTreeSet<K>,
    /// Bit/s in all that the next step would need (a probe target), when the budget is what
    /// stops it.
    pub next_total_bps: Option<u64>,
    /// Bit/s of the admitted units.
    pub used_bps: u64,
}

/// Chooses the units of one link, with the step-up hold.
#[derive(Debug)]
pub struct Allocator<K: Ord> {
    up_hold: Duration,
    current: BTreeSet<(K, u8)>,
    up_since: Option<Instant>,
    first_offered: BTreeMap<K, Instant>,
}

impl<K: Ord + Clone> Allocator<K> {
    /// An allocator that steps up after `up_hold` of room.
    pub fn new(up_hold: Duration) -> Self {
        Self {
            up_hold,
            current: BTreeSet::new(),
            up_since: None,
            first_offered: BTreeMap::new(),
        }
    }

    /// The units admitted now.
    pub fn current(&self) -> &BTreeSet<(K, u8)> {
        &self.current
    }

    /// Decide the units for `budget_bps` among `offered` (any order).
    pub fn allocate(
        &mut self,
        now: Instant,
        budget_bps: u64,
        offered: &[Unit<K>],
    ) -> Allocation<K> {
        // Tiers: audio, then video layer 0, 1, 2; a tier only when the one before fits whole.
        let mut tiers: BTreeMap<u8, Vec<&Unit<K>>> = BTreeMap::new();
        for unit in offered {
            let tier = if unit.audio { 0 } else { 1 + unit.layer };
            tiers.entry(tier).or_default().push(unit);
        }
        for units in tiers.values_mut() {
            units.sort_by(|a, b| a.stream.cmp(&b.stream));
        }
        self.first_offered
            .retain(|k, _| offered.iter().any(|u| &u.stream == k));
        for unit in offered {
            self.first_offered.entry(unit.stream.clone()).or_insert(now);
        }

        let mut fits = BTreeSet::new();
        let mut used = 0u64;
        let mut limited = BTreeSet::new();
        let mut next_step = None;
        let mut blocked = false;
        for units in tiers.values() {
            if blocked {
                limited.extend(units.iter().map(|u| u.stream.clone()));
                continue;
            }
            for unit in units {
                if unit.audio {
                    // Audio always goes: a link that cannot carry it cannot carry anything.
                    used += unit.bps;
                    fits.insert((unit.stream.clone(), unit.layer));
                    continue;
                }
                let below = unit.audio
                    || unit.layer == 0
                    || fits.contains(&(unit.stream.clone(), unit.layer - 1));
                if below && used + unit.bps <= budget_bps {
                    used += unit.bps;
                    fits.insert((unit.stream.clone(), unit.layer));
                } else {
                    blocked = true;
                    limited.insert(unit.stream.clone());
                    if below {
                        let need = used + unit.bps;
                        next_step = Some(next_step.map_or(need, |n: u64| n.min(need)));
                    }
                }
            }
        }

        // Fall at once; step up only after the room has lasted `up_hold`. Audio, and the base
        // layer of a stream offered for the first time, start at once.
        self.current.retain(|u| fits.contains(u));
        let fresh = |k: &K| {
            self.first_offered
                .get(k)
                .is_some_and(|t| now.saturating_duration_since(*t) < self.up_hold)
        };
        let has_video = |set: &BTreeSet<(K, u8)>, k: &K| set.iter().any(|(s, _)| s == k);
        let mut immediate = Vec::new();
        for unit in offered {
            let key = (unit.stream.clone(), unit.layer);
            if fits.contains(&key)
                && !self.current.contains(&key)
                && (unit.audio
                    || (unit.layer == 0
                        && fresh(&unit.stream)
                        && !has_video(&self.current, &unit.stream)))
            {
                immediate.push(key);
            }
        }
        self.current.extend(immediate);
        let pending: Vec<(K, u8)> = fits.difference(&self.current).cloned().collect();
        if pending.is_empty() {
            self.up_since = None;
        } else {
            let since = *self.up_since.get_or_insert(now);
            if now.saturating_duration_since(since) >= self.up_hold {
                // One step: the lowest pending layer of each stream.
                let mut stepped = BTreeSet::new();
                for (stream, layer) in pending {
                    if stepped.insert(stream.clone()) {
                        self.current.insert((stream, layer));
                    }
                }
                // The next step needs its own `up_hold` of room.
                self.up_since = Some(now);
            }
        }
        for (stream, _) in fits.difference(&self.current) {
            limited.insert(stream.clone());
        }
        let used_bps = offered
            .iter()
            .filter(|u| self.current.contains(&(u.stream.clone(), u.layer)))
            .map(|u| u.bps)
            .sum();
        Allocation {
            admitted: self.current.clone(),
            limited,
            next_total_bps: next_step,
            used_bps,
        }
    }
}

/// Split `total_bps` between links by max-min fairness: a link never gets more than it asks
/// for, and what one does not need goes to the others.
pub fn share(total_bps: u64, demands: &[u64]) -> Vec<u64> {
    let mut out = vec![0; demands.len()];
    let mut order: Vec<usize> = (0..demands.len()).collect();
    order.sort_by_key(|&i| demands[i]);
    let mut left = total_bps;
    for (n, &i) in order.iter().enumerate() {
        let fair = left / (demands.len() - n) as u64;
        out[i] = demands[i].min(fair);
        left -= out[i];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Clock(Instant);
    impl Clock {
        fn tick(&mut self, ms: u64) -> Instant {
            self.0 += Duration::from_millis(ms);
            self.0
        }
    }

    /// A simulated link of `capacity` bit/s: what is offered beyond it queues, then drops.
    struct Path {
        capacity: u64,
        base_rtt: Duration,
        random_loss: f64,
        queue_bits: f64,
        sent: f64,
        lost: f64,
        sample: PathSample,
    }

    impl Path {
        fn step(&mut self, dt: Duration, offered_bps: u64) -> PathSample {
            let secs = dt.as_secs_f64();
            let packets = (offered_bps as f64 * secs / 9600.0).max(1.0);
            self.queue_bits += (offered_bps as f64 - self.capacity as f64) * secs;
            let max_queue = self.capacity as f64 * 0.5;
            let mut lost = packets * self.random_loss;
            if self.queue_bits > max_queue {
                lost += (self.queue_bits - max_queue) / 9600.0;
                self.queue_bits = max_queue;
            }
            self.queue_bits = self.queue_bits.max(0.0);
            self.sample.sent_bytes += (offered_bps as f64 * secs / 8.0) as u64;
            let lost_bits = (lost - packets * self.random_loss).max(0.0) * 9600.0
                + packets * self.random_loss * 9600.0;
            self.sample.lost_bytes += (lost_bits / 8.0) as u64;
            self.sent += packets;
            self.lost += lost;
            self.sample.sent_packets = self.sent as u64;
            self.sample.lost_packets = self.lost as u64;
            let queue = Duration::from_secs_f64(self.queue_bits / self.capacity as f64);
            self.sample.rtt = self.base_rtt + queue;
            self.sample
        }
    }

    fn path(capacity: u64, loss: f64) -> Path {
        Path {
            capacity,
            base_rtt: Duration::from_millis(300),
            random_loss: loss,
            queue_bits: 0.0,
            sent: 0.0,
            lost: 0.0,
            sample: PathSample::default(),
        }
    }

    #[test]
    fn random_loss_of_a_mountain_link_is_not_congestion() {
        let mut clock = Clock(Instant::now());
        let mut est = Estimator::new(BudgetConfig::default());
        let mut link = path(2_000_000, 0.03);
        for _ in 0..120 {
            let now = clock.tick(250);
            est.on_sample(
                now,
                link.step(Duration::from_millis(250), 900_000),
                1_740_000,
            );
        }
        assert!(
            est.estimate_bps(u64::MAX) >= 900_000,
            "{}",
            est.estimate_bps(u64::MAX)
        );
        assert!((0.02..0.04).contains(&est.loss()), "{}", est.loss());
    }

    #[test]
    fn keyframe_bursts_are_not_congestion() {
        let mut clock = Clock(Instant::now());
        let mut est = Estimator::new(BudgetConfig::default());
        let mut link = path(2_000_000, 0.03);
        for i in 0..120 {
            if i % 8 == 0 {
                link.queue_bits += 400_000.0; // a 50 KB keyframe: 200 ms of queue
            }
            let now = clock.tick(250);
            est.on_sample(
                now,
                link.step(Duration::from_millis(250), 800_000),
                1_740_000,
            );
        }
        assert!(
            est.estimate_bps(u64::MAX) >= 800_000,
            "{}",
            est.estimate_bps(u64::MAX)
        );
    }

    #[test]
    fn a_link_that_shrinks_is_detected_within_seconds() {
        let mut clock = Clock(Instant::now());
        let mut est = Estimator::new(BudgetConfig::default());
        let mut link = path(2_000_000, 0.0);
        for _ in 0..20 {
            let now = clock.tick(250);
            est.on_sample(
                now,
                link.step(Duration::from_millis(250), 800_000),
                1_740_000,
            );
        }
        link.capacity = 128_000;
        let mut offered = 800_000;
        let mut fell_at = None;
        for i in 0..40 {
            let now = clock.tick(250);
            est.on_sample(
                now,
                link.step(Duration::from_millis(250), offered),
                1_740_000,
            );
            // The sender follows the estimate, as the allocator does.
            offered = offered.min(est.estimate_bps(u64::MAX));
            if fell_at.is_none() && est.estimate_bps(u64::MAX) < 150_000 {
                fell_at = Some(i);
            }
        }
        let fell_at = fell_at.expect("the estimate fell below the base video layer");
        assert!(fell_at <= 20, "took {fell_at} samples");
        assert!(est.estimate_bps(u64::MAX) < 128_000);
    }

    #[test]
    fn probes_find_a_widened_link_and_failed_probes_back_off() {
        let mut clock = Clock(Instant::now());
        let mut est = Estimator::new(BudgetConfig {
            initial_bps: 100_000,
            ..BudgetConfig::default()
        });
        let mut link = path(128_000, 0.0);
        let usage = 60_000;
        let mut probes = 0;
        let mut was_probing = false;
        // On the thin link probes fail and become rarer.
        for _ in 0..240 {
            let now = clock.tick(250);
            est.request_probe(now, usage, usage + 250_000);
            let probing = est.probe_bps(now);
            if probing > 0 && !was_probing {
                probes += 1;
            }
            was_probing = probing > 0;
            est.on_sample(
                now,
                link.step(Duration::from_millis(250), usage + probing),
                1_740_000,
            );
        }
        assert!(
            probes <= 8,
            "{probes} probes in 60 s on a link that cannot take them"
        );
        assert!(est.estimate_bps(u64::MAX) < 200_000);
        // The link widens: probes now succeed and the estimate climbs past a video layer.
        link.capacity = 2_000_000;
        let mut climbed = None;
        for i in 0..400 {
            let now = clock.tick(250);
            est.request_probe(now, usage, usage + 250_000);
            let probing = est.probe_bps(now);
            est.on_sample(
                now,
                link.step(Duration::from_millis(250), usage + probing),
                1_740_000,
            );
            if est.estimate_bps(u64::MAX) >= 300_000 {
                climbed = Some(i);
                break;
            }
        }
        let climbed = climbed.expect("probes found the room");
        assert!(climbed <= 280, "took {} s", climbed / 4);
    }

    fn units(video_layers: &[u64]) -> Vec<Unit<&'static str>> {
        let mut out = vec![Unit {
            stream: "a",
            layer: 0,
            audio: true,
            bps: 50_000,
        }];
        for (i, bps) in video_layers.iter().enumerate() {
            out.push(Unit {
                stream: "v",
                layer: i as u8,
                audio: false,
                bps: *bps,
            });
        }
        out
    }

    #[test]
    fn audio_first_then_base_then_higher_layers_after_the_hold() {
        let mut clock = Clock(Instant::now());
        let mut alloc = Allocator::new(Duration::from_secs(2));
        let offered = units(&[150_000, 500_000, 1_500_000]);
        let now = clock.tick(0);
        let a = alloc.allocate(now, 1_000_000, &offered);
        assert_eq!(
            a.admitted,
            [("a", 0), ("v", 0)].into_iter().collect(),
            "a new stream starts with audio and its base layer at once"
        );
        // Layer 1 fits but waits for 2 s of room.
        let a = alloc.allocate(clock.tick(1000), 1_000_000, &offered);
        assert!(!a.admitted.contains(&("v", 1)));
        let a = alloc.allocate(clock.tick(1000), 1_000_000, &offered);
        assert!(a.admitted.contains(&("v", 1)));
        assert_eq!(a.used_bps, 700_000);
        assert_eq!(
            a.limited,
            ["v"].into_iter().collect(),
            "layer 2 does not fit"
        );
        assert_eq!(a.next_total_bps, Some(2_200_000));
    }

    #[test]
    fn a_budget_too_thin_for_video_gives_audio_only_and_video_returns() {
        let mut clock = Clock(Instant::now());
        let mut alloc = Allocator::new(Duration::from_secs(2));
        let offered = units(&[150_000, 500_000]);
        alloc.allocate(clock.tick(0), 1_000_000, &offered);
        alloc.allocate(clock.tick(2500), 1_000_000, &offered);
        // The link shrinks: down to audio at once.
        let a = alloc.allocate(clock.tick(250), 110_000, &offered);
        assert_eq!(a.admitted, [("a", 0)].into_iter().collect());
        assert_eq!(a.limited, ["v"].into_iter().collect());
        assert_eq!(a.next_total_bps, Some(200_000));
        // It widens: the base layer comes back after the hold, then the next layer.
        let a = alloc.allocate(clock.tick(250), 1_000_000, &offered);
        assert!(!a.admitted.contains(&("v", 0)), "not a fresh stream: waits");
        let a = alloc.allocate(clock.tick(2000), 1_000_000, &offered);
        assert!(a.admitted.contains(&("v", 0)));
        assert!(!a.admitted.contains(&("v", 1)));
        let a = alloc.allocate(clock.tick(2000), 1_000_000, &offered);
        assert!(a.admitted.contains(&("v", 1)));
    }

    #[test]
    fn a_flapping_budget_does_not_step_up() {
        let mut clock = Clock(Instant::now());
        let mut alloc = Allocator::new(Duration::from_secs(2));
        let offered = units(&[150_000, 500_000]);
        alloc.allocate(clock.tick(0), 300_000, &offered);
        for i in 0..20 {
            let budget = if i % 2 == 0 { 800_000 } else { 300_000 };
            let a = alloc.allocate(clock.tick(500), budget, &offered);
            assert!(!a.admitted.contains(&("v", 1)), "stepped up at {i}");
        }
    }

    #[test]
    fn the_uplink_is_shared_max_min_fair() {
        assert_eq!(share(1000, &[100, 800, 800]), vec![100, 450, 450]);
        assert_eq!(share(1000, &[100, 200]), vec![100, 200]);
        assert_eq!(share(1000, &[]), Vec::<u64>::new());
    }
}
