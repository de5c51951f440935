//! The writer against a small EBML reader: synthetic VP8 and Opus RTP streams, with a loss and
//! a reordering, must give a file whose structure, blocks and times read back.

use super::*;

/// One parsed element: ID, and either its children or its payload.
#[derive(Debug)]
struct Element {
    id: u32,
    data: Vec<u8>,
    children: Vec<Element>,
}

const MASTERS: [u32; 8] = [
    id::EBML,
    id::SEGMENT,
    id::INFO,
    id::TRACKS,
    id::TRACK_ENTRY,
    id::VIDEO,
    id::AUDIO,
    id::CLUSTER,
];

fn read_id(data: &[u8], at: &mut usize) -> u32 {
    let first = data[*at];
    let len = first.leading_zeros() as usize + 1;
    assert!(len <= 4, "bad ID at {at}");
    let mut id = 0u32;
    for byte in &data[*at..*at + len] {
        id = (id << 8) | u32::from(*byte);
    }
    *at += len;
    id
}

/// A size, `None` for "unknown".
fn read_size(data: &[u8], at: &mut usize) -> Option<usize> {
    let first = data[*at];
    let len = first.leading_zeros() as usize + 1;
    assert!(len <= 8, "bad size at {at}");
    let mut value = u64::from(first) & ((1u64 << (8 - len)) - 1);
    let mut all_ones = value == (1u64 << (8 - len)) - 1;
    for byte in &data[*at + 1..*at + len] {
        value = (value << 8) | u64::from(*byte);
        all_ones &= *byte == 0xff;
    }
    *at += len;
    (!all_ones).then_some(value as usize)
}

/// Reads elements until `end` or until the next element's ID is in `stop`. An element of
/// unknown size (segment, cluster) holds what follows until another element of its own ID.
fn read_elements(data: &[u8], at: &mut usize, end: usize, stop: &[u32]) -> Vec<Element> {
    let mut elements = Vec::new();
    while *at < end {
        let mut peek = *at;
        let id = read_id(data, &mut peek);
        if stop.contains(&id) {
            break;
        }
        *at = peek;
        let size = read_size(data, at);
        let (children, payload) = match size {
            None => (read_elements(data, at, end, &[id]), Vec::new()),
            Some(size) => {
                let until = *at + size;
                assert!(until <= end, "element {id:x} overruns its parent");
                let parsed = if MASTERS.contains(&id) {
                    (read_elements(data, at, until, &[]), Vec::new())
                } else {
                    (Vec::new(), data[*at..until].to_vec())
                };
                *at = until;
                parsed
            }
        };
        elements.push(Element {
            id,
            data: payload,
            children,
        });
    }
    elements
}

fn uint(data: &[u8]) -> u64 {
    data.iter().fold(0, |v, b| (v << 8) | u64::from(*b))
}

fn find(elements: &[Element], id: u32) -> &Element {
    elements
        .iter()
        .find(|e| e.id == id)
        .unwrap_or_else(|| panic!("no element {id:x}"))
}

/// A VP8 frame of `len` bytes: a keyframe header with the size, or an inter frame.
fn vp8_frame(key: bool, n: u8, len: usize) -> Vec<u8> {
    let mut frame = vec![n; len];
    if key {
        frame[..10].copy_from_slice(&[0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01]);
    } else {
        frame[0] = 0x11;
    }
    frame
}

/// Splits a frame into RTP payloads with a descriptor carrying a 15-bit PictureID.
fn packetize(frame: &[u8], picture: u16, max: usize) -> Vec<(Vec<u8>, bool)> {
    let chunks: Vec<&[u8]> = frame.chunks(max).collect();
    let last = chunks.len() - 1;
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, chunk)| {
            let first = if i == 0 { 0x90 } else { 0x80 };
            let mut payload = vec![first, 0x80, 0x80 | (picture >> 8) as u8, picture as u8];
            payload.extend_from_slice(chunk);
            (payload, i == last)
        })
        .collect()
}

struct Packet {
    kind: TrackKind,
    at_ms: u64,
    seq: u16,
    timestamp: u32,
    marker: bool,
    payload: Vec<u8>,
}

