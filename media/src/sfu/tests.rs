//! Scenario tests of the SFU core under a virtual clock.

use super::*;

/// A virtual clock: starts at an arbitrary instant and only moves when told.
struct Clock(Instant);

impl Clock {
    fn new() -> Self {
        Self(Instant::now())
    }
    fn advance(&mut self, ms: u64) -> Instant {
        self.0 += Duration::from_millis(ms);
        self.0
    }
}

const KEY: &[u8] = &[0x10, 0x00, 0x9d, 0x01, 0x2a];
const DELTA: &[u8] = &[0x10, 0x01, 0x00];
const CONT: &[u8] = &[0x00, 0x55, 0x55];

fn video_spec() -> TrackSpec {
    TrackSpec {
        kind: Kind::Video(VideoCodec::Vp8),
        clock_rate: 90_000,
        layer_heights: vec![Some(180), Some(360), Some(720)],
    }
}

fn audio_spec() -> TrackSpec {
    TrackSpec {
        kind: Kind::Audio,
        clock_rate: 48_000,
        layer_heights: vec![],
    }
}

fn pkt(ssrc: u32, seq: u16, ts: u32, payload: &'static [u8]) -> InPacket {
    InPacket {
        ssrc,
        sequence_number: seq,
        timestamp: ts,
        marker: true,
        payload: Bytes::from_static(payload),
    }
}

fn drain(sfu: &mut Sfu) -> Vec<Output> {
    std::iter::from_fn(|| sfu.poll_output()).collect()
}

fn rtp_to(outputs: &[Output], to: DownId) -> Vec<OutPacket> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Rtp {
                down,
                packet,
                retransmission: false,
            } if *down == to => Some(packet.clone()),
            _ => None,
        })
        .collect()
}

/// Room "r" with publisher 1 (audio + 3-layer video) and subscriber 2.
fn call() -> (Sfu, Clock, TrackId, TrackId) {
    let mut sfu = Sfu::new(SfuConfig::default());
    sfu.join("r", 1).unwrap();
    sfu.join("r", 2).unwrap();
    let audio = sfu.publish(1, audio_spec()).unwrap();
    let video = sfu.publish(1, video_spec()).unwrap();
    (sfu, Clock::new(), audio, video)
}

/// Feed one video frame (one packet) per layer, 33 ms apart. Layer payloads are 100, 400 and
/// 1200 bytes: about 24, 96 and 290 kbit/s. Layer `l` of frame `f` has sequence number
/// `1000 * l + f` and timestamp `3000 * f`.
fn feed_frames(
    sfu: &mut Sfu,
    clock: &mut Clock,
    video: TrackId,
    frames: std::ops::Range<u16>,
    first_key: bool,
) {
    for f in frames.clone() {
        let now = clock.advance(33);
        for layer in 0..3usize {
            let head = if first_key && f == frames.start {
                KEY
            } else {
                DELTA
            };
            let mut payload = head.to_vec();
            payload.resize([100, 400, 1200][layer], 0);
            let base = 1000 * layer as u16;
            let packet = InPacket {
                payload: Bytes::from(payload),
                ..pkt(100 + layer as u32, base + f, 3000 * u32::from(f), DELTA)
            };
            sfu.handle_rtp(now, video, layer, packet);
        }
    }
}

#[test]
fn audio_flows_at_once_with_the_down_tracks_own_ssrc() {
    let (mut sfu, mut clock, audio, _video) = call();
    let downs = sfu
        .subscribe(clock.0, 2, 1, SubscribePrefs::default(), |t, _| {
            7000 + t.0 as u32
        })
        .unwrap();
    let audio_down = downs.iter().find(|(_, t, _)| *t == audio).unwrap().0;
    drain(&mut sfu);

    for i in 0..3u16 {
        let now = clock.advance(20);
        sfu.handle_rtp(now, audio, 0, pkt(55, 500 + i, 960 * u32::from(i), DELTA));
    }
    let sent = rtp_to(&drain(&mut sfu), audio_down);
    assert_eq!(sent.len(), 3);
    assert!(sent.iter().all(|p| p.ssrc == 7000 + audio.0 as u32));
    assert_eq!(
        sent.iter().map(|p| p.sequence_number).collect::<Vec<_>>(),
        vec![500, 501, 502]
    );
}

