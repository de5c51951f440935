//! Forward error correction across a relay link: for each group of up to 16 consecutive RTP
//! packets of one layer, one or two parity packets, like RAID 6: *P*, the XOR of the packets,
//! and *Q*, their sum weighted by powers of 2 in GF(2⁸). The receiver rebuilds any one lost
//! packet of a group from P (or Q), and any two from P and Q, as soon as the rest of the group
//! has arrived, without waiting a round trip for a retransmission. More losses fall back to
//! NACK.
//!
//! Parity covers each packet's length, timestamp and marker as well as its payload: a packet
//! is seen as the bytes `len (2) | ts (4) | marker (1) | payload`, zero-padded to the longest
//! of its group.
//!
//! The protection follows the loss the link shows (see [`protection`]): none on a clean link,
//! one parity per 8-10 packets at about 1 %, two per 8 at a few percent, two per 6 beyond.
//! Groups under three packets get P only.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::wire::ParityHeader;

/// `(packets per group, parity packets per group)` for a link that loses `loss` (fraction) of
/// its packets; `None` = no FEC.
pub fn protection(loss: f64) -> Option<(usize, usize)> {
    if loss < 0.003 {
        None
    } else if loss < 0.008 {
        Some((10, 1))
    } else if loss < 0.015 {
        Some((8, 1))
    } else if loss < 0.06 {
        Some((8, 2))
    } else {
        Some((6, 2))
    }
}

// ----- GF(2⁸) with the polynomial x⁸ + x⁴ + x³ + x² + 1 (0x11d), generator 2 -----

const fn tables() -> ([u8; 512], [u8; 256]) {
    let mut exp = [0u8; 512];
    let mut log = [0u8; 256];
    let mut x: u16 = 1;
    let mut i = 0;
    while i < 255 {
        exp[i] = x as u8;
        log[x as usize] = i as u8;
        x <<= 1;
        if x & 0x100 != 0 {
            x ^= 0x11d;
        }
        i += 1;
    }
    while i < 512 {
        exp[i] = exp[i - 255];
        i += 1;
    }
    (exp, log)
}

const TABLES: ([u8; 512], [u8; 256]) = tables();

fn mul(a: u8, b: u8) -> u8 {
    if a == 0 || b == 0 {
        return 0;
    }
    let (exp, log) = &TABLES;
    exp[usize::from(log[usize::from(a)]) + usize::from(log[usize::from(b)])]
}

/// 2^i.
fn pow2(i: usize) -> u8 {
    TABLES.0[i % 255]
}

fn inv(a: u8) -> u8 {
    let (exp, log) = &TABLES;
    exp[255 - usize::from(log[usize::from(a)])]
}

/// `acc ^= c · data`, growing `acc` as needed.
fn add_scaled(acc: &mut Vec<u8>, c: u8, data: &[u8]) {
    if acc.len() < data.len() {
        acc.resize(data.len(), 0);
    }
    if c == 1 {
        for (a, d) in acc.iter_mut().zip(data) {
            *a ^= d;
        }
    } else {
        for (a, d) in acc.iter_mut().zip(data) {
            *a ^= mul(c, *d);
        }
    }
}

/// One packet as FEC sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FecPacket {
    /// Sequence number.
    pub seq: u16,
    /// Timestamp.
    pub ts: u32,
    /// Marker bit.
    pub marker: bool,
    /// Payload.
    pub payload: Bytes,
}

impl FecPacket {
    fn extended(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(7 + self.payload.len());
        v.extend_from_slice(&(self.payload.len() as u16).to_be_bytes());
        v.extend_from_slice(&self.ts.to_be_bytes());
        v.push(u8::from(self.marker));
        v.extend_from_slice(&self.payload);
        v
    }

    fn from_extended(seq: u16, v: &[u8]) -> Option<FecPacket> {
        if v.len() < 7 {
            return None;
        }
        let len = usize::from(u16::from_be_bytes([v[0], v[1]]));
        if 7 + len > v.len() || v[6] > 1 {
            return None; // inconsistent parity: never deliver garbage
        }
        Some(FecPacket {
            seq,
            ts: u32::from_be_bytes([v[2], v[3], v[4], v[5]]),
            marker: v[6] == 1,
            payload: Bytes::copy_from_slice(&v[7..7 + len]),
        })
    }
}

