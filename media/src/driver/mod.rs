//! The IO driver: one UDP socket (and a TCP listener on the same port number for ICE-TCP)
//! shared by every WebRTC session of the node, the webrtc-rs `rtc` peer connections, the rooms
//! and the SFU core, all owned by one engine task.
//!
//! Signaling sessions (one per `/ws` socket) talk to the engine through a bounded command
//! channel and receive [`ServerMessage`]s on their own bounded channel. Datagrams are routed to
//! peer connections by [`crate::mux::Demux`]; RTP read from a publisher's connection goes
//! through the SFU core, and what the core outputs is written to subscribers' connections.

mod pc;
mod record;
mod relay;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpReceiverId, RTCRtpSenderId};
use rtc::sansio::Protocol;
use rtc::shared::tcp_framing::{TcpFrameDecoder, frame_packet};
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::Error;
use crate::metrics::MediaMetrics;
use crate::mux::Demux;
use crate::relay::core::{LinkReport, RelayConfig};
use crate::relay::net::{NetEvent, RelayOptions};
use crate::room::{RoomPolicy, Rooms};
use crate::sfu::codec::VideoCodec;
use crate::sfu::{
    DownId, InPacket, Kind, Output, ParticipantId, Sfu, SfuConfig, SfuStats, SubscribePrefs,
    TrackId, TrackSpec,
};
use crate::signal::{ClientMessage, ErrorCode, PeerInfo, ServerMessage, parse_client};
use crate::token::{Claims, TokenKey, unix_now};

pub use pc::Reachable;
pub use record::{RecordedFile, TAP_QUEUE, WRITE_CHUNK};

/// Capacity of the command channel into the engine. Signaling is light; a full channel means
/// the engine is overloaded and the session gets `rate_limited`.
const COMMAND_QUEUE: usize = 256;
/// Capacity of each session's event channel; a browser that does not read is dropped.
const EVENT_QUEUE: usize = 64;
/// Capacity of each ICE-TCP stream's queues, in packets.
const TCP_QUEUE: usize = 256;
/// Most datagrams read in one turn of the engine loop.
const RECV_BATCH: usize = 64;
/// Largest datagram we read.
const MAX_DATAGRAM: usize = 1500;
/// How often quality reports and metrics are refreshed.
const TICK: Duration = Duration::from_secs(1);
/// Most joins a signaling session may attempt (a flood of joins is refused, not served).
const MAX_JOINS_PER_SESSION: u32 = 20;

/// How to run the media engine.
#[derive(Debug, Clone)]
pub struct MediaOptions {
    /// Address to bind UDP (and TCP for ICE-TCP) on; the site config's `[listen] rtc`.
    pub listen: SocketAddr,
    /// IP put in host candidates (the site config's `[listen] rtc_advertise`). Default: the
    /// listen IP; for a wildcard bind, the address the host's default route leaves from, or
    /// 127.0.0.1 when the host has no default route.
    // TODO(#4): with a wildcard bind, learn each datagram's local address (IP_PKTINFO) to offer
    // one candidate per interface; today every answer offers the one advertised address.
    pub advertise: Option<IpAddr>,
    /// Offer ICE-TCP on the same port number. Default true: some site networks block UDP.
    pub ice_tcp: bool,
    /// Tuning of the SFU core.
    pub sfu: SfuConfig,
    /// Rooms of this node (global ids, `site/room`).
    pub rooms: Vec<RoomPolicy>,
    /// The relay between sites; `None` runs the node alone.
    pub relay: Option<RelayOptions>,
}

impl MediaOptions {
    /// Options for `listen` with every default.
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            advertise: None,
            ice_tcp: true,
            sfu: SfuConfig::default(),
            rooms: Vec::new(),
            relay: None,
        }
    }
}

enum Command {
    Open {
        events: mpsc::Sender<ServerMessage>,
        reply: oneshot::Sender<u64>,
    },
    Client {
        session: u64,
        msg: ClientMessage,
    },
    Close {
        session: u64,
    },
    DefineRoom(RoomPolicy),
    /// Start copying a room's received packets to a recording's writer.
    Tap {
        room: String,
        events: mpsc::Sender<record::TapEvent>,
    },
    /// Stop recording a room.
    Untap {
        room: String,
    },
    /// A recording needs a keyframe of a participant's recorded video layer.
    TapKeyframe {
        participant: ParticipantId,
    },
    LookupRoom {
        room: String,
        reply: oneshot::Sender<Option<RoomPolicy>>,
    },
    Links {
        reply: oneshot::Sender<Vec<LinkReport>>,
    },
}

enum TcpEvent {
    Opened {
        peer: SocketAddr,
        writer: mpsc::Sender<Vec<u8>>,
    },
    Packet {
        peer: SocketAddr,
        data: Vec<u8>,
    },
    Closed {
        peer: SocketAddr,
    },
}

/// The node's handle on its media engine: cheap to clone.
#[derive(Debug, Clone)]
pub struct MediaHandle {
    commands: mpsc::Sender<Command>,
    tokens: Arc<TokenKey>,
    metrics: Arc<MediaMetrics>,
    local_addr: SocketAddr,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Command")
    }
}

impl MediaHandle {
    /// The bound media address (UDP; ICE-TCP listens on the same port number).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The engine's metrics, for the node's registry.
    pub fn metrics(&self) -> &Arc<MediaMetrics> {
        &self.metrics
    }

    /// Issue a join token.
    pub fn issue_token(&self, claims: &Claims) -> String {
        self.tokens.issue(claims)
    }

    /// Define or redefine a room.
    pub async fn define_room(&self, policy: RoomPolicy) -> Result<(), Error> {
        self.commands
            .send(Command::DefineRoom(policy))
            .await
            .map_err(|_| Error::EngineStopped)
    }

    /// Record `room`: every publisher in it (now or later) into its own WebM file under `dir`,
    /// until [`MediaHandle::stop_recording`]. Each finished file is sent to `done`. Recording a
    /// room already recorded restarts it (its files so far are finished).
    pub async fn start_recording(
        &self,
        room: &str,
        dir: std::path::PathBuf,
        done: mpsc::Sender<record::RecordedFile>,
    ) -> Result<(), Error> {
        let (events, events_rx) = mpsc::channel(record::TAP_QUEUE);
        tokio::spawn(record::write_room(
            room.to_owned(),
            dir,
            events_rx,
            self.commands.clone(),
            done,
            self.metrics.clone(),
        ));
        self.commands
            .send(Command::Tap {
                room: room.to_owned(),
                events,
            })
            .await
            .map_err(|_| Error::EngineStopped)
    }

    /// Stop recording `room`; its files are finished and reported. Nothing if it is not
    /// recorded.
    pub async fn stop_recording(&self, room: &str) -> Result<(), Error> {
        self.commands
            .send(Command::Untap {
                room: room.to_owned(),
            })
            .await
            .map_err(|_| Error::EngineStopped)
    }