#[test]
fn video_starts_at_a_keyframe_of_the_chosen_layer() {
    let (mut sfu, mut clock, _audio, video) = call();
    let downs = sfu
        .subscribe(clock.0, 2, 1, SubscribePrefs::default(), |_, _| 9)
        .unwrap();
    let video_down = downs.iter().find(|(_, t, _)| *t == video).unwrap().0;

    // Before any media, a keyframe is requested for the layer chosen from the initial estimate.
    let out = drain(&mut sfu);
    assert!(
        out.contains(&Output::KeyframeRequest {
            track: video,
            layer: 1
        }),
        "{out:?}"
    );

    // Interframes are not forwarded; the keyframe and what follows is.
    feed_frames(&mut sfu, &mut clock, video, 0..3, false);
    assert!(rtp_to(&drain(&mut sfu), video_down).is_empty());
    let now = clock.advance(33);
    sfu.handle_rtp(now, video, 1, pkt(101, 1003, 9000, KEY));
    sfu.handle_rtp(now, video, 1, pkt(101, 1004, 9000, CONT));
    let out = drain(&mut sfu);
    assert!(out.contains(&Output::LayerSwitched {
        down: video_down,
        from: None,
        to: 1
    }));
    let sent = rtp_to(&out, video_down);
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].ssrc, 9);
}

#[test]
fn a_falling_estimate_moves_the_subscriber_down_without_a_gap() {
    let (mut sfu, mut clock, _audio, video) = call();
    let downs = sfu
        .subscribe(clock.0, 2, 1, SubscribePrefs::default(), |_, _| 9)
        .unwrap();
    let down = downs.iter().find(|(_, t, _)| *t == video).unwrap().0;
    sfu.set_estimate(down, 5_000_000);

    feed_frames(&mut sfu, &mut clock, video, 0..1, true);
    feed_frames(&mut sfu, &mut clock, video, 1..61, false);
    sfu.handle_timeout(clock.0);
    let before: Vec<OutPacket> = rtp_to(&drain(&mut sfu), down);
    assert!(!before.is_empty());
    let (layer, _) = sfu.down_state(down).unwrap();
    assert_eq!(
        layer,
        Some(1),
        "started on the layer chosen at subscribe time"
    );

    // The estimate collapses below layer 1's rate (no loss yet): target layer 0, keyframe
    // requested for it, layer 1 still flows until that keyframe arrives.
    sfu.set_estimate(down, 50_000);
    let now = clock.advance(300);
    sfu.handle_timeout(now);
    let out = drain(&mut sfu);
    assert!(
        out.contains(&Output::KeyframeRequest {
            track: video,
            layer: 0
        }),
        "{out:?}"
    );
    let now = clock.advance(33);
    sfu.handle_rtp(now, video, 1, pkt(101, 1061, 3000 * 61, DELTA));
    sfu.handle_rtp(now, video, 0, pkt(100, 61, 3000 * 61, KEY));
    sfu.handle_rtp(now, video, 1, pkt(101, 1062, 3000 * 62, DELTA));
    let now = clock.advance(33);
    sfu.handle_rtp(now, video, 0, pkt(100, 62, 3000 * 62, DELTA));
    let out = drain(&mut sfu);
    assert!(out.contains(&Output::LayerSwitched {
        down,
        from: Some(1),
        to: 0
    }));
    let after = rtp_to(&out, down);

    // One stream: same SSRC, sequence numbers consecutive across the switch, time moving on.
    let all: Vec<&OutPacket> = before.iter().chain(after.iter()).collect();
    assert!(all.iter().all(|p| p.ssrc == 9));
    for pair in all.windows(2) {
        assert_eq!(
            pair[1].sequence_number,
            pair[0].sequence_number.wrapping_add(1)
        );
        assert!(pair[1].timestamp.wrapping_sub(pair[0].timestamp) < 90_000);
    }
    assert_eq!(after.len(), 3, "layer 1 until the keyframe, then layer 0");
    assert_eq!(sfu.stats().layer_switches, 2);
}