/// 6 s of a 25 frames/s video (keyframe every 2 s, three packets a frame) and 20 ms Opus
/// frames, with RTP clocks starting near their wrap point.
fn stream() -> Vec<Packet> {
    let mut packets = Vec::new();
    let mut seq = 65_500u16;
    for frame in 0..150u32 {
        let at_ms = 100 + u64::from(frame) * 40;
        let timestamp = (u32::MAX - 90_000).wrapping_add(frame * 3600);
        let key = frame % 50 == 0;
        let data = vp8_frame(key, frame as u8, 2500);
        for (payload, marker) in packetize(&data, frame as u16, 1000) {
            packets.push(Packet {
                kind: TrackKind::Video,
                at_ms,
                seq,
                timestamp,
                marker,
                payload,
            });
            seq = seq.wrapping_add(1);
        }
    }
    for frame in 0..305u32 {
        packets.push(Packet {
            kind: TrackKind::Audio,
            at_ms: 90 + u64::from(frame) * 20,
            seq: 40_000u16.wrapping_add(frame as u16),
            timestamp: 7_000u32.wrapping_add(frame * 960),
            marker: false,
            payload: vec![0xfc, frame as u8, 1, 2, 3],
        });
    }
    packets.sort_by_key(|p| p.at_ms);
    packets
}

fn record(packets: &[Packet]) -> (Vec<u8>, Finished) {
    let mut recorder = Recorder::new(true, true, "huiyan-test");
    let mut file = Vec::new();
    for p in packets {
        recorder.push(
            p.kind,
            p.at_ms,
            RtpIn {
                seq: p.seq,
                timestamp: p.timestamp,
                marker: p.marker,
                payload: &p.payload,
            },
        );
        file.extend(recorder.take_output());
    }
    let finished = recorder.finish();
    file.extend_from_slice(&finished.tail);
    let (at, bytes) = finished.duration_patch.expect("something was written");
    file[at as usize..at as usize + 8].copy_from_slice(&bytes);
    (file, finished)
}

/// A block read back: track, absolute ms, keyframe flag, first payload byte, length.
type Block = (u64, i64, bool, u8, usize);

/// The top-level elements and every block.
fn blocks(file: &[u8]) -> (Vec<Element>, Vec<Block>) {
    let mut at = 0;
    let top = read_elements(file, &mut at, file.len(), &[]);
    let segment = find(&top, id::SEGMENT);
    let mut out = Vec::new();
    for cluster in segment.children.iter().filter(|e| e.id == id::CLUSTER) {
        let base = uint(&find(&cluster.children, id::TIMECODE).data) as i64;
        for block in cluster.children.iter().filter(|e| e.id == id::SIMPLE_BLOCK) {
            let mut p = 0;
            let track = read_size(&block.data, &mut p).unwrap() as u64;
            let rel = i16::from_be_bytes([block.data[p], block.data[p + 1]]);
            let flags = block.data[p + 2];
            let payload = &block.data[p + 3..];
            out.push((
                track,
                base + i64::from(rel),
                flags & 0x80 != 0,
                payload[0],
                payload.len(),
            ));
        }
    }
    (top, out)
}

#[test]
fn a_clean_stream_reads_back_with_its_header_tracks_and_times() {
    let (file, finished) = record(&stream());
    let (top, blocks) = blocks(&file);

    let header = find(&top, id::EBML);
    assert_eq!(find(&header.children, id::DOC_TYPE).data, b"webm");
    let segment = find(&top, id::SEGMENT);
    let info = find(&segment.children, id::INFO);
    assert_eq!(
        uint(&find(&info.children, id::TIMECODE_SCALE).data),
        1_000_000
    );
    let duration = f64::from_be_bytes(
        find(&info.children, id::DURATION).data[..]
            .try_into()
            .unwrap(),
    );
    assert_eq!(duration as u64, finished.duration_ms);
    assert!(
        (6_000..=6_100).contains(&finished.duration_ms),
        "{}",
        finished.duration_ms
    );

    let tracks = find(&segment.children, id::TRACKS);
    let entries: Vec<&Element> = tracks
        .children
        .iter()
        .filter(|e| e.id == id::TRACK_ENTRY)
        .collect();
    assert_eq!(entries.len(), 2);
    assert_eq!(find(&entries[0].children, id::CODEC_ID).data, b"V_VP8");
    let video = find(&entries[0].children, id::VIDEO);
    assert_eq!(uint(&find(&video.children, id::PIXEL_WIDTH).data), 640);
    assert_eq!(uint(&find(&video.children, id::PIXEL_HEIGHT).data), 360);
    assert_eq!(find(&entries[1].children, id::CODEC_ID).data, b"A_OPUS");
    assert_eq!(
        &find(&entries[1].children, id::CODEC_PRIVATE).data[..8],
        b"OpusHead"
    );

    // Every video frame, 40 ms apart from zero; the keyframes flagged.
    let video: Vec<_> = blocks.iter().filter(|b| b.0 == 1).collect();
    assert_eq!(video.len(), 150);
    for (n, block) in video.iter().enumerate() {
        assert_eq!(block.1, n as i64 * 40, "video frame {n}");
        assert_eq!(block.2, n % 50 == 0, "keyframe flag of frame {n}");
        assert_eq!(block.3, if n % 50 == 0 { 0x10 } else { 0x11 });
        assert_eq!(block.4, 2500);
    }
    // Audio from the keyframe on (the first frame came 10 ms before it), 20 ms apart.
    let audio: Vec<_> = blocks.iter().filter(|b| b.0 == 2).collect();
    assert_eq!(audio.len(), 304);
    for pair in audio.windows(2) {
        assert_eq!(pair[1].1 - pair[0].1, 20);
    }
    assert_eq!(audio[0].1, 10);
    assert_eq!(finished.stats.video_frames, 150);
    assert_eq!(finished.stats.audio_frames, 304);
    assert_eq!(finished.stats.bytes, file.len() as u64);

    // Blocks in time order; a cluster at each keyframe (0, 2, 4 s).
    assert!(blocks.windows(2).all(|w| w[0].1 <= w[1].1));
    assert_eq!(
        segment
            .children
            .iter()
            .filter(|e| e.id == id::CLUSTER)
            .count(),
        3
    );
}

