//! The engine's side of the relay between sites: it owns the sans-IO relay core
//! ([`crate::relay::core`]) next to the SFU and the connections of the quinn network
//! ([`crate::relay::net`]), and translates between them.
//!
//! Members of a room at other sites appear in the local SFU as *proxy* participants that
//! publish *proxy* tracks: local browsers see, subscribe to and receive them like local
//! publishers. Packets of local tracks that a remote site wants are handed to the core; packets
//! the core receives feed the proxy tracks; keyframe requests for a proxy track go to the
//! stream's origin, and those from other sites reach the local publisher.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use super::Engine;
use crate::metrics::MediaMetrics;
use crate::relay::budget::PathSample;
use crate::relay::core::{LinkReport, Output, Relay, RelayConfig, RelayPacket, split_room};
use crate::relay::net::{LinkHandle, Net, NetEvent};
use crate::relay::wire::{Member, MemberId, StreamId, TrackInfo, TrackKind};
use crate::room::{Role, RoomPolicy};
use crate::sfu::codec::VideoCodec;
use crate::sfu::{InPacket, Kind, ParticipantId, TrackId, TrackSpec};
use crate::signal::{PeerInfo, ServerMessage};

/// How often quinn's path statistics are sampled for the budget.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// A member of another site, seen here as a participant of the local SFU.
#[derive(Debug)]
struct Proxy {
    id: MemberId,
    sub: String,
    tracks: HashMap<StreamId, (TrackId, Kind)>,
}

/// Relay state of the engine.
pub(super) struct RelayState {
    core: Relay,
    net: Net,
    links: HashMap<String, LinkHandle>,
    proxies: HashMap<ParticipantId, Proxy>,
    proxy_of: HashMap<MemberId, ParticipantId>,
    /// Remote stream → its proxy track, and back.
    stream_track: HashMap<StreamId, TrackId>,
    track_stream: HashMap<TrackId, StreamId>,
    limited: HashSet<StreamId>,
    lookups: HashMap<String, Vec<oneshot::Sender<Option<RoomPolicy>>>>,
    wanted: BTreeSet<String>,
    next_sample: Instant,
    counted: HashMap<String, [u64; 4]>,
    refused_counted: u64,
}