    /// The policy of `room` (global id): of this node, or learned from the room's home site
    /// over the relay (which may take a round trip). `None` when the home has no such room;
    /// [`Error::RoomUnreachable`] when no answer came within `within`.
    pub async fn resolve_room(
        &self,
        room: &str,
        within: Duration,
    ) -> Result<Option<RoomPolicy>, Error> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::LookupRoom {
                room: room.to_owned(),
                reply,
            })
            .await
            .map_err(|_| Error::EngineStopped)?;
        match tokio::time::timeout(within, answer).await {
            Ok(answer) => answer.map_err(|_| Error::EngineStopped),
            Err(_) => Err(Error::RoomUnreachable {
                room: room.to_owned(),
            }),
        }
    }

    /// The relay's links to other sites, for the API and the status page.
    pub async fn relay_links(&self) -> Result<Vec<LinkReport>, Error> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Links { reply })
            .await
            .map_err(|_| Error::EngineStopped)?;
        answer.await.map_err(|_| Error::EngineStopped)
    }

    /// Open a signaling session (one per WebSocket).
    pub async fn open_session(&self) -> Result<SignalSession, Error> {
        let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
        let (reply, id) = oneshot::channel();
        self.commands
            .send(Command::Open {
                events: events_tx,
                reply,
            })
            .await
            .map_err(|_| Error::EngineStopped)?;
        let id = id.await.map_err(|_| Error::EngineStopped)?;
        Ok(SignalSession {
            id,
            commands: self.commands.clone(),
            events,
        })
    }
}

/// One browser's signaling session. Dropping it leaves the room and closes its connections.
#[derive(Debug)]
pub struct SignalSession {
    id: u64,
    commands: mpsc::Sender<Command>,
    /// Messages for the browser, in order.
    pub events: mpsc::Receiver<ServerMessage>,
}

impl SignalSession {
    /// Handle one text frame from the browser. A refusal that needs no engine work (bad JSON,
    /// too large, engine overloaded) is returned for the caller to send at once.
    pub fn handle_text(&self, text: &str) -> Result<(), ServerMessage> {
        let msg = parse_client(text)?;
        self.commands
            .try_send(Command::Client {
                session: self.id,
                msg,
            })
            .map_err(|_| {
                ServerMessage::error(
                    ErrorCode::RateLimited,
                    "the node is busy; wait a moment and send the request again",
                )
            })
    }
}

impl Drop for SignalSession {
    fn drop(&mut self) {
        // If the queue is full the close is retried from a task; the engine must hear it.
        let close = Command::Close { session: self.id };
        if let Err(mpsc::error::TrySendError::Full(cmd)) = self.commands.try_send(close) {
            let commands = self.commands.clone();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = commands.send(cmd).await;
                });
            }
        }
    }
}

/// Bind the media port and start the engine on the current tokio runtime.
pub async fn start(
    options: MediaOptions,
    metrics: Arc<MediaMetrics>,
) -> Result<(MediaHandle, tokio::task::JoinHandle<()>), Error> {
    let io_err = |source| Error::Io {
        addr: options.listen,
        source,
    };
    let udp = UdpSocket::bind(options.listen).await.map_err(io_err)?;
    let local_addr = udp.local_addr().map_err(io_err)?;
    let tcp = if options.ice_tcp {
        Some(
            TcpListener::bind(local_addr)
                .await
                .map_err(|source| Error::Io {
                    addr: local_addr,
                    source,
                })?,
        )
    } else {
        None
    };
    let advertise = match (options.advertise, local_addr.ip()) {
        (Some(ip), _) => ip,
        (None, ip) if ip.is_unspecified() => default_route_ip(ip).unwrap_or_else(|| {
            warn!(%local_addr, "media port bound to a wildcard and the host has no default \
                route; advertising 127.0.0.1: set [listen] rtc_advertise");
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        }),
        (None, ip) => ip,
    };
    let reachable = Reachable {
        udp: SocketAddr::new(advertise, local_addr.port()),
        tcp: options.ice_tcp,
    };

    let (commands, command_rx) = mpsc::channel(COMMAND_QUEUE);
    let (tcp_tx, tcp_rx) = mpsc::channel(TCP_QUEUE);
    if let Some(listener) = tcp {
        tokio::spawn(accept_tcp(listener, tcp_tx));
    }
    let tokens = Arc::new(TokenKey::random());
    let mut rooms = Rooms::new();
    for policy in &options.rooms {
        rooms.define(policy.clone());
    }
    let (relay, relay_rx) = match options.relay {
        Some(relay) => {
            let config = RelayConfig::new(relay.site.clone(), relay.hub.clone(), relay.uplink_kbps);
            let (net, events) = crate::relay::net::start(relay)?;
            let mut state = relay::RelayState::new(config, net);
            state.define_rooms(&options.rooms);
            (Some(state), Some(events))
        }
        None => (None, None),
    };
    let engine = Engine {
        udp,
        reachable,
        metrics: metrics.clone(),
        tokens: tokens.clone(),
        sfu: Sfu::new(options.sfu),
        rooms,
        sessions: HashMap::new(),
        conns: HashMap::new(),
        demux: Demux::new(),
        tcp_writers: HashMap::new(),
        down_conn: HashMap::new(),
        next_id: 1,
        last_stats: SfuStats::default(),
        dirty: HashSet::new(),
        writable: HashSet::new(),
        relay,
        relay_rx,
        timers: BinaryHeap::new(),
        taps: HashMap::new(),
        tap_tracks: HashMap::new(),
    };
    info!(%local_addr, advertised = %reachable.udp, ice_tcp = options.ice_tcp, "media engine up");
    let task = tokio::spawn(engine.run(command_rx, tcp_rx));
    Ok((
        MediaHandle {
            commands,
            tokens,
            metrics,
            local_addr,
        },
        task,
    ))
}

/// The source address of the host's default route for the family of `wildcard`, found by
/// connecting a UDP socket to a documentation address (a route lookup; nothing is sent).
fn default_route_ip(wildcard: IpAddr) -> Option<IpAddr> {
    let probe: SocketAddr = match wildcard {
        IpAddr::V4(_) => ([203, 0, 113, 1], 9).into(),
        IpAddr::V6(_) => (std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1), 9).into(),
    };
    let socket = std::net::UdpSocket::bind(SocketAddr::new(wildcard, 0)).ok()?;
    socket.connect(probe).ok()?;
    let ip = socket.local_addr().ok()?.ip();
    if ip.is_unspecified() {
        return None;
    }
    info!(%ip, "media port bound to a wildcard; advertising the default route's address \
        (set [listen] rtc_advertise if browsers reach the node at another one)");
    Some(ip)
}