#[test]
fn a_lossy_fall_stops_the_old_layer_at_once_and_forgets_it() {
    let (mut sfu, mut clock, _audio, video) = call();
    let downs = sfu
        .subscribe(clock.0, 2, 1, SubscribePrefs::default(), |_, _| 9)
        .unwrap();
    let down = downs.iter().find(|(_, t, _)| *t == video).unwrap().0;
    sfu.set_estimate(down, 5_000_000);

    feed_frames(&mut sfu, &mut clock, video, 0..1, true);
    feed_frames(&mut sfu, &mut clock, video, 1..61, false);
    sfu.handle_timeout(clock.0);
    let before: Vec<OutPacket> = rtp_to(&drain(&mut sfu), down);
    assert!(!before.is_empty());
    let (layer, _) = sfu.down_state(down).unwrap();
    assert_eq!(
        layer,
        Some(1),
        "started on the layer chosen at subscribe time"
    );

    // The estimate collapses below layer 1's rate and 30 % is lost: target layer 0, keyframe
    // requested for it, and layer 1 stops at once (the link is dropping it) until that keyframe
    // arrives.
    sfu.set_estimate(down, 50_000);
    sfu.set_loss(down, 0.3);
    let now = clock.advance(300);
    sfu.handle_timeout(now);
    let out = drain(&mut sfu);
    assert!(
        out.contains(&Output::KeyframeRequest {
            track: video,
            layer: 0
        }),
        "{out:?}"
    );
    let now = clock.advance(33);
    sfu.handle_rtp(now, video, 1, pkt(101, 1061, 3000 * 61, DELTA));
    sfu.handle_rtp(now, video, 0, pkt(100, 61, 3000 * 61, KEY));
    sfu.handle_rtp(now, video, 1, pkt(101, 1062, 3000 * 62, DELTA));
    let now = clock.advance(33);
    sfu.handle_rtp(now, video, 0, pkt(100, 62, 3000 * 62, DELTA));
    let out = drain(&mut sfu);
    assert!(out.contains(&Output::LayerSwitched {
        down,
        from: Some(1),
        to: 0
    }));
    let after = rtp_to(&out, down);

    // One stream: same SSRC, sequence numbers consecutive across the switch, time moving on.
    let all: Vec<&OutPacket> = before.iter().chain(after.iter()).collect();
    assert!(all.iter().all(|p| p.ssrc == 9));
    for pair in all.windows(2) {
        assert_eq!(
            pair[1].sequence_number,
            pair[0].sequence_number.wrapping_add(1)
        );
        assert!(pair[1].timestamp.wrapping_sub(pair[0].timestamp) < 90_000);
    }
    assert_eq!(
        after.len(),
        2,
        "nothing of layer 1, then layer 0 from its keyframe"
    );
    assert_eq!(after[0].payload, Bytes::from_static(KEY));
    assert_eq!(sfu.stats().layer_switches, 2);

    // NACKs for what was sent of layer 1 are no longer answered; those for layer 0 are.
    let old = before.last().unwrap().sequence_number;
    assert_eq!(sfu.handle_nack(clock.advance(10), down, &[old]), 1);
    assert_eq!(
        sfu.handle_nack(clock.0, down, &[after[1].sequence_number]),
        0
    );
}

#[test]
fn a_smaller_size_asked_for_switches_without_stopping_the_current_layer() {
    let (mut sfu, mut clock, _audio, video) = call();
    let downs = sfu
        .subscribe(clock.0, 2, 1, SubscribePrefs::default(), |_, _| 9)
        .unwrap();
    let down = downs.iter().find(|(_, t, _)| *t == video).unwrap().0;
    sfu.set_estimate(down, 5_000_000);
    feed_frames(&mut sfu, &mut clock, video, 0..1, true);
    feed_frames(&mut sfu, &mut clock, video, 1..10, false);
    drain(&mut sfu);

    // Not congestion: layer 1 goes on until layer 0's keyframe, so the picture never stops.
    sfu.set_max_height(clock.advance(10), down, Some(180));
    let now = clock.advance(33);
    sfu.handle_rtp(now, video, 1, pkt(101, 1010, 3000 * 10, DELTA));
    sfu.handle_rtp(now, video, 0, pkt(100, 10, 3000 * 10, KEY));
    let sent = rtp_to(&drain(&mut sfu), down);
    assert_eq!(sent.len(), 2, "layer 1's frame, then layer 0's keyframe");
    assert_eq!(sent[1].payload, Bytes::from_static(KEY));
}

#[test]
fn nacks_are_answered_from_the_retransmit_buffer() {
    let (mut sfu, mut clock, _audio, video) = call();
    let downs = sfu
        .subscribe(clock.0, 2, 1, SubscribePrefs::default(), |_, _| 9)
        .unwrap();
    let down = downs.iter().find(|(_, t, _)| *t == video).unwrap().0;
    feed_frames(&mut sfu, &mut clock, video, 0..10, true);
    let sent = rtp_to(&drain(&mut sfu), down);
    let lost = sent[4].sequence_number;

    let missed = sfu.handle_nack(clock.0, down, &[lost, lost.wrapping_add(500)]);
    assert_eq!(missed, 1, "one was never sent");
    let out = drain(&mut sfu);
    let resent: Vec<&OutPacket> = out
        .iter()
        .filter_map(|o| match o {
            Output::Rtp {
                packet,
                retransmission: true,
                ..
            } => Some(packet),
            _ => None,
        })
        .collect();
    assert_eq!(resent, vec![&sent[4]]);
    // An immediate repeat of the NACK is not answered twice.
    assert_eq!(sfu.handle_nack(clock.0, down, &[lost]), 1);
    assert_eq!(sfu.handle_nack(clock.advance(150), down, &[lost]), 0);
}

