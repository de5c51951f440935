//! The libp2p driver: QUIC (TCP fallback) connections to roster peers, head announcements over
//! gossipsub, catch-up over a request/response protocol, and the event loop that feeds the
//! sans-IO [`Planner`].
//!
//! Tuned for mountain links (see [`Timing`]): explicit idle timeout and keep-alive so that a
//! one-minute outage does not lose the connection state needlessly, capped exponential redial
//! backoff with jitter per peer, request timeouts sized for 256 kbit/s and 300 ms RTT, and
//! bounded queues everywhere (request window per peer, command channel, apply channel).
//!
//! Peers not in the roster are refused when their connection is established (allow list),
//! logged and counted. The swarm never touches sled: it reads and writes through `Shared`.
//!
//! Finding peers: every roster peer is dialled at its roster address; on a LAN, mDNS adds the
//! addresses it discovers for roster peers (others are ignored) and dials them at once. mDNS
//! runs only when the mesh listens on a non-loopback address (see [`MeshConfig::mdns`]).
//!
//! Sites behind NAT: the hub runs a circuit relay v2 server. Every other site is a relay
//! client: it keeps a reservation at the hub (it listens on a `/p2p-circuit` address through
//! it), and when a direct dial to a peer fails it dials that peer through the hub. A relayed
//! connection is replaced by a direct one as soon as a later direct dial succeeds. Relayed
//! connections pass the same roster allow list as direct ones, and only roster peers can reach
//! the hub at all, so the relay serves roster peers only. See [`RelayLimits`].

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::core::ConnectedPoint;
use libp2p::core::transport::ListenerId;
use libp2p::identity::{Keypair, PeerId};
use libp2p::multiaddr::{Multiaddr, Protocol};
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, DialError, ListenError, NetworkBehaviour, SwarmEvent};
use libp2p::{StreamProtocol, Swarm, allow_block_list, connection_limits, gossipsub, identify};
use libp2p::{mdns, noise, ping, relay, tcp, yamux};
use rand::Rng;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::Error;
use crate::log::Entry;
use crate::replica::{Command, DirLabel, Mesh, PeerLabel, Shared, wall_ms};
use crate::roster::{Role, Roster};
use crate::store::Store;
use crate::sync::{Planner, SyncConfig, serve};
use crate::vv::VersionVector;
use crate::wire::{self, MAX_REQUEST, MAX_RESPONSE, Request, Response};

/// Protocol id of catch-up.
const SYNC_PROTOCOL: &str = "/huiyan/sync/1";
/// Gossipsub topic of head announcements.
const HEADS_TOPIC: &str = "huiyan/heads/1";
/// Largest batch served, in bytes of encoded entries before compression. 256 KiB is at most
/// ~4 s of a 256 kbit/s link once compressed; see `SyncConfig::chunk_entries`.
const SERVE_MAX_BYTES: usize = 256 * 1024;

/// Network timing. Defaults are sized for thin mountain links (256 kbit/s, 300 ms RTT, 2 %
/// loss) and outages of about a minute.
#[derive(Debug, Clone)]
pub struct Timing {
    /// QUIC idle timeout and swarm idle-connection timeout. Default 90 s: a one-minute outage
    /// does not close the connection, so in-flight state resumes when packets flow again.
    pub idle_timeout: Duration,
    /// QUIC keep-alive interval. Default 15 s: well under the idle timeout, and one tiny
    /// packet per 15 s costs nothing on a 256 kbit/s link.
    pub keep_alive: Duration,
    /// Timeout of one catch-up request. Default 60 s: a full 256 KiB batch compresses to
    /// ~100 KiB, ~3.5 s at 256 kbit/s; with a window of 3 sharing the link and loss-driven
    /// retransmits 60 s is ample, and a dead link is caught by the idle timeout anyway.
    pub request_timeout: Duration,
    /// First redial delay. Default 1 s.
    pub redial_min: Duration,
    /// Redial delay cap. Default 60 s: a site back from an outage is found within a minute.
    pub redial_max: Duration,
    /// Period of unsolicited head announcements. Default 20 s; appends announce at once too
    /// (at most one announcement per `announce_min`).
    pub heads_interval: Duration,
    /// Least time between two head announcements. Default 500 ms.
    pub announce_min: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(90),
            keep_alive: Duration::from_secs(15),
            request_timeout: Duration::from_secs(60),
            redial_min: Duration::from_secs(1),
            redial_max: Duration::from_secs(60),
            heads_interval: Duration::from_secs(20),
            announce_min: Duration::from_millis(500),
        }
    }
}

/// Limits of the relay server on the hub. The libp2p defaults (2 min and 128 KiB per circuit,
/// one circuit per peer every 2 min) suit a public relay used only to set up a direct
/// connection; here a circuit carries the whole sync between two sites that cannot reach each
/// other, so the limits are raised, while the roster allow list keeps everyone else out.
#[derive(Debug, Clone)]
pub struct RelayLimits {
    /// Longest life of one circuit. Default 6 h: a circuit that ends is dialled again at once
    /// (the next redial of that peer), so this only bounds how long a stale one can live.
    pub circuit_duration: Duration,
    /// Most bytes one circuit carries (both directions). Default 1 GiB: a week of records of a
    /// busy site, many times a long outage's catch-up.
    pub circuit_bytes: u64,
    /// Most circuits at once. Default 64: every pair of an 8-site pilot, with room.
    pub max_circuits: usize,
    /// Most circuits per source peer. Default 16.
    pub max_circuits_per_peer: usize,
    /// Circuits or reservations a peer may open per minute. Default 60: a flapping link may
    /// come back every second without being refused.
    pub per_minute: u32,
}