async fn accept_tcp(listener: TcpListener, events: mpsc::Sender<TcpEvent>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                debug!(error = %e, "ICE-TCP accept failed");
                continue;
            }
        };
        debug!(%peer, "ICE-TCP stream accepted");
        let (mut read, mut write) = stream.into_split();
        let (writer, mut outgoing) = mpsc::channel::<Vec<u8>>(TCP_QUEUE);
        if events
            .send(TcpEvent::Opened { peer, writer })
            .await
            .is_err()
        {
            return;
        }
        tokio::spawn(async move {
            while let Some(packet) = outgoing.recv().await {
                if write.write_all(&frame_packet(&packet)).await.is_err() {
                    break;
                }
            }
        });
        let events = events.clone();
        tokio::spawn(async move {
            let mut decoder = TcpFrameDecoder::new();
            let mut buf = vec![0u8; 4096];
            loop {
                match read.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => decoder.extend_from_slice(&buf[..n]),
                }
                while let Some(data) = decoder.next_packet() {
                    if events.send(TcpEvent::Packet { peer, data }).await.is_err() {
                        return;
                    }
                }
                if decoder.buffered_len() > 64 * 1024 {
                    break; // not RFC 4571 framing: a garbage stream
                }
            }
            let _ = events.send(TcpEvent::Closed { peer }).await;
        });
    }
}

type ConnId = u64;

struct Session {
    events: mpsc::Sender<ServerMessage>,
    joins: u32,
    joined: Option<Joined>,
}

struct Joined {
    room: String,
    sub: String,
    publish: Option<ConnId>,
    subs: HashMap<ParticipantId, ConnId>,
}

struct Incoming {
    track: TrackId,
    receiver: RTCRtpReceiverId,
    /// rid → layer index.
    layers: HashMap<String, usize>,
    /// SSRC → layer index, learned from the first packets.
    ssrc_layer: HashMap<u32, usize>,
}

enum ConnRole {
    Publish {
        audio: Option<TrackId>,
        video: Option<(TrackId, Vec<String>)>,
        /// Remote track id → what it feeds.
        incoming: HashMap<String, Incoming>,
        /// (track, layer) → (receiver, media SSRC) for keyframe requests.
        layer_ssrc: HashMap<(TrackId, usize), (RTCRtpReceiverId, u32)>,
    },
    Subscribe {
        publisher: ParticipantId,
        /// Local track id → down track.
        by_track: HashMap<String, DownId>,
        /// Down track → sender and payload type (learned after negotiation).
        senders: HashMap<DownId, (RTCRtpSenderId, Kind, Option<u8>)>,
    },
}

struct Conn {
    pc: RTCPeerConnection,
    session: u64,
    label: String,
    role: ConnRole,
    estimate: Arc<pc::LinkEstimate>,
    state: RTCPeerConnectionState,
    /// The connection's timeout as last asked (`poll_timeout`), kept in `Engine::timers`.
    timeout: Option<Instant>,
}

/// A track whose packets are copied to a recording.
struct TapTrack {
    room: String,
    participant: ParticipantId,
    kind: crate::record::TrackKind,
    /// The one layer recorded (video); 0 for audio.
    layer: usize,
    events: mpsc::Sender<record::TapEvent>,
}

struct Engine {
    udp: UdpSocket,
    reachable: Reachable,
    metrics: Arc<MediaMetrics>,
    tokens: Arc<TokenKey>,
    sfu: Sfu,
    rooms: Rooms,
    sessions: HashMap<u64, Session>,
    conns: HashMap<ConnId, Conn>,
    demux: Demux<ConnId>,
    tcp_writers: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>,
    down_conn: HashMap<DownId, ConnId>,
    next_id: u64,
    last_stats: SfuStats,
    /// Connections with new input: their events and messages must be read.
    dirty: HashSet<ConnId>,
    /// Connections that may have datagrams to send.
    writable: HashSet<ConnId>,
    /// The relay between sites (see `relay.rs`), when the node has one.
    relay: Option<relay::RelayState>,
    relay_rx: Option<mpsc::Receiver<NetEvent>>,
    /// Each connection's next timeout, earliest first. An entry is current only while it
    /// equals its connection's `timeout`; others are skipped when they reach the top.
    timers: BinaryHeap<Reverse<(Instant, ConnId)>>,
    /// Recorded rooms and their writers.
    taps: HashMap<String, mpsc::Sender<record::TapEvent>>,
    /// Tracks copied to a recording.
    tap_tracks: HashMap<TrackId, TapTrack>,
}

