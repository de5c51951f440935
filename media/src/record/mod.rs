//! Recording: a sans-IO WebM writer fed with the RTP packets the SFU receives.
//!
//! [`Recorder`] takes the publisher's original packets of one VP8 video track and one Opus
//! audio track (before the SFU rewrites anything), puts each track back in sequence order,
//! depacketizes VP8 (RFC 7741) and Opus (one packet is one frame), and writes a WebM file as it
//! goes: the EBML header, a Segment of unknown size (live-style, as browsers' own
//! `MediaRecorder` writes it), Info, Tracks, then Clusters of SimpleBlocks. The caller appends
//! [`Recorder::take_output`] to the file and, at the end, writes the duration into the place
//! [`Finished::duration_patch`] names (without it Chrome shows a live file's duration as
//! infinite). Memory is bounded by the reorder buffers and one frame per track.
//!
//! Timestamps come from the RTP timestamps (90 kHz video, 48 kHz audio), unwrapped; each track
//! is anchored at the arrival time of its first frame, and the file starts (time zero) at the
//! first video keyframe (or the first audio frame when no video is recorded). Audio before
//! that keyframe is dropped. After a lost video packet, frames are dropped until the next
//! keyframe; [`Recorder::wants_keyframe`] tells the caller to ask the publisher for one.
//!
//! What it leaves to others: files, tasks and which packets to record (the driver's recording
//! tap, `driver::record`), and where a finished file goes (the node).

mod depack;
pub mod ebml;

#[cfg(test)]
mod tests;

use depack::{Clock, Frame, Held, Released, Reorder, Vp8Assembler};
use ebml::id;

pub use depack::vp8_keyframe_size;

/// The track numbers in the file.
const VIDEO_TRACK: u64 = 1;
const AUDIO_TRACK: u64 = 2;

/// A cluster never spans more than this (ms); a new one also starts at every video keyframe.
pub const MAX_CLUSTER_MS: i64 = 5_000;

/// Packets held behind a hole before it is declared lost: about 150 ms of video at 1 Mbit/s,
/// 100 ms of audio.
const VIDEO_REORDER: usize = 16;
const AUDIO_REORDER: usize = 5;

/// Which of the two tracks a packet belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackKind {
    /// VP8 video, 90 kHz RTP clock.
    Video,
    /// Opus audio, 48 kHz RTP clock.
    Audio,
}

/// One received RTP packet, as the publisher sent it.
#[derive(Debug, Clone, Copy)]
pub struct RtpIn<'a> {
    /// The RTP sequence number.
    pub seq: u16,
    /// The RTP timestamp.
    pub timestamp: u32,
    /// The RTP marker bit (end of a video frame).
    pub marker: bool,
    /// The RTP payload (without header, extensions or padding).
    pub payload: &'a [u8],
}

/// Counters of one recording.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordStats {
    /// Video frames written.
    pub video_frames: u64,
    /// Audio frames written.
    pub audio_frames: u64,
    /// Frames dropped: incomplete, waiting for a keyframe, or before the file started.
    pub dropped_frames: u64,
    /// Bytes produced so far.
    pub bytes: u64,
}

/// The end of a recording.
#[derive(Debug, Clone)]
pub struct Finished {
    /// The last bytes to append to the file.
    pub tail: Vec<u8>,
    /// Where (file offset) to write which 8 bytes: the Segment's duration. `None` if nothing
    /// was written at all.
    pub duration_patch: Option<(u64, [u8; 8])>,
    /// The time from the first to the last frame, in milliseconds.
    pub duration_ms: u64,
    /// The counters.
    pub stats: RecordStats,
}

impl Finished {
    /// Whether the file holds anything playable.
    pub fn is_empty(&self) -> bool {
        self.duration_patch.is_none()
    }
}

/// A WebM file being written from RTP packets. See the module documentation.
#[derive(Debug)]
pub struct Recorder {
    has_video: bool,
    has_audio: bool,
    app: String,
    video_order: Reorder,
    audio_order: Reorder,
    vp8: Vp8Assembler,
    video_clock: Clock,
    audio_clock: Clock,
    released: Vec<Released>,
    /// Bytes not yet taken by the caller.
    out: Vec<u8>,
    /// Bytes already taken by the caller.
    taken: u64,
    stats: RecordStats,
    /// Set once the header is written: the file's time zero on the arrival timeline (ms).
    zero_ms: Option<i64>,
    duration_offset: u64,
    cluster_start: Option<i64>,
    last_block: i64,
}

impl Recorder {
    /// A recorder for a publisher with these tracks; `app` names the writing application in
    /// the file.
    pub fn new(has_video: bool, has_audio: bool, app: &str) -> Self {
        Self {
            has_video,
            has_audio,
            app: app.to_owned(),
            video_order: Reorder::new(VIDEO_REORDER),
            audio_order: Reorder::new(AUDIO_REORDER),
            vp8: Vp8Assembler::new(),
            video_clock: Clock::new(90_000),
            audio_clock: Clock::new(48_000),
            released: Vec::new(),
            out: Vec::new(),
            taken: 0,
            stats: RecordStats::default(),
            zero_ms: None,
            duration_offset: 0,
            cluster_start: None,
            last_block: 0,
        }
    }

