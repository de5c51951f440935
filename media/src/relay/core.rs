//! The sans-IO relay core of one node: rooms that span sites, which streams go over which
//! link, and the media itself (forwarding, loss recovery, budget). It never touches a socket or
//! a clock: the driver feeds it link events, control messages, datagrams, quinn's path samples
//! and the local SFU's events with the time, then drains [`Output`]s and sleeps until
//! [`Relay::poll_timeout`]. Tests run several cores against each other with a virtual clock.
//!
//! # Rooms across sites
//!
//! A room's id is global: `home/room`, where `home` is the site that defines it. Every node
//! with participants in the room (or relaying for one) is attached to the room's tree: its
//! *upstream* is the home itself, or the hub when the home cannot be reached directly for
//! [`RelayConfig::fallback_after`]; the hub's upstream is always the home. Member and
//! publication announcements flood along the tree; a stream flows from its origin towards
//! every node that wants it, one copy per link, whatever the number of viewers behind it.
//!
//! # Links
//!
//! While a link is down its members stay in the room ([`RelayConfig::hold`]); when it returns
//! the child re-attaches, both sides exchange snapshots, and wanted streams start again with
//! their audio and base layer at once and a keyframe request.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::{debug, info};

use super::budget::{Allocator, BudgetConfig, Estimator, PathSample, Unit, share};
use super::fec::{FecEncoder, FecPacket, protection};
use super::link::{Kept, RxLayer, RxStats, SendBuffer};
use super::wire::{
    Control, Datagram, MEDIA_HEADER, MediaHeader, Member, MemberId, Reassembly, StreamId,
    TrackInfo, TrackKind, fragment,
};
use crate::room::{Role, RoomPolicy};

/// Bitrates assumed for a layer until it has been measured (audio, then video layers).
const NOMINAL_AUDIO_BPS: u64 = 48_000;
const NOMINAL_VIDEO_BPS: [u64; 3] = [150_000, 500_000, 1_500_000];
/// Bytes each relayed packet costs beyond its payload: our header, the QUIC short header and
/// datagram frame, the AEAD tag, UDP and IPv4.
const PACKET_OVERHEAD: u64 = MEDIA_HEADER as u64 + 60;
/// Part of a link's budget kept for retransmissions and control.
const RESERVE: f64 = 0.92;
/// A layer with no packet for this long is not offered to the allocator.
const LAYER_IDLE: Duration = Duration::from_millis(1500);
/// Packets kept per layer to answer NACKs (about 2 s of a 1.5 Mbit/s layer).
const SEND_BUFFER: usize = 512;
/// How often NACKs, parity timeouts and probe padding are handled.
const FAST_TICK: Duration = Duration::from_millis(20);
/// How often budgets, routes and holds are reviewed.
const SLOW_TICK: Duration = Duration::from_millis(250);
/// A parity group of a slow layer closes after this long. 100 ms: a 500 kbit/s layer fills a
/// group of six to eight, so two parities can cover it; a rebuilt packet is at most this late,
/// under the 150 ms a video frame may be late before it counts as a freeze.
const FEC_MAX_WAIT: Duration = Duration::from_millis(100);
/// Keyframe requests per stream layer are forwarded at most this often.
const KEYFRAME_INTERVAL: Duration = Duration::from_millis(300);
/// Most streams with wants remembered (a neighbour naming unknown streams cannot grow it).
const MAX_WANTS: usize = 1024;
/// Largest padding datagram of a probe.
const PADDING_SIZE: usize = 1000;

/// Tuning of the relay core. Each default says why.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// This site's id.
    pub site: String,
    /// The hub's site id (`None` when the roster has none).
    pub hub: Option<String>,
    /// The site's uplink, kbit/s (site config `uplink_kbps`).
    pub uplink_kbps: u32,
    /// Budget tuning.
    pub budget: BudgetConfig,
    /// How long members behind a link that went down stay in the room. Default 120 s: a
    /// mountain link that drops for a minute must not end a mediation.
    pub hold: Duration,
    /// How long the home must be unreachable directly before a room goes through the hub.
    /// Default 3 s: two failed dials.
    pub fallback_after: Duration,
    /// How long a room looked up for a token stays attached without participants. Default 60 s.
    pub lookup_interest: Duration,
}

impl RelayConfig {
    /// Defaults for `site`.
    pub fn new(site: impl Into<String>, hub: Option<String>, uplink_kbps: u32) -> Self {
        Self {
            site: site.into(),
            hub,
            uplink_kbps,
            budget: BudgetConfig::default(),
            hold: Duration::from_secs(120),
            fallback_after: Duration::from_secs(3),
            lookup_interest: Duration::from_secs(60),
        }
    }
}

/// A media packet as the core hands it to the SFU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayPacket {
    /// Sequence number (the publisher's, per layer).
    pub seq: u16,
    /// Timestamp.
    pub ts: u32,
    /// Marker bit.
    pub marker: bool,
    /// Payload.
    pub payload: Bytes,
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send a control message to a neighbour.
    Control {
        /// The neighbour's site id.
        to: String,
        /// The message.
        msg: Control,
    },
    /// Send a QUIC datagram to a neighbour.
    Datagram {
        /// The neighbour's site id.
        to: String,
        /// The datagram.
        data: Bytes,
    },
    /// A room's policy was learned from its home, or the home has no such room (`None`).
    Room {
        /// Global room id.
        room: String,
        /// The policy.
        policy: Option<RoomPolicy>,
    },
    /// A remote member joined or changed what it publishes (its tracks are complete).
    Member {
        /// Global room id.
        room: String,
        /// The member.
        member: Member,
    },
    /// A remote member left (or was lost with its link past the hold).
    Left {
        /// Global room id.
        room: String,
        /// Who.
        id: MemberId,
    },
    /// A packet of a remote stream for the local SFU.
    Media {
        /// The stream.
        stream: StreamId,
        /// Layer.
        layer: u8,
        /// The packet.
        packet: RelayPacket,
    },
    /// A remote site wants a keyframe of a local stream: ask the publisher.
    Keyframe {
        /// The local stream.
        stream: StreamId,
        /// Layer.
        layer: u8,
    },
    /// Whether a remote stream's video is held back on the way for lack of bandwidth (its
    /// local subscribers get audio only and are told why).
    Limited {
        /// The stream.
        stream: StreamId,
        /// Held back.
        limited: bool,
    },
}

#[derive(Debug, Clone, Default)]
struct Meter {
    start: Option<Instant>,
    bytes: u64,
    packets: u64,
    bps: u64,
    pps: u64,
    last: Option<Instant>,
}

impl Meter {
    fn record(&mut self, now: Instant, bytes: usize) {
        if let Some(start) = self.start {
            let elapsed = now.saturating_duration_since(start);
            if elapsed >= Duration::from_secs(1) {
                let secs = elapsed.as_secs_f64();
                self.bps = (self.bytes as f64 * 8.0 / secs) as u64;
                self.pps = (self.packets as f64 / secs) as u64;
                self.start = Some(now);
                self.bytes = 0;
                self.packets = 0;
            }
        }
        self.start.get_or_insert(now);
        self.bytes += bytes as u64;
        self.packets += 1;
        self.last = Some(now);
    }

    fn active(&self, now: Instant) -> bool {
        self.last
            .is_some_and(|t| now.saturating_duration_since(t) <= LAYER_IDLE)
    }
}

#[derive(Debug)]
struct LayerState {
    meter: Meter,
    buffer: SendBuffer,
}

#[derive(Debug)]
struct Stream {
    room: String,
    /// `None`: published here.
    via: Option<String>,
    info: TrackInfo,
    layers: Vec<LayerState>,
    local_want: Option<u8>,
    /// The want last sent to the source: (neighbour, layer).
    sent_want: Option<(String, u8)>,
    /// What the source says it forwards: (layers, limited).
    carried_in: Option<(Vec<u8>, bool)>,
    limited_reported: bool,
    keyframe_asked: HashMap<u8, Instant>,
}