#[test]
fn a_loss_drops_frames_until_the_next_keyframe_and_a_reordering_loses_nothing() {
    let mut packets = stream();
    let video_index = |packets: &[Packet], n: usize| {
        packets
            .iter()
            .enumerate()
            .filter(|(_, p)| p.kind == TrackKind::Video)
            .nth(n)
            .map(|(i, _)| i)
            .unwrap()
    };
    // Frame 10's packets arrive 2, 1, 3 (a reordering); frame 60's second packet is lost.
    let a = video_index(&packets, 30);
    let b = video_index(&packets, 31);
    packets.swap(a, b);
    let lost = video_index(&packets, 181);
    packets.remove(lost);
    // An audio packet arrives after the next one.
    let audio: Vec<usize> = packets
        .iter()
        .enumerate()
        .filter(|(_, p)| p.kind == TrackKind::Audio)
        .map(|(i, _)| i)
        .collect();
    packets.swap(audio[100], audio[101]);

    let (file, finished) = record(&packets);
    let (_, blocks) = blocks(&file);
    let video: Vec<i64> = blocks.iter().filter(|b| b.0 == 1).map(|b| b.1).collect();
    // Frames 60..=99 are gone (60 incomplete, the rest wait for the keyframe at 100).
    assert_eq!(video.len(), 110);
    assert!(video.contains(&(10 * 40)));
    assert!(!video.contains(&(60 * 40)));
    assert!(!video.contains(&(99 * 40)));
    assert!(video.contains(&(100 * 40)));
    assert_eq!(finished.stats.dropped_frames, 40 + 1);
    let audio = blocks.iter().filter(|b| b.0 == 2).count();
    assert_eq!(audio, 304);
}

#[test]
fn nothing_is_written_before_a_keyframe() {
    let mut recorder = Recorder::new(true, true, "huiyan-test");
    assert!(recorder.wants_keyframe());
    let frame = vp8_frame(false, 1, 100);
    for (i, (payload, marker)) in packetize(&frame, 1, 1000).into_iter().enumerate() {
        let packet = RtpIn {
            seq: i as u16,
            timestamp: 0,
            marker,
            payload: &payload,
        };
        recorder.push(TrackKind::Video, 0, packet);
    }
    recorder.push(
        TrackKind::Audio,
        0,
        RtpIn {
            seq: 1,
            timestamp: 0,
            marker: false,
            payload: &[1, 2],
        },
    );
    assert!(recorder.take_output().is_empty());
    let finished = recorder.finish();
    assert!(finished.is_empty());
}

#[test]
fn vp8_keyframe_sizes_come_from_the_frame_header() {
    assert_eq!(vp8_keyframe_size(&vp8_frame(true, 0, 20)), Some((640, 360)));
    assert_eq!(vp8_keyframe_size(&vp8_frame(false, 0, 20)), None);
    assert_eq!(vp8_keyframe_size(&[0x10, 0x02]), None);
}