#[test]
fn keyframe_requests_are_rate_limited() {
    let (mut sfu, mut clock, _audio, video) = call();
    let downs = sfu
        .subscribe(clock.0, 2, 1, SubscribePrefs::default(), |_, _| 9)
        .unwrap();
    let down = downs.iter().find(|(_, t, _)| *t == video).unwrap().0;
    feed_frames(&mut sfu, &mut clock, video, 0..1, true);
    drain(&mut sfu);

    let requests = |out: Vec<Output>| {
        out.iter()
            .filter(|o| matches!(o, Output::KeyframeRequest { .. }))
            .count()
    };
    let start = clock.advance(600);
    for _ in 0..20 {
        sfu.handle_pli(clock.advance(10), down);
    }
    assert_eq!(
        requests(drain(&mut sfu)),
        1,
        "20 PLIs in 200 ms: one request"
    );
    clock.0 = start + Duration::from_millis(510);
    sfu.handle_pli(clock.0, down);
    assert_eq!(requests(drain(&mut sfu)), 1, "another after the interval");
    assert_eq!(sfu.stats().plis_received, 21);
}

#[test]
fn an_audio_only_subscriber_gets_no_video() {
    let (mut sfu, clock, audio, _video) = call();
    let prefs = SubscribePrefs {
        audio_only: true,
        max_height: None,
    };
    let downs = sfu.subscribe(clock.0, 2, 1, prefs, |_, _| 9).unwrap();
    assert_eq!(downs.len(), 1);
    assert_eq!(downs[0].1, audio);
    assert!(
        drain(&mut sfu).is_empty(),
        "no keyframe request for an audio-only subscriber"
    );
}

#[test]
fn a_small_window_gets_the_small_layer() {
    let (mut sfu, mut clock, _audio, video) = call();
    let prefs = SubscribePrefs {
        audio_only: false,
        max_height: Some(200),
    };
    let downs = sfu.subscribe(clock.0, 2, 1, prefs, |_, _| 9).unwrap();
    let down = downs.iter().find(|(_, t, _)| *t == video).unwrap().0;
    sfu.set_estimate(down, 50_000_000);
    feed_frames(&mut sfu, &mut clock, video, 0..5, true);
    let out = drain(&mut sfu);
    assert!(
        out.contains(&Output::LayerSwitched {
            down,
            from: None,
            to: 0
        }),
        "{out:?}"
    );
}

#[test]
fn leaving_removes_the_leavers_tracks_from_its_subscribers() {
    let (mut sfu, clock, _audio, _video) = call();
    let downs = sfu
        .subscribe(clock.0, 2, 1, SubscribePrefs::default(), |_, _| 9)
        .unwrap();
    drain(&mut sfu);
    sfu.leave(1);
    let removed: Vec<DownId> = drain(&mut sfu)
        .into_iter()
        .filter_map(|o| match o {
            Output::DownRemoved {
                down,
                subscriber: 2,
            } => Some(down),
            _ => None,
        })
        .collect();
    assert_eq!(removed.len(), downs.len());
    assert_eq!(sfu.track_count(), 0);
    assert_eq!(sfu.down_count(), 0);
    assert_eq!(sfu.room_members("r"), &[2]);
}

#[test]
fn subscribing_across_rooms_or_twice_joining_is_refused() {
    let (mut sfu, clock, _audio, _video) = call();
    sfu.join("other", 3).unwrap();
    let err = sfu
        .subscribe(clock.0, 3, 1, SubscribePrefs::default(), |_, _| 9)
        .unwrap_err();
    assert!(matches!(err, Error::UnknownPublisher { publisher: 1 }));
    assert!(matches!(
        sfu.join("r", 2),
        Err(Error::AlreadyJoined { participant: 2 })
    ));
    assert!(matches!(
        sfu.subscribe(clock.0, 99, 1, SubscribePrefs::default(), |_, _| 9),
        Err(Error::NotJoined { participant: 99 })
    ));
}