    /// Takes one packet of `kind` that arrived at `now_ms` (milliseconds on any clock that
    /// does not go back, the same for both tracks).
    pub fn push(&mut self, kind: TrackKind, now_ms: u64, packet: RtpIn<'_>) {
        let held = Held {
            timestamp: packet.timestamp,
            marker: packet.marker,
            payload: packet.payload.to_vec(),
            arrival_ms: now_ms,
        };
        let mut released = std::mem::take(&mut self.released);
        match kind {
            TrackKind::Video if self.has_video => {
                self.video_order.push(packet.seq, held, &mut released);
                self.video_released(&mut released);
            }
            TrackKind::Audio if self.has_audio => {
                self.audio_order.push(packet.seq, held, &mut released);
                self.audio_released(&mut released);
            }
            _ => {}
        }
        self.released = released;
    }

    fn video_released(&mut self, released: &mut Vec<Released>) {
        for item in released.drain(..) {
            let dropped_before = self.vp8.dropped;
            let frame = self.vp8.push(item);
            self.stats.dropped_frames += self.vp8.dropped - dropped_before;
            if let Some(frame) = frame {
                self.write_frame(TrackKind::Video, frame);
            }
        }
    }

    fn audio_released(&mut self, released: &mut Vec<Released>) {
        for item in released.drain(..) {
            if let Released::Packet(packet) = item
                && !packet.payload.is_empty()
            {
                let frame = Frame {
                    timestamp: packet.timestamp,
                    arrival_ms: packet.arrival_ms,
                    keyframe: true,
                    data: packet.payload,
                };
                self.write_frame(TrackKind::Audio, frame);
            }
        }
    }

    /// Whether the publisher should be asked for a keyframe: video is recorded and none has
    /// come yet, or frames are dropped since a loss until the next one.
    pub fn wants_keyframe(&self) -> bool {
        self.has_video && (self.zero_ms.is_none() || self.vp8.waiting_keyframe)
    }

    /// The bytes written since the last call, to append to the file.
    pub fn take_output(&mut self) -> Vec<u8> {
        self.taken += self.out.len() as u64;
        std::mem::take(&mut self.out)
    }

    /// The counters so far.
    pub fn stats(&self) -> RecordStats {
        RecordStats {
            bytes: self.taken + self.out.len() as u64,
            ..self.stats
        }
    }

    /// Ends the recording: releases what the reorder buffers still hold.
    pub fn finish(mut self) -> Finished {
        let mut released = std::mem::take(&mut self.released);
        self.video_order.drain(&mut released);
        self.video_released(&mut released);
        self.audio_order.drain(&mut released);
        self.audio_released(&mut released);
        let duration_ms = if self.zero_ms.is_some() {
            self.last_block.max(0) as u64
        } else {
            0
        };
        let duration_patch = self
            .zero_ms
            .map(|_| (self.duration_offset, (duration_ms as f64).to_be_bytes()));
        let stats = self.stats();
        Finished {
            tail: std::mem::take(&mut self.out),
            duration_patch,
            duration_ms,
            stats,
        }
    }

    fn write_frame(&mut self, kind: TrackKind, frame: Frame) {
        let ms = match kind {
            TrackKind::Video => self.video_clock.millis(frame.timestamp, frame.arrival_ms),
            TrackKind::Audio => self.audio_clock.millis(frame.timestamp, frame.arrival_ms),
        };

        // The file starts at the first video keyframe (or the first audio frame).
        let zero = match self.zero_ms {
            Some(zero) => zero,
            None => {
                let size = if self.has_video {
                    match (kind, vp8_keyframe_size(&frame.data)) {
                        (TrackKind::Video, Some(size)) => Some(size),
                        _ => {
                            self.stats.dropped_frames += 1;
                            return;
                        }
                    }
                } else {
                    None
                };
                self.write_header(size);
                self.zero_ms = Some(ms);
                ms
            }
        };
        if ms < zero {
            self.stats.dropped_frames += 1;
            return;
        }

        // Blocks stay in time order across both tracks: a frame a little late is written at
        // the time of the last block.
        let time = (ms - zero).max(self.last_block);
        let new_cluster = match self.cluster_start {
            None => true,
            Some(start) => {
                (kind == TrackKind::Video && frame.keyframe) || time - start > MAX_CLUSTER_MS
            }
        };
        if new_cluster {
            ebml::write_id(&mut self.out, id::CLUSTER);
            self.out.extend_from_slice(&ebml::UNKNOWN_SIZE);
            ebml::write_uint(&mut self.out, id::TIMECODE, time as u64);
            self.cluster_start = Some(time);
        }
        let relative = (time - self.cluster_start.unwrap_or(time)) as i16;
        let track = match kind {
            TrackKind::Video => VIDEO_TRACK,
            TrackKind::Audio => AUDIO_TRACK,
        };
        let flags = if frame.keyframe { 0x80 } else { 0x00 };
        ebml::write_id(&mut self.out, id::SIMPLE_BLOCK);
        ebml::write_size(&mut self.out, 4 + frame.data.len() as u64);
        ebml::write_size(&mut self.out, track);
        self.out.extend_from_slice(&relative.to_be_bytes());
        self.out.push(flags);
        self.out.extend_from_slice(&frame.data);
        self.last_block = time;
        match kind {
            TrackKind::Video => self.stats.video_frames += 1,
            TrackKind::Audio => self.stats.audio_frames += 1,
        }
    }

