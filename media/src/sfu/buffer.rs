//! Per-stream retransmit buffer: the packets last sent to one subscriber, by the sequence
//! number that subscriber saw, so that its NACKs can be answered without asking the publisher.

use std::time::{Duration, Instant};

use super::OutPacket;

/// A fixed-size ring of recently sent packets, indexed by outgoing sequence number.
#[derive(Debug)]
pub struct RetransmitBuffer {
    slots: Vec<Option<Slot>>,
    mask: usize,
}

#[derive(Debug)]
struct Slot {
    packet: OutPacket,
    last_resent: Option<Instant>,
}

/// Why a NACKed packet could not be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    /// The packet is older than the buffer holds, or was never sent.
    Gone,
    /// It was resent less than `min_resend_interval` ago; resending again would only add load.
    TooSoon,
}

impl RetransmitBuffer {
    /// A buffer holding the last `capacity` packets; `capacity` is rounded up to a power of two.
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1).next_power_of_two();
        Self {
            slots: (0..capacity).map(|_| None).collect(),
            mask: capacity - 1,
        }
    }

    /// Remember a packet as sent.
    pub fn push(&mut self, packet: OutPacket) {
        let index = usize::from(packet.sequence_number) & self.mask;
        self.slots[index] = Some(Slot {
            packet,
            last_resent: None,
        });
    }

    /// The packet with outgoing sequence number `seq`, for a retransmission at `now`.
    pub fn resend(
        &mut self,
        now: Instant,
        seq: u16,
        min_resend_interval: Duration,
    ) -> Result<OutPacket, Miss> {
        let index = usize::from(seq) & self.mask;
        let slot = match &mut self.slots[index] {
            Some(slot) if slot.packet.sequence_number == seq => slot,
            _ => return Err(Miss::Gone),
        };
        if let Some(last) = slot.last_resent
            && now.saturating_duration_since(last) < min_resend_interval
        {
            return Err(Miss::TooSoon);
        }
        slot.last_resent = Some(now);
        Ok(slot.packet.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn packet(seq: u16) -> OutPacket {
        OutPacket {
            ssrc: 1,
            sequence_number: seq,
            timestamp: 0,
            marker: false,
            payload: Bytes::from_static(b"x"),
        }
    }

    #[test]
    fn nacked_packets_are_found_until_overwritten() {
        let now = Instant::now();
        let mut buffer = RetransmitBuffer::new(4);
        for seq in 10..14 {
            buffer.push(packet(seq));
        }
        assert_eq!(
            buffer
                .resend(now, 11, Duration::ZERO)
                .unwrap()
                .sequence_number,
            11
        );
        buffer.push(packet(15)); // overwrites 11's slot
        assert_eq!(
            buffer.resend(now, 11, Duration::ZERO).unwrap_err(),
            Miss::Gone
        );
        assert_eq!(
            buffer.resend(now, 99, Duration::ZERO).unwrap_err(),
            Miss::Gone
        );
    }

    #[test]
    fn a_packet_is_not_resent_twice_within_the_interval() {
        let now = Instant::now();
        let mut buffer = RetransmitBuffer::new(8);
        buffer.push(packet(65535));
        let interval = Duration::from_millis(100);
        assert!(buffer.resend(now, 65535, interval).is_ok());
        assert_eq!(
            buffer.resend(now, 65535, interval).unwrap_err(),
            Miss::TooSoon
        );
        assert!(buffer.resend(now + interval, 65535, interval).is_ok());
    }
}