impl Engine {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut tcp: mpsc::Receiver<TcpEvent>,
    ) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut next_tick = Instant::now() + TICK;
        loop {
            let now = Instant::now();
            let deadline = self.next_deadline().min(next_tick);
            let sleep = tokio::time::sleep(deadline.saturating_duration_since(now));
            tokio::select! {
                received = self.udp.recv_from(&mut buf) => {
                    match received {
                        Ok((n, from)) => {
                            self.datagram(Instant::now(), from, &buf[..n], TransportProtocol::UDP);
                            // Drain what else is queued without waiting, within a bound so
                            // that signaling is not starved by a flood.
                            for _ in 0..RECV_BATCH {
                                let Ok((n, from)) = self.udp.try_recv_from(&mut buf) else {
                                    break;
                                };
                                self.datagram(Instant::now(), from, &buf[..n], TransportProtocol::UDP);
                            }
                        }
                        Err(e) => debug!(error = %e, "media socket receive error"),
                    }
                }
                command = commands.recv() => {
                    let Some(command) = command else {
                        info!("media engine stopping: the node dropped its handle");
                        break;
                    };
                    self.command(Instant::now(), command);
                }
                Some(event) = tcp.recv() => self.tcp_event(Instant::now(), event),
                Some(event) = relay::recv_net(self.relay_rx.as_mut()) => {
                    self.relay_event(Instant::now(), event);
                }
                () = sleep => {}
            }

            let now = Instant::now();
            self.timeouts(now);
            if now >= next_tick {
                self.tick(now);
                next_tick = now + TICK;
            }
            self.flush(now).await;
        }
        for (_, mut conn) in self.conns.drain() {
            let _ = conn.pc.close();
        }
    }

    /// The earliest timeout of the SFU and every connection. A connection's timeout can only
    /// change when the engine calls into it, so only those it called this turn are asked again
    /// (in [`Engine::flush`]); the rest wait in the heap.
    fn next_deadline(&mut self) -> Instant {
        let far = Instant::now() + Duration::from_secs(3600);
        let mut deadline = self.sfu.poll_timeout().unwrap_or(far);
        if let Some(t) = self.relay_deadline() {
            deadline = deadline.min(t);
        }
        match self.next_timer() {
            Some((at, _)) => deadline.min(at),
            None => deadline,
        }
    }

    /// The current top of the timer heap, dropping entries that are no longer current.
    fn next_timer(&mut self) -> Option<(Instant, ConnId)> {
        while let Some(&Reverse((at, id))) = self.timers.peek() {
            if self.conns.get(&id).is_some_and(|c| c.timeout == Some(at)) {
                return Some((at, id));
            }
            self.timers.pop();
        }
        None
    }

    /// Ask a connection for its timeout again; a new one goes into the heap.
    fn refresh_timer(&mut self, id: ConnId) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let timeout = conn.pc.poll_timeout();
        if timeout != conn.timeout {
            conn.timeout = timeout;
            if let Some(at) = timeout {
                self.timers.push(Reverse((at, id)));
            }
        }
    }

    fn timeouts(&mut self, now: Instant) {
        while let Some((at, id)) = self.next_timer() {
            if at > now {
                break;
            }
            self.timers.pop();
            if let Some(conn) = self.conns.get_mut(&id) {
                conn.timeout = None;
                if let Err(e) = conn.pc.handle_timeout(now) {
                    debug!(conn = id, error = %e, "peer connection timeout handling failed");
                }
            }
            // Its events and datagrams are read, and its next timeout asked, in `flush`.
            self.dirty.insert(id);
        }
        self.sfu.handle_timeout(now);
        self.relay_timeouts(now);
    }

    fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    // ----- network input -----

    fn datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8], proto: TransportProtocol) {
        let Some(id) = self.demux.route(from, data) else {
            self.metrics.unmatched_datagrams.inc();
            return;
        };
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let msg = TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr: self.reachable.udp,
                peer_addr: from,
                ecn: None,
                transport_protocol: proto,
            },
            message: BytesMut::from(data),
        };
        if let Err(e) = conn.pc.handle_read(msg) {
            debug!(conn = id, error = %e, "peer connection refused a datagram");
        }
        self.dirty.insert(id);
    }

    fn tcp_event(&mut self, now: Instant, event: TcpEvent) {
        match event {
            TcpEvent::Opened { peer, writer } => {
                self.tcp_writers.insert(peer, writer);
            }
            TcpEvent::Packet { peer, data } => {
                self.datagram(now, peer, &data, TransportProtocol::TCP)
            }
            TcpEvent::Closed { peer } => {
                self.tcp_writers.remove(&peer);
            }
        }
    }

    // ----- output: drain peer connections and the SFU -----

    async fn flush(&mut self, now: Instant) {
        // Reading a publisher's RTP feeds the SFU, whose outputs are written to subscribers'
        // connections; a few rounds settle every chain of effects.
        for _ in 0..4 {
            let dirty: Vec<ConnId> = self.dirty.drain().collect();
            if dirty.is_empty() {
                break;
            }
            for id in dirty {
                self.drain_conn(now, id);
            }
            self.sfu_outputs(now);
        }
        // Every connection the engine called into this turn was drained (`drain_conn` marks it
        // writable) or written to: write what it has, then ask for its next timeout.
        let writable: Vec<ConnId> = self.writable.drain().collect();
        for id in writable {
            self.write_conn(id).await;
            self.refresh_timer(id);
        }
    }

    async fn write_conn(&mut self, id: ConnId) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        while let Some(out) = conn.pc.poll_write() {
            let to = out.transport.peer_addr;
            if out.transport.transport_protocol == TransportProtocol::TCP {
                if let Some(writer) = self.tcp_writers.get(&to) {
                    // A full queue means the TCP path is congested: drop, like UDP would.
                    let _ = writer.try_send(out.message.to_vec());
                }
            } else if let Err(e) = self.udp.send_to(&out.message, to).await {
                debug!(%to, error = %e, "media send failed");
            }
        }
    }

    fn drain_conn(&mut self, now: Instant, id: ConnId) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let mut events = Vec::new();
        while let Some(event) = conn.pc.poll_event() {
            events.push(event);
        }
        for event in events {
            self.conn_event(now, id, event);
        }
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let mut reads = Vec::new();
        while let Some(TaggedRTCMessage { message, now: at }) = conn.pc.poll_read() {
            reads.push((at, message));
        }
        for (at, message) in reads {
            self.conn_message(at, id, message);
        }
        self.writable.insert(id);
    }

    fn conn_event(&mut self, now: Instant, id: ConnId, event: RTCPeerConnectionEvent) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        match event {
            RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => {
                conn.state = state;
                info!(conn = id, pc = %conn.label, %state, "connection state");
                if let ConnRole::Subscribe { senders, .. } = &conn.role {
                    // Forward only over a connection that can deliver; resume with a keyframe.
                    let paused = state != RTCPeerConnectionState::Connected;
                    for down in senders.keys() {
                        self.sfu.set_paused(now, *down, paused);
                    }
                }
                let msg = ServerMessage::Connection {
                    pc: conn.label.clone(),
                    state: state.to_string(),
                };
                let session = conn.session;
                self.send(session, msg);
            }
            RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                let ConnRole::Publish {
                    audio,
                    video,
                    incoming,
                    layer_ssrc,
                } = &mut conn.role
                else {
                    return;
                };
                let Some(receiver) = conn.pc.rtp_receiver(init.receiver_id) else {
                    return;
                };
                let kind = receiver.track().kind();
                let entry = match kind {
                    RtpCodecKind::Audio => audio.map(|track| Incoming {
                        track,
                        receiver: init.receiver_id,
                        layers: HashMap::new(),
                        ssrc_layer: HashMap::new(),
                    }),
                    RtpCodecKind::Video => video.as_ref().map(|(track, rids)| Incoming {
                        track: *track,
                        receiver: init.receiver_id,
                        ssrc_layer: HashMap::new(),
                        layers: rids
                            .iter()
                            .enumerate()
                            .map(|(i, rid)| (rid.clone(), i))
                            .collect(),
                    }),
                    _ => None,
                };
                let Some(entry) = entry else {
                    return;
                };
                let layer = init
                    .rid
                    .as_ref()
                    .and_then(|rid| entry.layers.get(rid.as_str()).copied())
                    .unwrap_or(0);
                debug!(conn = id, rid = ?init.rid, layer, ssrc = init.ssrc, "track layer open");
                layer_ssrc.insert((entry.track, layer), (init.receiver_id, init.ssrc));
                incoming
                    .entry(init.track_id.clone())
                    .or_insert(entry)
                    .ssrc_layer
                    .insert(init.ssrc, layer);
            }
            _ => {}
        }
    }

    fn conn_message(&mut self, now: Instant, id: ConnId, message: RTCMessage) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        match (message, &mut conn.role) {
            (RTCMessage::RtpPacket(track_id, packet), ConnRole::Publish { incoming, .. }) => {
                let Some(entry) = incoming.get_mut(&track_id) else {
                    return;
                };
                let ssrc = packet.header.ssrc;
                let layer = match entry.ssrc_layer.get(&ssrc) {
                    Some(layer) => *layer,
                    None if entry.layers.len() <= 1 => 0,
                    None => {
                        let Some(receiver) = conn.pc.rtp_receiver(entry.receiver) else {
                            return;
                        };
                        let Some(layer) = receiver
                            .track()
                            .rid(ssrc)
                            .and_then(|rid| entry.layers.get(rid.as_str()).copied())
                        else {
                            return;
                        };
                        entry.ssrc_layer.insert(ssrc, layer);
                        layer
                    }
                };
                let track = entry.track;
                if let Some(tap) = self.tap_tracks.get(&track)
                    && tap.layer == layer
                {
                    let copy = record::TapEvent::Packet {
                        participant: tap.participant,
                        kind: tap.kind,
                        arrival: now,
                        seq: packet.header.sequence_number,
                        timestamp: packet.header.timestamp,
                        marker: packet.header.marker,
                        payload: packet.payload.clone(),
                    };
                    if tap.events.try_send(copy).is_err() {
                        self.metrics.recording_dropped_packets.inc();
                    }
                }
                let packet = InPacket {
                    ssrc: packet.header.ssrc,
                    sequence_number: packet.header.sequence_number,
                    timestamp: packet.header.timestamp,
                    marker: packet.header.marker,
                    payload: packet.payload,
                };
                self.relay_local_rtp(now, track, layer, &packet);
                self.sfu.handle_rtp(now, track, layer, packet);
            }
            (RTCMessage::RtcpPacket(track_id, packets), ConnRole::Subscribe { by_track, .. }) => {
                let Some(&down) = by_track.get(&track_id) else {
                    return;
                };
                for packet in packets {
                    let any = packet.as_any();
                    if let Some(nack) = any.downcast_ref::<TransportLayerNack>() {
                        let seqs: Vec<u16> = nack
                            .nacks
                            .iter()
                            .flat_map(|pair| pair.packet_list())
                            .collect();
                        self.sfu.handle_nack(now, down, &seqs);
                    } else if any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>() {
                        self.sfu.handle_pli(now, down);
                    }
                }
            }
            _ => {}
        }
    }

    fn sfu_outputs(&mut self, now: Instant) {
        while let Some(output) = self.sfu.poll_output() {
            match output {
                Output::Rtp { down, packet, .. } => {
                    let Some(&cid) = self.down_conn.get(&down) else {
                        continue;
                    };
                    let Some(conn) = self.conns.get_mut(&cid) else {
                        continue;
                    };
                    if conn.state != RTCPeerConnectionState::Connected {
                        continue;
                    }
                    let ConnRole::Subscribe { senders, .. } = &mut conn.role else {
                        continue;
                    };
                    let Some((sender_id, kind, pt)) = senders.get_mut(&down) else {
                        continue;
                    };
                    let Some(mut sender) = conn.pc.rtp_sender(*sender_id) else {
                        continue;
                    };
                    let payload_type = match pt {
                        Some(pt) => *pt,
                        None => {
                            let mime = match kind {
                                Kind::Audio => "audio/opus",
                                Kind::Video(_) => "video/vp8",
                            };
                            let found = sender
                                .get_parameters()
                                .rtp_parameters
                                .codecs
                                .iter()
                                .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(mime))
                                .map(|c| c.payload_type);
                            let Some(found) = found else {
                                continue;
                            };
                            *pt = Some(found);
                            found
                        }
                    };
                    let rtp = rtc::rtp::Packet {
                        header: rtc::rtp::header::Header {
                            version: 2,
                            marker: packet.marker,
                            payload_type,
                            sequence_number: packet.sequence_number,
                            timestamp: packet.timestamp,
                            ssrc: packet.ssrc,
                            ..Default::default()
                        },
                        payload: packet.payload,
                    };
                    if let Err(e) = sender.write_rtp(now, rtp) {
                        debug!(conn = cid, error = %e, "forward failed");
                    }
                    self.writable.insert(cid);
                }
                Output::KeyframeRequest { track, layer } => {
                    if self.relay_keyframe(now, track, layer) {
                        continue; // a remote publisher: asked through the relay
                    }
                    self.request_keyframe(now, track, layer);
                }
                Output::LayerSwitched { down, from, to } => {
                    debug!(down = down.0, ?from, to, "layer switch");
                }
                Output::DownRemoved { down, .. } => {
                    self.down_conn.remove(&down);
                }
            }
        }
    }

    /// Every second: estimates into the SFU, quality reports, metrics.
    fn tick(&mut self, now: Instant) {
        self.relay_tick(now);
        let mut reports = Vec::new();
        for (id, conn) in &self.conns {
            let ConnRole::Subscribe {
                publisher, senders, ..
            } = &conn.role
            else {
                continue;
            };
            let bps = conn.estimate.bps.load(Ordering::Relaxed);
            let loss = conn.estimate.loss_permille.load(Ordering::Relaxed) as f64 / 1000.0;
            let mut layer = None;
            for down in senders.keys() {
                if bps > 0 {
                    self.sfu.set_estimate(*down, bps);
                    self.sfu.set_loss(*down, loss);
                }
                if let Some((Some(l), _)) = self.sfu.down_state(*down)
                    && matches!(senders[down].1, Kind::Video(_))
                {
                    layer = Some(l);
                }
            }
            self.metrics
                .subscriber_estimate_bps
                .get_or_create(&vec![("conn".to_owned(), id.to_string())])
                .set(bps);
            reports.push((
                conn.session,
                ServerMessage::Quality {
                    publisher: *publisher,
                    layer,
                    estimate_kbps: (bps > 0).then_some(bps / 1000),
                },
            ));
        }
        for (session, report) in reports {
            self.send(session, report);
        }

        let stats = self.sfu.stats();
        let last = self.last_stats;
        let m = &self.metrics;
        m.forwarded_packets
            .inc_by(stats.forwarded_packets - last.forwarded_packets);
        m.forwarded_bytes
            .inc_by(stats.forwarded_bytes - last.forwarded_bytes);
        m.nacks.inc_by(stats.nacks_received - last.nacks_received);
        m.retransmissions
            .inc_by(stats.nacks_answered - last.nacks_answered);
        m.plis.inc_by(stats.plis_received - last.plis_received);
        m.keyframe_requests
            .inc_by(stats.keyframe_requests_sent - last.keyframe_requests_sent);
        m.layer_switches
            .inc_by(stats.layer_switches - last.layer_switches);
        self.last_stats = stats;
        let joined = self
            .sessions
            .values()
            .filter(|s| s.joined.is_some())
            .count();
        m.sessions.set(joined as i64);
        m.peer_connections.set(self.conns.len() as i64);
        m.tracks.set(self.sfu.track_count() as i64);
    }

    // ----- signaling -----

    fn send(&mut self, session: u64, msg: ServerMessage) {
        if let Some(s) = self.sessions.get(&session)
            && s.events.try_send(msg).is_err()
        {
            // The browser does not read its socket; it will be closed by its handler.
            debug!(session, "signaling queue full; message dropped");
        }
    }

    fn command(&mut self, now: Instant, command: Command) {
        match command {
            Command::Open { events, reply } => {
                let id = self.next_id();
                self.sessions.insert(
                    id,
                    Session {
                        events,
                        joins: 0,
                        joined: None,
                    },
                );
                let _ = reply.send(id);
            }
            Command::Close { session } => {
                self.leave(session);
                self.sessions.remove(&session);
                self.relay_update_wants(now);
                self.relay_flush(now);
            }
            Command::DefineRoom(policy) => {
                if let Some(r) = self.relay.as_mut() {
                    r.define_rooms(std::slice::from_ref(&policy));
                }
                self.rooms.define(policy);
            }
            Command::LookupRoom { room, reply } => self.relay_lookup(now, room, reply),
            Command::Links { reply } => {
                let _ = reply.send(self.relay_report(now));
            }
            Command::Tap { room, events } => {
                self.tap_tracks.retain(|_, t| t.room != room);
                self.taps.insert(room.clone(), events);
                let members: Vec<ParticipantId> = self.sfu.room_members(&room).to_vec();
                for member in members {
                    self.tap_participant(member);
                }
            }
            Command::Untap { room } => {
                // Dropping the last sender lets the writer finish its files.
                self.taps.remove(&room);
                self.tap_tracks.retain(|_, t| t.room != room);
            }
            Command::TapKeyframe { participant } => {
                let video: Vec<(TrackId, usize)> = self
                    .tap_tracks
                    .iter()
                    .filter(|(_, t)| {
                        t.participant == participant && t.kind == crate::record::TrackKind::Video
                    })
                    .map(|(track, t)| (*track, t.layer))
                    .collect();
                for (track, layer) in video {
                    self.request_keyframe(now, track, layer);
                }
            }
            Command::Client { session, msg } => {
                if let Err(err) = self.client(now, session, msg) {
                    self.send(session, ServerMessage::from(&err));
                }
                // Subscriptions change what remote sites must send here.
                self.relay_update_wants(now);
                self.relay_flush(now);
            }
        }
    }

    fn client(&mut self, now: Instant, session: u64, msg: ClientMessage) -> Result<(), Error> {
        match msg {
            ClientMessage::Join { token } => self.join(session, &token),
            ClientMessage::Publish { sdp, layer_heights } => {
                self.publish(now, session, &sdp, &layer_heights)
            }
            ClientMessage::Subscribe {
                publisher,
                sdp,
                audio_only,
                max_height,
            } => self.subscribe(
                now,
                session,
                publisher,
                &sdp,
                SubscribePrefs {
                    audio_only,
                    max_height,
                },
            ),
            ClientMessage::Prefs {
                publisher,
                max_height,
            } => {
                let cid = self.joined(session)?.subs.get(&publisher).copied();
                if let Some(ConnRole::Subscribe { senders, .. }) =
                    cid.and_then(|c| self.conns.get(&c)).map(|c| &c.role)
                {
                    let downs: Vec<DownId> = senders.keys().copied().collect();
                    for down in downs {
                        self.sfu.set_max_height(now, down, max_height);
                    }
                }
                Ok(())
            }
            ClientMessage::Unsubscribe { publisher } => {
                if let Some(cid) = self
                    .sessions
                    .get_mut(&session)
                    .and_then(|s| s.joined.as_mut())
                    .and_then(|j| j.subs.remove(&publisher))
                {
                    self.close_conn(cid);
                }
                Ok(())
            }
            ClientMessage::Restart { pc, sdp } => self.restart(now, session, &pc, &sdp),
            ClientMessage::Candidate {
                pc,
                candidate,
                sdp_mid,
                sdp_mline_index,
            } => {
                if candidate.is_empty() {
                    return Ok(());
                }
                let cid = self.conn_by_label(session, &pc)?;
                if let Some(conn) = self.conns.get_mut(&cid) {
                    // Browser candidates are optional: its checks reach us anyway and become
                    // peer-reflexive. mDNS names are refused by the stack; that is fine.
                    let init = RTCIceCandidateInit {
                        candidate,
                        sdp_mid,
                        sdp_mline_index,
                        ..Default::default()
                    };
                    if let Err(e) = conn.pc.add_remote_candidate(init) {
                        debug!(conn = cid, error = %e, "remote candidate ignored");
                    }
                    self.dirty.insert(cid);
                }
                Ok(())
            }
            ClientMessage::Leave => {
                self.leave(session);
                Ok(())
            }
        }
    }

    fn joined(&self, session: u64) -> Result<&Joined, Error> {
        self.sessions
            .get(&session)
            .and_then(|s| s.joined.as_ref())
            .ok_or(Error::NotJoined {
                participant: session,
            })
    }

    fn conn_by_label(&self, session: u64, label: &str) -> Result<ConnId, Error> {
        let joined = self.joined(session)?;
        let cid = if label == "publish" {
            joined.publish
        } else {
            label
                .strip_prefix("sub:")
                .and_then(|p| p.parse::<u64>().ok())
                .and_then(|p| joined.subs.get(&p).copied())
        };
        cid.ok_or_else(|| Error::Rtc {
            reason: format!("no connection `{label}`; use `publish` or `sub:<publisher>`"),
        })
    }

    fn join(&mut self, session: u64, token: &str) -> Result<(), Error> {
        let Some(s) = self.sessions.get_mut(&session) else {
            return Ok(());
        };
        s.joins += 1;
        if s.joins > MAX_JOINS_PER_SESSION {
            self.send(
                session,
                ServerMessage::error(
                    ErrorCode::RateLimited,
                    "too many joins on one socket; open a new connection",
                ),
            );
            return Ok(());
        }
        if s.joined.is_some() {
            return Err(Error::AlreadyJoined {
                participant: session,
            });
        }
        let claims = self.tokens.verify(token, unix_now())?;
        self.rooms.admit(&claims.room, session, claims.role)?;
        if let Err(e) = self.sfu.join(&claims.room, session) {
            self.rooms.release(&claims.room, session);
            return Err(e);
        }
        let policy = self.rooms.policy(&claims.room).cloned();
        let peers = self.peers_of(&claims.room, session);
        if let Some(s) = self.sessions.get_mut(&session) {
            s.joined = Some(Joined {
                room: claims.room.clone(),
                sub: claims.sub.clone(),
                publish: None,
                subs: HashMap::new(),
            });
        }
        let may_publish = self.rooms.check_publish(&claims.room, session).is_ok();
        info!(session, room = %claims.room, role = ?claims.role, "joined");
        let now = Instant::now();
        self.relay_join(now, &claims.room, session, &claims.sub, claims.role);
        self.send(
            session,
            ServerMessage::Joined {
                participant: session,
                room: claims.room,
                kind: policy.map_or(crate::room::RoomKind::Conference, |p| p.kind),
                role: claims.role,
                may_publish,
                peers,
            },
        );
        Ok(())
    }

    fn peer_info(&self, participant: ParticipantId) -> Option<PeerInfo> {
        if let Some(info) = self.relay_peer_info(participant) {
            return Some(info);
        }
        let tracks = self.sfu.tracks_of(participant);
        if tracks.is_empty() {
            return None;
        }
        let sub = self
            .sessions
            .get(&participant)
            .and_then(|s| s.joined.as_ref())
            .map(|j| j.sub.clone())
            .unwrap_or_default();
        Some(PeerInfo {
            participant,
            sub,
            audio: tracks.iter().any(|(_, k)| *k == Kind::Audio),
            video: tracks.iter().any(|(_, k)| matches!(k, Kind::Video(_))),
            site: None,
        })
    }

    fn peers_of(&self, room: &str, except: ParticipantId) -> Vec<PeerInfo> {
        self.sfu
            .room_members(room)
            .iter()
            .filter(|p| **p != except)
            .filter_map(|p| self.peer_info(*p))
            .collect()
    }

    fn new_conn(
        &mut self,
        now: Instant,
        session: u64,
        label: String,
        offer: &str,
        conn_role: ConnRole,
        tracks: Vec<MediaStreamTrack>,
    ) -> Result<(ConnId, Vec<RTCRtpSenderId>), Error> {
        let rtc_err = |e: rtc::shared::error::Error| Error::Rtc {
            reason: e.to_string(),
        };
        let role = match conn_role {
            ConnRole::Publish { .. } => pc::Role::Publish,
            ConnRole::Subscribe { .. } => pc::Role::Subscribe,
        };
        let (mut pc, estimate) = pc::build(role, now)?;
        let mut senders = Vec::new();
        for track in tracks {
            senders.push(pc.add_track(track).map_err(rtc_err)?);
        }
        let offer = RTCSessionDescription::offer(offer.to_owned()).map_err(rtc_err)?;
        pc.set_remote_description(now, offer).map_err(rtc_err)?;
        pc::add_host_candidates(&mut pc, self.reachable)?;
        let answer = pc.create_answer(None).map_err(rtc_err)?;
        pc.set_local_description(now, answer).map_err(rtc_err)?;
        let sdp = pc
            .local_description()
            .map(|d| d.sdp.clone())
            .ok_or_else(|| Error::Rtc {
                reason: "no local description after the answer".into(),
            })?;
        let id = self.next_id();
        let ufrag = pc::sdp_ufrag(&sdp).unwrap_or_default().to_owned();
        if ufrag.is_empty() || !self.demux.add_ufrag(&ufrag, id) {
            let _ = pc.close();
            return Err(Error::Rtc {
                reason: "could not give the connection its own ICE username; try again".into(),
            });
        }
        self.conns.insert(
            id,
            Conn {
                pc,
                session,
                label: label.clone(),
                role: conn_role,
                estimate,
                state: RTCPeerConnectionState::New,
                timeout: None,
            },
        );
        self.dirty.insert(id);
        self.send(session, ServerMessage::Answer { pc: label, sdp });
        Ok((id, senders))
    }

    fn publish(
        &mut self,
        now: Instant,
        session: u64,
        sdp: &str,
        layer_heights: &[u32],
    ) -> Result<(), Error> {
        let room = self.joined(session)?.room.clone();
        self.rooms.check_publish(&room, session)?;
        if let Some(old) = self.joined(session)?.publish {
            // A new publish replaces the old one (a rejoin after a network change).
            self.close_conn(old);
            for (track, _) in self.sfu.tracks_of(session) {
                self.sfu.unpublish(track);
                self.relay_unpublish(now, track);
            }
        }
        let media = pc::offered_media(sdp);
        if !media.audio && !media.video {
            return Err(Error::Rtc {
                reason: "the offer sends neither audio nor video; add sendonly transceivers".into(),
            });
        }
        let audio = if media.audio {
            Some(self.sfu.publish(
                session,
                TrackSpec {
                    kind: Kind::Audio,
                    clock_rate: 48_000,
                    layer_heights: vec![],
                },
            )?)
        } else {
            None
        };
        let video = if media.video {
            let rids = if media.rids.is_empty() {
                vec![String::new()]
            } else {
                media.rids.clone()
            };
            let heights = (0..rids.len())
                .map(|i| layer_heights.get(i).copied())
                .collect();
            let track = self.sfu.publish(
                session,
                TrackSpec {
                    kind: Kind::Video(VideoCodec::Vp8),
                    clock_rate: 90_000,
                    layer_heights: heights,
                },
            )?;
            Some((track, rids))
        } else {
            None
        };
        let published: Vec<TrackId> = audio
            .into_iter()
            .chain(video.as_ref().map(|(t, _)| *t))
            .collect();
        let role = ConnRole::Publish {
            audio,
            video,
            incoming: HashMap::new(),
            layer_ssrc: HashMap::new(),
        };
        let result = self.new_conn(now, session, "publish".into(), sdp, role, vec![]);
        let (cid, _) = match result {
            Ok(ok) => ok,
            Err(e) => {
                for (track, _) in self.sfu.tracks_of(session) {
                    self.sfu.unpublish(track);
                }
                return Err(e);
            }
        };
        if let Some(joined) = self
            .sessions
            .get_mut(&session)
            .and_then(|s| s.joined.as_mut())
        {
            joined.publish = Some(cid);
        }
        self.tap_participant(session);
        // Other sites in the room learn of the tracks, all at once.
        let specs: Vec<(TrackId, TrackSpec)> = published
            .into_iter()
            .filter_map(|t| Some((t, self.sfu.track_spec(t)?.clone())))
            .collect();
        self.relay_publish(now, &room, session, &specs);
        // Tell the room.
        if let Some(info) = self.peer_info(session) {
            let members: Vec<ParticipantId> = self.sfu.room_members(&room).to_vec();
            for member in members.into_iter().filter(|m| *m != session) {
                self.send(member, ServerMessage::Published(info.clone()));
            }
        }
        Ok(())
    }

    fn subscribe(
        &mut self,
        now: Instant,
        session: u64,
        publisher: ParticipantId,
        sdp: &str,
        prefs: SubscribePrefs,
    ) -> Result<(), Error> {
        if let Some(old) = self.joined(session)?.subs.get(&publisher).copied() {
            self.close_conn(old);
        }
        let downs = self.sfu.subscribe(now, session, publisher, prefs, |_, _| {
            let mut ssrc = [0u8; 4];
            let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut ssrc);
            u32::from_be_bytes(ssrc) | 1
        })?;
        for (down, _, _) in &downs {
            self.sfu.set_paused(now, *down, true);
        }
        let mut tracks = Vec::new();
        let mut by_track = HashMap::new();
        for (down, _track, kind) in &downs {
            let (codec_kind, codec) = match kind {
                Kind::Audio => (RtpCodecKind::Audio, pc::opus()),
                Kind::Video(_) => (RtpCodecKind::Video, pc::vp8()),
            };
            let track_id = format!("d{}", down.0);
            let ssrc = self.sfu.down_ssrc(*down).unwrap_or_default();
            tracks.push(MediaStreamTrack::new(
                format!("p{publisher}"),
                track_id.clone(),
                track_id.clone(),
                codec_kind,
                vec![RTCRtpEncodingParameters {
                    rtp_coding_parameters: RTCRtpCodingParameters {
                        ssrc: Some(ssrc),
                        ..Default::default()
                    },
                    active: true,
                    codec,
                    ..Default::default()
                }],
            ));
            by_track.insert(track_id, *down);
        }
        let role = ConnRole::Subscribe {
            publisher,
            by_track,
            senders: HashMap::new(),
        };
        let label = format!("sub:{publisher}");
        let result = self.new_conn(now, session, label, sdp, role, tracks);
        let (cid, sender_ids) = match result {
            Ok(ok) => ok,
            Err(e) => {
                for (down, _, _) in downs {
                    self.sfu.unsubscribe(down);
                }
                return Err(e);
            }
        };
        if let Some(Conn {
            role: ConnRole::Subscribe { senders, .. },
            ..
        }) = self.conns.get_mut(&cid)
        {
            for ((down, _, kind), sender) in downs.iter().zip(sender_ids) {
                senders.insert(*down, (sender, *kind, None));
                self.down_conn.insert(*down, cid);
            }
        }
        if let Some(joined) = self
            .sessions
            .get_mut(&session)
            .and_then(|s| s.joined.as_mut())
        {
            joined.subs.insert(publisher, cid);
        }
        self.relay_subscribed(session, publisher);
        Ok(())
    }

    fn restart(&mut self, now: Instant, session: u64, label: &str, sdp: &str) -> Result<(), Error> {
        let cid = self.conn_by_label(session, label)?;
        let rtc_err = |e: rtc::shared::error::Error| Error::Rtc {
            reason: e.to_string(),
        };
        let conn = self.conns.get_mut(&cid).ok_or(Error::EngineStopped)?;
        let offer = RTCSessionDescription::offer(sdp.to_owned()).map_err(rtc_err)?;
        conn.pc
            .set_remote_description(now, offer)
            .map_err(rtc_err)?;
        let answer = conn.pc.create_answer(None).map_err(rtc_err)?;
        conn.pc
            .set_local_description(now, answer)
            .map_err(rtc_err)?;
        let sdp = conn
            .pc
            .local_description()
            .map(|d| d.sdp.clone())
            .unwrap_or_default();
        if let Some(ufrag) = pc::sdp_ufrag(&sdp) {
            self.demux.add_ufrag(ufrag, cid);
        }
        self.dirty.insert(cid);
        self.send(
            session,
            ServerMessage::Answer {
                pc: label.to_owned(),
                sdp,
            },
        );
        Ok(())
    }

    fn close_conn(&mut self, cid: ConnId) {
        if let Some(mut conn) = self.conns.remove(&cid) {
            if let ConnRole::Subscribe { senders, .. } = &conn.role {
                for down in senders.keys() {
                    self.sfu.unsubscribe(*down);
                    self.down_conn.remove(down);
                }
            }
            let _ = conn.pc.close();
            self.metrics
                .subscriber_estimate_bps
                .remove(&vec![("conn".to_owned(), cid.to_string())]);
        }
        self.demux.remove(cid);
        self.dirty.remove(&cid);
        self.writable.remove(&cid);
    }

    /// Sends a PLI to the publisher of `track` for one of its layers.
    fn request_keyframe(&mut self, now: Instant, track: TrackId, layer: usize) {
        let Some(publisher) = self.sfu.track_publisher(track) else {
            return;
        };
        let Some(cid) = self
            .sessions
            .get(&publisher)
            .and_then(|s| s.joined.as_ref())
            .and_then(|j| j.publish)
        else {
            return;
        };
        let Some(conn) = self.conns.get_mut(&cid) else {
            return;
        };
        let ConnRole::Publish { layer_ssrc, .. } = &conn.role else {
            return;
        };
        let Some(&(receiver_id, media_ssrc)) = layer_ssrc.get(&(track, layer)) else {
            return;
        };
        if let Some(mut receiver) = conn.pc.rtp_receiver(receiver_id) {
            let pli = PictureLossIndication {
                sender_ssrc: 0,
                media_ssrc,
            };
            if let Err(e) = receiver.write_rtcp(now, vec![Box::new(pli)]) {
                debug!(conn = cid, error = %e, "PLI failed");
            }
            self.writable.insert(cid);
        }
    }

    /// If the participant's room is recorded, copies its published tracks to the recording
    /// from now on (a new file: it published again).
    fn tap_participant(&mut self, session: u64) {
        let Some(joined) = self.sessions.get(&session).and_then(|s| s.joined.as_ref()) else {
            return;
        };
        let Some(events) = self.taps.get(&joined.room).cloned() else {
            return;
        };
        let Some(conn) = joined.publish.and_then(|cid| self.conns.get(&cid)) else {
            return;
        };
        let ConnRole::Publish { audio, video, .. } = &conn.role else {
            return;
        };
        let room = joined.room.clone();
        let sub = joined.sub.clone();
        let mut tracks = Vec::new();
        if let Some(track) = audio {
            tracks.push((*track, crate::record::TrackKind::Audio, 0));
        }
        if let Some((track, rids)) = video {
            let layer = record::recorded_layer(rids.len());
            tracks.push((*track, crate::record::TrackKind::Video, layer));
        }
        let announce = record::TapEvent::Publishing {
            participant: session,
            sub,
            audio: audio.is_some(),
            video: video.is_some(),
        };
        if events.try_send(announce).is_err() {
            self.metrics.recording_dropped_packets.inc();
            return;
        }
        self.tap_tracks.retain(|_, t| t.participant != session);
        for (track, kind, layer) in tracks {
            let tap = TapTrack {
                room: room.clone(),
                participant: session,
                kind,
                layer,
                events: events.clone(),
            };
            self.tap_tracks.insert(track, tap);
        }
    }

    /// The participant no longer publishes in a recorded room: its file ends.
    fn untap_participant(&mut self, session: u64) {
        let mut events = None;
        self.tap_tracks.retain(|_, t| {
            if t.participant == session {
                events = Some(t.events.clone());
                false
            } else {
                true
            }
        });
        if let Some(events) = events {
            let gone = record::TapEvent::Gone {
                participant: session,
            };
            if events.try_send(gone).is_err() {
                self.metrics.recording_dropped_packets.inc();
            }
        }
    }

    fn leave(&mut self, session: u64) {
        let Some(joined) = self
            .sessions
            .get_mut(&session)
            .and_then(|s| s.joined.take())
        else {
            return;
        };
        info!(session, room = %joined.room, "left");
        self.untap_participant(session);
        for cid in joined.publish.into_iter().chain(joined.subs.into_values()) {
            self.close_conn(cid);
        }
        // Subscribers of this participant lose their connection to it.
        let members: Vec<ParticipantId> = self.sfu.room_members(&joined.room).to_vec();
        self.relay_leave(Instant::now(), &joined.room, session);
        self.sfu.leave(session);
        self.rooms.release(&joined.room, session);
        for member in members.into_iter().filter(|m| *m != session) {
            if let Some(cid) = self
                .sessions
                .get_mut(&member)
                .and_then(|s| s.joined.as_mut())
                .and_then(|j| j.subs.remove(&session))
            {
                self.close_conn(cid);
            }
            self.send(
                member,
                ServerMessage::Left {
                    participant: session,
                },
            );
        }
    }
}
