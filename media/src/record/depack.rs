//! From RTP packets to media frames: a small reorder buffer per track, the VP8 depacketizer
//! (RFC 7741) and the RTP clock of each track.

use std::collections::BTreeMap;

/// A packet held by the reorder buffer.
#[derive(Debug, Clone)]
pub(crate) struct Held {
    pub timestamp: u32,
    pub marker: bool,
    pub payload: Vec<u8>,
    pub arrival_ms: u64,
}

/// What the reorder buffer releases, in sequence order.
#[derive(Debug)]
pub(crate) enum Released {
    /// The next packet.
    Packet(Held),
    /// One or more packets are missing before the next one.
    Gap,
}

/// Puts one track's packets back in sequence order, waiting for at most `limit` packets
/// behind a hole before declaring it lost.
#[derive(Debug)]
pub(crate) struct Reorder {
    limit: usize,
    /// The extended sequence number of the highest packet seen.
    highest: Option<u64>,
    /// The extended sequence number expected next.
    next: Option<u64>,
    held: BTreeMap<u64, Held>,
}

impl Reorder {
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            highest: None,
            next: None,
            held: BTreeMap::new(),
        }
    }

    /// The sequence number extended to 64 bits, closest to the highest seen.
    fn extend(&mut self, seq: u16) -> u64 {
        let Some(highest) = self.highest else {
            // Start well above zero so that a packet just before the first does not underflow.
            let ext = (1u64 << 16) + u64::from(seq);
            self.highest = Some(ext);
            return ext;
        };
        let delta = i64::from(seq.wrapping_sub(highest as u16) as i16);
        let ext = (highest as i64 + delta).max(0) as u64;
        if ext > highest {
            self.highest = Some(ext);
        }
        ext
    }

    /// Takes a packet; appends whatever can now be released to `out`.
    pub fn push(&mut self, seq: u16, packet: Held, out: &mut Vec<Released>) {
        let ext = self.extend(seq);
        let next = *self.next.get_or_insert(ext);
        if ext < next || self.held.contains_key(&ext) {
            // Too late (already declared lost or released) or a duplicate.
            return;
        }
        self.held.insert(ext, packet);
        self.release(out);
    }

    fn release(&mut self, out: &mut Vec<Released>) {
        loop {
            let Some(next) = self.next else { return };
            if let Some(packet) = self.held.remove(&next) {
                out.push(Released::Packet(packet));
                self.next = Some(next + 1);
                continue;
            }
            if self.held.len() <= self.limit {
                return;
            }
            // Too many packets wait behind the hole: it is a loss.
            let Some((&first, _)) = self.held.first_key_value() else {
                return;
            };
            out.push(Released::Gap);
            self.next = Some(first);
        }
    }

    /// Releases everything still held, with gaps where packets are missing.
    pub fn drain(&mut self, out: &mut Vec<Released>) {
        while let Some((ext, packet)) = self.held.pop_first() {
            if self.next.is_some_and(|next| ext != next) {
                out.push(Released::Gap);
            }
            out.push(Released::Packet(packet));
            self.next = Some(ext + 1);
        }
    }
}

/// A complete frame of one track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Frame {
    pub timestamp: u32,
    pub arrival_ms: u64,
    pub keyframe: bool,
    pub data: Vec<u8>,
}

/// Where the VP8 payload starts after the RFC 7741 payload descriptor, with the descriptor's
/// S bit and partition index; `None` if the descriptor is truncated.
pub(crate) fn vp8_descriptor(payload: &[u8]) -> Option<(usize, bool, u8)> {
    let first = *payload.first()?;
    let start = first & 0x10 != 0;
    let partition = first & 0x07;
    let mut index = 1;
    if first & 0x80 != 0 {
        let ext = *payload.get(index)?;
        index += 1;
        if ext & 0x80 != 0 {
            let pid = *payload.get(index)?;
            index += if pid & 0x80 != 0 { 2 } else { 1 };
        }
        if ext & 0x40 != 0 {
            index += 1;
        }
        if ext & 0x30 != 0 {
            index += 1;
        }
    }
    (index <= payload.len()).then_some((index, start, partition))
}

