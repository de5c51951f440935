//! Forward error correction across a relay link: one XOR parity packet per group of up to
//! `k` consecutive RTP packets of one layer. The receiver rebuilds any single lost packet of a
//! group as soon as the rest of the group and its parity have arrived, without waiting a round
//! trip for a retransmission. Two losses in one group fall back to NACK.
//!
//! The group size follows the loss the link shows (see [`group_size`]): no parity on a clean
//! link, a packet in five at 1-5 % loss, one in three above.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::wire::ParityHeader;

/// Group size for a link that loses `loss` (fraction) of its packets; `None` = no FEC.
pub fn group_size(loss: f64) -> Option<usize> {
    if loss < 0.003 {
        None
    } else if loss < 0.01 {
        Some(10)
    } else if loss < 0.05 {
        Some(5)
    } else {
        Some(3)
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

#[derive(Debug, Default)]
struct Accumulator {
    base: u16,
    mask: u16,
    count: usize,
    len_xor: u16,
    ts_xor: u32,
    marker_xor: bool,
    payload: Vec<u8>,
    started: Option<Instant>,
}

impl Accumulator {
    fn add(&mut self, p: &FecPacket) {
        let offset = p.seq.wrapping_sub(self.base);
        self.mask |= 1 << offset;
        self.count += 1;
        self.len_xor ^= p.payload.len() as u16;
        self.ts_xor ^= p.ts;
        self.marker_xor ^= p.marker;
        if self.payload.len() < p.payload.len() {
            self.payload.resize(p.payload.len(), 0);
        }
        for (acc, byte) in self.payload.iter_mut().zip(p.payload.iter()) {
            *acc ^= byte;
        }
    }
}

/// Builds parity packets for one layer of one stream on one link.
#[derive(Debug, Default)]
pub struct FecEncoder {
    acc: Option<Accumulator>,
}

/// A parity packet ready to send (the tag and layer are filled in by the caller).
pub type Parity = (ParityHeader, Bytes);

impl FecEncoder {
    /// Add a packet sent on the link; returns a parity packet when a group of `k` is complete.
    /// Packets must come in sending order; one that does not fit the open group closes it.
    pub fn push(&mut self, now: Instant, k: usize, p: &FecPacket) -> Option<Parity> {
        let k = k.clamp(2, 16);
        let mut out = None;
        if let Some(acc) = &self.acc {
            let offset = p.seq.wrapping_sub(acc.base);
            if offset >= 16 || acc.mask & (1 << offset) != 0 {
                out = self.flush();
            }
        }
        let acc = self.acc.get_or_insert_with(|| Accumulator {
            base: p.seq,
            started: Some(now),
            ..Accumulator::default()
        });
        acc.add(p);
        if acc.count >= k {
            // A group closed by the previous packet and this one at once cannot happen: the
            // previous flush left an empty accumulator.
            return self.flush().or(out);
        }
        out
    }

    /// Close the open group if it has waited `max_wait` (audio at 50 packets/s should not
    /// wait for a full group of a slow layer), returning its parity.
    pub fn poll(&mut self, now: Instant, max_wait: Duration) -> Option<Parity> {
        let started = self.acc.as_ref()?.started?;
        if now.saturating_duration_since(started) >= max_wait {
            self.flush()
        } else {
            None
        }
    }

    fn flush(&mut self) -> Option<Parity> {
        let acc = self.acc.take()?;
        if acc.count < 2 {
            return None; // parity of one packet is a copy: a retransmission does the same job
        }
        Some((
            ParityHeader {
                tag: 0,
                layer: 0,
                base: acc.base,
                mask: acc.mask,
                len_xor: acc.len_xor,
                ts_xor: acc.ts_xor,
                marker_xor: acc.marker_xor,
            },
            Bytes::from(acc.payload),
        ))
    }
}

/// Rebuilds lost packets of one layer of one stream from parity.
#[derive(Debug, Default)]
pub struct FecDecoder {
    recent: HashMap<u16, FecPacket>,
    order: VecDeque<u16>,
    parities: VecDeque<Parity>,
}

impl FecDecoder {
    /// Packets remembered to rebuild others.
    const KEEP: usize = 256;
    /// Parity packets waiting for the rest of their group.
    const PARITIES: usize = 32;

    /// A packet arrived (or was recovered); returns a packet this made recoverable, if any.
    pub fn on_packet(&mut self, p: FecPacket) -> Option<FecPacket> {
        let seq = p.seq;
        if self.recent.insert(seq, p).is_none() {
            self.order.push_back(seq);
            while self.order.len() > Self::KEEP {
                if let Some(old) = self.order.pop_front() {
                    self.recent.remove(&old);
                }
            }
        }
        let index = self
            .parities
            .iter()
            .position(|(h, _)| covers(h, seq) && self.missing(h).len() == 1)?;
        let parity = self.parities.remove(index)?;
        self.rebuild(&parity)
    }

    /// A parity packet arrived; returns the packet it rebuilds, if exactly one is missing.
    pub fn on_parity(&mut self, parity: Parity) -> Option<FecPacket> {
        match self.missing(&parity.0).len() {
            0 => None,
            1 => self.rebuild(&parity),
            _ => {
                self.parities.push_back(parity);
                while self.parities.len() > Self::PARITIES {
                    self.parities.pop_front();
                }
                None
            }
        }
    }

    fn missing(&self, h: &ParityHeader) -> Vec<u16> {
        (0..16u16)
            .filter(|i| h.mask & (1 << i) != 0)
            .map(|i| h.base.wrapping_add(i))
            .filter(|seq| !self.recent.contains_key(seq))
            .collect()
    }

    fn rebuild(&mut self, (h, payload): &Parity) -> Option<FecPacket> {
        let missing = self.missing(h);
        let [seq] = missing[..] else {
            return None;
        };
        let mut len = h.len_xor;
        let mut ts = h.ts_xor;
        let mut marker = h.marker_xor;
        let mut bytes = payload.to_vec();
        for i in (0..16u16).filter(|i| h.mask & (1 << i) != 0) {
            let s = h.base.wrapping_add(i);
            let Some(p) = self.recent.get(&s) else {
                continue;
            };
            len ^= p.payload.len() as u16;
            ts ^= p.ts;
            marker ^= p.marker;
            for (b, x) in bytes.iter_mut().zip(p.payload.iter()) {
                *b ^= x;
            }
        }
        if usize::from(len) > bytes.len() {
            return None; // inconsistent parity: never deliver garbage
        }
        bytes.truncate(usize::from(len));
        let p = FecPacket {
            seq,
            ts,
            marker,
            payload: Bytes::from(bytes),
        };
        self.recent.insert(seq, p.clone());
        self.order.push_back(seq);
        Some(p)
    }
}

fn covers(h: &ParityHeader, seq: u16) -> bool {
    let offset = seq.wrapping_sub(h.base);
    offset < 16 && h.mask & (1 << offset) != 0
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

    #[test]
    fn any_single_loss_in_a_group_is_rebuilt_exactly() {
        let now = Instant::now();
        for lost in 0..5u16 {
            let mut enc = FecEncoder::default();
            let mut dec = FecDecoder::default();
            let mut parity = None;
            for seq in 65_533..65_533 + 5u32 {
                let p = packet(seq as u16);
                parity = enc.push(now, 5, &p).or(parity);
                if seq as u16 != 65_533u16.wrapping_add(lost) {
                    assert_eq!(dec.on_packet(p), None);
                }
            }
            let rebuilt = dec.on_parity(parity.expect("a group of 5 gives parity"));
            assert_eq!(rebuilt, Some(packet(65_533u16.wrapping_add(lost))));
        }
    }

    #[test]
    fn parity_before_the_rest_of_the_group_waits_for_it() {
        let now = Instant::now();
        let mut enc = FecEncoder::default();
        let mut parity = None;
        for seq in 0..4 {
            parity = enc.push(now, 4, &packet(seq)).or(parity);
        }
        let mut dec = FecDecoder::default();
        assert_eq!(
            dec.on_parity(parity.unwrap()),
            None,
            "three of four missing"
        );
        assert_eq!(dec.on_packet(packet(0)), None);
        assert_eq!(dec.on_packet(packet(3)), None, "two still missing");
        assert_eq!(dec.on_packet(packet(1)), Some(packet(2)));
    }

    #[test]
    fn two_losses_are_not_guessed_and_slow_groups_close_on_time() {
        let now = Instant::now();
        let mut enc = FecEncoder::default();
        assert_eq!(enc.push(now, 5, &packet(1)), None);
        assert_eq!(enc.push(now, 5, &packet(2)), None);
        assert_eq!(enc.poll(now, Duration::from_millis(50)), None);
        let parity = enc.poll(now + Duration::from_millis(50), Duration::from_millis(50));
        let parity = parity.expect("a group open 50 ms closes");
        assert_eq!(parity.0.mask, 0b11);
        let mut dec = FecDecoder::default();
        assert_eq!(dec.on_parity(parity), None);
        // A gap in sending order closes the group early.
        let mut enc = FecEncoder::default();
        enc.push(now, 5, &packet(1));
        enc.push(now, 5, &packet(2));
        let closed = enc.push(now, 5, &packet(40));
        assert_eq!(closed.map(|p| p.0.base), Some(1));
    }
}
