//! Hybrid logical clock (HLC) stamped on every log entry.
//!
//! A timestamp packs wall-clock milliseconds since the Unix epoch (upper 48 bits) and a logical
//! counter (lower 16 bits) into one `u64`, so timestamps order like integers. The clock never
//! goes backwards, even when the wall clock does, and it moves past every timestamp it observes
//! from other sites, so an entry written after reading another is always stamped later.
//!
//! The clock is sans-IO: callers pass the wall time in. Reading the system clock is left to the
//! driver (`swarm`, `Mesh::append`).

/// Bits reserved for the logical counter.
const LOGICAL_BITS: u32 = 16;
const LOGICAL_MASK: u64 = (1 << LOGICAL_BITS) - 1;

/// A hybrid logical clock timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HlcTime(pub u64);

impl HlcTime {
    /// Builds a timestamp from wall milliseconds and a logical counter.
    pub fn new(wall_ms: u64, logical: u16) -> Self {
        Self((wall_ms << LOGICAL_BITS) | u64::from(logical))
    }

    /// Wall-clock part in milliseconds since the Unix epoch.
    pub fn wall_ms(self) -> u64 {
        self.0 >> LOGICAL_BITS
    }

    /// Logical counter part.
    pub fn logical(self) -> u16 {
        (self.0 & LOGICAL_MASK) as u16
    }
}

/// The clock state of one site: the last timestamp it issued or observed.
#[derive(Debug, Clone, Default)]
pub struct Hlc {
    last: HlcTime,
}

impl Hlc {
    /// A clock that will never issue anything at or below `last`.
    pub fn starting_after(last: HlcTime) -> Self {
        Self { last }
    }

    /// Issues a timestamp for a local event at wall time `wall_ms`.
    pub fn tick(&mut self, wall_ms: u64) -> HlcTime {
        let wall_ms = wall_ms.min(u64::MAX >> LOGICAL_BITS);
        let next = if wall_ms > self.last.wall_ms() {
            HlcTime::new(wall_ms, 0)
        } else {
            // Wall clock did not advance (or went back): count on from the last timestamp.
            // When the counter is full, borrow the next millisecond instead of wrapping.
            HlcTime(self.last.0 + 1)
        };
        self.last = next;
        next
    }

    /// Records a timestamp seen on an entry from another site.
    pub fn observe(&mut self, seen: HlcTime) {
        if seen > self.last {
            self.last = seen;
        }
    }

    /// The last timestamp issued or observed.
    pub fn last(&self) -> HlcTime {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_strictly_increasing_even_when_wall_clock_stalls_or_goes_back() {
        let mut c = Hlc::default();
        let a = c.tick(1000);
        let b = c.tick(1000);
        let d = c.tick(900);
        let e = c.tick(1001);
        assert!(a < b && b < d && d < e);
        assert_eq!(a, HlcTime::new(1000, 0));
        assert_eq!(d, HlcTime::new(1000, 2));
        assert_eq!(e, HlcTime::new(1001, 0));
    }

    #[test]
    fn observing_a_later_remote_time_moves_the_clock_past_it() {
        let mut c = Hlc::default();
        c.tick(1000);
        c.observe(HlcTime::new(5000, 7));
        let t = c.tick(1001);
        assert_eq!(t, HlcTime::new(5000, 8));
        assert_eq!(t.wall_ms(), 5000);
        assert_eq!(t.logical(), 8);
    }
}
