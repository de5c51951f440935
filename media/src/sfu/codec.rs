//! Codec knowledge the SFU needs without decoding: where a video keyframe starts.
//!
//! The SFU switches a subscriber between simulcast layers only at a keyframe, so it must
//! recognise the first packet of one. Everything else about the payload is opaque.

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

    #[test]
    fn truncated_vp8_payloads_are_not_keyframes() {
        assert!(!is_keyframe_start(VideoCodec::Vp8, &[]));
        assert!(!is_keyframe_start(VideoCodec::Vp8, &[0x90]));
        assert!(!is_keyframe_start(VideoCodec::Vp8, &[0x90, 0x80, 0x81]));
    }
}
