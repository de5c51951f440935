//! Codec knowledge the SFU needs without decoding: where a video keyframe starts, and the VP8
//! picture numbering it rewrites across a layer switch.
//!
//! The SFU switches a subscriber between simulcast layers only at a keyframe, so it must
//! recognise the first packet of one. Each simulcast layer also numbers its pictures (VP8
//! `PictureID` and `TL0PICIDX`) on its own; a receiver that sees those numbers jump at a switch
//! may hold back the frames that follow (Chrome did, for seconds, in the browser tests), so
//! [`PictureRewriter`] keeps them continuous. Everything else about the payload is opaque.

use bytes::Bytes;

/// The video codecs the SFU negotiates with browsers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VideoCodec {
    /// VP8 (RFC 7741): every browser encodes it with simulcast.
    Vp8,
}

/// Whether `payload` is the first packet of a keyframe for `codec`.
///
/// A truncated or malformed payload is not a keyframe start.
pub fn is_keyframe_start(codec: VideoCodec, payload: &[u8]) -> bool {
    match codec {
        VideoCodec::Vp8 => vp8_keyframe_start(payload),
    }
}

/// RFC 7741 section 4.2: the payload descriptor, then (on the first packet of partition 0) the
/// VP8 payload header whose lowest bit P is 0 for a keyframe.
fn vp8_keyframe_start(payload: &[u8]) -> bool {
    let Some(&first) = payload.first() else {
        return false;
    };
    let extended = first & 0x80 != 0;
    let start_of_partition = first & 0x10 != 0;
    let partition_id = first & 0x07;
    if !start_of_partition || partition_id != 0 {
        return false;
    }

    // Skip the optional extension bytes of the descriptor.
    let mut index = 1;
    if extended {
        let Some(&ext) = payload.get(index) else {
            return false;
        };
        index += 1;
        let has_picture_id = ext & 0x80 != 0;
        let has_tl0_pic_idx = ext & 0x40 != 0;
        let has_tid_or_keyidx = ext & 0x30 != 0;
        if has_picture_id {
            let Some(&pid) = payload.get(index) else {
                return false;
            };
            index += if pid & 0x80 != 0 { 2 } else { 1 };
        }
        if has_tl0_pic_idx {
            index += 1;
        }
        if has_tid_or_keyidx {
            index += 1;
        }
    }
    payload.get(index).is_some_and(|header| header & 0x01 == 0)
}

/// Where the picture numbers sit in a VP8 payload descriptor (RFC 7741 section 4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vp8Numbers {
    /// `PictureID`, its offset in the payload, and whether it is 15 bits long (else 7).
    pub picture_id: Option<(u16, usize, bool)>,
    /// `TL0PICIDX` and its offset.
    pub tl0_pic_idx: Option<(u8, usize)>,
}

/// The picture numbers of a VP8 payload, if its descriptor carries any.
pub fn vp8_numbers(payload: &[u8]) -> Option<Vp8Numbers> {
    let first = *payload.first()?;
    if first & 0x80 == 0 {
        return None;
    }
    let ext = *payload.get(1)?;
    let mut index = 2;
    let mut numbers = Vp8Numbers {
        picture_id: None,
        tl0_pic_idx: None,
    };
    if ext & 0x80 != 0 {
        let high = *payload.get(index)?;
        if high & 0x80 != 0 {
            let low = *payload.get(index + 1)?;
            let id = (u16::from(high & 0x7f) << 8) | u16::from(low);
            numbers.picture_id = Some((id, index, true));
            index += 2;
        } else {
            numbers.picture_id = Some((u16::from(high), index, false));
            index += 1;
        }
    }
    if ext & 0x40 != 0 {
        numbers.tl0_pic_idx = Some((*payload.get(index)?, index));
    }
    Some(numbers)
}

/// Keeps one subscriber's VP8 picture numbers continuous across layer switches: at a switch,
/// the new layer's numbers are offset so that its keyframe follows the last picture sent.
#[derive(Debug, Clone, Default)]
pub struct PictureRewriter {
    /// Added to incoming `PictureID`s (modulo their width) and `TL0PICIDX`s.
    picture_offset: u16,
    tl0_offset: u8,
    /// The last numbers sent, as the receiver saw them.
    last_picture: Option<u16>,
    last_tl0: Option<u8>,
}

const PICTURE_ID_MOD: u16 = 1 << 15;

impl PictureRewriter {
    /// Start forwarding a new layer whose first (keyframe) packet carries `numbers`.
    pub fn switch(&mut self, numbers: Option<Vp8Numbers>) {
        let Some(numbers) = numbers else {
            return;
        };
        if let (Some((id, _, _)), Some(last)) = (numbers.picture_id, self.last_picture) {
            self.picture_offset = last.wrapping_add(1).wrapping_sub(id) % PICTURE_ID_MOD;
        }
        if let (Some((idx, _)), Some(last)) = (numbers.tl0_pic_idx, self.last_tl0) {
            self.tl0_offset = last.wrapping_add(1).wrapping_sub(idx);
        }
    }