impl Stream {
    fn layer_count(&self) -> usize {
        match self.info.kind {
            TrackKind::Audio => 1,
            TrackKind::Video => self.info.layer_heights.len().clamp(1, 3),
        }
    }

    fn ever_received(&self) -> bool {
        self.layers.iter().any(|l| l.meter.last.is_some())
    }

    fn bps(&self, now: Instant, layer: usize) -> u64 {
        let m = &self.layers[layer].meter;
        let (bps, pps) = match m.start {
            Some(start) if m.bps == 0 => {
                let secs = now.saturating_duration_since(start).as_secs_f64().max(0.2);
                (
                    (m.bytes as f64 * 8.0 / secs) as u64,
                    (m.packets as f64 / secs) as u64,
                )
            }
            _ => (m.bps, m.pps),
        };
        let nominal = match self.info.kind {
            TrackKind::Audio => NOMINAL_AUDIO_BPS,
            TrackKind::Video => NOMINAL_VIDEO_BPS[layer.min(2)],
        };
        if bps == 0 {
            return nominal + nominal / 10;
        }
        let measured = bps + pps * PACKET_OVERHEAD * 8;
        if self.info.kind == TrackKind::Video && layer > 0 && self.layer_count() > 1 {
            // An upper simulcast layer ramps up after it starts: count it at the rate the
            // browser aims for, so that it is not admitted while small and dropped once grown.
            measured.max(nominal)
        } else {
            measured
        }
    }
}

#[derive(Debug)]
struct Link {
    up: bool,
    since: Instant,
    est: Estimator,
    alloc: Allocator<StreamId>,
    cap_bps: u64,
    budget_bps: u64,
    admitted: BTreeSet<(StreamId, u8)>,
    restart: HashSet<(StreamId, u8)>,
    carried_out: HashMap<StreamId, (Vec<u8>, bool)>,
    /// Their tag → stream, from their member announcements.
    tags_in: HashMap<u32, StreamId>,
    rx: HashMap<(u32, u8), RxLayer>,
    rx_stats: RxStats,
    fec: HashMap<(u32, u8), FecEncoder>,
    /// Packets per group and parity packets per group, when FEC is on.
    protection: Option<(usize, usize)>,
    reassembly: Reassembly,
    frag_id: u16,
    max_datagram: usize,
    padding_at: Option<Instant>,
    padding_debt: f64,
    retx_tokens: f64,
    retx_at: Option<Instant>,
    counters: LinkCounters,
}

/// Counters of the sending side of a link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkCounters {
    /// Media packets sent (first transmissions).
    pub media_packets: u64,
    /// Media payload bytes sent (first transmissions).
    pub media_bytes: u64,
    /// Packets resent on NACK.
    pub retransmissions: u64,
    /// Parity packets sent.
    pub parity_packets: u64,
    /// Padding bytes sent by probes.
    pub padding_bytes: u64,
}

impl Link {
    fn new(now: Instant, config: &BudgetConfig, previous: Option<&Link>) -> Self {
        let mut budget = *config;
        if let Some(prev) = previous {
            // A link that was thin stays thin until a probe says otherwise.
            budget.initial_bps = budget.initial_bps.min(prev.est.estimate_bps(u64::MAX));
        }
        Self {
            up: false,
            since: now,
            est: Estimator::new(budget),
            alloc: Allocator::new(config.up_hold),
            cap_bps: 0,
            budget_bps: 0,
            admitted: BTreeSet::new(),
            restart: HashSet::new(),
            carried_out: HashMap::new(),
            tags_in: HashMap::new(),
            rx: HashMap::new(),
            rx_stats: previous.map(|p| p.rx_stats).unwrap_or_default(),
            fec: HashMap::new(),
            protection: None,
            reassembly: Reassembly::default(),
            frag_id: 0,
            max_datagram: 1200,
            padding_at: None,
            padding_debt: 0.0,
            retx_tokens: 0.0,
            retx_at: None,
            counters: previous.map(|p| p.counters).unwrap_or_default(),
        }
    }
}

#[derive(Debug)]
struct RoomState {
    home: String,
    upstream: Option<String>,
    downstream: BTreeSet<String>,
    local: BTreeMap<u64, Member>,
    /// Remote members and the neighbour each was learned from.
    remote: BTreeMap<MemberId, (String, Member)>,
    interest_until: Option<Instant>,
    /// Whether our view of the rest of the tree is complete: always at the home, elsewhere once
    /// the upstream has sent its snapshot. Until then we send no snapshot downstream (an empty
    /// one would make the children drop members they hold).
    synced: bool,
}

/// A stream as the status page shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CarriedStream {
    /// The stream.
    pub stream: StreamId,
    /// Audio or video.
    pub kind: TrackKind,
    /// Layers carried, lowest first.
    pub layers: Vec<u8>,
    /// A wanted layer is held back for lack of bandwidth.
    pub limited: bool,
}

/// One link as `GET /api/v1/media/links` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkReport {
    /// The remote site.
    pub site: String,
    /// Whether the QUIC connection is up.
    pub up: bool,
    /// Seconds since it came up or went down.
    pub for_seconds: u64,
    /// The media budget of the link, bit/s (estimate within the site share, less FEC and the
    /// retransmission reserve).
    pub budget_bps: u64,
    /// This link's share of the site uplink, bit/s.
    pub cap_bps: u64,
    /// The capacity estimate, bit/s.
    pub estimate_bps: u64,
    /// What the link sent over the last second (quinn's UDP bytes), bit/s.
    pub sent_bps: u64,
    /// quinn's congestion window over its RTT, bit/s (BBR's own estimate, floored at the
    /// budget).
    pub quinn_bps: u64,
    /// Smoothed round trip, ms.
    pub rtt_ms: f64,
    /// Fraction of packets lost (quinn's count over the last 2 s).
    pub loss: f64,
    /// Packets per FEC group and parity packets per group, when FEC is on.
    pub fec: Option<(usize, usize)>,
    /// Whether a bandwidth probe is under way.
    pub probing: bool,
    /// Streams sent to the remote site.
    pub sending: Vec<CarriedStream>,
    /// Streams received from it (as it says it forwards them).
    pub receiving: Vec<CarriedStream>,
    /// Receiving-side recovery counters.
    pub rx: RxStats,
    /// Sending-side counters.
    pub tx: LinkCounters,
}

/// The relay core of one node.
#[derive(Debug)]
pub struct Relay {
    config: RelayConfig,
    rooms: BTreeMap<String, RoomState>,
    /// Rooms this site is the home of.
    local_rooms: HashMap<String, RoomPolicy>,
    /// Policies learned from other homes (kept while their links are down).
    policies: HashMap<String, RoomPolicy>,
    streams: HashMap<StreamId, Stream>,
    tags_out: HashMap<u32, StreamId>,
    next_tag: u32,
    links: BTreeMap<String, Link>,
    /// Since when each site has failed to connect (cleared when it connects).
    failing: HashMap<String, Instant>,
    /// Neighbour wants: stream → neighbour → highest layer.
    wants: HashMap<StreamId, BTreeMap<String, u8>>,
    outputs: VecDeque<Output>,
    next_fast: Option<Instant>,
    next_slow: Option<Instant>,
}

/// Splits a global room id into its home site and local id.
pub fn split_room(room: &str) -> Option<(&str, &str)> {
    let (home, local) = room.split_once('/')?;
    (!home.is_empty() && !local.is_empty()).then_some((home, local))
}

impl Relay {
    /// A core for the site of `config`.
    pub fn new(config: RelayConfig) -> Self {
        Self {
            config,
            rooms: BTreeMap::new(),
            local_rooms: HashMap::new(),
            policies: HashMap::new(),
            streams: HashMap::new(),
            tags_out: HashMap::new(),
            next_tag: 1,
            links: BTreeMap::new(),
            failing: HashMap::new(),
            wants: HashMap::new(),
            outputs: VecDeque::new(),
            next_fast: None,
            next_slow: None,
        }
    }

