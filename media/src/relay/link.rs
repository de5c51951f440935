//! Loss recovery on one relay link, per layer of each stream: on the receiving side, which
//! sequence numbers are missing, when to NACK them and what parity rebuilds; on the sending
//! side, the recent packets kept to answer NACKs. Sans-IO, driven by [`super::core`].

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::fec::{FecDecoder, FecPacket, Parity};
use super::wire::MediaHeader;
use crate::sfu::rewrite::seq_newer;

/// A gap this far ahead of the last packet is a restart, not loss.
const MAX_GAP: u16 = 512;
/// Most sequence numbers tracked as missing per layer.
const MAX_MISSING: usize = 256;
/// Sequence numbers remembered to drop duplicates.
const SEEN: usize = 1024;
/// A missing packet is first NACKed after this (parity usually rebuilds it sooner).
const NACK_DELAY: Duration = Duration::from_millis(60);
/// NACKs per missing packet before giving up.
const NACK_TRIES: u8 = 4;
/// A packet missing longer than this is given up: the browser has asked for a keyframe.
const GIVE_UP: Duration = Duration::from_millis(1500);

#[derive(Debug, Clone, Copy)]
struct Missing {
    since: Instant,
    tries: u8,
    last: Option<Instant>,
}

/// Counters of the receiving side of a link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RxStats {
    /// Packets rebuilt from parity.
    pub recovered: u64,
    /// Packets that came back after a NACK.
    pub retransmitted: u64,
    /// Sequence numbers NACKed (each try counts).
    pub nacked: u64,
    /// Packets given up on.
    pub lost: u64,
    /// Duplicates dropped.
    pub duplicates: u64,
}

/// The receiving side of one layer of one stream on one link.
#[derive(Debug, Default)]
pub struct RxLayer {
    highest: Option<u16>,
    seen: HashSet<u16>,
    seen_order: VecDeque<u16>,
    missing: BTreeMap<u16, Missing>,
    fec: FecDecoder,
}

impl RxLayer {
    fn remember(&mut self, seq: u16) -> bool {
        if !self.seen.insert(seq) {
            return false;
        }
        self.seen_order.push_back(seq);
        while self.seen_order.len() > SEEN {
            if let Some(old) = self.seen_order.pop_front() {
                self.seen.remove(&old);
            }
        }
        true
    }

    /// A media packet arrived: the packets to deliver (it, unless a duplicate, and any packet
    /// its arrival rebuilt from parity).
    pub fn on_media(
        &mut self,
        now: Instant,
        h: &MediaHeader,
        payload: Bytes,
        stats: &mut RxStats,
    ) -> Vec<FecPacket> {
        let seq = h.seq;
        let restart = h.restart
            || match self.highest {
                None => true,
                Some(high) => {
                    let ahead = seq.wrapping_sub(high);
                    let behind = high.wrapping_sub(seq);
                    seq_newer(seq, high) && ahead > MAX_GAP
                        || !seq_newer(seq, high) && behind > 4096
                }
            };
        if restart {
            self.missing.clear();
            self.highest = Some(seq);
        } else if let Some(high) = self.highest
            && seq_newer(seq, high)
        {
            let mut s = high.wrapping_add(1);
            while s != seq {
                if self.missing.len() < MAX_MISSING && !self.seen.contains(&s) {
                    self.missing.insert(
                        s,
                        Missing {
                            since: now,
                            tries: 0,
                            last: None,
                        },
                    );
                }
                s = s.wrapping_add(1);
            }
            self.highest = Some(seq);
        }
        if !self.remember(seq) {
            stats.duplicates += 1;
            return Vec::new();
        }
        if self.missing.remove(&seq).is_some() && h.retransmission {
            stats.retransmitted += 1;
        }
        let packet = FecPacket {
            seq,
            ts: h.ts,
            marker: h.marker,
            payload,
        };
        let mut out = vec![packet.clone()];
        for rebuilt in self.fec.on_packet(packet) {
            self.accept_rebuilt(rebuilt, stats, &mut out);
        }
        out
    }

    /// A parity packet arrived: the packet it rebuilds, if any.
    pub fn on_parity(&mut self, parity: Parity, stats: &mut RxStats) -> Vec<FecPacket> {
        let mut out = Vec::new();
        for rebuilt in self.fec.on_parity(parity) {
            self.accept_rebuilt(rebuilt, stats, &mut out);
        }
        out
    }

    fn accept_rebuilt(&mut self, p: FecPacket, stats: &mut RxStats, out: &mut Vec<FecPacket>) {
        // Parity may rebuild a packet from before a restart: deliver it only if it was missing
        // or is newer than anything seen (never a duplicate).
        let newer = self.highest.is_none_or(|h| seq_newer(p.seq, h));
        if (self.missing.remove(&p.seq).is_some() || newer) && self.remember(p.seq) {
            if newer {
                self.highest = Some(p.seq);
            }
            stats.recovered += 1;
            out.push(p);
        }
    }