    /// The payload to send for an incoming packet of the current layer: the same bytes when no
    /// number changes, else a copy with the numbers rewritten.
    pub fn rewrite(&mut self, payload: &Bytes, numbers: Option<Vp8Numbers>) -> Bytes {
        let Some(numbers) = numbers else {
            return payload.clone();
        };
        let picture = numbers.picture_id.map(|(id, at, long)| {
            let modulus = if long { PICTURE_ID_MOD } else { 128 };
            let out = id.wrapping_add(self.picture_offset) % modulus;
            (out, at, long)
        });
        let tl0 = numbers
            .tl0_pic_idx
            .map(|(idx, at)| (idx.wrapping_add(self.tl0_offset), at));
        if let Some((out, _, long)) = picture {
            // Remember the newest picture sent (15-bit serial order; 7-bit ids are widened).
            let newer = |a: u16, b: u16| {
                let d = a.wrapping_sub(b) % PICTURE_ID_MOD;
                d != 0 && d < PICTURE_ID_MOD / 2
            };
            let out15 = if long { out } else { out % 128 };
            if self.last_picture.is_none_or(|last| newer(out15, last)) {
                self.last_picture = Some(out15);
            }
        }
        if let Some((out, _)) = tl0
            && self
                .last_tl0
                .is_none_or(|last| out != last && out.wrapping_sub(last) < 128)
        {
            self.last_tl0 = Some(out);
        }
        let unchanged = self.picture_offset == 0 && self.tl0_offset == 0;
        if unchanged {
            return payload.clone();
        }
        let mut bytes = payload.to_vec();
        if let Some((out, at, long)) = picture {
            if long {
                bytes[at] = 0x80 | (out >> 8) as u8;
                bytes[at + 1] = (out & 0xff) as u8;
            } else {
                bytes[at] = (out & 0x7f) as u8;
            }
        }
        if let Some((out, at)) = tl0 {
            bytes[at] = out;
        }
        Bytes::from(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vp8_keyframe_with_extended_descriptor_is_found() {
        // X=1, S=1, PID=0; I=1 with a 15-bit picture id; then the payload header, P=0.
        let payload = [0x90, 0x80, 0x81, 0x23, 0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a];
        assert!(is_keyframe_start(VideoCodec::Vp8, &payload));
    }

    #[test]
    fn vp8_interframe_and_continuation_packets_are_not_keyframes() {
        // Same descriptor, P=1: an interframe.
        assert!(!is_keyframe_start(
            VideoCodec::Vp8,
            &[0x90, 0x80, 0x81, 0x23, 0x11]
        ));
        // S=0: a continuation packet of some frame.
        assert!(!is_keyframe_start(
            VideoCodec::Vp8,
            &[0x80, 0x80, 0x81, 0x23, 0x10]
        ));
        // Minimal descriptor without extension, keyframe.
        assert!(is_keyframe_start(VideoCodec::Vp8, &[0x10, 0x00]));
    }

    /// A VP8 descriptor with a 15-bit picture id and a TL0PICIDX (as Chrome sends), then `rest`.
    fn vp8(picture: u16, tl0: u8, rest: &[u8]) -> Bytes {
        let mut p = vec![
            0x90,
            0xe0,
            0x80 | (picture >> 8) as u8,
            picture as u8,
            tl0,
            0x00,
        ];
        p.extend_from_slice(rest);
        Bytes::from(p)
    }

    #[test]
    fn vp8_picture_numbers_are_found() {
        let payload = vp8(0x1234, 7, &[0x10]);
        let numbers = vp8_numbers(&payload).unwrap();
        assert_eq!(numbers.picture_id, Some((0x1234, 2, true)));
        assert_eq!(numbers.tl0_pic_idx, Some((7, 4)));
        // 7-bit picture id, no TL0PICIDX.
        let short = vp8_numbers(&[0x90, 0x80, 0x05, 0x10]).unwrap();
        assert_eq!(short.picture_id, Some((5, 2, false)));
        assert_eq!(short.tl0_pic_idx, None);
        assert_eq!(vp8_numbers(&[0x10, 0x00]), None, "no extension");
        assert_eq!(vp8_numbers(&[0x90, 0x80, 0x85]), None, "truncated");
    }

    #[test]
    fn picture_numbers_continue_across_a_layer_switch() {
        let mut rewriter = PictureRewriter::default();
        // The first layer goes out as it is.
        for (picture, tl0) in [(100, 10), (101, 10), (102, 11)] {
            let payload = vp8(picture, tl0, &[0xaa]);
            let out = rewriter.rewrite(&payload, vp8_numbers(&payload));
            assert_eq!(out, payload);
        }
        // A switch to a layer numbered from 32_760 (it wraps) and TL0PICIDX 250.
        let key = vp8(32_760, 250, &[0xbb]);
        rewriter.switch(vp8_numbers(&key));
        let mut seen = Vec::new();
        for (picture, tl0) in [(32_760, 250), (32_767, 250), (0, 251), (3, 251)] {
            let payload = vp8(picture, tl0, &[0xbb]);
            let out = rewriter.rewrite(&payload, vp8_numbers(&payload));
            let n = vp8_numbers(&out).unwrap();
            seen.push((n.picture_id.unwrap().0, n.tl0_pic_idx.unwrap().0));
            assert_eq!(
                out[6..],
                payload[6..],
                "the rest of the payload is untouched"
            );
        }
        assert_eq!(seen, vec![(103, 12), (110, 12), (111, 13), (114, 13)]);
        // And back to the first layer: its keyframe follows picture 114.
        let back = vp8(105, 12, &[0xcc]);
        rewriter.switch(vp8_numbers(&back));
        let out = rewriter.rewrite(&back, vp8_numbers(&back));
        let n = vp8_numbers(&out).unwrap();
        assert_eq!(
            (n.picture_id.unwrap().0, n.tl0_pic_idx.unwrap().0),
            (115, 14)
        );
    }

    #[test]
    fn truncated_vp8_payloads_are_not_keyframes() {
        assert!(!is_keyframe_start(VideoCodec::Vp8, &[]));
        assert!(!is_keyframe_start(VideoCodec::Vp8, &[0x90]));
        assert!(!is_keyframe_start(VideoCodec::Vp8, &[0x90, 0x80, 0x81]));
    }
}