    /// This site's id.
    pub fn site(&self) -> &str {
        &self.config.site
    }

    /// The next output.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`Relay::handle_timeout`] is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.next_fast, self.next_slow) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The sites the core wants a connection to.
    pub fn wanted_links(&self, now: Instant) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for (id, room) in &self.rooms {
            if room.home == self.config.site || !self.has_interest(now, id) {
                continue;
            }
            out.insert(room.home.clone());
            if let Some(up) = &room.upstream {
                out.insert(up.clone());
            }
            if self.needs_hub(now, &room.home)
                && let Some(hub) = &self.config.hub
            {
                out.insert(hub.clone());
            }
        }
        out.remove(&self.config.site);
        out
    }

    /// Whether the local SFU should hand packets of local track `track` to the core.
    pub fn forwards_local(&self, track: u64) -> bool {
        let id = StreamId {
            origin: self.config.site.clone(),
            track,
        };
        self.wants.get(&id).is_some_and(|w| !w.is_empty())
    }

    /// The budget of the link to `site`, bit/s (its capacity estimate within the site share):
    /// the congestion window of its QUIC connection is kept large enough for it.
    pub fn link_budget(&self, site: &str) -> Option<u64> {
        let link = self.links.get(site)?;
        Some(
            link.est
                .estimate_bps(link.cap_bps.max(self.config.budget.min_bps)),
        )
    }

    /// A policy known for a remote room.
    pub fn policy(&self, room: &str) -> Option<&RoomPolicy> {
        self.local_rooms
            .get(room)
            .or_else(|| self.policies.get(room))
    }

    // ----- local events -----

    /// Define a room whose home is this site (global id `site/room`).
    pub fn define_room(&mut self, policy: RoomPolicy) {
        self.local_rooms.insert(policy.id.clone(), policy);
    }

    /// A token is being issued for a remote room: attach to it for a while so its policy is
    /// learned. Answers with [`Output::Room`] (at once when the policy is already known).
    pub fn lookup_room(&mut self, now: Instant, room: &str) {
        if let Some(policy) = self.policy(room).cloned() {
            self.outputs.push_back(Output::Room {
                room: room.to_owned(),
                policy: Some(policy),
            });
        }
        let Some((home, _)) = split_room(room) else {
            self.outputs.push_back(Output::Room {
                room: room.to_owned(),
                policy: None,
            });
            return;
        };
        if home == self.config.site {
            return;
        }
        let until = now + self.config.lookup_interest;
        self.room_mut(room).interest_until = Some(until);
        self.review_room(now, room);
        self.arm(now);
    }

    /// A local participant joined `room` (global id).
    pub fn local_join(
        &mut self,
        now: Instant,
        room: &str,
        participant: u64,
        sub: &str,
        role: Role,
    ) {
        let member = Member {
            id: MemberId {
                origin: self.config.site.clone(),
                participant,
            },
            sub: sub.to_owned(),
            role,
            tracks: Vec::new(),
        };
        self.room_mut(room)
            .local
            .insert(participant, member.clone());
        self.review_room(now, room);
        self.flood(
            room,
            None,
            &Control::Member {
                room: room.to_owned(),
                member,
            },
        );
        self.arm(now);
    }

    /// A local participant published tracks; each `track` is the SFU's track number (its
    /// `tag` is chosen here). All tracks of one publication come in one call, so that other
    /// sites never see a publisher with only some of them (browsers subscribe once).
    pub fn local_publish(
        &mut self,
        now: Instant,
        room: &str,
        participant: u64,
        tracks: Vec<TrackInfo>,
    ) {
        let mut infos = Vec::new();
        for track in tracks {
            let id = StreamId {
                origin: self.config.site.clone(),
                track: track.track,
            };
            let info = TrackInfo {
                tag: self.tag_for(&id),
                ..track
            };
            self.add_stream(room, id, None, info.clone());
            infos.push(info);
        }
        let Some(member) = self
            .rooms
            .get_mut(room)
            .and_then(|r| r.local.get_mut(&participant))
        else {
            return;
        };
        member
            .tracks
            .retain(|t| !infos.iter().any(|i| i.track == t.track));
        member.tracks.extend(infos);
        let member = member.clone();
        self.flood(
            room,
            None,
            &Control::Member {
                room: room.to_owned(),
                member,
            },
        );
        self.arm(now);
    }

    /// A local track is gone.
    pub fn local_unpublish(&mut self, now: Instant, track: u64) {
        let id = StreamId {
            origin: self.config.site.clone(),
            track,
        };
        let Some(stream) = self.remove_stream(&id) else {
            return;
        };
        let room = stream.room;
        let member = self.rooms.get_mut(&room).and_then(|r| {
            r.local
                .values_mut()
                .find(|m| m.tracks.iter().any(|t| t.track == track))
        });
        if let Some(member) = member {
            member.tracks.retain(|t| t.track != track);
            let member = member.clone();
            self.flood(
                &room,
                None,
                &Control::Member {
                    room: room.clone(),
                    member,
                },
            );
        }
        self.arm(now);
    }

    /// A local participant left.
    pub fn local_leave(&mut self, now: Instant, room: &str, participant: u64) {
        let Some(member) = self
            .rooms
            .get_mut(room)
            .and_then(|r| r.local.remove(&participant))
        else {
            return;
        };
        for track in &member.tracks {
            self.remove_stream(&StreamId {
                origin: self.config.site.clone(),
                track: track.track,
            });
        }
        self.flood(
            room,
            None,
            &Control::Left {
                room: room.to_owned(),
                id: member.id,
            },
        );
        self.review_room(now, room);
        self.arm(now);
    }

    /// A packet of a local track, from the SFU.
    pub fn local_rtp(&mut self, now: Instant, track: u64, layer: u8, packet: RelayPacket) {
        let id = StreamId {
            origin: self.config.site.clone(),
            track,
        };
        self.deliver(now, &id, layer, packet, None);
    }

    /// How far the local SFU's subscribers want a remote stream (`None`: nobody).
    pub fn set_local_want(&mut self, now: Instant, stream: &StreamId, layer: Option<u8>) {
        let Some(s) = self.streams.get_mut(stream) else {
            return;
        };
        if s.local_want == layer {
            return;
        }
        s.local_want = layer;
        self.update_want(stream);
        self.arm(now);
    }

    /// The local SFU needs a keyframe of a remote stream's layer.
    pub fn keyframe_request(&mut self, now: Instant, stream: &StreamId, layer: u8) {
        self.ask_keyframe(now, stream, layer);
    }

    // ----- link events -----

    /// A QUIC connection to `site` is up; `max_datagram` is its datagram size limit.
    pub fn link_up(&mut self, now: Instant, site: &str, max_datagram: usize) {
        info!(peer = site, "relay link up");
        self.failing.remove(site);
        let previous = self.links.remove(site);
        let mut link = Link::new(now, &self.config.budget, previous.as_ref());
        link.up = true;
        link.max_datagram = max_datagram.max(200);
        self.links.insert(site.to_owned(), link);
        self.send(
            site,
            Control::Hello {
                version: super::wire::VERSION,
                site: self.config.site.clone(),
            },
        );
        // Rooms whose upstream this is re-attach; wants towards it are sent again.
        let rooms: Vec<String> = self.rooms.keys().cloned().collect();
        for room in rooms {
            let upstream = self.rooms.get(&room).and_then(|r| r.upstream.clone());
            if upstream.as_deref() == Some(site) {
                self.attach(now, &room, site);
            } else {
                self.review_room(now, &room);
            }
        }
        self.arm(now);
    }

    /// The connection to `site` closed (or a dial failed).
    pub fn link_down(&mut self, now: Instant, site: &str) {
        self.failing.entry(site.to_owned()).or_insert(now);
        if let Some(link) = self.links.get_mut(site)
            && link.up
        {
            info!(peer = site, "relay link down");
            link.up = false;
            link.since = now;
            link.admitted.clear();
            link.carried_out.clear();
            link.rx.clear();
        }
        for r in self.rooms.values_mut() {
            if r.upstream.as_deref() == Some(site) {
                r.synced = false;
            }
        }
        // Its wants lapse (it sends them again when it returns); ours towards it must be
        // sent again then.
        let ids: Vec<StreamId> = self.wants.keys().cloned().collect();
        for id in ids {
            if let Some(w) = self.wants.get_mut(&id) {
                w.remove(site);
            }
            self.update_want(&id);
        }
        for s in self.streams.values_mut() {
            if s.sent_want.as_ref().is_some_and(|(to, _)| to == site) {
                s.sent_want = None;
            }
        }
        let rooms: Vec<String> = self.rooms.keys().cloned().collect();
        for room in rooms {
            self.review_room(now, &room);
        }
        self.arm(now);
    }

    /// A dial to `site` failed.
    pub fn dial_failed(&mut self, now: Instant, site: &str) {
        self.failing.entry(site.to_owned()).or_insert(now);
        let rooms: Vec<String> = self.rooms.keys().cloned().collect();
        for room in rooms {
            self.review_room(now, &room);
        }
    }

    /// quinn's counters of the connection to `site`, about every 250 ms.
    pub fn path_sample(
        &mut self,
        now: Instant,
        site: &str,
        sample: PathSample,
        max_datagram: usize,
    ) {
        let cap = self.site_bps();
        let Some(link) = self.links.get_mut(site) else {
            return;
        };
        link.est.on_sample(now, sample, cap);
        // Parity answers random loss; loss from overload would only grow with more packets.
        if !link.est.congested_within(now, Duration::from_secs(3)) {
            link.protection = protection(link.est.loss());
        }
        link.max_datagram = max_datagram.max(200);
    }

    /// A control message from `from` (identity checked by TLS).
    pub fn on_control(&mut self, now: Instant, from: &str, msg: Control) {
        match msg {
            Control::Hello { .. } => {}
            Control::Attach { room } => self.on_attach(now, from, &room),
            Control::Detach { room } => {
                if let Some(r) = self.rooms.get_mut(&room) {
                    r.downstream.remove(from);
                }
                self.drop_members_via(&room, from);
                let ids: Vec<StreamId> = self
                    .streams
                    .iter()
                    .filter(|(_, s)| s.room == room)
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in ids {
                    if let Some(w) = self.wants.get_mut(&id) {
                        w.remove(from);
                    }
                    self.update_want(&id);
                }
                self.review_room(now, &room);
            }
            Control::Room {
                room,
                kind,
                limit,
                owner,
            } => {
                if !self.is_upstream(&room, from) {
                    return;
                }
                let policy = RoomPolicy {
                    id: room.clone(),
                    kind,
                    limit,
                    owner,
                };
                let known = self.policies.get(&room) == Some(&policy);
                self.policies.insert(room.clone(), policy.clone());
                let relay = Control::Room {
                    room: room.clone(),
                    kind,
                    limit,
                    owner: policy.owner.clone(),
                };
                if !known {
                    self.outputs.push_back(Output::Room {
                        room: room.clone(),
                        policy: Some(policy),
                    });
                }
                self.flood(&room, Some(from), &relay);
            }
            Control::NoRoom { room } => {
                if !self.is_upstream(&room, from) {
                    return;
                }
                self.outputs.push_back(Output::Room {
                    room: room.clone(),
                    policy: None,
                });
                self.flood(&room, Some(from), &Control::NoRoom { room: room.clone() });
            }
            Control::Members { room, members } => self.on_members(now, from, &room, members),
            Control::Member { room, member } => {
                if self.is_neighbour(&room, from) && member.id.origin != self.config.site {
                    self.upsert_member(&room, from, member);
                }
            }
            Control::Left { room, id } => {
                // TODO(#5): when the member's origin has a live direct link (it is moving back
                // from the hub), re-point the member to it instead of dropping it: otherwise
                // browsers see it leave and come back (docs/relay.md, Limitations).
                let via = self
                    .rooms
                    .get(&room)
                    .and_then(|r| r.remote.get(&id))
                    .map(|(via, _)| via.clone());
                if via.as_deref() == Some(from) {
                    self.remove_member(&room, &id, Some(from));
                }
            }
            Control::Want { stream, layer } => {
                let full = self.wants.len() >= MAX_WANTS && !self.wants.contains_key(&stream);
                match layer {
                    Some(layer) if !full => {
                        let wants = self.wants.entry(stream.clone()).or_default();
                        wants.insert(from.to_owned(), layer);
                    }
                    _ => {
                        if let Some(wants) = self.wants.get_mut(&stream) {
                            wants.remove(from);
                        }
                    }
                }
                self.update_want(&stream);
                self.reallocate(now);
            }
            Control::Keyframe { stream, layer } => self.ask_keyframe(now, &stream, layer),
            Control::Nack { tag, layer, seqs } => self.on_nack(now, from, tag, layer, &seqs),
            Control::Carried {
                stream,
                layers,
                limited,
            } => {
                let Some(s) = self.streams.get_mut(&stream) else {
                    return;
                };
                if s.via.as_deref() != Some(from) {
                    return;
                }
                s.carried_in = Some((layers, limited));
                self.report_limited(&stream);
                self.reallocate(now);
            }
        }
        self.arm(now);
    }

    /// One QUIC datagram from `from`.
    pub fn on_datagram(&mut self, now: Instant, from: &str, data: Bytes) {
        let Some(link) = self.links.get_mut(from) else {
            return;
        };
        let Some(whole) = link.reassembly.push(now, data) else {
            return;
        };
        let (tag, layer, delivered) = match Datagram::decode(whole) {
            Some(Datagram::Media(h, payload)) => {
                let Some(id) = link.tags_in.get(&h.tag) else {
                    return;
                };
                let id = id.clone();
                if self.streams.get(&id).and_then(|s| s.via.as_deref()) != Some(from) {
                    return;
                }
                let Some(link) = self.links.get_mut(from) else {
                    return;
                };
                let rx = link.rx.entry((h.tag, h.layer)).or_default();
                (
                    h.tag,
                    h.layer,
                    rx.on_media(now, &h, payload, &mut link.rx_stats),
                )
            }
            Some(Datagram::Parity(h, payload)) => {
                if !link.tags_in.contains_key(&h.tag) {
                    return;
                }
                let rx = link.rx.entry((h.tag, h.layer)).or_default();
                let out = rx.on_parity((h, payload), &mut link.rx_stats);
                (h.tag, h.layer, out)
            }
            Some(Datagram::Padding(_)) | None => return,
        };
        let Some(id) = self
            .links
            .get(from)
            .and_then(|l| l.tags_in.get(&tag))
            .cloned()
        else {
            return;
        };
        for p in delivered {
            let packet = RelayPacket {
                seq: p.seq,
                ts: p.ts,
                marker: p.marker,
                payload: p.payload,
            };
            self.deliver(now, &id, layer, packet, Some(from));
        }
        self.arm(now);
    }

    /// Timers: NACKs, parity timeouts, probe padding, budgets, routes and holds.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.next_fast.is_some_and(|t| now >= t) {
            self.fast_tick(now);
            self.next_fast = None;
        }
        if self.next_slow.is_some_and(|t| now >= t) {
            self.slow_tick(now);
            self.next_slow = None;
        }
        self.arm(now);
    }

    // ----- reports -----

    /// Every link, for the API, metrics and the status page.
    pub fn report(&self, now: Instant) -> Vec<LinkReport> {
        self.links
            .iter()
            .map(|(site, link)| {
                let sending = self.carried(link.admitted.iter().cloned(), |id| {
                    link.carried_out
                        .get(id)
                        .is_some_and(|(_, limited)| *limited)
                });
                let receiving = self
                    .streams
                    .iter()
                    .filter(|(_, s)| s.via.as_deref() == Some(site) && link.up)
                    .filter_map(|(id, s)| {
                        let (layers, limited) = s.carried_in.clone()?;
                        Some(CarriedStream {
                            stream: id.clone(),
                            kind: s.info.kind,
                            layers,
                            limited,
                        })
                    })
                    .collect();
                LinkReport {
                    site: site.clone(),
                    up: link.up,
                    for_seconds: now.saturating_duration_since(link.since).as_secs(),
                    budget_bps: link.budget_bps,
                    cap_bps: link.cap_bps,
                    estimate_bps: link.est.estimate_bps(self.site_bps()),
                    sent_bps: link.est.sent_bps(),
                    quinn_bps: link.est.quinn_bps(),
                    rtt_ms: link.est.rtt().as_secs_f64() * 1000.0,
                    loss: link.est.loss(),
                    fec: link.protection,
                    probing: link.est.probe_bps(now) > 0,
                    sending,
                    receiving: sorted(receiving),
                    rx: link.rx_stats,
                    tx: link.counters,
                }
            })
            .collect()
    }

    fn carried(
        &self,
        units: impl Iterator<Item = (StreamId, u8)>,
        limited: impl Fn(&StreamId) -> bool,
    ) -> Vec<CarriedStream> {
        let mut by_stream: BTreeMap<StreamId, Vec<u8>> = BTreeMap::new();
        for (id, layer) in units {
            by_stream.entry(id).or_default().push(layer);
        }
        by_stream
            .into_iter()
            .filter_map(|(id, layers)| {
                let kind = self.streams.get(&id)?.info.kind;
                let limited = limited(&id);
                Some(CarriedStream {
                    stream: id,
                    kind,
                    layers,
                    limited,
                })
            })
            .collect()
    }

    /// What relay media may use of the site uplink, bit/s.
    fn site_bps(&self) -> u64 {
        (f64::from(self.config.uplink_kbps) * 1000.0 * self.config.budget.uplink_share) as u64
    }

    // ----- rooms -----

    fn room_mut(&mut self, room: &str) -> &mut RoomState {
        let home = split_room(room)
            .map(|(h, _)| h.to_owned())
            .unwrap_or_else(|| self.config.site.clone());
        let synced = home == self.config.site;
        self.rooms
            .entry(room.to_owned())
            .or_insert_with(|| RoomState {
                home,
                upstream: None,
                downstream: BTreeSet::new(),
                local: BTreeMap::new(),
                remote: BTreeMap::new(),
                interest_until: None,
                synced,
            })
    }

    fn has_interest(&self, now: Instant, room: &str) -> bool {
        self.rooms.get(room).is_some_and(|r| {
            !r.local.is_empty()
                || !r.downstream.is_empty()
                || r.interest_until.is_some_and(|t| now < t)
        })
    }

    fn link_up_to(&self, site: &str) -> bool {
        self.links.get(site).is_some_and(|l| l.up)
    }

    /// Whether the direct way to `home` has failed long enough to go through the hub.
    fn needs_hub(&self, now: Instant, home: &str) -> bool {
        let Some(hub) = &self.config.hub else {
            return false;
        };
        if hub == home || *hub == self.config.site || self.link_up_to(home) {
            return false;
        }
        self.failing
            .get(home)
            .is_some_and(|t| now.saturating_duration_since(*t) >= self.config.fallback_after)
    }

    fn is_upstream(&self, room: &str, site: &str) -> bool {
        self.rooms
            .get(room)
            .and_then(|r| r.upstream.as_deref())
            .is_some_and(|u| u == site)
    }

    fn is_neighbour(&self, room: &str, site: &str) -> bool {
        self.rooms
            .get(room)
            .is_some_and(|r| r.upstream.as_deref() == Some(site) || r.downstream.contains(site))
    }

    /// Choose the room's upstream, attach or detach as needed; drop the room without interest.
    // TODO(#5): the tree is rooted at the home: two other sites talk through it even when they
    // could reach each other, and a room whose home nobody reaches is unreachable.
    fn review_room(&mut self, now: Instant, room: &str) {
        let Some(r) = self.rooms.get(room) else {
            return;
        };
        if r.home == self.config.site {
            if r.local.is_empty() && r.downstream.is_empty() && r.remote.is_empty() {
                self.rooms.remove(room);
            }
            return;
        }
        if !self.has_interest(now, room) {
            let ids: Vec<MemberId> = r.remote.keys().cloned().collect();
            let upstream = r.upstream.clone();
            // Leaving the tree: what is dropped now is not announced to anyone.
            if let Some(r) = self.rooms.get_mut(room) {
                r.upstream = None;
            }
            if let Some(up) = upstream
                && self.link_up_to(&up)
            {
                self.send(
                    &up,
                    Control::Detach {
                        room: room.to_owned(),
                    },
                );
            }
            for id in ids {
                self.remove_member(room, &id, None);
            }
            self.rooms.remove(room);
            return;
        }
        let home = r.home.clone();
        let current = r.upstream.clone();
        // The home counts as unreachable from the moment we need it and have no link: a dial
        // through a dead link only times out later.
        if !self.link_up_to(&home) {
            self.failing.entry(home.clone()).or_insert(now);
        }
        let chosen = if self.link_up_to(&home) {
            Some(home.clone())
        } else if self.needs_hub(now, &home)
            && self
                .config
                .hub
                .as_deref()
                .is_some_and(|h| self.link_up_to(h))
        {
            self.config.hub.clone()
        } else {
            current.clone().or(Some(home))
        };
        if chosen == current {
            return;
        }
        if let Some(old) = &current
            && self.link_up_to(old)
        {
            self.send(
                old,
                Control::Detach {
                    room: room.to_owned(),
                },
            );
        }
        info!(room, upstream = ?chosen, "relay route");
        if let Some(r) = self.rooms.get_mut(room) {
            r.upstream = chosen.clone();
            r.synced = false;
        }
        // Streams from the old upstream now come through the new one.
        for s in self.streams.values_mut() {
            if s.room == room && s.via.is_some() && s.via == current {
                s.via = chosen.clone();
                s.sent_want = None;
            }
        }
        if let Some(up) = chosen
            && self.link_up_to(&up)
        {
            self.attach(now, room, &up);
        }
    }

    /// Attach to `up` for `room`: our members, and our wants for streams coming from it.
    fn attach(&mut self, _now: Instant, room: &str, up: &str) {
        self.send(
            up,
            Control::Attach {
                room: room.to_owned(),
            },
        );
        let members = self.members_for(room, up);
        self.send(
            up,
            Control::Members {
                room: room.to_owned(),
                members,
            },
        );
        let ids: Vec<StreamId> = self
            .streams
            .iter()
            .filter(|(_, s)| s.room == room && s.via.as_deref() == Some(up))
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            if let Some(s) = self.streams.get_mut(&id) {
                s.sent_want = None;
            }
            self.update_want(&id);
        }
    }

    // TODO(#5): any roster site may attach; a correction room should refuse sites that may not
    // hold its office's correction scope.
    fn on_attach(&mut self, now: Instant, from: &str, room: &str) {
        let Some((home, _)) = split_room(room) else {
            self.send(
                from,
                Control::NoRoom {
                    room: room.to_owned(),
                },
            );
            return;
        };
        let policy = if home == self.config.site {
            match self.local_rooms.get(room) {
                Some(p) => Some(p.clone()),
                None => {
                    self.send(
                        from,
                        Control::NoRoom {
                            room: room.to_owned(),
                        },
                    );
                    return;
                }
            }
        } else {
            self.policies.get(room).cloned()
        };
        debug!(room, peer = from, "attached");
        self.room_mut(room).downstream.insert(from.to_owned());
        if let Some(p) = policy {
            self.send(
                from,
                Control::Room {
                    room: room.to_owned(),
                    kind: p.kind,
                    limit: p.limit,
                    owner: p.owner,
                },
            );
        }
        if self.rooms.get(room).is_some_and(|r| r.synced) {
            let members = self.members_for(room, from);
            self.send(
                from,
                Control::Members {
                    room: room.to_owned(),
                    members,
                },
            );
        }
        self.review_room(now, room);
    }

    /// Every member of `room` we know, except those learned from `to`, with our tags.
    fn members_for(&self, room: &str, to: &str) -> Vec<Member> {
        let Some(r) = self.rooms.get(room) else {
            return Vec::new();
        };
        r.local
            .values()
            .cloned()
            .chain(
                r.remote
                    .values()
                    .filter(|(via, _)| via != to)
                    .map(|(_, m)| self.retag(m)),
            )
            .collect()
    }

    /// A member entry with our own tags for its tracks.
    fn retag(&self, member: &Member) -> Member {
        let mut m = member.clone();
        for t in &mut m.tracks {
            let id = StreamId {
                origin: member.id.origin.clone(),
                track: t.track,
            };
            if let Some(s) = self.streams.get(&id) {
                t.tag = s.info.tag;
            }
        }
        m
    }

    fn on_members(&mut self, now: Instant, from: &str, room: &str, members: Vec<Member>) {
        if !self.is_neighbour(room, from) {
            return;
        }
        let from_upstream = self.is_upstream(room, from);
        let incoming: BTreeSet<MemberId> = members.iter().map(|m| m.id.clone()).collect();
        // The snapshot replaces what came from that side of the tree: from the upstream,
        // everything not learned from a downstream; from a downstream, what came from it.
        let stale: Vec<MemberId> = self
            .rooms
            .get(room)
            .map(|r| {
                r.remote
                    .iter()
                    .filter(|(id, (via, _))| {
                        !incoming.contains(*id)
                            && if from_upstream {
                                !r.downstream.contains(via)
                            } else {
                                via == from
                            }
                    })
                    .map(|(id, _)| id.clone())
                    .collect()
            })
            .unwrap_or_default();
        for id in stale {
            self.remove_member(room, &id, None);
        }
        for member in members {
            if member.id.origin != self.config.site {
                self.upsert_member(room, from, member);
            }
        }
        if from_upstream {
            // Now the view is complete: the children get theirs (again).
            let downstream: Vec<String> = match self.rooms.get_mut(room) {
                Some(r) => {
                    r.synced = true;
                    r.downstream.iter().cloned().collect()
                }
                None => Vec::new(),
            };
            for child in downstream {
                if self.link_up_to(&child) {
                    let members = self.members_for(room, &child);
                    self.send(
                        &child,
                        Control::Members {
                            room: room.to_owned(),
                            members,
                        },
                    );
                }
            }
        }
        self.review_room(now, room);
    }

    fn upsert_member(&mut self, room: &str, via: &str, member: Member) {
        let site = self.config.site.clone();
        let Some(link) = self.links.get_mut(via) else {
            return;
        };
        let previous = self
            .rooms
            .get(room)
            .and_then(|r| r.remote.get(&member.id))
            .map(|(_, m)| m.clone());
        for t in &member.tracks {
            let id = StreamId {
                origin: member.id.origin.clone(),
                track: t.track,
            };
            link.tags_in.insert(t.tag, id);
        }
        // Tracks it no longer has.
        if let Some(prev) = &previous {
            for t in &prev.tracks {
                if !member.tracks.iter().any(|n| n.track == t.track) {
                    self.remove_stream(&StreamId {
                        origin: member.id.origin.clone(),
                        track: t.track,
                    });
                }
            }
        }
        for t in &member.tracks {
            let id = StreamId {
                origin: member.id.origin.clone(),
                track: t.track,
            };
            match self.streams.get_mut(&id) {
                Some(s) => {
                    if s.via.as_deref() != Some(via) {
                        s.via = Some(via.to_owned());
                        s.sent_want = None;
                    }
                }
                None => {
                    let mut info = t.clone();
                    info.tag = self.tag_for(&id);
                    self.add_stream(room, id.clone(), Some(via.to_owned()), info);
                }
            }
            self.update_want(&id);
        }
        let changed = previous.as_ref() != Some(&member);
        if let Some(r) = self.rooms.get_mut(room) {
            r.remote
                .insert(member.id.clone(), (via.to_owned(), member.clone()));
        }
        if changed && member.id.origin != site {
            self.outputs.push_back(Output::Member {
                room: room.to_owned(),
                member: member.clone(),
            });
            let relayed = self.retag(&member);
            self.flood(
                room,
                Some(via),
                &Control::Member {
                    room: room.to_owned(),
                    member: relayed,
                },
            );
        }
    }

    /// Remove a remote member; `from` is the neighbour that said so (not told back).
    fn remove_member(&mut self, room: &str, id: &MemberId, from: Option<&str>) {
        let Some((via, member)) = self.rooms.get_mut(room).and_then(|r| r.remote.remove(id)) else {
            return;
        };
        for t in &member.tracks {
            self.remove_stream(&StreamId {
                origin: id.origin.clone(),
                track: t.track,
            });
        }
        self.outputs.push_back(Output::Left {
            room: room.to_owned(),
            id: id.clone(),
        });
        self.flood(
            room,
            Some(from.unwrap_or(&via)),
            &Control::Left {
                room: room.to_owned(),
                id: id.clone(),
            },
        );
    }

    fn drop_members_via(&mut self, room: &str, via: &str) {
        let ids: Vec<MemberId> = self
            .rooms
            .get(room)
            .map(|r| {
                r.remote
                    .iter()
                    .filter(|(_, (v, _))| v == via)
                    .map(|(id, _)| id.clone())
                    .collect()
            })
            .unwrap_or_default();
        for id in ids {
            self.remove_member(room, &id, Some(via));
        }
    }

    /// Send `msg` to every tree neighbour of `room` that is up, except `except`.
    fn flood(&mut self, room: &str, except: Option<&str>, msg: &Control) {
        let Some(r) = self.rooms.get(room) else {
            return;
        };
        let targets: Vec<String> = r
            .upstream
            .iter()
            .chain(r.downstream.iter())
            .filter(|n| Some(n.as_str()) != except)
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        for to in targets {
            if self.link_up_to(&to) {
                self.send(&to, msg.clone());
            }
        }
    }

    fn send(&mut self, to: &str, msg: Control) {
        self.outputs.push_back(Output::Control {
            to: to.to_owned(),
            msg,
        });
    }

    // ----- streams and wants -----

    fn tag_for(&mut self, id: &StreamId) -> u32 {
        if let Some(s) = self.streams.get(id) {
            return s.info.tag;
        }
        let tag = self.next_tag;
        self.next_tag = self.next_tag.wrapping_add(1).max(1);
        tag
    }

    fn add_stream(&mut self, room: &str, id: StreamId, via: Option<String>, info: TrackInfo) {
        let layers = match info.kind {
            TrackKind::Audio => 1,
            TrackKind::Video => info.layer_heights.len().clamp(1, 3),
        };
        self.tags_out.insert(info.tag, id.clone());
        self.streams.insert(
            id,
            Stream {
                room: room.to_owned(),
                via,
                info,
                layers: (0..layers)
                    .map(|_| LayerState {
                        meter: Meter::default(),
                        buffer: SendBuffer::new(SEND_BUFFER),
                    })
                    .collect(),
                local_want: None,
                sent_want: None,
                carried_in: None,
                limited_reported: false,
                keyframe_asked: HashMap::new(),
            },
        );
    }

    fn remove_stream(&mut self, id: &StreamId) -> Option<Stream> {
        let s = self.streams.remove(id)?;
        self.tags_out.remove(&s.info.tag);
        self.wants.remove(id);
        if let Some((to, _)) = &s.sent_want
            && self.link_up_to(to)
        {
            let to = to.clone();
            self.send(
                &to,
                Control::Want {
                    stream: id.clone(),
                    layer: None,
                },
            );
        }
        for link in self.links.values_mut() {
            link.admitted.retain(|(s, _)| s != id);
            link.carried_out.remove(id);
        }
        Some(s)
    }

    /// Tell the stream's source how far we want it (for us and our other neighbours).
    fn update_want(&mut self, id: &StreamId) {
        let Some(s) = self.streams.get(id) else {
            return;
        };
        let Some(via) = s.via.clone() else {
            return;
        };
        let neighbours = self
            .wants
            .get(id)
            .into_iter()
            .flatten()
            .filter(|(n, _)| **n != via)
            .map(|(_, l)| *l)
            .max();
        let desired = neighbours.max(s.local_want);
        let current = s.sent_want.clone();
        let target = desired.map(|l| (via.clone(), l));
        if current == target {
            return;
        }
        if let Some((old, _)) = &current
            && *old != via
            && self.link_up_to(old)
        {
            let old = old.clone();
            self.send(
                &old,
                Control::Want {
                    stream: id.clone(),
                    layer: None,
                },
            );
        }
        if !self.link_up_to(&via) {
            if let Some(s) = self.streams.get_mut(id) {
                s.sent_want = None;
            }
            return;
        }
        if current.is_none() && desired.is_none() {
            return;
        }
        self.send(
            &via,
            Control::Want {
                stream: id.clone(),
                layer: desired,
            },
        );
        if let Some(s) = self.streams.get_mut(id) {
            s.sent_want = target;
        }
    }

    fn ask_keyframe(&mut self, now: Instant, id: &StreamId, layer: u8) {
        let Some(s) = self.streams.get_mut(id) else {
            return;
        };
        if s.keyframe_asked
            .get(&layer)
            .is_some_and(|t| now.saturating_duration_since(*t) < KEYFRAME_INTERVAL)
        {
            return;
        }
        s.keyframe_asked.insert(layer, now);
        match s.via.clone() {
            None => self.outputs.push_back(Output::Keyframe {
                stream: id.clone(),
                layer,
            }),
            Some(via) => {
                if self.link_up_to(&via) {
                    self.send(
                        &via,
                        Control::Keyframe {
                            stream: id.clone(),
                            layer,
                        },
                    );
                }
            }
        }
    }

    fn report_limited(&mut self, id: &StreamId) {
        let Some(s) = self.streams.get_mut(id) else {
            return;
        };
        let limited = s.info.kind == TrackKind::Video
            && s.carried_in
                .as_ref()
                .is_some_and(|(layers, limited)| layers.is_empty() && *limited);
        if limited != s.limited_reported {
            s.limited_reported = limited;
            self.outputs.push_back(Output::Limited {
                stream: id.clone(),
                limited,
            });
        }
    }

    // ----- media -----

    /// A packet of `id` (from `from`, or local): to the local SFU and every link it is
    /// admitted on.
    fn deliver(
        &mut self,
        now: Instant,
        id: &StreamId,
        layer: u8,
        packet: RelayPacket,
        from: Option<&str>,
    ) {
        let Some(s) = self.streams.get_mut(id) else {
            return;
        };
        let Some(l) = s.layers.get_mut(usize::from(layer)) else {
            return;
        };
        l.meter.record(now, packet.payload.len());
        l.buffer.push(Kept {
            seq: packet.seq,
            ts: packet.ts,
            marker: packet.marker,
            payload: packet.payload.clone(),
        });
        let tag = s.info.tag;
        let via = s.via.clone();
        if from.is_some() && s.local_want.is_some() {
            self.outputs.push_back(Output::Media {
                stream: id.clone(),
                layer,
                packet: packet.clone(),
            });
        }
        let key = (id.clone(), layer);
        let targets: Vec<String> = self
            .links
            .iter()
            .filter(|(site, link)| {
                link.up && Some(site.as_str()) != via.as_deref() && link.admitted.contains(&key)
            })
            .map(|(site, _)| site.clone())
            .collect();
        for to in targets {
            self.send_media(now, &to, id, tag, layer, &packet, false);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn send_media(
        &mut self,
        now: Instant,
        to: &str,
        id: &StreamId,
        tag: u32,
        layer: u8,
        packet: &RelayPacket,
        retransmission: bool,
    ) {
        let Some(link) = self.links.get_mut(to) else {
            return;
        };
        let restart = !retransmission && link.restart.remove(&(id.clone(), layer));
        let header = MediaHeader {
            tag,
            layer,
            seq: packet.seq,
            ts: packet.ts,
            marker: packet.marker,
            retransmission,
            restart,
        };
        let data = Datagram::Media(header, packet.payload.clone()).encode();
        if retransmission {
            link.counters.retransmissions += 1;
        } else {
            link.counters.media_packets += 1;
            link.counters.media_bytes += packet.payload.len() as u64;
        }
        let mut out = vec![data];
        if !retransmission && let Some((k, parities)) = link.protection {
            if restart {
                link.fec.remove(&(tag, layer));
            }
            let fp = FecPacket {
                seq: packet.seq,
                ts: packet.ts,
                marker: packet.marker,
                payload: packet.payload.clone(),
            };
            let encoder = link.fec.entry((tag, layer)).or_default();
            for (mut h, p) in encoder.push(now, k, parities, &fp) {
                h.tag = tag;
                h.layer = layer;
                link.counters.parity_packets += 1;
                out.push(Datagram::Parity(h, p).encode());
            }
        }
        for data in out {
            link.frag_id = link.frag_id.wrapping_add(1);
            for piece in fragment(data, link.max_datagram, link.frag_id) {
                self.outputs.push_back(Output::Datagram {
                    to: to.to_owned(),
                    data: piece,
                });
            }
        }
    }

    fn on_nack(&mut self, now: Instant, from: &str, tag: u32, layer: u8, seqs: &[u16]) {
        let Some(id) = self.tags_out.get(&tag).cloned() else {
            return;
        };
        let Some(link) = self.links.get_mut(from) else {
            return;
        };
        if !link.admitted.contains(&(id.clone(), layer)) {
            return;
        }
        // Retransmissions may use 15 % of the link's budget, a second's worth at most.
        let rate = link.budget_bps as f64 * 0.15 / 8.0;
        let elapsed = link
            .retx_at
            .map_or(1.0, |t| now.saturating_duration_since(t).as_secs_f64());
        link.retx_tokens = (link.retx_tokens + rate * elapsed).min(rate.max(3000.0));
        link.retx_at = Some(now);
        let Some(s) = self.streams.get(&id) else {
            return;
        };
        let Some(l) = s.layers.get(usize::from(layer)) else {
            return;
        };
        let mut resend = Vec::new();
        let mut tokens = link.retx_tokens;
        for &seq in seqs.iter().take(64) {
            let Some(kept) = l.buffer.get(seq) else {
                continue;
            };
            let cost = (kept.payload.len() as u64 + PACKET_OVERHEAD) as f64;
            if tokens < cost {
                break;
            }
            tokens -= cost;
            resend.push(RelayPacket {
                seq,
                ts: kept.ts,
                marker: kept.marker,
                payload: kept.payload.clone(),
            });
        }
        link.retx_tokens = tokens;
        for p in resend {
            self.send_media(now, from, &id, tag, layer, &p, true);
        }
    }

    // ----- timers -----

    fn arm(&mut self, now: Instant) {
        let any_up = self.links.values().any(|l| l.up);
        if any_up {
            self.next_fast.get_or_insert(now + FAST_TICK);
        }
        if any_up || !self.rooms.is_empty() || !self.links.is_empty() {
            self.next_slow.get_or_insert(now + SLOW_TICK);
        }
    }

    fn fast_tick(&mut self, now: Instant) {
        let sites: Vec<String> = self.links.keys().cloned().collect();
        for site in sites {
            let Some(link) = self.links.get_mut(&site) else {
                continue;
            };
            if !link.up {
                continue;
            }
            // NACKs, one message per layer.
            let rtt = link.est.rtt();
            let mut nacks = Vec::new();
            for ((tag, layer), rx) in &mut link.rx {
                if !rx.has_missing() {
                    continue;
                }
                let seqs = rx.due_nacks(now, rtt, &mut link.rx_stats);
                if !seqs.is_empty() {
                    nacks.push(Control::Nack {
                        tag: *tag,
                        layer: *layer,
                        seqs,
                    });
                }
            }
            // Parity of groups that waited long enough.
            let mut parity = Vec::new();
            let parities = link.protection.map_or(1, |(_, p)| p);
            for ((tag, layer), enc) in &mut link.fec {
                for (mut h, p) in enc.poll(now, FEC_MAX_WAIT, parities) {
                    h.tag = *tag;
                    h.layer = *layer;
                    parity.push(Datagram::Parity(h, p).encode());
                }
            }
            link.counters.parity_packets += parity.len() as u64;
            // Probe padding.
            let probe = link.est.probe_bps(now);
            let mut padding = Vec::new();
            if probe > 0 {
                let dt = link
                    .padding_at
                    .map_or(FAST_TICK, |t| now.saturating_duration_since(t))
                    .min(Duration::from_millis(100));
                link.padding_debt += probe as f64 * dt.as_secs_f64() / 8.0;
                let size = PADDING_SIZE.min(link.max_datagram);
                while link.padding_debt >= size as f64 {
                    link.padding_debt -= size as f64;
                    link.counters.padding_bytes += size as u64;
                    padding.push(Datagram::Padding(size).encode());
                }
                link.padding_at = Some(now);
            } else {
                link.padding_at = None;
                link.padding_debt = 0.0;
            }
            let max = link.max_datagram;
            for msg in nacks {
                self.send(&site, msg);
            }
            for data in parity.into_iter().chain(padding) {
                if let Some(link) = self.links.get_mut(&site) {
                    link.frag_id = link.frag_id.wrapping_add(1);
                    let id = link.frag_id;
                    for piece in fragment(data, max, id) {
                        self.outputs.push_back(Output::Datagram {
                            to: site.clone(),
                            data: piece,
                        });
                    }
                }
            }
        }
    }

    fn slow_tick(&mut self, now: Instant) {
        // Members behind a link down longer than the hold leave; so do its downstream marks.
        let hold = self.config.hold;
        let lost: Vec<String> = self
            .links
            .iter()
            .filter(|(_, l)| !l.up && now.saturating_duration_since(l.since) >= hold)
            .map(|(s, _)| s.clone())
            .collect();
        let rooms: Vec<String> = self.rooms.keys().cloned().collect();
        for room in &rooms {
            for site in &lost {
                let had = self.rooms.get(room).is_some_and(|r| {
                    r.downstream.contains(site) || r.remote.values().any(|(v, _)| v == site)
                });
                if had {
                    info!(room, peer = %site, "link down past the hold: its members leave");
                    if let Some(r) = self.rooms.get_mut(room) {
                        r.downstream.remove(site);
                    }
                    self.drop_members_via(room, site);
                }
            }
            self.review_room(now, room);
        }
        self.reallocate(now);
    }

    /// Recompute every link's share, budget and admitted units; tell each neighbour what it
    /// gets, and ask sources for keyframes of newly admitted video layers.
    fn reallocate(&mut self, now: Instant) {
        // What each up link would carry with everything it wants.
        let mut offers: Vec<(String, Vec<Unit<StreamId>>)> = Vec::new();
        for (site, link) in &self.links {
            if !link.up {
                continue;
            }
            let mut units = Vec::new();
            for (id, wants) in &self.wants {
                let Some(&max) = wants.get(site) else {
                    continue;
                };
                let Some(s) = self.streams.get(id) else {
                    continue;
                };
                if s.via.as_deref() == Some(site.as_str()) {
                    continue;
                }
                let fresh = !s.ever_received();
                for layer in 0..s.layer_count().min(usize::from(max) + 1) {
                    if !fresh && !s.layers[layer].meter.active(now) {
                        continue;
                    }
                    units.push(Unit {
                        stream: id.clone(),
                        layer: layer as u8,
                        audio: s.info.kind == TrackKind::Audio,
                        bps: s.bps(now, layer),
                    });
                }
            }
            offers.push((site.clone(), units));
        }
        let factor = |link: &Link| {
            let fec = link
                .protection
                .map_or(1.0, |(k, p)| 1.0 + p as f64 / k as f64);
            fec / RESERVE
        };
        let demands: Vec<u64> = offers
            .iter()
            .map(|(site, units)| {
                // A little over, so that rounding never leaves the last unit out.
                let total: u64 = units.iter().map(|u| u.bps).sum();
                (total as f64 * factor(&self.links[site]) * 1.01) as u64 + 1000
            })
            .collect();
        // Each link gets its fair share of the site uplink, and may use what nobody needs.
        let mut caps = share(self.site_bps(), &demands);
        let slack = self.site_bps().saturating_sub(caps.iter().sum());
        for cap in &mut caps {
            *cap += slack;
        }

        for ((site, units), cap) in offers.into_iter().zip(caps) {
            let Some(link) = self.links.get_mut(&site) else {
                continue;
            };
            // A link that wants nothing keeps a nominal cap so its estimate means something.
            link.cap_bps = cap.max(self.config.budget.min_bps);
            let f = factor(link);
            let estimate = link.est.estimate_bps(link.cap_bps);
            link.budget_bps = (estimate as f64 / f) as u64;
            let estimate_limits = link.est.estimate_bps(u64::MAX) < link.cap_bps;
            let alloc = link.alloc.allocate(now, link.budget_bps, &units);
            if let Some(total) = alloc.next_total_bps
                && estimate_limits
            {
                let target = ((total as f64 * f) as u64).min(link.cap_bps);
                let used = link.est.sent_bps();
                link.est.request_probe(now, used, target);
            }
            let added: Vec<(StreamId, u8)> =
                alloc.admitted.difference(&link.admitted).cloned().collect();
            if alloc.admitted != link.admitted {
                debug!(
                    peer = %site,
                    budget_bps = link.budget_bps,
                    estimate_bps = estimate,
                    sent_bps = link.est.sent_bps(),
                    loss = link.est.loss(),
                    rtt_ms = link.est.rtt().as_millis() as u64,
                    units = alloc.admitted.len(),
                    "relay allocation changed"
                );
            }
            link.restart.extend(added.iter().cloned());
            link.admitted = alloc.admitted.clone();
            // Tell the neighbour what it gets of each stream it wants.
            let mut carried: BTreeMap<StreamId, (Vec<u8>, bool)> = BTreeMap::new();
            for u in &units {
                carried.entry(u.stream.clone()).or_default();
            }
            for (id, layer) in &alloc.admitted {
                carried.entry(id.clone()).or_default().0.push(*layer);
            }
            let mut messages = Vec::new();
            for (id, (layers, _)) in &carried {
                let upstream_limited = self
                    .streams
                    .get(id)
                    .and_then(|s| s.carried_in.as_ref())
                    .is_some_and(|(_, l)| *l);
                let limited = alloc.limited.contains(id) || upstream_limited;
                let entry = (layers.clone(), limited);
                if link.carried_out.get(id) != Some(&entry) {
                    link.carried_out.insert(id.clone(), entry);
                    messages.push(Control::Carried {
                        stream: id.clone(),
                        layers: layers.clone(),
                        limited,
                    });
                }
            }
            link.carried_out.retain(|id, _| carried.contains_key(id));
            for msg in messages {
                self.send(&site, msg);
            }
            for (id, layer) in added {
                let video = self
                    .streams
                    .get(&id)
                    .is_some_and(|s| s.info.kind == TrackKind::Video);
                if video {
                    self.ask_keyframe(now, &id, layer);
                }
            }
        }
    }
}

fn sorted(mut v: Vec<CarriedStream>) -> Vec<CarriedStream> {
    v.sort_by(|a, b| a.stream.cmp(&b.stream));
    v
}

#[cfg(test)]
mod tests;
