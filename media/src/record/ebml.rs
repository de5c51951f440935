//! EBML encoding (RFC 8794): element IDs, variable-length sizes and the few element types a
//! WebM file needs. Writing only; the tests carry their own small reader.

/// The size marker of an element whose size is not known when it is written (all ones in an
/// 8-byte size field): a live-style Segment or Cluster.
pub const UNKNOWN_SIZE: [u8; 8] = [0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];

/// Appends an element ID. IDs are written with their length marker included, as the
/// specifications list them (`0x1A45DFA3` is four bytes).
pub fn write_id(out: &mut Vec<u8>, id: u32) {
    let bytes = id.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count().min(3);
    out.extend_from_slice(&bytes[skip..]);
}

/// Appends `size` as an EBML variable-length integer in the fewest bytes (1 to 8). A value
/// whose bits are all ones at its length is reserved for "unknown", so it takes one byte more.
pub fn write_size(out: &mut Vec<u8>, size: u64) {
    let mut len = 1;
    while len < 8 && size >= (1u64 << (7 * len)) - 1 {
        len += 1;
    }
    write_size_len(out, size, len);
}

/// Appends `size` as an EBML variable-length integer of exactly `len` bytes (1 to 8); the
/// caller guarantees that it fits.
pub fn write_size_len(out: &mut Vec<u8>, size: u64, len: usize) {
    debug_assert!((1..=8).contains(&len));
    let marked = size | (1u64 << (7 * len));
    out.extend_from_slice(&marked.to_be_bytes()[8 - len..]);
}

/// Appends an unsigned integer element in the fewest bytes (at least one).
pub fn write_uint(out: &mut Vec<u8>, id: u32, value: u64) {
    let bytes = value.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count().min(7);
    write_id(out, id);
    write_size(out, (8 - skip) as u64);
    out.extend_from_slice(&bytes[skip..]);
}

/// Appends an 8-byte float element and returns the offset of its value in `out`, so that it
/// can be patched later (the Segment's duration).
pub fn write_float(out: &mut Vec<u8>, id: u32, value: f64) -> usize {
    write_id(out, id);
    write_size(out, 8);
    let at = out.len();
    out.extend_from_slice(&value.to_be_bytes());
    at
}

/// Appends a binary (or ASCII / UTF-8 string) element.
pub fn write_bytes(out: &mut Vec<u8>, id: u32, value: &[u8]) {
    write_id(out, id);
    write_size(out, value.len() as u64);
    out.extend_from_slice(value);
}

/// Appends a master element whose children are already encoded in `body`.
pub fn write_master(out: &mut Vec<u8>, id: u32, body: &[u8]) {
    write_bytes(out, id, body);
}