impl std::fmt::Debug for RelayState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayState")
            .field("site", &self.core.site())
            .field("links", &self.links.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl RelayState {
    pub(super) fn new(config: RelayConfig, net: Net) -> Self {
        Self {
            core: Relay::new(config),
            net,
            links: HashMap::new(),
            proxies: HashMap::new(),
            proxy_of: HashMap::new(),
            stream_track: HashMap::new(),
            track_stream: HashMap::new(),
            limited: HashSet::new(),
            lookups: HashMap::new(),
            wanted: BTreeSet::new(),
            next_sample: Instant::now(),
            counted: HashMap::new(),
            refused_counted: 0,
        }
    }
}

impl RelayState {
    /// Rooms defined on this node: those whose home is this site are announced by the core.
    pub(super) fn define_rooms(&mut self, policies: &[RoomPolicy]) {
        for policy in policies {
            if split_room(&policy.id).is_some_and(|(home, _)| home == self.core.site()) {
                self.core.define_room(policy.clone());
            }
        }
    }
}

/// The next event of the relay network, or never when there is no relay.
pub(super) async fn recv_net(rx: Option<&mut mpsc::Receiver<NetEvent>>) -> Option<NetEvent> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

fn kind_of(info: &TrackInfo) -> Kind {
    match info.kind {
        TrackKind::Audio => Kind::Audio,
        TrackKind::Video => Kind::Video(VideoCodec::Vp8),
    }
}

impl Engine {
    /// When the relay needs the engine next.
    pub(super) fn relay_deadline(&self) -> Option<Instant> {
        let r = self.relay.as_ref()?;
        let sample = (!r.links.is_empty()).then_some(r.next_sample);
        match (r.core.poll_timeout(), sample) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Timers of the core, and quinn's path samples.
    pub(super) fn relay_timeouts(&mut self, now: Instant) {
        let Some(r) = self.relay.as_mut() else {
            return;
        };
        if r.core.poll_timeout().is_some_and(|t| t <= now) {
            r.core.handle_timeout(now);
        }
        if now >= r.next_sample {
            r.next_sample = now + SAMPLE_EVERY;
            for (site, link) in &r.links {
                let stats = link.conn.stats();
                let sample = PathSample {
                    sent_bytes: stats.udp_tx.bytes,
                    sent_packets: stats.path.sent_packets,
                    lost_packets: stats.path.lost_packets,
                    lost_bytes: stats.path.lost_bytes,
                    rtt: stats.path.rtt,
                    cwnd: stats.path.cwnd,
                };
                let max = link.conn.max_datagram_size().unwrap_or(1200);
                r.core.path_sample(now, site, sample, max);
                if let Some(budget) = r.core.link_budget(site) {
                    link.floor_bps
                        .store(budget, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
        self.relay_flush(now);
    }

    /// An event from the relay network.
    pub(super) fn relay_event(&mut self, now: Instant, event: NetEvent) {
        let Some(r) = self.relay.as_mut() else {
            return;
        };
        match event {
            NetEvent::Up { site, link } => {
                let max = link.conn.max_datagram_size().unwrap_or(1200);
                r.links.insert(site.clone(), link);
                r.core.link_up(now, &site, max);
            }
            NetEvent::Down { site, id } => {
                if r.links.get(&site).is_some_and(|l| l.id == id) {
                    r.links.remove(&site);
                    r.core.link_down(now, &site);
                }
            }
            NetEvent::DialFailed { site } => {
                if !r.links.contains_key(&site) {
                    r.core.dial_failed(now, &site);
                }
            }
            NetEvent::Control { site, id, msg } => {
                if r.links.get(&site).is_some_and(|l| l.id == id) {
                    r.core.on_control(now, &site, msg);
                }
            }
            NetEvent::Datagram { site, id, data } => {
                if r.links.get(&site).is_some_and(|l| l.id == id) {
                    r.core.on_datagram(now, &site, data);
                }
            }
        }
        self.relay_flush(now);
    }

    /// Act on everything the core decided.
    pub(super) fn relay_flush(&mut self, now: Instant) {
        loop {
            let Some(r) = self.relay.as_mut() else {
                return;
            };
            let Some(output) = r.core.poll_output() else {
                break;
            };
            match output {
                Output::Control { to, msg } => {
                    if let Some(link) = r.links.get(&to)
                        && link.control.try_send(msg).is_err()
                    {
                        warn!(peer = %to, "relay peer does not read its control stream; closing");
                        link.conn
                            .close(quinn::VarInt::from_u32(4), b"control stream stalled");
                    }
                }
                Output::Datagram { to, data } => {
                    if let Some(link) = r.links.get(&to) {
                        // quinn drops the oldest queued datagram to make room: count it.
                        if link.conn.datagram_send_buffer_space() < data.len() {
                            self.metrics
                                .relay_send_drops
                                .get_or_create(&vec![("peer".to_owned(), to.clone())])
                                .inc();
                        }
                        if let Err(e) = link.conn.send_datagram(data) {
                            debug!(peer = %to, error = %e, "relay datagram not sent");
                        }
                    }
                }
                Output::Room { room, policy } => {
                    if let Some(policy) = &policy {
                        self.rooms.define(policy.clone());
                    }
                    if let Some(waiting) = r.lookups.remove(&room) {
                        for reply in waiting {
                            let _ = reply.send(policy.clone());
                        }
                    }
                }
                Output::Member { room, member } => self.proxy_member(now, &room, member),
                Output::Left { room, id } => self.proxy_left(now, &room, &id),
                Output::Media {
                    stream,
                    layer,
                    packet,
                } => {
                    if let Some(&track) = r.stream_track.get(&stream) {
                        self.sfu.handle_rtp(
                            now,
                            track,
                            usize::from(layer),
                            InPacket {
                                ssrc: 0,
                                sequence_number: packet.seq,
                                timestamp: packet.ts,
                                marker: packet.marker,
                                payload: packet.payload,
                            },
                        );
                    }
                }
                Output::Keyframe { stream, layer } => {
                    self.sfu
                        .request_keyframe_for(now, TrackId(stream.track), usize::from(layer));
                }
                Output::Limited { stream, limited } => {
                    if limited {
                        r.limited.insert(stream.clone());
                    } else {
                        r.limited.remove(&stream);
                    }
                    let publisher = r
                        .stream_track
                        .get(&stream)
                        .and_then(|t| self.sfu.track_publisher(*t));
                    if let Some(publisher) = publisher {
                        self.notify_limited(publisher, limited);
                    }
                }
            }
        }
        // SFU outputs caused by relayed packets (forwarding to browsers).
        self.sfu_outputs(now);
        if let Some(r) = self.relay.as_mut() {
            let wanted = r.core.wanted_links(now);
            if wanted != r.wanted {
                r.net.set_wanted(wanted.clone());
                r.wanted = wanted;
            }
        }
    }

    /// Tell the local subscribers of `publisher` whether its video is held back on the way.
    fn notify_limited(&mut self, publisher: ParticipantId, video_limited: bool) {
        let subscribers: Vec<u64> = self
            .sessions
            .iter()
            .filter(|(_, s)| {
                s.joined
                    .as_ref()
                    .is_some_and(|j| j.subs.contains_key(&publisher))
            })
            .map(|(id, _)| *id)
            .collect();
        for session in subscribers {
            self.send(
                session,
                ServerMessage::Relay {
                    publisher,
                    video_limited,
                },
            );
        }
    }

    /// After a local subscription to `publisher`: say so at once if its video is held back.
    pub(super) fn relay_subscribed(&mut self, session: u64, publisher: ParticipantId) {
        let Some(r) = self.relay.as_ref() else {
            return;
        };
        let Some(proxy) = r.proxies.get(&publisher) else {
            return;
        };
        if proxy.tracks.keys().any(|s| r.limited.contains(s)) {
            self.send(
                session,
                ServerMessage::Relay {
                    publisher,
                    video_limited: true,
                },
            );
        }
    }

    /// A remote member joined or changed its tracks: mirror it as a proxy participant.
    fn proxy_member(&mut self, now: Instant, room: &str, member: Member) {
        let Some(r) = self.relay.as_mut() else {
            return;
        };
        let pid = match r.proxy_of.get(&member.id) {
            Some(pid) => *pid,
            None => {
                let pid = self.next_id;
                self.next_id += 1;
                if self.sfu.join(room, pid).is_err() {
                    return;
                }
                self.rooms.add_remote(room, pid, member.role);
                let Some(r) = self.relay.as_mut() else {
                    return;
                };
                r.proxy_of.insert(member.id.clone(), pid);
                r.proxies.insert(
                    pid,
                    Proxy {
                        id: member.id.clone(),
                        sub: member.sub.clone(),
                        tracks: HashMap::new(),
                    },
                );
                debug!(room, origin = %member.id.origin, pid, "remote member");
                pid
            }
        };
        let Some(r) = self.relay.as_mut() else {
            return;
        };
        let Some(proxy) = r.proxies.get_mut(&pid) else {
            return;
        };
        let wanted: HashMap<StreamId, &TrackInfo> = member
            .tracks
            .iter()
            .map(|t| {
                let id = StreamId {
                    origin: member.id.origin.clone(),
                    track: t.track,
                };
                (id, t)
            })
            .collect();
        let gone: Vec<StreamId> = proxy
            .tracks
            .keys()
            .filter(|s| !wanted.contains_key(*s))
            .cloned()
            .collect();
        let mut changed = !gone.is_empty();
        for stream in gone {
            if let Some((track, _)) = proxy.tracks.remove(&stream) {
                self.sfu.unpublish(track);
                r.stream_track.remove(&stream);
                r.track_stream.remove(&track);
            }
        }
        for (stream, info) in wanted {
            if proxy.tracks.contains_key(&stream) {
                continue;
            }
            let kind = kind_of(info);
            let spec = TrackSpec {
                kind,
                clock_rate: info.clock_rate,
                layer_heights: info.layer_heights.clone(),
            };
            if let Ok(track) = self.sfu.publish(pid, spec) {
                proxy.tracks.insert(stream.clone(), (track, kind));
                r.stream_track.insert(stream.clone(), track);
                r.track_stream.insert(track, stream);
                changed = true;
            }
        }
        // The room sees a new (or changed) publisher, like a local one.
        if changed && let Some(info) = self.peer_info(pid) {
            let members: Vec<ParticipantId> = self.sfu.room_members(room).to_vec();
            for m in members.into_iter().filter(|m| *m != pid) {
                self.send(m, ServerMessage::Published(info.clone()));
            }
        }
        let _ = now;
    }

    /// A remote member left: its proxy leaves the local room.
    fn proxy_left(&mut self, _now: Instant, room: &str, id: &MemberId) {
        let Some(r) = self.relay.as_mut() else {
            return;
        };
        let Some(pid) = r.proxy_of.remove(id) else {
            return;
        };
        if let Some(proxy) = r.proxies.remove(&pid) {
            for (stream, (track, _)) in proxy.tracks {
                r.stream_track.remove(&stream);
                r.track_stream.remove(&track);
                r.limited.remove(&stream);
            }
        }
        let members: Vec<ParticipantId> = self.sfu.room_members(room).to_vec();
        self.sfu.leave(pid);
        self.rooms.release(room, pid);
        for member in members.into_iter().filter(|m| *m != pid) {
            if let Some(cid) = self
                .sessions
                .get_mut(&member)
                .and_then(|s| s.joined.as_mut())
                .and_then(|j| j.subs.remove(&pid))
            {
                self.close_conn(cid);
            }
            self.send(member, ServerMessage::Left { participant: pid });
        }
    }

    /// What the room sees of a proxy participant.
    pub(super) fn relay_peer_info(&self, participant: ParticipantId) -> Option<PeerInfo> {
        let proxy = self.relay.as_ref()?.proxies.get(&participant)?;
        if proxy.tracks.is_empty() {
            return None;
        }
        Some(PeerInfo {
            participant,
            sub: proxy.sub.clone(),
            audio: proxy.tracks.values().any(|(_, k)| *k == Kind::Audio),
            video: proxy
                .tracks
                .values()
                .any(|(_, k)| matches!(k, Kind::Video(_))),
            site: Some(proxy.id.origin.clone()),
        })
    }

    /// A local participant joined a room: remote sites must hear of it.
    pub(super) fn relay_join(
        &mut self,
        now: Instant,
        room: &str,
        session: u64,
        sub: &str,
        role: Role,
    ) {
        if let Some(r) = self.relay.as_mut() {
            r.core.local_join(now, room, session, sub, role);
        }
    }

    /// A local participant left.
    pub(super) fn relay_leave(&mut self, now: Instant, room: &str, session: u64) {
        if let Some(r) = self.relay.as_mut() {
            r.core.local_leave(now, room, session);
        }
    }

    /// A local participant published tracks (all of one publication at once).
    pub(super) fn relay_publish(
        &mut self,
        now: Instant,
        room: &str,
        session: u64,
        tracks: &[(TrackId, TrackSpec)],
    ) {
        if let Some(r) = self.relay.as_mut() {
            let infos = tracks
                .iter()
                .map(|(track, spec)| TrackInfo {
                    track: track.0,
                    tag: 0,
                    kind: match spec.kind {
                        Kind::Audio => TrackKind::Audio,
                        Kind::Video(_) => TrackKind::Video,
                    },
                    clock_rate: spec.clock_rate,
                    layer_heights: spec.layer_heights.clone(),
                })
                .collect();
            r.core.local_publish(now, room, session, infos);
        }
    }

    /// A local track is gone.
    pub(super) fn relay_unpublish(&mut self, now: Instant, track: TrackId) {
        if let Some(r) = self.relay.as_mut() {
            r.core.local_unpublish(now, track.0);
        }
    }

    /// A packet of a local track: to the core when some site wants the track.
    pub(super) fn relay_local_rtp(
        &mut self,
        now: Instant,
        track: TrackId,
        layer: usize,
        p: &InPacket,
    ) {
        let Some(r) = self.relay.as_mut() else {
            return;
        };
        if !r.core.forwards_local(track.0) {
            return;
        }
        let packet = RelayPacket {
            seq: p.sequence_number,
            ts: p.timestamp,
            marker: p.marker,
            payload: Bytes::clone(&p.payload),
        };
        r.core.local_rtp(now, track.0, layer as u8, packet);
    }

    /// The SFU wants a keyframe of `track`: true when it is a proxy track (asked of its
    /// origin through the relay), false for a local publisher.
    pub(super) fn relay_keyframe(&mut self, now: Instant, track: TrackId, layer: usize) -> bool {
        let Some(r) = self.relay.as_mut() else {
            return false;
        };
        let Some(stream) = r.track_stream.get(&track).cloned() else {
            return false;
        };
        r.core.keyframe_request(now, &stream, layer as u8);
        true
    }

    /// How far local subscribers want each remote stream, for the core.
    // TODO(#5): by the size subscribers asked for, not by their bandwidth: a link may carry a
    // layer nobody behind it can use.
    pub(super) fn relay_update_wants(&mut self, now: Instant) {
        let Some(r) = self.relay.as_mut() else {
            return;
        };
        for (stream, track) in &r.stream_track {
            let want = self.sfu.track_demand(*track).map(|l| l as u8);
            r.core.set_local_want(now, stream, want);
        }
    }

    /// A token asks for `room`: its policy, from here or from its home site.
    pub(super) fn relay_lookup(
        &mut self,
        now: Instant,
        room: String,
        reply: oneshot::Sender<Option<RoomPolicy>>,
    ) {
        let local = self.rooms.policy(&room).cloned();
        let remote = split_room(&room).is_some_and(|(home, _)| Some(home) != self.site());
        match (local, self.relay.as_mut()) {
            (Some(policy), _) => {
                let _ = reply.send(Some(policy));
            }
            (None, Some(r)) if remote => {
                r.lookups.entry(room.clone()).or_default().push(reply);
                r.core.lookup_room(now, &room);
                self.relay_flush(now);
            }
            _ => {
                let _ = reply.send(None);
            }
        }
    }

    fn site(&self) -> Option<&str> {
        self.relay.as_ref().map(|r| r.core.site())
    }

    /// Every link, for the API.
    pub(super) fn relay_report(&self, now: Instant) -> Vec<LinkReport> {
        self.relay
            .as_ref()
            .map(|r| r.core.report(now))
            .unwrap_or_default()
    }

    /// Every second: wants, and the relay's metrics.
    pub(super) fn relay_tick(&mut self, now: Instant) {
        self.relay_update_wants(now);
        let Some(r) = self.relay.as_mut() else {
            return;
        };
        let report = r.core.report(now);
        let refused = r.net.refused();
        export(&self.metrics, &report, &mut r.counted);
        self.metrics
            .relay_refused
            .inc_by(refused.saturating_sub(r.refused_counted));
        r.refused_counted = refused;
        self.relay_flush(now);
    }
}

fn export(m: &MediaMetrics, report: &[LinkReport], counted: &mut HashMap<String, [u64; 4]>) {
    for link in report {
        let peer = vec![("peer".to_owned(), link.site.clone())];
        m.relay_link_up.get_or_create(&peer).set(i64::from(link.up));
        m.relay_budget_bps.get_or_create(&peer).set(link.budget_bps);
        m.relay_estimate_bps
            .get_or_create(&peer)
            .set(link.estimate_bps);
        m.relay_sent_bps.get_or_create(&peer).set(link.sent_bps);
        m.relay_rtt_seconds
            .get_or_create(&peer)
            .set(link.rtt_ms / 1000.0);
        m.relay_loss_ratio.get_or_create(&peer).set(link.loss);
        for (direction, streams) in [("send", &link.sending), ("receive", &link.receiving)] {
            let labels = vec![
                ("peer".to_owned(), link.site.clone()),
                ("direction".to_owned(), direction.to_owned()),
            ];
            m.relay_streams
                .get_or_create(&labels)
                .set(streams.len() as i64);
            let layers: usize = streams.iter().map(|s| s.layers.len()).sum();
            m.relay_layers.get_or_create(&labels).set(layers as i64);
        }
        let now = [
            link.rx.recovered,
            link.rx.retransmitted,
            link.rx.nacked,
            link.rx.lost,
        ];
        let before = counted.entry(link.site.clone()).or_default();
        let counters = [
            &m.relay_recovered,
            &m.relay_retransmitted,
            &m.relay_nacked,
            &m.relay_lost,
        ];
        for ((counter, now), before) in counters.iter().zip(now).zip(before.iter_mut()) {
            counter
                .get_or_create(&peer)
                .inc_by(now.saturating_sub(*before));
            *before = now;
        }
    }
}
