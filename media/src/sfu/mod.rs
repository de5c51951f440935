//! The sans-IO selective forwarding unit: who publishes what in which room, who receives it,
//! which simulcast layer each subscriber gets, and the packets to send because of it.
//!
//! The core never touches a socket or a clock. The driver (`crate::driver`) feeds it received
//! RTP and RTCP with the time they arrived, bandwidth estimates and subscription changes, then
//! drains [`Output`]s and sleeps until [`Sfu::poll_timeout`]. Tests drive it with a virtual clock.
//!
//! Forwarding never decodes media: it rewrites SSRC, sequence number and timestamp (see
//! [`rewrite`]), keeps each outgoing stream's recent packets to answer NACKs (see [`buffer`]),
//! and switches layers only at a keyframe, asking the publisher for one at a bounded rate.

pub mod buffer;
pub mod codec;
pub mod layer;
pub mod rewrite;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use buffer::{Miss, RetransmitBuffer};
use codec::VideoCodec;
use layer::{LayerChooser, LayerPolicy, LayerView, RateMeter};
use rewrite::Rewriter;

use crate::Error;

/// A participant of a room, as numbered by the driver.
pub type ParticipantId = u64;

/// A published track, numbered by the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrackId(pub u64);

/// One outgoing stream to one subscriber ("down track"), numbered by the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DownId(pub u64);

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Audio: one layer, forwarded as is.
    Audio,
    /// Video: one layer or a simulcast of up to three.
    Video(VideoCodec),
}

/// A track as the publisher announced it.
#[derive(Debug, Clone)]
pub struct TrackSpec {
    /// Audio or video, with the codec.
    pub kind: Kind,
    /// RTP clock rate in Hz (90 000 for video, 48 000 for Opus).
    pub clock_rate: u32,
    /// Frame heights of the simulcast layers, lowest first; one entry (or none) without simulcast.
    pub layer_heights: Vec<Option<u32>>,
}

/// What a subscriber asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubscribePrefs {
    /// Receive audio only: for thin links and for phones that hide the video.
    pub audio_only: bool,
    /// The largest frame height worth sending to this subscriber, in pixels.
    pub max_height: Option<u32>,
}

/// An RTP packet as the SFU sees it: header fields it rewrites, and an opaque payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InPacket {
    /// Incoming SSRC (identifies the layer to the driver; kept for logs).
    pub ssrc: u32,
    /// Incoming sequence number.
    pub sequence_number: u16,
    /// Incoming RTP timestamp.
    pub timestamp: u32,
    /// Marker bit: end of a video frame.
    pub marker: bool,
    /// Payload, shared by every subscriber it is forwarded to.
    pub payload: Bytes,
}

/// An RTP packet to send to one subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutPacket {
    /// The down track's own SSRC.
    pub ssrc: u32,
    /// Rewritten sequence number.
    pub sequence_number: u16,
    /// Rewritten timestamp.
    pub timestamp: u32,
    /// Marker bit, unchanged.
    pub marker: bool,
    /// Payload, unchanged.
    pub payload: Bytes,
}

/// What the driver must do because of the inputs it gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send an RTP packet on a down track.
    Rtp {
        /// Where to send it.
        down: DownId,
        /// The packet, already rewritten.
        packet: OutPacket,
        /// Whether it answers a NACK.
        retransmission: bool,
    },
    /// Ask the publisher for a keyframe (PLI) on one layer of a track.
    KeyframeRequest {
        /// The publisher's track.
        track: TrackId,
        /// The layer index, lowest quality first.
        layer: usize,
    },
    /// A down track now carries another layer (for metrics and the quality indicator).
    LayerSwitched {
        /// The down track.
        down: DownId,
        /// Layer before, if any.
        from: Option<usize>,
        /// Layer now.
        to: usize,
    },
    /// A down track is gone because its track or its subscriber left.
    DownRemoved {
        /// The down track.
        down: DownId,
        /// Its subscriber.
        subscriber: ParticipantId,
    },
}