    /// Writes the EBML header, the start of the Segment, Info and Tracks.
    fn write_header(&mut self, video_size: Option<(u16, u16)>) {
        let mut header = Vec::new();
        ebml::write_uint(&mut header, id::EBML_VERSION, 1);
        ebml::write_uint(&mut header, id::EBML_READ_VERSION, 1);
        ebml::write_uint(&mut header, id::EBML_MAX_ID_LENGTH, 4);
        ebml::write_uint(&mut header, id::EBML_MAX_SIZE_LENGTH, 8);
        ebml::write_bytes(&mut header, id::DOC_TYPE, b"webm");
        ebml::write_uint(&mut header, id::DOC_TYPE_VERSION, 4);
        ebml::write_uint(&mut header, id::DOC_TYPE_READ_VERSION, 2);
        ebml::write_master(&mut self.out, id::EBML, &header);

        ebml::write_id(&mut self.out, id::SEGMENT);
        self.out.extend_from_slice(&ebml::UNKNOWN_SIZE);

        // Info, with a duration patched in at the end.
        let mut info = Vec::new();
        ebml::write_uint(&mut info, id::TIMECODE_SCALE, 1_000_000);
        ebml::write_bytes(&mut info, id::MUXING_APP, self.app.as_bytes());
        ebml::write_bytes(&mut info, id::WRITING_APP, self.app.as_bytes());
        let duration_at = ebml::write_float(&mut info, id::DURATION, 0.0);
        ebml::write_id(&mut self.out, id::INFO);
        ebml::write_size(&mut self.out, info.len() as u64);
        self.duration_offset = self.taken + (self.out.len() + duration_at) as u64;
        self.out.extend_from_slice(&info);

        let mut tracks = Vec::new();
        if let Some((width, height)) = video_size {
            let mut video = Vec::new();
            ebml::write_uint(&mut video, id::PIXEL_WIDTH, u64::from(width));
            ebml::write_uint(&mut video, id::PIXEL_HEIGHT, u64::from(height));
            let mut entry = Vec::new();
            ebml::write_uint(&mut entry, id::TRACK_NUMBER, VIDEO_TRACK);
            ebml::write_uint(&mut entry, id::TRACK_UID, VIDEO_TRACK);
            ebml::write_uint(&mut entry, id::TRACK_TYPE, 1);
            ebml::write_uint(&mut entry, id::FLAG_LACING, 0);
            ebml::write_bytes(&mut entry, id::CODEC_ID, b"V_VP8");
            ebml::write_master(&mut entry, id::VIDEO, &video);
            ebml::write_master(&mut tracks, id::TRACK_ENTRY, &entry);
        }
        if self.has_audio {
            let mut audio = Vec::new();
            ebml::write_float(&mut audio, id::SAMPLING_FREQUENCY, 48_000.0);
            ebml::write_uint(&mut audio, id::CHANNELS, 2);
            let mut entry = Vec::new();
            ebml::write_uint(&mut entry, id::TRACK_NUMBER, AUDIO_TRACK);
            ebml::write_uint(&mut entry, id::TRACK_UID, AUDIO_TRACK);
            ebml::write_uint(&mut entry, id::TRACK_TYPE, 2);
            ebml::write_uint(&mut entry, id::FLAG_LACING, 0);
            ebml::write_bytes(&mut entry, id::CODEC_ID, b"A_OPUS");
            ebml::write_bytes(&mut entry, id::CODEC_PRIVATE, &OPUS_HEAD);
            // 80 ms of pre-roll after a seek, as the WebM guidelines for Opus ask.
            ebml::write_uint(&mut entry, id::SEEK_PRE_ROLL, 80_000_000);
            ebml::write_master(&mut entry, id::AUDIO, &audio);
            ebml::write_master(&mut tracks, id::TRACK_ENTRY, &entry);
        }
        ebml::write_master(&mut self.out, id::TRACKS, &tracks);
    }
}

/// The Opus identification header (RFC 7845 section 5.1): version 1, 2 channels, no pre-skip
/// (the recording starts in the middle of the publisher's stream), 48 kHz, no gain, mapping
/// family 0.
const OPUS_HEAD: [u8; 19] = [
    b'O', b'p', b'u', b's', b'H', b'e', b'a', b'd', 1, 2, 0, 0, 0x80, 0xbb, 0, 0, 0, 0, 0,
];