/// The element IDs used by the writer (Matroska / WebM specifications).
pub mod id {
    /// EBML header.
    pub const EBML: u32 = 0x1A45_DFA3;
    /// EBMLVersion.
    pub const EBML_VERSION: u32 = 0x4286;
    /// EBMLReadVersion.
    pub const EBML_READ_VERSION: u32 = 0x42F7;
    /// EBMLMaxIDLength.
    pub const EBML_MAX_ID_LENGTH: u32 = 0x42F2;
    /// EBMLMaxSizeLength.
    pub const EBML_MAX_SIZE_LENGTH: u32 = 0x42F3;
    /// DocType.
    pub const DOC_TYPE: u32 = 0x4282;
    /// DocTypeVersion.
    pub const DOC_TYPE_VERSION: u32 = 0x4287;
    /// DocTypeReadVersion.
    pub const DOC_TYPE_READ_VERSION: u32 = 0x4285;
    /// Segment.
    pub const SEGMENT: u32 = 0x1853_8067;
    /// Info.
    pub const INFO: u32 = 0x1549_A966;
    /// TimestampScale (nanoseconds per tick).
    pub const TIMECODE_SCALE: u32 = 0x2A_D7B1;
    /// Duration (float, in ticks).
    pub const DURATION: u32 = 0x4489;
    /// MuxingApp.
    pub const MUXING_APP: u32 = 0x4D80;
    /// WritingApp.
    pub const WRITING_APP: u32 = 0x5741;
    /// Tracks.
    pub const TRACKS: u32 = 0x1654_AE6B;
    /// TrackEntry.
    pub const TRACK_ENTRY: u32 = 0xAE;
    /// TrackNumber.
    pub const TRACK_NUMBER: u32 = 0xD7;
    /// TrackUID.
    pub const TRACK_UID: u32 = 0x73C5;
    /// TrackType (1 video, 2 audio).
    pub const TRACK_TYPE: u32 = 0x83;
    /// FlagLacing.
    pub const FLAG_LACING: u32 = 0x9C;
    /// CodecID.
    pub const CODEC_ID: u32 = 0x86;
    /// CodecPrivate.
    pub const CODEC_PRIVATE: u32 = 0x63A2;
    /// CodecDelay (nanoseconds).
    pub const CODEC_DELAY: u32 = 0x56AA;
    /// SeekPreRoll (nanoseconds).
    pub const SEEK_PRE_ROLL: u32 = 0x56BB;
    /// Video.
    pub const VIDEO: u32 = 0xE0;
    /// PixelWidth.
    pub const PIXEL_WIDTH: u32 = 0xB0;
    /// PixelHeight.
    pub const PIXEL_HEIGHT: u32 = 0xBA;
    /// Audio.
    pub const AUDIO: u32 = 0xE1;
    /// SamplingFrequency (float).
    pub const SAMPLING_FREQUENCY: u32 = 0xB5;
    /// Channels.
    pub const CHANNELS: u32 = 0x9F;
    /// Cluster.
    pub const CLUSTER: u32 = 0x1F43_B675;
    /// Timestamp (of a cluster).
    pub const TIMECODE: u32 = 0xE7;
    /// SimpleBlock.
    pub const SIMPLE_BLOCK: u32 = 0xA3;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(value: u64) -> Vec<u8> {
        let mut out = Vec::new();
        write_size(&mut out, value);
        out
    }

    #[test]
    fn sizes_take_the_fewest_bytes_and_avoid_the_unknown_marker() {
        assert_eq!(size(0), [0x80]);
        assert_eq!(size(1), [0x81]);
        assert_eq!(size(126), [0xfe]);
        // 127 in one byte would be 0xff, the "unknown" marker.
        assert_eq!(size(127), [0x40, 0x7f]);
        assert_eq!(size(300), [0x41, 0x2c]);
        assert_eq!(size(16_382), [0x7f, 0xfe]);
        assert_eq!(size(16_383), [0x20, 0x3f, 0xff]);
        assert_eq!(size(1 << 21), [0x10, 0x20, 0x00, 0x00]);
        assert_eq!(
            size((1 << 56) - 2),
            [0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe]
        );
    }

    #[test]
    fn fixed_length_sizes_pad_with_zeros() {
        let mut out = Vec::new();
        write_size_len(&mut out, 5, 4);
        assert_eq!(out, [0x10, 0x00, 0x00, 0x05]);
    }

    #[test]
    fn ids_keep_their_length_marker() {
        let mut out = Vec::new();
        write_id(&mut out, id::EBML);
        write_id(&mut out, id::TIMECODE_SCALE);
        write_id(&mut out, id::DOC_TYPE);
        write_id(&mut out, id::SIMPLE_BLOCK);
        assert_eq!(
            out,
            [0x1a, 0x45, 0xdf, 0xa3, 0x2a, 0xd7, 0xb1, 0x42, 0x82, 0xa3]
        );
    }

    #[test]
    fn unsigned_integers_are_minimal() {
        let mut out = Vec::new();
        write_uint(&mut out, id::TRACK_NUMBER, 0);
        write_uint(&mut out, id::TRACK_NUMBER, 1_000_000);
        assert_eq!(out, [0xd7, 0x81, 0x00, 0xd7, 0x83, 0x0f, 0x42, 0x40]);
    }
}