#[derive(Debug, Default)]
struct Accumulator {
    base: u16,
    mask: u16,
    count: usize,
    p: Vec<u8>,
    q: Vec<u8>,
    started: Option<Instant>,
}

/// A parity packet ready to send (the tag and layer are filled in by the caller).
pub type Parity = (ParityHeader, Bytes);

/// Builds parity packets for one layer of one stream on one link.
#[derive(Debug, Default)]
pub struct FecEncoder {
    acc: Option<Accumulator>,
}

impl FecEncoder {
    /// Add a packet sent on the link; returns parity when a group of `k` is complete, with
    /// `parities` (1 or 2) packets. Packets must come in sending order; one that does not fit
    /// the open group closes it.
    pub fn push(&mut self, now: Instant, k: usize, parities: usize, p: &FecPacket) -> Vec<Parity> {
        let k = k.clamp(2, 16);
        let mut out = Vec::new();
        if let Some(acc) = &self.acc {
            let offset = p.seq.wrapping_sub(acc.base);
            if offset >= 16 || acc.mask & (1 << offset) != 0 {
                out = self.flush(parities);
            }
        }
        let acc = self.acc.get_or_insert_with(|| Accumulator {
            base: p.seq,
            started: Some(now),
            ..Accumulator::default()
        });
        let offset = usize::from(p.seq.wrapping_sub(acc.base));
        let data = p.extended();
        acc.mask |= 1 << offset;
        acc.count += 1;
        add_scaled(&mut acc.p, 1, &data);
        add_scaled(&mut acc.q, pow2(offset), &data);
        if acc.count >= k {
            out.extend(self.flush(parities));
        }
        out
    }

    /// Close the open group if it has waited `max_wait` (audio at 50 packets/s should not
    /// wait for a full group of a slow layer), returning its parity.
    pub fn poll(&mut self, now: Instant, max_wait: Duration, parities: usize) -> Vec<Parity> {
        let waited = self
            .acc
            .as_ref()
            .and_then(|a| a.started)
            .is_some_and(|t| now.saturating_duration_since(t) >= max_wait);
        if waited {
            self.flush(parities)
        } else {
            Vec::new()
        }
    }

    fn flush(&mut self, parities: usize) -> Vec<Parity> {
        let Some(acc) = self.acc.take() else {
            return Vec::new();
        };
        if acc.count == 0 {
            return Vec::new();
        }
        // A group of one (a slow layer: 15 packets/s) gets a copy as its parity: a lost packet
        // of it would otherwise wait a round trip for a retransmission.
        let header = |which| ParityHeader {
            tag: 0,
            layer: 0,
            base: acc.base,
            mask: acc.mask,
            which,
        };
        let mut out = vec![(header(0), Bytes::from(acc.p))];
        // Q only pays off over groups of three or more.
        if parities >= 2 && acc.count >= 3 {
            out.push((header(1), Bytes::from(acc.q)));
        }
        out
    }
}

#[derive(Debug, Default)]
struct Group {
    p: Option<Bytes>,
    q: Option<Bytes>,
}

/// Rebuilds lost packets of one layer of one stream from parity.
#[derive(Debug, Default)]
pub struct FecDecoder {
    recent: HashMap<u16, FecPacket>,
    order: VecDeque<u16>,
    groups: HashMap<(u16, u16), Group>,
    group_order: VecDeque<(u16, u16)>,
}

impl FecDecoder {
    /// Packets remembered to rebuild others.
    const KEEP: usize = 256;
    /// Groups whose parity waits for the rest of the group.
    const GROUPS: usize = 32;

    fn remember(&mut self, p: FecPacket) {
        let seq = p.seq;
        if self.recent.insert(seq, p).is_none() {
            self.order.push_back(seq);
            while self.order.len() > Self::KEEP {
                if let Some(old) = self.order.pop_front() {
                    self.recent.remove(&old);
                }
            }
        }
    }

    /// A packet arrived (or was recovered); returns packets this made recoverable.
    pub fn on_packet(&mut self, p: FecPacket) -> Vec<FecPacket> {
        let seq = p.seq;
        self.remember(p);
        let keys: Vec<(u16, u16)> = self
            .groups
            .keys()
            .filter(|(base, mask)| covers(*base, *mask, seq))
            .copied()
            .collect();
        let mut out = Vec::new();
        for key in keys {
            out.extend(self.try_group(key));
        }
        out
    }