/// The picture size in a VP8 keyframe's header (RFC 6386 section 9.1), if `frame` is one.
pub fn vp8_keyframe_size(frame: &[u8]) -> Option<(u16, u16)> {
    if frame.len() < 10 || frame[0] & 0x01 != 0 || frame[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let width = u16::from_le_bytes([frame[6], frame[7]]) & 0x3fff;
    let height = u16::from_le_bytes([frame[8], frame[9]]) & 0x3fff;
    (width > 0 && height > 0).then_some((width, height))
}

/// Assembles VP8 frames from packets in sequence order: a frame starts on a packet with S=1
/// and partition 0 and ends on the RTP marker bit. A frame with a missing packet is dropped,
/// and so is everything up to the next keyframe (later frames refer to the lost one).
#[derive(Debug, Default)]
pub(crate) struct Vp8Assembler {
    current: Option<Frame>,
    /// Set after a gap (and at the start): only a keyframe may come next.
    pub waiting_keyframe: bool,
    /// Frames dropped because of a gap or while waiting for a keyframe.
    pub dropped: u64,
}

impl Vp8Assembler {
    pub fn new() -> Self {
        Self {
            waiting_keyframe: true,
            ..Self::default()
        }
    }

    /// Takes the next released packet or gap; returns a complete frame, if any.
    pub fn push(&mut self, released: Released) -> Option<Frame> {
        let packet = match released {
            Released::Gap => {
                if self.current.take().is_some() {
                    self.dropped += 1;
                }
                self.waiting_keyframe = true;
                return None;
            }
            Released::Packet(packet) => packet,
        };
        let (offset, start, partition) = vp8_descriptor(&packet.payload)?;
        let body = &packet.payload[offset..];
        if start && partition == 0 {
            if self.current.take().is_some() {
                // The previous frame never saw its marker.
                self.dropped += 1;
            }
            self.current = Some(Frame {
                timestamp: packet.timestamp,
                arrival_ms: packet.arrival_ms,
                keyframe: body.first().is_some_and(|b| b & 0x01 == 0),
                data: body.to_vec(),
            });
        } else if let Some(frame) = self.current.as_mut() {
            if frame.timestamp != packet.timestamp {
                self.current = None;
                self.dropped += 1;
                return None;
            }
            frame.data.extend_from_slice(body);
        } else {
            return None;
        }
        if !packet.marker {
            return None;
        }
        let frame = self.current.take()?;
        if self.waiting_keyframe && !frame.keyframe {
            self.dropped += 1;
            return None;
        }
        self.waiting_keyframe = false;
        Some(frame)
    }
}

/// One track's RTP clock: unwraps 32-bit timestamps and places them on the recording's
/// millisecond timeline, anchored at the arrival time of the track's first frame.
#[derive(Debug)]
pub(crate) struct Clock {
    rate: i64,
    anchor: Option<(i64, i64)>,
    last: u32,
    extended: i64,
}

impl Clock {
    pub fn new(rate: u32) -> Self {
        Self {
            rate: i64::from(rate),
            anchor: None,
            last: 0,
            extended: 0,
        }
    }

    /// The frame's time in milliseconds on the recording's timeline (arrival clock).
    pub fn millis(&mut self, timestamp: u32, arrival_ms: u64) -> i64 {
        let Some((anchor_ts, anchor_ms)) = self.anchor else {
            self.anchor = Some((0, arrival_ms as i64));
            self.last = timestamp;
            self.extended = 0;
            return arrival_ms as i64;
        };
        self.extended += i64::from(timestamp.wrapping_sub(self.last) as i32);
        self.last = timestamp;
        anchor_ms + (self.extended - anchor_ts) * 1000 / self.rate
    }
}