    /// Sequence numbers to NACK now, given the link's round trip.
    pub fn due_nacks(&mut self, now: Instant, rtt: Duration, stats: &mut RxStats) -> Vec<u16> {
        let retry = (rtt + rtt / 4).max(Duration::from_millis(100));
        let mut due = Vec::new();
        let mut expired = Vec::new();
        for (seq, m) in &mut self.missing {
            let age = now.saturating_duration_since(m.since);
            if age > GIVE_UP || m.tries >= NACK_TRIES && m.last.is_some_and(|l| now - l > retry) {
                expired.push(*seq);
                continue;
            }
            let ready = match m.last {
                None => age >= NACK_DELAY,
                Some(last) => m.tries < NACK_TRIES && now.saturating_duration_since(last) >= retry,
            };
            if ready {
                m.tries += 1;
                m.last = Some(now);
                due.push(*seq);
            }
        }
        for seq in expired {
            self.missing.remove(&seq);
            stats.lost += 1;
        }
        stats.nacked += due.len() as u64;
        due
    }

    /// Whether anything waits for a NACK.
    pub fn has_missing(&self) -> bool {
        !self.missing.is_empty()
    }
}

/// A packet kept by the sender to answer NACKs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    /// Sequence number.
    pub seq: u16,
    /// Timestamp.
    pub ts: u32,
    /// Marker bit.
    pub marker: bool,
    /// Payload.
    pub payload: Bytes,
}

/// The last packets of one layer of one stream, by sequence number.
#[derive(Debug)]
pub struct SendBuffer {
    slots: Vec<Option<Kept>>,
    mask: usize,
}

impl SendBuffer {
    /// A buffer of `capacity` packets (rounded up to a power of two).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1).next_power_of_two();
        Self {
            slots: vec![None; capacity],
            mask: capacity - 1,
        }
    }

    /// Keep a packet.
    pub fn push(&mut self, packet: Kept) {
        let i = usize::from(packet.seq) & self.mask;
        self.slots[i] = Some(packet);
    }

    /// The packet with sequence number `seq`, if still kept.
    pub fn get(&self, seq: u16) -> Option<&Kept> {
        self.slots[usize::from(seq) & self.mask]
            .as_ref()
            .filter(|k| k.seq == seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(seq: u16) -> MediaHeader {
        MediaHeader {
            tag: 1,
            layer: 0,
            seq,
            ts: 0,
            marker: false,
            retransmission: false,
            restart: false,
        }
    }

    #[test]
    fn gaps_are_nacked_after_a_delay_then_retried_then_given_up() {
        let t0 = Instant::now();
        let rtt = Duration::from_millis(300);
        let mut rx = RxLayer::default();
        let mut stats = RxStats::default();
        rx.on_media(t0, &header(100), Bytes::new(), &mut stats);
        rx.on_media(t0, &header(103), Bytes::new(), &mut stats);
        assert!(
            rx.due_nacks(t0, rtt, &mut stats).is_empty(),
            "parity gets a chance"
        );
        let t1 = t0 + Duration::from_millis(60);
        assert_eq!(rx.due_nacks(t1, rtt, &mut stats), vec![101, 102]);
        assert!(
            rx.due_nacks(t1 + Duration::from_millis(100), rtt, &mut stats)
                .is_empty()
        );
        // 102 comes back; 101 is asked again after 1.25 RTT.
        let mut again = header(102);
        again.retransmission = true;
        assert_eq!(rx.on_media(t1, &again, Bytes::new(), &mut stats).len(), 1);
        assert_eq!(stats.retransmitted, 1);
        let t2 = t1 + Duration::from_millis(375);
        assert_eq!(rx.due_nacks(t2, rtt, &mut stats), vec![101]);
        // Given up after 1.5 s.
        rx.due_nacks(t0 + Duration::from_secs(2), rtt, &mut stats);
        assert!(!rx.has_missing());
        assert_eq!(stats.lost, 1);
        // A duplicate is dropped.
        assert!(
            rx.on_media(t2, &header(103), Bytes::new(), &mut stats)
                .is_empty()
        );
        assert_eq!(stats.duplicates, 1);
    }

    #[test]
    fn a_restart_or_a_huge_jump_is_not_loss() {
        let t0 = Instant::now();
        let mut rx = RxLayer::default();
        let mut stats = RxStats::default();
        rx.on_media(t0, &header(10), Bytes::new(), &mut stats);
        let mut restart = header(300);
        restart.restart = true;
        rx.on_media(t0, &restart, Bytes::new(), &mut stats);
        rx.on_media(t0, &header(5000), Bytes::new(), &mut stats);
        let later = t0 + Duration::from_secs(1);
        assert!(
            rx.due_nacks(later, Duration::from_millis(50), &mut stats)
                .is_empty()
        );
    }

    #[test]
    fn the_send_buffer_answers_until_overwritten() {
        let mut buf = SendBuffer::new(4);
        for seq in 0..6u16 {
            buf.push(Kept {
                seq,
                ts: 0,
                marker: false,
                payload: Bytes::new(),
            });
        }
        assert!(buf.get(1).is_none());
        assert_eq!(buf.get(5).map(|k| k.seq), Some(5));
    }
}