impl Default for RelayLimits {
    fn default() -> Self {
        Self {
            circuit_duration: Duration::from_secs(6 * 3600),
            circuit_bytes: 1 << 30,
            max_circuits: 64,
            max_circuits_per_peer: 16,
            per_minute: 60,
        }
    }
}

impl RelayLimits {
    fn config(&self) -> relay::Config {
        let per_minute = std::num::NonZeroU32::new(self.per_minute.max(1)).unwrap_or(
            // `max(1)` makes this unreachable; MIN is the only constant NonZeroU32.
            std::num::NonZeroU32::MIN,
        );
        relay::Config {
            max_reservations: 128,
            max_reservations_per_peer: 4,
            reservation_duration: Duration::from_secs(3600),
            reservation_rate_limiters: Vec::new(),
            max_circuits: self.max_circuits,
            max_circuits_per_peer: self.max_circuits_per_peer,
            max_circuit_duration: self.circuit_duration,
            max_circuit_bytes: self.circuit_bytes,
            circuit_src_rate_limiters: Vec::new(),
        }
        .reservation_rate_per_peer(per_minute, Duration::from_secs(60))
        .circuit_src_per_peer(per_minute, Duration::from_secs(60))
    }
}

/// Deliberate misbehaviour, for tests that need a faulty peer. Never set by the node.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Fault {
    /// Behave.
    #[default]
    None,
    /// Serve payloads to every peer, whatever its scopes.
    IgnoreScopes,
    /// Flip a payload byte in every full entry served (signatures no longer verify).
    TamperPayloads,
}

/// Everything needed to start the mesh of one node.
#[derive(Debug)]
pub struct MeshConfig {
    /// The node key (identity and log signatures).
    pub key: Keypair,
    /// This site's id in the roster.
    pub site: String,
    /// The roster.
    pub roster: Roster,
    /// The open store.
    pub store: Store,
    /// Where to listen: QUIC on this UDP port, TCP on the same port number.
    pub listen: SocketAddr,
    /// Catch-up tuning.
    pub sync: SyncConfig,
    /// Network timing.
    pub timing: Timing,
    /// Discover roster peers on the LAN by mDNS. The node turns it on when `listen.mesh` is not
    /// a loopback address: a loopback-only node has no LAN, and tests and the demo must not
    /// send multicast on the machine's real network.
    pub mdns: bool,
    /// Limits of the relay server (used on the hub only).
    pub relay: RelayLimits,
    #[doc(hidden)]
    pub fault: Fault,
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    allow: allow_block_list::Behaviour<allow_block_list::AllowedPeers>,
    limits: connection_limits::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    gossipsub: gossipsub::Behaviour,
    sync: request_response::Behaviour<SyncCodec>,
    /// Relay v2 server: on the hub only.
    relay: Toggle<relay::Behaviour>,
    /// Relay v2 client: reservations at the hub and dials through it.
    relay_client: relay::client::Behaviour,
    /// LAN discovery, when enabled.
    mdns: Toggle<mdns::tokio::Behaviour>,
}

/// Length-prefixed sync messages; counts bytes in and out.
#[derive(Debug, Clone, Default)]
struct SyncCodec {
    bytes_in: Arc<AtomicU64>,
    bytes_out: Arc<AtomicU64>,
}