/// Bitrates browsers aim for per simulcast layer (quarter, half, full size of 720p), used
/// until a layer has been measured.
const NOMINAL_LAYER_BPS: [u64; 3] = [150_000, 500_000, 1_500_000];

/// Tuning of the core. Defaults are documented per field.
#[derive(Debug, Clone, Copy)]
pub struct SfuConfig {
    /// Layer selection policy; see [`LayerPolicy`].
    pub layers: LayerPolicy,
    /// Minimum time between two keyframe requests for one layer. Default 500 ms: a keyframe is
    /// 5-10 times an interframe, and a burst of them is what congests a thin uplink.
    pub keyframe_interval: Duration,
    /// Packets kept per down track to answer NACKs. Default 1024: about 1 s of 720p video,
    /// longer than any round trip we expect.
    pub retransmit_capacity: usize,
    /// Minimum time before the same packet is resent again. Default 100 ms (about one RTT).
    pub resend_interval: Duration,
    /// How often layer choices are reviewed. Default 250 ms.
    pub review_interval: Duration,
    /// A layer with no packet for this long counts as stopped. Default 1 s: browsers pause
    /// upper layers when their uplink shrinks.
    pub layer_timeout: Duration,
    /// Loss (fraction of packets sent) above which a subscriber's link counts as full: the
    /// layer it gets must fit what arrives. Default 0.1, where GCC's own loss controller starts
    /// to back off; below it, loss is taken as noise of a wireless link.
    pub congested_loss: f64,
}

impl Default for SfuConfig {
    fn default() -> Self {
        Self {
            layers: LayerPolicy::default(),
            keyframe_interval: Duration::from_millis(500),
            retransmit_capacity: 1024,
            resend_interval: Duration::from_millis(100),
            review_interval: Duration::from_millis(250),
            layer_timeout: Duration::from_secs(1),
            congested_loss: 0.1,
        }
    }
}

/// Counters the driver exports on `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SfuStats {
    /// RTP packets sent to subscribers (not counting retransmissions).
    pub forwarded_packets: u64,
    /// Payload bytes of those packets.
    pub forwarded_bytes: u64,
    /// Sequence numbers NACKed by subscribers.
    pub nacks_received: u64,
    /// Of those, answered from a retransmit buffer.
    pub nacks_answered: u64,
    /// PLIs received from subscribers.
    pub plis_received: u64,
    /// Keyframe requests sent to publishers (after rate limiting).
    pub keyframe_requests_sent: u64,
    /// Layer switches of down tracks.
    pub layer_switches: u64,
    /// Padding-only packets from publishers, not forwarded.
    pub padding_dropped: u64,
}

#[derive(Debug)]
struct Track {
    publisher: ParticipantId,
    spec: TrackSpec,
    layers: Vec<Layer>,
    downs: Vec<DownId>,
}

#[derive(Debug, Default)]
struct Layer {
    meter: RateMeter,
    last_keyframe_request: Option<Instant>,
}

#[derive(Debug)]
struct Down {
    subscriber: ParticipantId,
    track: TrackId,
    ssrc: u32,
    prefs: SubscribePrefs,
    estimate_bps: Option<u64>,
    /// Fraction of the packets sent to the subscriber that were lost, as its estimator smooths
    /// it.
    loss: f64,
    /// Nothing is forwarded while paused (the subscriber's connection is not up).
    paused: bool,
    current: Option<usize>,
    target: Option<usize>,
    /// The current layer no longer fits the subscriber's link, which is losing packets: forward
    /// nothing of it while waiting for the keyframe of the lower target, instead of deepening
    /// the congestion.
    draining: bool,
    /// NACKs for outgoing sequence numbers before this one are not answered: they belong to a
    /// layer the subscriber left (the new one began with a keyframe), and resending them
    /// would only congest a link that just proved too thin.
    nack_floor: Option<u16>,
    chooser: LayerChooser,
    rewriter: Rewriter,
    /// VP8 picture numbering, continuous across layer switches.
    pictures: codec::PictureRewriter,
    buffer: RetransmitBuffer,
}