    /// A parity packet arrived; returns the packets it rebuilds.
    pub fn on_parity(&mut self, (h, payload): Parity) -> Vec<FecPacket> {
        let key = (h.base, h.mask);
        if !self.groups.contains_key(&key) {
            self.group_order.push_back(key);
            while self.group_order.len() > Self::GROUPS {
                if let Some(old) = self.group_order.pop_front() {
                    self.groups.remove(&old);
                }
            }
        }
        let group = self.groups.entry(key).or_default();
        match h.which {
            0 => group.p = Some(payload),
            _ => group.q = Some(payload),
        }
        self.try_group(key)
    }

    fn try_group(&mut self, key: (u16, u16)) -> Vec<FecPacket> {
        let (base, mask) = key;
        let offsets: Vec<usize> = (0..16).filter(|i| mask & (1 << i) != 0).collect();
        let missing: Vec<usize> = offsets
            .iter()
            .copied()
            .filter(|&i| !self.recent.contains_key(&base.wrapping_add(i as u16)))
            .collect();
        let Some(group) = self.groups.get(&key) else {
            return Vec::new();
        };
        let rebuilt = match (missing.as_slice(), &group.p, &group.q) {
            ([], ..) => {
                self.drop_group(key);
                return Vec::new();
            }
            ([x], Some(p), _) => self.solve_one(base, &offsets, *x, p, 1),
            ([x], None, Some(q)) => self.solve_one(base, &offsets, *x, q, 2),
            ([x, y], Some(p), Some(q)) => self.solve_two(base, &offsets, (*x, *y), p, q),
            _ => return Vec::new(),
        };
        self.drop_group(key);
        let mut out = Vec::new();
        for p in rebuilt.into_iter().flatten() {
            self.remember(p.clone());
            out.push(p);
        }
        out
    }

    fn drop_group(&mut self, key: (u16, u16)) {
        self.groups.remove(&key);
        self.group_order.retain(|k| *k != key);
    }

    /// The parity with every present packet taken out (`weights`: 1 for P, 2 for Q).
    fn residue(&self, base: u16, offsets: &[usize], parity: &[u8], weights: u8) -> Vec<u8> {
        let mut acc = parity.to_vec();
        for &i in offsets {
            if let Some(p) = self.recent.get(&base.wrapping_add(i as u16)) {
                let c = if weights == 1 { 1 } else { pow2(i) };
                add_scaled(&mut acc, c, &p.extended());
            }
        }
        acc
    }

    fn solve_one(
        &self,
        base: u16,
        offsets: &[usize],
        x: usize,
        parity: &[u8],
        weights: u8,
    ) -> Vec<Option<FecPacket>> {
        let mut d = self.residue(base, offsets, parity, weights);
        if weights != 1 {
            let c = inv(pow2(x));
            for b in &mut d {
                *b = mul(c, *b);
            }
        }
        vec![FecPacket::from_extended(base.wrapping_add(x as u16), &d)]
    }

    fn solve_two(
        &self,
        base: u16,
        offsets: &[usize],
        (x, y): (usize, usize),
        p: &[u8],
        q: &[u8],
    ) -> Vec<Option<FecPacket>> {
        // Pxy = Dx ^ Dy and Qxy = g^x·Dx ^ g^y·Dy, so
        // Dx = (g^y·Pxy ^ Qxy) / (g^x ^ g^y), Dy = Pxy ^ Dx.
        let mut pxy = self.residue(base, offsets, p, 1);
        let mut qxy = self.residue(base, offsets, q, 2);
        let len = pxy.len().max(qxy.len());
        pxy.resize(len, 0);
        qxy.resize(len, 0);
        let (gx, gy) = (pow2(x), pow2(y));
        let denom = inv(gx ^ gy);
        let dx: Vec<u8> = pxy
            .iter()
            .zip(&qxy)
            .map(|(a, b)| mul(denom, mul(gy, *a) ^ b))
            .collect();
        let dy: Vec<u8> = pxy.iter().zip(&dx).map(|(a, b)| a ^ b).collect();
        vec![
            FecPacket::from_extended(base.wrapping_add(x as u16), &dx),
            FecPacket::from_extended(base.wrapping_add(y as u16), &dy),
        ]
    }
}