async fn read_frame<T: futures::AsyncRead + Unpin + Send>(
    io: &mut T,
    max: usize,
) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "sync message too large",
        ));
    }
    let mut buf = vec![0; len];
    io.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn write_frame<T: futures::AsyncWrite + Unpin + Send>(
    io: &mut T,
    b: &[u8],
) -> io::Result<()> {
    io.write_all(&(b.len() as u32).to_be_bytes()).await?;
    io.write_all(b).await?;
    io.close().await
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

impl request_response::Codec for SyncCodec {
    type Protocol = StreamProtocol;
    type Request = Request;
    type Response = Response;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Request>
    where
        T: futures::AsyncRead + Unpin + Send,
    {
        let b = read_frame(io, MAX_REQUEST).await?;
        self.bytes_in
            .fetch_add(b.len() as u64 + 4, Ordering::Relaxed);
        Request::decode(&b).map_err(invalid)
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Response>
    where
        T: futures::AsyncRead + Unpin + Send,
    {
        let b = read_frame(io, MAX_RESPONSE).await?;
        self.bytes_in
            .fetch_add(b.len() as u64 + 4, Ordering::Relaxed);
        Response::decode(&b).map_err(invalid)
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Request,
    ) -> io::Result<()>
    where
        T: futures::AsyncWrite + Unpin + Send,
    {
        let b = req.encode();
        self.bytes_out
            .fetch_add(b.len() as u64 + 4, Ordering::Relaxed);
        write_frame(io, &b).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        resp: Response,
    ) -> io::Result<()>
    where
        T: futures::AsyncWrite + Unpin + Send,
    {
        let b = resp.encode();
        if b.len() > MAX_RESPONSE {
            return Err(invalid("response too large"));
        }
        self.bytes_out
            .fetch_add(b.len() as u64 + 4, Ordering::Relaxed);
        write_frame(io, &b).await
    }
}

/// Multiaddrs to dial a roster `host:port`: QUIC first, then TCP. DNS names are not resolved.
fn dial_addrs(host: &str, port: u16) -> Vec<Multiaddr> {
    // TODO(#3): DNS names in the roster need the libp2p `dns` transport.
    let Ok(ip) = host.parse::<IpAddr>() else {
        return Vec::new();
    };
    let base = Multiaddr::from(ip);
    vec![
        base.clone()
            .with(Protocol::Udp(port))
            .with(Protocol::QuicV1),
        base.with(Protocol::Tcp(port)),
    ]
}

/// First delay before asking the hub again for a refused reservation; doubles up to 60 s.
const RESERVE_RETRY_MIN: Duration = Duration::from_secs(2);

/// Most LAN addresses remembered per peer from mDNS.
const MAX_MDNS_ADDRS: usize = 8;

/// Redial state of one roster peer.
#[derive(Debug)]
struct Redial {
    /// Roster addresses.
    addrs: Vec<Multiaddr>,
    /// Addresses found by mDNS on the LAN, dialled before the roster ones.
    lan: Vec<Multiaddr>,
    next_at: Instant,
    backoff: Duration,
    /// Open connections: relayed or not.
    conns: BTreeMap<ConnectionId, bool>,
    /// A direct dial is under way.
    dialing: bool,
    /// A dial through the hub relay is under way.
    relay_dialing: bool,
}

impl Redial {
    fn new(addrs: Vec<Multiaddr>, backoff: Duration) -> Self {
        Self {
            addrs,
            lan: Vec::new(),
            next_at: Instant::now(),
            backoff,
            conns: BTreeMap::new(),
            dialing: false,
            relay_dialing: false,
        }
    }

    fn direct(&self) -> usize {
        self.conns.values().filter(|r| !**r).count()
    }

    fn relayed(&self) -> usize {
        self.conns.values().filter(|r| **r).count()
    }

    /// Addresses to dial directly: LAN first, then the roster.
    fn dial_addrs(&self) -> Vec<Multiaddr> {
        self.lan.iter().chain(&self.addrs).cloned().collect()
    }
}

/// What mDNS found, sorted: roster peers get the address (returned so they are dialled now);
/// anyone else is ignored and counted.
fn on_discovered(
    redials: &mut BTreeMap<PeerId, Redial>,
    found: Vec<(PeerId, Multiaddr)>,
) -> (Vec<PeerId>, usize) {
    let mut dial = Vec::new();
    let mut ignored = 0;
    for (peer, addr) in found {
        let Some(r) = redials.get_mut(&peer) else {
            ignored += 1;
            continue;
        };
        // Only direct transports: a discovered relay address would bypass the hub's checks.
        let direct = addr.iter().all(|p| {
            !matches!(
                p,
                Protocol::P2pCircuit | Protocol::Dns(_) | Protocol::Dnsaddr(_)
            )
        });
        if !direct || r.lan.contains(&addr) || r.lan.len() >= MAX_MDNS_ADDRS {
            continue;
        }
        r.lan.push(addr);
        if r.direct() == 0 && !dial.contains(&peer) {
            r.next_at = Instant::now();
            dial.push(peer);
        }
    }
    (dial, ignored)
}

/// The address of `peer` through the relay `hub` at `hub_addr`.
fn circuit_addr(hub_addr: &Multiaddr, hub: PeerId, peer: Option<PeerId>) -> Multiaddr {
    let a = hub_addr
        .clone()
        .with(Protocol::P2p(hub))
        .with(Protocol::P2pCircuit);
    match peer {
        Some(p) => a.with(Protocol::P2p(p)),
        None => a,
    }
}

/// The first enrolled hub of the roster other than `me`, with its first (QUIC) address.
fn relay_hub(roster: &Roster, me: PeerId) -> Option<(PeerId, Multiaddr)> {
    roster
        .sites
        .iter()
        .filter(|s| s.role == Role::Hub)
        .find_map(|s| {
            let p = s.peer_id.filter(|p| *p != me)?;
            let addr = dial_addrs(&s.mesh.host, s.mesh.port).into_iter().next()?;
            Some((p, addr))
        })
}

/// What an outbound request was for.
#[derive(Debug, Clone, Copy)]
enum Pending {
    Heads,
    Range { origin: PeerId, from: u64 },
}

/// Result of applying one batch, sent back from the apply task.
#[derive(Debug)]
struct ApplyDone {
    peer: PeerId,
    origin: PeerId,
    first: u64,
    result: Result<crate::replica::Applied, Error>,
}

/// Starts the mesh: binds the listeners (errors such as a port in use are returned here) and
/// spawns the swarm task. Returns the handle and the task.
pub async fn start(cfg: MeshConfig) -> Result<(Mesh, tokio::task::JoinHandle<()>), Error> {
    let mesh_err = |reason: String| Error::Mesh { reason };
    let (cmd_tx, cmd_rx) = mpsc::channel(64);
    let shared = Arc::new(Shared::new(
        cfg.key.clone(),
        cfg.site.clone(),
        cfg.roster.clone(),
        cfg.store.clone(),
        cmd_tx,
    )?);
    let me = shared.me;

    // Allowed peers: every enrolled roster site but ourselves.
    let mut allow = allow_block_list::Behaviour::<allow_block_list::AllowedPeers>::default();
    let mut redials = BTreeMap::new();
    for site in &cfg.roster.sites {
        let Some(p) = site.peer_id.filter(|p| *p != me) else {
            continue;
        };
        allow.allow_peer(p);
        let addrs = dial_addrs(&site.mesh.host, site.mesh.port);
        redials.insert(p, Redial::new(addrs, cfg.timing.redial_min));
    }
    // The hub serves as relay; every other site uses it as one.
    let is_hub = cfg
        .roster
        .site(&cfg.site)
        .is_some_and(|s| s.role == Role::Hub);
    let hub = if is_hub {
        None
    } else {
        relay_hub(&cfg.roster, me)
    };
    let relay_server = is_hub.then(|| relay::Behaviour::new(me, cfg.relay.config()));
    let mdns = if cfg.mdns {
        let m = mdns::tokio::Behaviour::new(mdns::Config::default(), me)
            .map_err(|e| mesh_err(format!("mDNS: {e}")))?;
        Some(m)
    } else {
        None
    };

    let codec = SyncCodec::default();
    let timing = cfg.timing.clone();
    let idle_ms = timing.idle_timeout.as_millis() as u32;
    let key = cfg.key.clone();
    let codec2 = codec.clone();
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(cfg.key.clone())
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| mesh_err(format!("TCP transport: {e}")))?
        .with_quic_config(|mut q| {
            q.max_idle_timeout = idle_ms;
            q.keep_alive_interval = timing.keep_alive;
            q.handshake_timeout = Duration::from_secs(20);
            q
        })
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .map_err(|e| mesh_err(format!("relay client transport: {e}")))?
        .with_behaviour(|k, relay_client| {
            let gs_cfg = gossipsub::ConfigBuilder::default()
                .heartbeat_interval(Duration::from_secs(5))
                .validation_mode(gossipsub::ValidationMode::Strict)
                .max_transmit_size(64 * 1024)
                .mesh_n_low(1)
                .mesh_outbound_min(0)
                .mesh_n(4)
                .mesh_n_high(8)
                .build()
                .map_err(|e| io::Error::other(e.to_string()))?;
            let gossipsub = gossipsub::Behaviour::new(
                gossipsub::MessageAuthenticity::Signed(key.clone()),
                gs_cfg,
            )
            .map_err(io::Error::other)?;
            let rr_cfg = request_response::Config::default()
                .with_request_timeout(timing.request_timeout)
                .with_max_concurrent_streams(32);
            Ok(Behaviour {
                allow,
                limits: connection_limits::Behaviour::new(
                    connection_limits::ConnectionLimits::default()
                        .with_max_pending_incoming(Some(32))
                        .with_max_established_per_peer(Some(3)),
                ),
                // No address cache: peers are dialled only at roster (or mDNS) addresses, never
                // at whatever address a peer says it listens on.
                identify: identify::Behaviour::new(
                    identify::Config::new("/huiyan/1".into(), k.public()).with_cache_size(0),
                ),
                ping: ping::Behaviour::new(
                    ping::Config::new().with_interval(Duration::from_secs(30)),
                ),
                gossipsub,
                sync: request_response::Behaviour::with_codec(
                    codec2,
                    [(StreamProtocol::new(SYNC_PROTOCOL), ProtocolSupport::Full)],
                    rr_cfg,
                ),
                relay: relay_server.into(),
                relay_client,
                mdns: mdns.into(),
            })
        })
        .map_err(|e| mesh_err(format!("behaviour: {e}")))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(timing.idle_timeout))
        .build();

    let topic = gossipsub::IdentTopic::new(HEADS_TOPIC);
    swarm
        .behaviour_mut()
        .gossipsub
        .subscribe(&topic)
        .map_err(|e| mesh_err(e.to_string()))?;

    let ip = Multiaddr::from(cfg.listen.ip());
    let port = cfg.listen.port();
    let in_use = |what: &str, e: &dyn std::fmt::Display| {
        mesh_err(format!(
            "cannot listen on {what} {}: {e}; is another program using the port? change \
             `listen.mesh` in the site config",
            cfg.listen
        ))
    };
    swarm
        .listen_on(ip.clone().with(Protocol::Udp(port)).with(Protocol::QuicV1))
        .map_err(|e| in_use("UDP", &e))?;
    swarm
        .listen_on(ip.with(Protocol::Tcp(port)))
        .map_err(|e| in_use("TCP", &e))?;
    if let Some(r) = swarm.behaviour_mut().relay.as_mut() {
        // A hub has no "confirmed external address" for libp2p to find; it serves regardless.
        r.set_status(Some(relay::Status::Enable));
    }
    if is_hub && let Some(me_site) = cfg.roster.site(&cfg.site) {
        // Reservations name the relay's addresses: the roster's, which is how sites reach it.
        for a in dial_addrs(&me_site.mesh.host, me_site.mesh.port) {
            swarm.add_external_address(a);
        }
    }
    if let Ok(mut st) = shared.relay.write() {
        st.role = if is_hub {
            "server"
        } else if hub.is_some() {
            "client"
        } else {
            "none"
        };
    }

    let planner = Planner::new(cfg.sync.clone(), shared.durable_vv());
    let mesh = Mesh {
        shared: shared.clone(),
    };
    let driver = Driver {
        swarm,
        shared,
        planner,
        redials,
        pending: HashMap::new(),
        topic,
        codec,
        timing: cfg.timing,
        fault: cfg.fault,
        last_announce: Instant::now() - Duration::from_secs(3600),
        announce_due: true,
        hub,
        relay_listener: None,
        reserve_at: Instant::now(),
        reserve_backoff: RESERVE_RETRY_MIN,
        dials: HashMap::new(),
    };
    let task = tokio::spawn(driver.run(cmd_rx));
    info!(site = %cfg.site, peer = %me, listen = %cfg.listen, "mesh started");
    Ok((mesh, task))
}