#[derive(Debug, Default)]
struct Participant {
    room: String,
    tracks: Vec<TrackId>,
    downs: Vec<DownId>,
}

/// The routing table and forwarding state of one node.
#[derive(Debug)]
pub struct Sfu {
    config: SfuConfig,
    participants: HashMap<ParticipantId, Participant>,
    rooms: BTreeMap<String, Vec<ParticipantId>>,
    tracks: HashMap<TrackId, Track>,
    downs: HashMap<DownId, Down>,
    next_id: u64,
    next_review: Option<Instant>,
    outputs: VecDeque<Output>,
    stats: SfuStats,
}

impl Sfu {
    /// An empty SFU.
    pub fn new(config: SfuConfig) -> Self {
        Self {
            config,
            participants: HashMap::new(),
            rooms: BTreeMap::new(),
            tracks: HashMap::new(),
            downs: HashMap::new(),
            next_id: 1,
            next_review: None,
            outputs: VecDeque::new(),
            stats: SfuStats::default(),
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> SfuStats {
        self.stats
    }

    /// Number of published tracks.
    pub fn track_count(&self) -> usize {
        self.tracks.len()
    }

    /// Number of down tracks.
    pub fn down_count(&self) -> usize {
        self.downs.len()
    }

    /// The participants of `room`, in join order.
    pub fn room_members(&self, room: &str) -> &[ParticipantId] {
        self.rooms.get(room).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The tracks a participant publishes.
    pub fn tracks_of(&self, participant: ParticipantId) -> Vec<(TrackId, Kind)> {
        self.participants
            .get(&participant)
            .map(|p| {
                p.tracks
                    .iter()
                    .map(|t| (*t, self.tracks[t].spec.kind))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The layer a down track carries now, and the subscriber's estimate.
    pub fn down_state(&self, down: DownId) -> Option<(Option<usize>, Option<u64>)> {
        self.downs.get(&down).map(|d| (d.current, d.estimate_bps))
    }

    fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Add a participant to a room. Room policy (kind, limit, permissions) is checked by the
    /// caller before this; the core only routes.
    pub fn join(&mut self, room: &str, participant: ParticipantId) -> Result<(), Error> {
        if self.participants.contains_key(&participant) {
            return Err(Error::AlreadyJoined { participant });
        }
        self.participants.insert(
            participant,
            Participant {
                room: room.to_owned(),
                ..Participant::default()
            },
        );
        self.rooms
            .entry(room.to_owned())
            .or_default()
            .push(participant);
        Ok(())
    }

    /// Remove a participant: its tracks, the down tracks that carried them, and its own
    /// subscriptions. Emits [`Output::DownRemoved`] for each down track of another participant.
    pub fn leave(&mut self, participant: ParticipantId) {
        let Some(p) = self.participants.remove(&participant) else {
            return;
        };
        if let Some(members) = self.rooms.get_mut(&p.room) {
            members.retain(|m| *m != participant);
            if members.is_empty() {
                self.rooms.remove(&p.room);
            }
        }
        for down in p.downs {
            self.remove_down(down, false);
        }
        for track in p.tracks {
            self.unpublish(track);
        }
    }

    /// Publish a track for a participant who has joined.
    pub fn publish(
        &mut self,
        participant: ParticipantId,
        spec: TrackSpec,
    ) -> Result<TrackId, Error> {
        if !self.participants.contains_key(&participant) {
            return Err(Error::NotJoined { participant });
        }
        let layer_count = match spec.kind {
            Kind::Audio => 1,
            Kind::Video(_) => spec.layer_heights.len().clamp(1, 3),
        };
        let track = TrackId(self.next_id());
        self.tracks.insert(
            track,
            Track {
                publisher: participant,
                spec,
                layers: (0..layer_count).map(|_| Layer::default()).collect(),
                downs: Vec::new(),
            },
        );
        if let Some(p) = self.participants.get_mut(&participant) {
            p.tracks.push(track);
        }
        Ok(track)
    }

    /// Remove a published track and every down track carrying it.
    pub fn unpublish(&mut self, track: TrackId) {
        let Some(t) = self.tracks.remove(&track) else {
            return;
        };
        if let Some(p) = self.participants.get_mut(&t.publisher) {
            p.tracks.retain(|x| *x != track);
        }
        for down in t.downs {
            self.remove_down(down, true);
        }
    }

    fn remove_down(&mut self, down: DownId, notify: bool) {
        let Some(d) = self.downs.remove(&down) else {
            return;
        };
        if let Some(t) = self.tracks.get_mut(&d.track) {
            t.downs.retain(|x| *x != down);
        }
        if let Some(p) = self.participants.get_mut(&d.subscriber) {
            p.downs.retain(|x| *x != down);
        }
        if notify {
            self.outputs.push_back(Output::DownRemoved {
                down,
                subscriber: d.subscriber,
            });
        }
    }

    /// Subscribe `subscriber` to every track of `publisher` (audio only when asked), giving each
    /// down track the SSRC the driver chose for it via `ssrc_for`. Both must be in the same room.
    pub fn subscribe(
        &mut self,
        now: Instant,
        subscriber: ParticipantId,
        publisher: ParticipantId,
        prefs: SubscribePrefs,
        mut ssrc_for: impl FnMut(TrackId, Kind) -> u32,
    ) -> Result<Vec<(DownId, TrackId, Kind)>, Error> {
        match (
            self.participants.get(&subscriber),
            self.participants.get(&publisher),
        ) {
            (None, _) => {
                return Err(Error::NotJoined {
                    participant: subscriber,
                });
            }
            (Some(s), Some(p)) if s.room == p.room => {}
            _ => return Err(Error::UnknownPublisher { publisher }),
        }
        let tracks = self.tracks_of(publisher);
        let mut created = Vec::new();
        for (track, kind) in tracks {
            if prefs.audio_only && kind != Kind::Audio {
                continue;
            }
            let down = DownId(self.next_id());
            let clock_rate = self.tracks[&track].spec.clock_rate;
            self.downs.insert(
                down,
                Down {
                    subscriber,
                    track,
                    ssrc: ssrc_for(track, kind),
                    prefs,
                    estimate_bps: None,
                    loss: 0.0,
                    paused: false,
                    current: None,
                    target: None,
                    draining: false,
                    nack_floor: None,
                    chooser: LayerChooser::default(),
                    rewriter: Rewriter::new(clock_rate),
                    pictures: codec::PictureRewriter::default(),
                    buffer: RetransmitBuffer::new(self.config.retransmit_capacity),
                },
            );
            if let Some(t) = self.tracks.get_mut(&track) {
                t.downs.push(down);
            }
            if let Some(p) = self.participants.get_mut(&subscriber) {
                p.downs.push(down);
            }
            if kind == Kind::Audio {
                // Audio has one layer and no keyframes: forward from the next packet on.
                if let Some(d) = self.downs.get_mut(&down) {
                    d.current = Some(0);
                    d.target = Some(0);
                }
            } else {
                self.review_down(now, down);
            }
            created.push((down, track, kind));
        }
        self.next_review
            .get_or_insert(now + self.config.review_interval);
        Ok(created)
    }

    /// Remove one down track at the subscriber's request.
    pub fn unsubscribe(&mut self, down: DownId) {
        self.remove_down(down, false);
    }

    /// Change what a down track's subscriber asks for (size, audio only is fixed at subscribe).
    pub fn set_max_height(&mut self, now: Instant, down: DownId, max_height: Option<u32>) {
        if let Some(d) = self.downs.get_mut(&down) {
            d.prefs.max_height = max_height;
            self.review_down(now, down);
        }
    }

    /// Pause or resume a down track: the driver pauses it while the subscriber's connection is
    /// not connected (setting up, or broken), so that a keyframe is not spent on a connection
    /// that cannot deliver it. Resuming asks for a fresh keyframe.
    pub fn set_paused(&mut self, now: Instant, down: DownId, paused: bool) {
        let Some(d) = self.downs.get_mut(&down) else {
            return;
        };
        if d.paused == paused {
            return;
        }
        d.paused = paused;
        if paused {
            return;
        }
        let (track, current) = (d.track, d.current);
        let video = self
            .tracks
            .get(&track)
            .is_some_and(|t| matches!(t.spec.kind, Kind::Video(_)));
        if video {
            self.review_down(now, down);
            let target = self.downs.get(&down).and_then(|d| d.target);
            if let Some(layer) = target
                && target == current
            {
                self.request_keyframe(now, track, layer);
            }
        }
    }

    /// The subscriber's bandwidth estimate for the connection carrying `down`, in bit/s.
    pub fn set_estimate(&mut self, down: DownId, bps: u64) {
        if let Some(d) = self.downs.get_mut(&down) {
            d.estimate_bps = Some(bps);
        }
    }

    /// The fraction (0 to 1) of packets lost on the way to the subscriber of `down`.
    pub fn set_loss(&mut self, down: DownId, loss: f64) {
        if let Some(d) = self.downs.get_mut(&down) {
            d.loss = if loss.is_finite() {
                loss.clamp(0.0, 1.0)
            } else {
                0.0
            };
        }
    }

    /// An RTP packet from a publisher on layer `layer` of `track` (0 = lowest quality).
    pub fn handle_rtp(&mut self, now: Instant, track: TrackId, layer: usize, packet: InPacket) {
        let Some(t) = self.tracks.get_mut(&track) else {
            return;
        };
        let Some(l) = t.layers.get_mut(layer) else {
            return;
        };
        l.meter.record(now, packet.payload.len());
        let keyframe = match t.spec.kind {
            Kind::Audio => false,
            Kind::Video(codec) => codec::is_keyframe_start(codec, &packet.payload),
        };
        let numbers = match t.spec.kind {
            Kind::Video(VideoCodec::Vp8) => codec::vp8_numbers(&packet.payload),
            Kind::Audio => None,
        };

        // A packet without payload is padding the publisher sends to probe its uplink: nobody
        // downstream needs it, and on a thin downlink it would crowd out the media.
        if packet.payload.is_empty() {
            for down_id in &t.downs {
                if let Some(d) = self.downs.get_mut(down_id)
                    && d.current == Some(layer)
                {
                    d.rewriter.skip(packet.sequence_number);
                }
            }
            self.stats.padding_dropped += 1;
            return;
        }

        for &down_id in &t.downs {
            let Some(d) = self.downs.get_mut(&down_id) else {
                continue;
            };
            if d.paused {
                continue;
            }

            // A keyframe on the target layer is where a pending switch happens.
            if keyframe && d.target == Some(layer) && d.current != Some(layer) {
                let from = d.current;
                d.rewriter
                    .switch(now, packet.sequence_number, packet.timestamp);
                d.nack_floor = d.rewriter.next_seq();
                d.pictures.switch(numbers);
                d.current = Some(layer);
                d.draining = false;
                self.stats.layer_switches += 1;
                self.outputs.push_back(Output::LayerSwitched {
                    down: down_id,
                    from,
                    to: layer,
                });
            } else if d.current == Some(layer) && !d.rewriter.is_started() {
                // Audio (or a video layer chosen without a switch) starts at its first packet.
                d.rewriter
                    .switch(now, packet.sequence_number, packet.timestamp);
            }
            if d.current != Some(layer) || d.draining {
                continue;
            }
            let Some((seq, ts)) = d
                .rewriter
                .rewrite(now, packet.sequence_number, packet.timestamp)
            else {
                continue;
            };
            let out = OutPacket {
                ssrc: d.ssrc,
                sequence_number: seq,
                timestamp: ts,
                marker: packet.marker,
                payload: d.pictures.rewrite(&packet.payload, numbers),
            };
            if matches!(t.spec.kind, Kind::Video(_)) {
                d.buffer.push(out.clone());
            }
            self.stats.forwarded_packets += 1;
            self.stats.forwarded_bytes += out.payload.len() as u64;
            self.outputs.push_back(Output::Rtp {
                down: down_id,
                packet: out,
                retransmission: false,
            });
        }
    }

    /// A NACK from the subscriber of `down` for outgoing sequence numbers `seqs`.
    /// Returns how many could not be answered (too old, or resent moments ago).
    pub fn handle_nack(&mut self, now: Instant, down: DownId, seqs: &[u16]) -> usize {
        let Some(d) = self.downs.get_mut(&down) else {
            return seqs.len();
        };
        let mut missed = 0;
        for &seq in seqs {
            self.stats.nacks_received += 1;
            if d.nack_floor
                .is_some_and(|floor| seq != floor && !rewrite::seq_newer(seq, floor))
            {
                missed += 1;
                continue;
            }
            match d.buffer.resend(now, seq, self.config.resend_interval) {
                Ok(packet) => {
                    self.stats.nacks_answered += 1;
                    self.outputs.push_back(Output::Rtp {
                        down,
                        packet,
                        retransmission: true,
                    });
                }
                Err(Miss::Gone | Miss::TooSoon) => missed += 1,
            }
        }
        missed
    }

    /// A PLI (or FIR) from the subscriber of `down`: ask the publisher for a keyframe on the
    /// layer it receives, at most once per `keyframe_interval`.
    pub fn handle_pli(&mut self, now: Instant, down: DownId) {
        self.stats.plis_received += 1;
        let Some(d) = self.downs.get(&down) else {
            return;
        };
        if let Some(layer) = d.target.or(d.current) {
            let track = d.track;
            self.request_keyframe(now, track, layer);
        }
    }

    fn request_keyframe(&mut self, now: Instant, track: TrackId, layer: usize) {
        let interval = self.config.keyframe_interval;
        let Some(l) = self
            .tracks
            .get_mut(&track)
            .and_then(|t| t.layers.get_mut(layer))
        else {
            return;
        };
        if l.last_keyframe_request
            .is_some_and(|last| now.saturating_duration_since(last) < interval)
        {
            return;
        }
        l.last_keyframe_request = Some(now);
        self.stats.keyframe_requests_sent += 1;
        self.outputs
            .push_back(Output::KeyframeRequest { track, layer });
    }

    /// Re-choose the layer of one video down track; request a keyframe when it changes.
    fn review_down(&mut self, now: Instant, down: DownId) {
        let policy = self.config.layers;
        let congested_loss = self.config.congested_loss;
        let timeout = self.config.layer_timeout;
        let Some(d) = self.downs.get_mut(&down) else {
            return;
        };
        let Some(t) = self.tracks.get(&d.track) else {
            return;
        };
        if t.spec.kind == Kind::Audio || d.paused {
            return;
        }
        let views: Vec<LayerView> = t
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| LayerView {
                // Until a layer has been measured, assume the rate browsers aim for.
                bps: match l.meter.bps(now) {
                    0 => NOMINAL_LAYER_BPS[i.min(2)],
                    bps => bps,
                },
                height: t.spec.layer_heights.get(i).copied().flatten(),
                // A layer never heard from yet may still start: treat it as active until the
                // publisher has sent anything at all, so a new call picks a layer at once.
                active: l.meter.active(now, timeout)
                    || t.layers.iter().all(|x| !x.meter.active(now, timeout)),
            })
            .collect();
        // A link that loses much of what it gets carries about what arrives, whatever the
        // estimate says (GCC's estimate lags on a link whose full queue no longer grows).
        let estimate = match (d.estimate_bps, d.current.and_then(|c| views.get(c))) {
            (Some(est), Some(view)) if d.loss > congested_loss => {
                let arriving = (view.bps as f64 * (1.0 - d.loss)) as u64;
                Some(est.min(arriving))
            }
            (est, _) => est,
        };
        // The chooser reasons about where the subscriber is heading: a climb (or fall) waits for
        // a keyframe of its target, and must not be undone meanwhile as if it never happened.
        let choice = d.chooser.choose(
            now,
            &policy,
            &views,
            estimate,
            d.prefs.max_height,
            d.target.or(d.current),
        );
        let Some(target) = choice else {
            return;
        };
        let track = d.track;
        let waiting = d.current != Some(target);
        d.target = Some(target);
        if !waiting {
            if d.draining {
                // The link recovered before the lower layer's keyframe came: resume, from a
                // keyframe since frames were skipped.
                d.draining = false;
                self.request_keyframe(now, track, target);
            }
        } else if d.chooser.congested()
            && d.loss > congested_loss
            && d.current.is_some_and(|c| target < c)
            && !d.draining
        {
            // Falling because the link is losing packets: stop the current layer at once, and
            // forget what was sent of it (see `nack_floor`). A fall on the estimate alone (delay
            // grew, nothing lost yet) keeps the picture moving until the lower keyframe.
            d.draining = true;
            d.nack_floor = d.rewriter.next_seq();
        }
        if waiting {
            // Either a new target, or still waiting for the keyframe of an old one: the rate
            // limit in `request_keyframe` keeps repeats within bounds.
            self.request_keyframe(now, track, target);
        }
    }

    /// When the driver must call [`Sfu::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_review
    }

    /// Review layer choices when due.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(due) = self.next_review else {
            return;
        };
        if now < due {
            return;
        }
        let downs: Vec<DownId> = self.downs.keys().copied().collect();
        for down in downs {
            self.review_down(now, down);
        }
        self.next_review = if self.downs.is_empty() {
            None
        } else {
            Some(now + self.config.review_interval)
        };
    }

    /// The next output to act on.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The SSRC a down track sends with.
    pub fn down_ssrc(&self, down: DownId) -> Option<u32> {
        self.downs.get(&down).map(|d| d.ssrc)
    }

    /// The track and subscriber of a down track.
    pub fn down_route(&self, down: DownId) -> Option<(TrackId, ParticipantId)> {
        self.downs.get(&down).map(|d| (d.track, d.subscriber))
    }

    /// How a track was announced.
    pub fn track_spec(&self, track: TrackId) -> Option<&TrackSpec> {
        self.tracks.get(&track).map(|t| &t.spec)
    }

    /// The publisher of a track.
    pub fn track_publisher(&self, track: TrackId) -> Option<ParticipantId> {
        self.tracks.get(&track).map(|t| t.publisher)
    }

    /// Ask the publisher of `track` for a keyframe of `layer`, within the rate limit (for the
    /// relay, when a remote site starts receiving the layer).
    pub fn request_keyframe_for(&mut self, now: Instant, track: TrackId, layer: usize) {
        self.request_keyframe(now, track, layer);
    }

    /// The highest layer any subscriber of `track` could use (by the size it asked for), or
    /// `None` when nobody subscribes. Audio is layer 0. The relay carries up to this layer
    /// across a link; each subscriber then gets what its own bandwidth allows.
    pub fn track_demand(&self, track: TrackId) -> Option<usize> {
        let t = self.tracks.get(&track)?;
        let top = t.layers.len().saturating_sub(1);
        t.downs
            .iter()
            .filter_map(|d| self.downs.get(d))
            .map(|d| match (t.spec.kind, d.prefs.max_height) {
                (Kind::Audio, _) | (_, None) => top,
                (Kind::Video(_), Some(max)) => (0..=top)
                    .rev()
                    .find(|&i| {
                        t.spec
                            .layer_heights
                            .get(i)
                            .copied()
                            .flatten()
                            .is_none_or(|h| h <= max)
                    })
                    .unwrap_or(0),
            })
            .max()
    }
}

#[cfg(test)]
mod tests;