#[test]
fn a_paused_down_track_waits_and_resumes_with_a_keyframe() {
    let (mut sfu, mut clock, _audio, video) = call();
    let downs = sfu
        .subscribe(clock.0, 2, 1, SubscribePrefs::default(), |_, _| 9)
        .unwrap();
    let down = downs.iter().find(|(_, t, _)| *t == video).unwrap().0;
    sfu.set_paused(clock.0, down, true);
    drain(&mut sfu);

    // While paused, even keyframes are not forwarded and no switch happens.
    feed_frames(&mut sfu, &mut clock, video, 0..5, true);
    let out = drain(&mut sfu);
    assert!(rtp_to(&out, down).is_empty());
    assert_eq!(sfu.down_state(down).unwrap().0, None);

    // Resuming asks for a keyframe (the last request is long enough ago) and the next one
    // starts the stream.
    let now = clock.advance(600);
    sfu.set_paused(now, down, false);
    let out = drain(&mut sfu);
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::KeyframeRequest { .. })),
        "{out:?}"
    );
    feed_frames(&mut sfu, &mut clock, video, 5..8, true);
    assert_eq!(rtp_to(&drain(&mut sfu), down).len(), 3);
}

#[test]
fn track_demand_is_the_highest_layer_any_subscriber_can_use() {
    let (mut sfu, clock, audio, video) = call();
    assert_eq!(sfu.track_demand(video), None, "nobody subscribes yet");
    sfu.join("r", 3).unwrap();
    let small = SubscribePrefs {
        audio_only: false,
        max_height: Some(360),
    };
    sfu.subscribe(clock.0, 2, 1, small, |_, _| 7).unwrap();
    assert_eq!(sfu.track_demand(video), Some(1));
    assert_eq!(sfu.track_demand(audio), Some(0));
    sfu.subscribe(clock.0, 3, 1, SubscribePrefs::default(), |_, _| 9)
        .unwrap();
    assert_eq!(sfu.track_demand(video), Some(2));
}

#[test]
fn publisher_padding_is_not_forwarded_and_leaves_no_gap() {
    let (mut sfu, mut clock, _audio, video) = call();
    let downs = sfu
        .subscribe(clock.0, 2, 1, SubscribePrefs::default(), |_, _| 9)
        .unwrap();
    let down = downs.iter().find(|(_, t, _)| *t == video).unwrap().0;
    sfu.set_estimate(down, 5_000_000);
    feed_frames(&mut sfu, &mut clock, video, 0..3, true);
    let before = rtp_to(&drain(&mut sfu), down);
    assert_eq!(before.len(), 3, "layer 1, one packet per frame");

    // The browser probes its uplink with padding on layer 1 (sequence numbers 1003..1012).
    let now = clock.advance(5);
    for seq in 1003..1013 {
        sfu.handle_rtp(now, video, 1, pkt(101, seq, 3000 * 2, b""));
    }
    let now = clock.advance(28);
    sfu.handle_rtp(now, video, 1, pkt(101, 1013, 3000 * 3, DELTA));
    let after = rtp_to(&drain(&mut sfu), down);
    assert_eq!(after.len(), 1, "only the media packet");
    assert_eq!(
        after[0].sequence_number,
        before[2].sequence_number.wrapping_add(1),
        "no gap for the receiver to NACK"
    );
    assert_eq!(sfu.stats().padding_dropped, 10);
}

#[test]
fn a_lossy_link_falls_to_what_arrives_even_if_the_estimate_is_high() {
    let (mut sfu, mut clock, _audio, video) = call();
    let downs = sfu
        .subscribe(clock.0, 2, 1, SubscribePrefs::default(), |_, _| 9)
        .unwrap();
    let down = downs.iter().find(|(_, t, _)| *t == video).unwrap().0;
    // Layer rates here: about 24, 96 and 290 kbit/s. The estimate fits layer 2 comfortably.
    sfu.set_estimate(down, 400_000);
    feed_frames(&mut sfu, &mut clock, video, 0..1, true);
    for chunk in 0..20u16 {
        feed_frames(
            &mut sfu,
            &mut clock,
            video,
            1 + chunk * 10..11 + chunk * 10,
            false,
        );
        sfu.handle_timeout(clock.0);
    }
    feed_frames(&mut sfu, &mut clock, video, 201..202, true);
    drain(&mut sfu);
    assert_eq!(sfu.down_state(down).unwrap().0, Some(2));

    // 5 % loss is noise; 40 % means the link carries about 175 kbit/s of layer 2's 290.
    sfu.set_loss(down, 0.05);
    sfu.handle_timeout(clock.advance(300));
    assert_eq!(sfu.down_state(down).unwrap().0, Some(2));
    assert!(
        !drain(&mut sfu)
            .iter()
            .any(|o| matches!(o, Output::KeyframeRequest { .. }))
    );
    sfu.set_loss(down, 0.4);
    sfu.handle_timeout(clock.advance(300));
    let out = drain(&mut sfu);
    assert!(
        out.contains(&Output::KeyframeRequest {
            track: video,
            layer: 1
        }),
        "{out:?}"
    );
}
