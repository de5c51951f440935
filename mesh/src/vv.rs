//! Version vectors: for each origin, the highest sequence number held contiguously from 1.
//!
//! Because every log is append-only and applied without gaps, a version vector describes a
//! node's holdings exactly, and the difference of two vectors is a set of seq ranges.

use std::collections::BTreeMap;

use libp2p::identity::PeerId;

use crate::log::codec::{DecodeError, Reader, put_bytes, put_uvarint};

/// Most origins a decoded vector may name (the pilot has 8 sites; room to grow).
pub const MAX_ORIGINS: usize = 1024;

/// origin -> highest contiguous seq held (absent = 0).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VersionVector(BTreeMap<PeerId, u64>);

/// A missing range of one origin's log, both ends inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Range {
    /// Log the range belongs to.
    pub origin: PeerId,
    /// First missing seq.
    pub from: u64,
    /// Last missing seq.
    pub to: u64,
}

impl Range {
    /// Number of entries in the range.
    pub fn len(&self) -> u64 {
        self.to + 1 - self.from
    }

    /// Never true: a range holds at least one entry.
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl VersionVector {
    /// An empty vector.
    pub fn new() -> Self {
        Self::default()
    }

    /// Highest seq held for `origin`.
    pub fn get(&self, origin: &PeerId) -> u64 {
        self.0.get(origin).copied().unwrap_or(0)
    }

    /// Sets the seq of `origin` (a zero removes it).
    pub fn set(&mut self, origin: PeerId, seq: u64) {
        if seq == 0 {
            self.0.remove(&origin);
        } else {
            self.0.insert(origin, seq);
        }
    }

    /// Raises `origin` to at least `seq`.
    pub fn raise(&mut self, origin: PeerId, seq: u64) {
        let e = self.0.entry(origin).or_insert(0);
        *e = (*e).max(seq);
    }

    /// Iterates (origin, seq) in origin order.
    pub fn iter(&self) -> impl Iterator<Item = (&PeerId, u64)> {
        self.0.iter().map(|(k, v)| (k, *v))
    }

    /// Number of origins.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when no origin is held.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The ranges `other` holds and `self` lacks, one per origin, in origin order.
    pub fn missing_from(&self, other: &VersionVector) -> Vec<Range> {
        other
            .iter()
            .filter_map(|(o, theirs)| {
                let mine = self.get(o);
                (theirs > mine).then_some(Range {
                    origin: *o,
                    from: mine + 1,
                    to: theirs,
                })
            })
            .collect()
    }

    /// Total number of entries `other` holds and `self` lacks.
    pub fn lag_behind(&self, other: &VersionVector) -> u64 {
        self.missing_from(other).iter().map(Range::len).sum()
    }

    /// Canonical encoding: count, then (origin bytes, seq) in origin order.
    pub fn encode(&self, out: &mut Vec<u8>) {
        put_uvarint(out, self.0.len() as u64);
        for (o, s) in &self.0 {
            put_bytes(out, &o.to_bytes());
            put_uvarint(out, *s);
        }
    }

    /// Decodes a vector written by [`VersionVector::encode`].
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let n = r.uvarint()?;
        if n > MAX_ORIGINS as u64 {
            return Err(r.err("too many origins in version vector"));
        }
        let mut vv = VersionVector::new();
        for _ in 0..n {
            let o =
                PeerId::from_bytes(r.bytes(64)?).map_err(|_| r.err("origin is not a PeerId"))?;
            let s = r.uvarint()?;
            if s == 0 || vv.0.insert(o, s).is_some() {
                return Err(r.err("zero or repeated origin in version vector"));
            }
        }
        Ok(vv)
    }
}

impl FromIterator<(PeerId, u64)> for VersionVector {
    fn from_iter<I: IntoIterator<Item = (PeerId, u64)>>(iter: I) -> Self {
        let mut vv = VersionVector::new();
        for (o, s) in iter {
            vv.raise(o, s);
        }
        vv
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_ranges_and_lag() {
        let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
        let mine: VersionVector = [(a, 5), (b, 9)].into_iter().collect();
        let theirs: VersionVector = [(a, 8), (b, 3), (c, 2)].into_iter().collect();
        let mut m = mine.missing_from(&theirs);
        m.sort();
        let mut want = vec![
            Range {
                origin: a,
                from: 6,
                to: 8,
            },
            Range {
                origin: c,
                from: 1,
                to: 2,
            },
        ];
        want.sort();
        assert_eq!(m, want);
        assert_eq!(mine.lag_behind(&theirs), 5);
        assert_eq!(theirs.lag_behind(&mine), 6);
    }

    #[test]
    fn encoding_round_trips_and_refuses_repeats() {
        let vv: VersionVector = (0..5).map(|i| (PeerId::random(), i + 1)).collect();
        let mut b = Vec::new();
        vv.encode(&mut b);
        assert_eq!(VersionVector::decode(&mut Reader::new(&b)).unwrap(), vv);

        let p = PeerId::random();
        let mut bad = Vec::new();
        put_uvarint(&mut bad, 2);
        for _ in 0..2 {
            put_bytes(&mut bad, &p.to_bytes());
            put_uvarint(&mut bad, 1);
        }
        assert!(VersionVector::decode(&mut Reader::new(&bad)).is_err());
    }
}