fn covers(base: u16, mask: u16, seq: u16) -> bool {
    let offset = seq.wrapping_sub(base);
    offset < 16 && mask & (1 << offset) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(seq: u16) -> FecPacket {
        let len = 20 + usize::from(seq % 7) * 13;
        FecPacket {
            seq,
            ts: u32::from(seq) * 3000,
            marker: seq.is_multiple_of(3),
            payload: (0..len).map(|i| (i as u16 ^ seq) as u8).collect(),
        }
    }

    fn group(now: Instant, first: u16, k: u16, parities: usize) -> Vec<Parity> {
        let mut enc = FecEncoder::default();
        let mut out = Vec::new();
        for i in 0..k {
            out.extend(enc.push(
                now,
                usize::from(k),
                parities,
                &packet(first.wrapping_add(i)),
            ));
        }
        out
    }

    #[test]
    fn the_field_is_a_field() {
        for a in 1..=255u8 {
            assert_eq!(mul(a, inv(a)), 1, "{a}");
        }
        assert_eq!(mul(pow2(8), 1), 0x1d);
    }

    #[test]
    fn any_single_loss_in_a_group_is_rebuilt_exactly() {
        let now = Instant::now();
        for lost in 0..5u16 {
            let parity = group(now, 65_533, 5, 1);
            assert_eq!(parity.len(), 1);
            let mut dec = FecDecoder::default();
            for i in (0..5u16).filter(|i| *i != lost) {
                assert!(dec.on_packet(packet(65_533u16.wrapping_add(i))).is_empty());
            }
            let rebuilt = dec.on_parity(parity[0].clone());
            assert_eq!(rebuilt, vec![packet(65_533u16.wrapping_add(lost))]);
        }
    }

    #[test]
    fn any_two_losses_in_a_group_are_rebuilt_from_p_and_q() {
        let now = Instant::now();
        for x in 0..8u16 {
            for y in x + 1..8 {
                let parity = group(now, 100, 8, 2);
                assert_eq!(parity.len(), 2);
                let mut dec = FecDecoder::default();
                for i in (0..8u16).filter(|i| *i != x && *i != y) {
                    dec.on_packet(packet(100 + i));
                }
                assert!(
                    dec.on_parity(parity[1].clone()).is_empty(),
                    "Q alone: two missing"
                );
                let mut rebuilt = dec.on_parity(parity[0].clone());
                rebuilt.sort_by_key(|p| p.seq);
                assert_eq!(rebuilt, vec![packet(100 + x), packet(100 + y)], "{x} {y}");
            }
        }
        // Q alone rebuilds one loss too.
        let parity = group(now, 7, 6, 2);
        let mut dec = FecDecoder::default();
        for i in [0u16, 1, 3, 4, 5] {
            dec.on_packet(packet(7 + i));
        }
        assert_eq!(dec.on_parity(parity[1].clone()), vec![packet(9)]);
    }

    #[test]
    fn parity_before_the_rest_of_the_group_waits_for_it() {
        let now = Instant::now();
        let parity = group(now, 0, 4, 1);
        let mut dec = FecDecoder::default();
        assert!(dec.on_parity(parity[0].clone()).is_empty(), "four missing");
        assert!(dec.on_packet(packet(0)).is_empty());
        assert!(dec.on_packet(packet(3)).is_empty(), "two still missing");
        assert_eq!(dec.on_packet(packet(1)), vec![packet(2)]);
    }

    #[test]
    fn three_losses_are_not_guessed_and_slow_groups_close_on_time() {
        let now = Instant::now();
        let parity = group(now, 0, 8, 2);
        let mut dec = FecDecoder::default();
        for i in 3..8 {
            dec.on_packet(packet(i));
        }
        assert!(dec.on_parity(parity[0].clone()).is_empty());
        assert!(dec.on_parity(parity[1].clone()).is_empty());

        let mut enc = FecEncoder::default();
        assert!(enc.push(now, 5, 2, &packet(1)).is_empty());
        assert!(enc.push(now, 5, 2, &packet(2)).is_empty());
        assert!(enc.poll(now, Duration::from_millis(50), 2).is_empty());
        let parity = enc.poll(
            now + Duration::from_millis(50),
            Duration::from_millis(50),
            2,
        );
        assert_eq!(parity.len(), 1, "two packets get P only");
        assert_eq!(parity[0].0.mask, 0b11);
        // A gap in sending order closes the group early.
        let mut enc = FecEncoder::default();
        enc.push(now, 5, 1, &packet(1));
        enc.push(now, 5, 1, &packet(2));
        let closed = enc.push(now, 5, 1, &packet(40));
        assert_eq!(closed.first().map(|p| p.0.base), Some(1));
    }
}