struct Driver {
    swarm: Swarm<Behaviour>,
    shared: Arc<Shared>,
    planner: Planner,
    redials: BTreeMap<PeerId, Redial>,
    pending: HashMap<OutboundRequestId, (PeerId, Pending)>,
    topic: gossipsub::IdentTopic,
    codec: SyncCodec,
    timing: Timing,
    fault: Fault,
    last_announce: Instant,
    announce_due: bool,
    /// The relay hub (PeerId, address), for a site that is not the hub.
    hub: Option<(PeerId, Multiaddr)>,
    /// Our listener on a circuit address through the hub, while the reservation is wanted.
    relay_listener: Option<ListenerId>,
    /// When to ask the hub for a reservation again after a refusal, and the next delay.
    reserve_at: Instant,
    reserve_backoff: Duration,
    /// Dials under way: to whom, and whether through the relay.
    dials: HashMap<ConnectionId, (PeerId, bool)>,
}

impl Driver {
    async fn run(mut self, mut cmds: mpsc::Receiver<Command>) {
        // Batches are verified and stored off the event loop, one at a time (bounded).
        let (apply_tx, mut apply_rx) = mpsc::channel::<(PeerId, Vec<Entry>)>(1);
        let (done_tx, mut done_rx) = mpsc::channel::<ApplyDone>(4);
        let shared = self.shared.clone();
        tokio::spawn(async move {
            while let Some((peer, entries)) = apply_rx.recv().await {
                let origin = entries[0].origin;
                let first = entries[0].seq;
                let s = shared.clone();
                let result = tokio::task::spawn_blocking(move || s.apply(entries))
                    .await
                    .unwrap_or_else(|e| {
                        Err(Error::Mesh {
                            reason: format!("apply task: {e}"),
                        })
                    });
                if done_tx
                    .send(ApplyDone {
                        peer,
                        origin,
                        first,
                        result,
                    })
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
        let mut applying = false;
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let mut heads_tick = tokio::time::interval(self.timing.heads_interval);

        loop {
            tokio::select! {
                ev = self.swarm.select_next_some() => self.on_swarm_event(ev),
                cmd = cmds.recv() => match cmd {
                    Some(Command::Appended) => {
                        let vv = self.shared.durable_vv();
                        self.planner.on_applied(self.shared.me, vv.get(&self.shared.me), wall_ms());
                        self.announce_due = true;
                    }
                    Some(Command::Discovered(found)) => self.on_mdns(found),
                    Some(Command::Shutdown) | None => break,
                },
                Some(done) = done_rx.recv() => {
                    applying = false;
                    self.on_applied(done);
                }
                _ = heads_tick.tick() => self.announce_due = true,
                _ = tick.tick() => {
                    self.redial();
                    self.keep_reservation();
                    self.publish_status();
                }
            }

            // After every event: announce if due, hand the next ready batch to the apply task,
            // and fill the request windows.
            if self.announce_due && self.last_announce.elapsed() >= self.timing.announce_min {
                self.announce();
            }
            if !applying && let Some((peer, entries)) = self.planner.take_ready() {
                applying = true;
                if apply_tx.send((peer, entries)).await.is_err() {
                    break;
                }
            }
            for (peer, r) in self.planner.next_requests(wall_ms()) {
                let req = Request::Range {
                    origin: r.origin,
                    from: r.from,
                    to: r.to,
                };
                let id = self.swarm.behaviour_mut().sync.send_request(&peer, req);
                self.pending.insert(
                    id,
                    (
                        peer,
                        Pending::Range {
                            origin: r.origin,
                            from: r.from,
                        },
                    ),
                );
            }
        }
        info!("mesh stopped");
    }

    fn on_applied(&mut self, done: ApplyDone) {
        let now = wall_ms();
        self.planner.finish_apply(done.origin, done.first);
        match done.result {
            Ok(a) => {
                if a.up_to > 0 {
                    self.planner.on_applied(done.origin, a.up_to, now);
                }
                if a.stored > 0 {
                    self.announce_due = true;
                }
                if let Some((reason, seq)) = a.refused {
                    let site = self.shared.site_of(&done.peer);
                    warn!(peer = %site, origin = %self.shared.site_of(&done.origin), seq, %reason,
                        "entry refused");
                    self.planner.on_peer_fault(
                        done.peer,
                        done.origin,
                        &format!("entry refused: {reason}"),
                        now,
                    );
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "storing synced entries failed");
                self.planner
                    .on_peer_fault(done.peer, done.origin, "local store error", now);
            }
        }
    }

    fn announce(&mut self) {
        self.announce_due = false;
        self.last_announce = Instant::now();
        let msg = wire::encode_heads(&self.shared.durable_vv());
        // No subscribed peer yet is normal while links are down.
        if let Err(e) = self
            .swarm
            .behaviour_mut()
            .gossipsub
            .publish(self.topic.clone(), msg)
        {
            debug!(error = %e, "heads not published");
        }
    }

    /// Dials every roster peer without a direct connection whose backoff has run out. A peer
    /// reached only through the relay is still dialled directly, to replace the circuit.
    fn redial(&mut self) {
        let now = Instant::now();
        for (peer, r) in &mut self.redials {
            let addrs = r.dial_addrs();
            if r.direct() > 0 || r.dialing || r.next_at > now || addrs.is_empty() {
                continue;
            }
            let condition = if r.relayed() > 0 || r.relay_dialing {
                PeerCondition::Always
            } else {
                PeerCondition::DisconnectedAndNotDialing
            };
            let opts = DialOpts::peer_id(*peer)
                .addresses(addrs)
                .condition(condition)
                .build();
            let id = opts.connection_id();
            match self.swarm.dial(opts) {
                Ok(()) => {
                    r.dialing = true;
                    self.dials.insert(id, (*peer, false));
                }
                Err(e) => {
                    debug!(peer = %peer, error = %e, "dial not started");
                    schedule(r, &self.timing);
                }
            }
        }
    }

    /// Dials `peer` through the hub relay, if we are a relay client, the hub is connected
    /// directly and no circuit to `peer` exists or is being made.
    fn dial_via_hub(&mut self, peer: PeerId) {
        let Some((hub, hub_addr)) = self.hub.clone() else {
            return;
        };
        let hub_up = self.redials.get(&hub).is_some_and(|h| h.direct() > 0);
        let Some(r) = self.redials.get_mut(&peer) else {
            return;
        };
        if peer == hub || !hub_up || r.relay_dialing || r.conns.values().any(|x| *x) {
            return;
        }
        let opts = DialOpts::peer_id(peer)
            .addresses(vec![circuit_addr(&hub_addr, hub, Some(peer))])
            .condition(PeerCondition::Always)
            .build();
        let id = opts.connection_id();
        match self.swarm.dial(opts) {
            Ok(()) => {
                r.relay_dialing = true;
                self.dials.insert(id, (peer, true));
                debug!(peer = %self.shared.site_of(&peer), "dialling through the hub relay");
            }
            Err(e) => debug!(peer = %peer, error = %e, "relay dial not started"),
        }
    }

    /// Keeps a reservation at the hub while the hub is connected directly, so that peers that
    /// cannot dial us can reach us through it.
    fn keep_reservation(&mut self) {
        let Some((hub, hub_addr)) = self.hub.clone() else {
            return;
        };
        let hub_up = self.redials.get(&hub).is_some_and(|h| h.direct() > 0);
        if self.relay_listener.is_some() || !hub_up || Instant::now() < self.reserve_at {
            return;
        }
        match self.swarm.listen_on(circuit_addr(&hub_addr, hub, None)) {
            Ok(id) => self.relay_listener = Some(id),
            Err(e) => debug!(error = %e, "no reservation at the hub relay"),
        }
    }

    /// Peers found by mDNS (or injected by a test as if found).
    fn on_mdns(&mut self, found: Vec<(PeerId, Multiaddr)>) {
        let (dial, ignored) = on_discovered(&mut self.redials, found);
        if ignored > 0 {
            debug!(
                ignored,
                "mDNS found peers that are not in the roster; ignored"
            );
            self.shared.metrics.mdns_ignored.inc_by(ignored as u64);
        }
        for peer in &dial {
            info!(peer = %self.shared.site_of(peer), "found on the LAN by mDNS");
        }
        if !dial.is_empty() {
            self.redial();
        }
    }

    fn publish_status(&mut self) {
        let now = wall_ms();
        let status = self.planner.status(now);
        let m = &self.shared.metrics;
        for s in &status {
            let label = PeerLabel {
                peer: self.shared.site_of(&s.peer),
            };
            m.lag_entries
                .get_or_create(&label)
                .set(s.lag_entries as i64);
            m.lag_seconds.get_or_create(&label).set(s.lag_seconds);
        }
        let connected = self
            .redials
            .values()
            .filter(|r| !r.conns.is_empty())
            .count();
        m.connected_peers.set(connected as i64);
        let relayed = self
            .redials
            .values()
            .filter(|r| r.direct() == 0 && r.relayed() > 0);
        m.relayed_peers.set(relayed.count() as i64);
        if let Ok(mut c) = self.shared.links.write() {
            *c = self
                .redials
                .iter()
                .filter(|(_, r)| !r.conns.is_empty())
                .map(|(p, r)| (*p, r.direct() == 0))
                .collect();
        }
        if let Ok(mut st) = self.shared.relay.write() {
            st.reserved = self.relay_listener.is_some() && st.reserved;
        }
        let inb = self.codec.bytes_in.load(Ordering::Relaxed);
        let outb = self.codec.bytes_out.load(Ordering::Relaxed);
        let c_in = m.sync_bytes.get_or_create(&DirLabel {
            direction: "in".into(),
        });
        c_in.inc_by(inb.saturating_sub(c_in.get()));
        let c_out = m.sync_bytes.get_or_create(&DirLabel {
            direction: "out".into(),
        });
        c_out.inc_by(outb.saturating_sub(c_out.get()));
        if let Ok(mut p) = self.shared.peers.write() {
            *p = status;
        }
    }

    fn on_swarm_event(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        let now = wall_ms();
        match ev {
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => {
                let site = self.shared.site_of(&peer_id);
                let addr = match &endpoint {
                    ConnectedPoint::Dialer { address, .. } => address.clone(),
                    ConnectedPoint::Listener { send_back_addr, .. } => send_back_addr.clone(),
                };
                let relayed = endpoint.is_relayed();
                let how = if relayed { "relayed" } else { "direct" };
                info!(peer = %site, %addr, connection = how, "peer connected");
                let dial = self.dials.remove(&connection_id);
                let mut surplus = Vec::new();
                if let Some(r) = self.redials.get_mut(&peer_id) {
                    r.conns.insert(connection_id, relayed);
                    match dial {
                        Some((_, true)) => r.relay_dialing = false,
                        Some((_, false)) => r.dialing = false,
                        None => {}
                    }
                    if !relayed {
                        r.dialing = false;
                        r.backoff = self.timing.redial_min;
                    }
                    // A direct connection makes every circuit to that peer surplus.
                    if r.direct() > 0 {
                        surplus.extend(r.conns.iter().filter(|(_, x)| **x).map(|(id, _)| *id));
                    }
                }
                for id in surplus {
                    debug!(peer = %site, "direct connection up; closing the relayed one");
                    self.swarm.close_connection(id);
                }
                if num_established.get() == 1 {
                    let covers =
                        self.shared.roster.site_by_peer(&peer_id).is_some_and(|s| {
                            crate::scope::covers(&s.scopes, &self.shared.my_scopes)
                        });
                    self.planner.on_connected(peer_id, covers);
                    let req = Request::Heads(self.shared.durable_vv());
                    let id = self.swarm.behaviour_mut().sync.send_request(&peer_id, req);
                    self.pending.insert(id, (peer_id, Pending::Heads));
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                cause,
                ..
            } => {
                let mut direct_left = true;
                if let Some(r) = self.redials.get_mut(&peer_id) {
                    r.conns.remove(&connection_id);
                    direct_left = r.direct() > 0;
                }
                if num_established == 0 {
                    let site = self.shared.site_of(&peer_id);
                    let cause = cause.map(|c| c.to_string());
                    info!(peer = %site, cause = ?cause, "peer disconnected");
                    self.planner.on_disconnected(&peer_id);
                    self.pending.retain(|_, (p, _)| *p != peer_id);
                    if let Some(r) = self.redials.get_mut(&peer_id) {
                        r.dialing = false;
                        r.relay_dialing = false;
                        schedule(r, &self.timing);
                    }
                }
                // Without the hub, the reservation through it is gone too.
                if !direct_left && self.hub.as_ref().is_some_and(|(h, _)| *h == peer_id) {
                    self.drop_reservation();
                }
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer_id),
                connection_id,
                error,
                ..
            } => {
                let via_relay = self.dials.remove(&connection_id).is_some_and(|(_, r)| r);
                if let Some(r) = self.redials.get_mut(&peer_id) {
                    if via_relay {
                        r.relay_dialing = false;
                    } else {
                        r.dialing = false;
                        if r.direct() == 0 {
                            schedule(r, &self.timing);
                        }
                    }
                }
                let site = self.shared.site_of(&peer_id);
                if let DialError::Denied { cause } = &error {
                    debug!(peer = %peer_id, %cause, "dial denied");
                } else if via_relay {
                    debug!(peer = %site, error = %error, "dial through the hub relay failed");
                } else {
                    debug!(peer = %site, error = %error, "dial failed");
                    // Behind NAT or a cut link: try the way through the hub.
                    self.dial_via_hub(peer_id);
                }
            }
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } if Some(listener_id) == self.relay_listener => {
                info!(%address, "reachable through the hub relay");
                self.reserve_backoff = RESERVE_RETRY_MIN;
                if let Ok(mut st) = self.shared.relay.write() {
                    st.reserved = true;
                }
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } if Some(listener_id) == self.relay_listener => {
                let reason = reason.err().map(|e| e.to_string());
                debug!(reason = ?reason, "hub relay reservation ended");
                self.relay_listener = None;
                let jitter = rand::thread_rng().gen_range(0.75..1.25);
                self.reserve_at = Instant::now() + self.reserve_backoff.mul_f64(jitter);
                self.reserve_backoff = (self.reserve_backoff * 2).min(Duration::from_secs(60));
                if let Ok(mut st) = self.shared.relay.write() {
                    st.reserved = false;
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
                self.on_mdns(found);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Expired(gone))) => {
                for (peer, addr) in gone {
                    if let Some(r) = self.redials.get_mut(&peer) {
                        r.lan.retain(|a| *a != addr);
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Relay(ev)) => {
                debug!(event = ?ev, "relay server");
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                peer_id,
                ..
            } => {
                if let ListenError::Denied { cause } = &error {
                    self.shared.metrics.refused_peers.inc();
                    warn!(addr = %send_back_addr, peer = ?peer_id.map(|p| p.to_base58()), %cause,
                        "refused a peer that is not in the roster");
                } else {
                    debug!(addr = %send_back_addr, error = %error, "incoming connection failed");
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                message,
                ..
            })) => {
                // Strict validation: the message is signed by its author; take only roster authors.
                let Some(author) = message.source else { return };
                if self.shared.roster.site_by_peer(&author).is_none() || author == self.shared.me {
                    return;
                }
                match wire::decode_heads(&message.data) {
                    Ok(vv) => self.on_heads(author, vv, now),
                    Err(e) => debug!(peer = %author, error = %e, "bad head announcement"),
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Sync(ev)) => self.on_sync_event(ev, now),
            _ => {}
        }
    }

    /// Gives up the listener on the hub relay (the hub connection is gone); the next tick with
    /// the hub connected makes a new reservation.
    fn drop_reservation(&mut self) {
        if let Some(id) = self.relay_listener.take() {
            self.swarm.remove_listener(id);
        }
        if let Ok(mut st) = self.shared.relay.write() {
            st.reserved = false;
        }
    }

    fn on_heads(&mut self, peer: PeerId, vv: VersionVector, now: u64) {
        // Only peers we are connected to can serve us; remember the rest for lag figures.
        self.planner.on_heads(peer, vv, now);
    }

    fn on_sync_event(&mut self, ev: request_response::Event<Request, Response>, now: u64) {
        use request_response::{Event, Message};
        match ev {
            Event::Message {
                peer,
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                let resp = self.answer(peer, request, now);
                if self
                    .swarm
                    .behaviour_mut()
                    .sync
                    .send_response(channel, resp)
                    .is_err()
                {
                    debug!(peer = %peer, "response dropped: connection gone");
                }
            }
            Event::Message {
                peer,
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                let Some((_, what)) = self.pending.remove(&request_id) else {
                    return;
                };
                match (what, response) {
                    (_, Response::Heads(vv)) => self.on_heads(peer, vv, now),
                    (Pending::Range { origin, from }, Response::Batch(raw)) => {
                        let mut entries = Vec::with_capacity(raw.len());
                        for b in &raw {
                            match Entry::decode(b) {
                                Ok(e) => entries.push(e),
                                Err(e) => {
                                    self.shared.count_refusal(crate::log::Refusal::Malformed);
                                    warn!(peer = %self.shared.site_of(&peer), error = %e,
                                        "malformed entry refused");
                                    break;
                                }
                            }
                        }
                        self.planner.on_batch(peer, origin, from, entries, now);
                    }
                    (Pending::Range { origin, from }, other) => {
                        let msg = format!("unexpected answer: {other:?}");
                        self.planner.on_request_failed(peer, origin, from, msg);
                    }
                    (Pending::Heads, _) => {}
                }
            }
            Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                let Some((_, what)) = self.pending.remove(&request_id) else {
                    return;
                };
                debug!(peer = %self.shared.site_of(&peer), error = %error, "sync request failed");
                if let Pending::Range { origin, from } = what {
                    self.planner
                        .on_request_failed(peer, origin, from, error.to_string());
                }
            }
            Event::InboundFailure { peer, error, .. } => {
                debug!(peer = %self.shared.site_of(&peer), error = %error, "serving a request failed");
            }
            Event::ResponseSent { .. } => {}
        }
    }

    /// Answers a catch-up request from a roster peer.
    fn answer(&mut self, peer: PeerId, req: Request, now: u64) -> Response {
        let durable = self.shared.durable_vv();
        match req {
            Request::Heads(vv) => {
                self.on_heads(peer, vv, now);
                Response::Heads(durable)
            }
            Request::Range { origin, from, to } => {
                let scopes = match self.shared.roster.site_by_peer(&peer) {
                    Some(s) => s.scopes.clone(),
                    None => return Response::Refused("not in the roster".into()),
                };
                let scopes = if self.fault == Fault::IgnoreScopes {
                    vec!["*".into()]
                } else {
                    scopes
                };
                let to = to.min(durable.get(&origin));
                if to < from {
                    return Response::Batch(Vec::new());
                }
                let limit = (to - from + 1).min(wire::MAX_BATCH_ENTRIES as u64) as usize;
                let entries = match self.shared.store.log_range(&origin, from, to, limit) {
                    Ok(e) => e,
                    Err(e) => {
                        tracing::error!(error = %e, "reading the log failed");
                        return Response::Refused("store error".into());
                    }
                };
                let entries = entries.into_iter().map(|mut e| {
                    if self.fault == Fault::TamperPayloads
                        && let crate::log::Body::Full(p) = &mut e.body
                        && let Some(b) = p.last_mut()
                    {
                        *b ^= 0x01;
                    }
                    e
                });
                Response::Batch(serve(entries, &scopes, SERVE_MAX_BYTES))
            }
        }
    }
}

/// Schedules the next dial of a peer: exponential backoff, capped, with ±25 % jitter so that
/// sites coming back together do not dial in lockstep.
fn schedule(r: &mut Redial, t: &Timing) {
    let jitter = rand::thread_rng().gen_range(0.75..1.25);
    r.next_at = Instant::now() + r.backoff.mul_f64(jitter);
    r.backoff = (r.backoff * 2).min(t.redial_max);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_takes_roster_peers_only_and_bounds_addresses() {
        let (friend, stranger) = (PeerId::random(), PeerId::random());
        let mut redials = BTreeMap::new();
        redials.insert(
            friend,
            Redial::new(dial_addrs("10.0.0.1", 7000), Duration::ZERO),
        );
        let lan = |i: u8| -> Multiaddr {
            format!("/ip4/192.168.1.{i}/udp/7000/quic-v1")
                .parse()
                .unwrap()
        };

        let (dial, ignored) =
            on_discovered(&mut redials, vec![(friend, lan(1)), (stranger, lan(2))]);
        assert_eq!((dial, ignored), (vec![friend], 1));
        // LAN addresses come before the roster's.
        assert_eq!(redials[&friend].dial_addrs()[0], lan(1));

        // Known again: nothing new to dial. A relay address is never taken from the LAN.
        let circuit = circuit_addr(&lan(3), stranger, Some(friend));
        let (dial, _) = on_discovered(&mut redials, vec![(friend, lan(1)), (friend, circuit)]);
        assert!(dial.is_empty());
        assert_eq!(redials[&friend].lan.len(), 1);

        // At most MAX_MDNS_ADDRS per peer; a connected peer is not dialled again.
        redials
            .get_mut(&friend)
            .unwrap()
            .conns
            .insert(ConnectionId::new_unchecked(1), false);
        let many = (10..40).map(|i| (friend, lan(i))).collect();
        let (dial, _) = on_discovered(&mut redials, many);
        assert!(dial.is_empty());
        assert_eq!(redials[&friend].lan.len(), MAX_MDNS_ADDRS);
    }

    #[test]
    fn circuit_addresses_go_through_the_hub() {
        let (hub, peer) = (PeerId::random(), PeerId::random());
        let a = circuit_addr(&dial_addrs("10.0.0.1", 7000)[0], hub, Some(peer));
        assert_eq!(
            a.to_string(),
            format!("/ip4/10.0.0.1/udp/7000/quic-v1/p2p/{hub}/p2p-circuit/p2p/{peer}")
        );
    }

    #[test]
    fn relay_limits_are_raised_over_the_libp2p_defaults() {
        let ours = RelayLimits::default().config();
        let theirs = relay::Config::default();
        assert!(ours.max_circuit_duration > theirs.max_circuit_duration);
        assert!(ours.max_circuit_bytes > theirs.max_circuit_bytes);
    }
}
