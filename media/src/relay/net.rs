//! The relay's network side: one quinn endpoint per node on the site's `[listen] media`
//! address, dialling the sites the core wants and accepting roster peers.
//!
//! Each connection carries one bidirectional control stream (opened by the dialer; each side
//! first sends `hello` with its protocol version) and QUIC datagrams for media. Everything
//! received goes to the media engine as [`NetEvent`]s on one bounded channel; the engine sends
//! datagrams and control messages itself through the [`LinkHandle`] of each connection.
//!
//! When both sites dial each other at once, the connection dialled by the site whose id sorts
//! first is kept on both sides.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use libp2p_identity::{Keypair, PeerId};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{Connection, Endpoint, IdleTimeout, TransportConfig, VarInt};
use tokio::sync::{mpsc, watch};
use tracing::{Instrument, debug, info, info_span, warn};

use super::tls::{self, RosterKeys, SERVER_NAME};
use super::wire::{Control, MAX_CONTROL_FRAME, VERSION};
use crate::Error;

/// A roster site the relay may connect to.
#[derive(Debug, Clone)]
pub struct RelayPeer {
    /// Site id.
    pub site: String,
    /// Its PeerId (from its Ed25519 key).
    pub peer_id: PeerId,
    /// Where to dial it: the roster's `media` address, `host:port`.
    pub addr: String,
}

/// How to run the relay.
#[derive(Clone)]
pub struct RelayOptions {
    /// UDP address of the quinn endpoint (site config `[listen] media`).
    pub listen: SocketAddr,
    /// The node key (its certificate is made from it).
    pub key: Keypair,
    /// This site's id.
    pub site: String,
    /// The hub's site id, if the roster has one.
    pub hub: Option<String>,
    /// The site's uplink, kbit/s (site config `uplink_kbps`).
    pub uplink_kbps: u32,
    /// Every other enrolled roster site.
    pub peers: Vec<RelayPeer>,
}

impl std::fmt::Debug for RelayOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayOptions")
            .field("listen", &self.listen)
            .field("site", &self.site)
            .field("hub", &self.hub)
            .field("uplink_kbps", &self.uplink_kbps)
            .field("peers", &self.peers)
            .finish_non_exhaustive()
    }
}

/// Capacity of the channel from the network to the engine. Datagrams beyond it are dropped
/// (the engine is overloaded; loss recovery copes); control messages wait.
const EVENT_QUEUE: usize = 4096;
/// Capacity of each connection's outgoing control queue; a peer that does not read is closed.
const CONTROL_QUEUE: usize = 1024;
/// How often dials are attempted to each wanted site that is not connected.
const DIAL_EVERY: Duration = Duration::from_millis(500);
/// How long one dial may take before it counts as failed.
const DIAL_TIMEOUT: Duration = Duration::from_millis(2500);
/// Dials in flight to one site at most (a new attempt starts every [`DIAL_EVERY`], so that a
/// link that returns is found within half a second, not after a long handshake back-off).
const DIALS_PER_SITE: usize = 3;
/// Without any packet from the peer for this long, the connection is closed (keep-alives go
/// every second). Default 4 s: a link that drops is noticed quickly, three lost keep-alives in
/// a row on a lossy link are not mistaken for it.
const IDLE_TIMEOUT: Duration = Duration::from_secs(4);
/// quinn's queue of outgoing datagrams. The budget keeps it near empty; when the link shrinks
/// suddenly, old media is dropped rather than delivered seconds late.
const DATAGRAM_SEND_BUFFER: usize = 32 * 1024;

/// Close codes.
const CLOSE_DUPLICATE: u32 = 1;
const CLOSE_VERSION: u32 = 2;
const CLOSE_PROTOCOL: u32 = 3;

/// What the network tells the engine.
#[derive(Debug)]
pub enum NetEvent {
    /// A connection to `site` is ready (hello exchanged).
    Up {
        /// The remote site.
        site: String,
        /// How to reach it.
        link: LinkHandle,
    },
    /// The connection `id` to `site` closed.
    Down {
        /// The remote site.
        site: String,
        /// Which connection.
        id: u64,
    },
    /// A dial to `site` failed.
    DialFailed {
        /// The site.
        site: String,
    },
    /// A control message.
    Control {
        /// From which site.
        site: String,
        /// On which connection.
        id: u64,
        /// The message.
        msg: Control,
    },
    /// A datagram.
    Datagram {
        /// From which site.
        site: String,
        /// On which connection.
        id: u64,
        /// Its bytes.
        data: Bytes,
    },
}

/// The engine's handle on one connection.
#[derive(Debug, Clone)]
pub struct LinkHandle {
    /// Connection number (to match `Down` with the right connection).
    pub id: u64,
    /// The QUIC connection (datagrams, statistics).
    pub conn: Connection,
    /// Its control stream's outgoing queue.
    pub control: mpsc::Sender<Control>,
    /// The relay's budget for this link, bit/s: the congestion window never falls below what
    /// it needs.
    pub floor_bps: Arc<AtomicU64>,
}

/// The running relay network: tell it which sites to keep connected.
#[derive(Debug)]
pub struct Net {
    wanted: watch::Sender<BTreeSet<String>>,
    keys: Arc<RosterKeys>,
    local_addr: SocketAddr,
    endpoint: Endpoint,
}

impl Net {
    /// The sites to keep connected (others may still connect to us).
    pub fn set_wanted(&self, sites: BTreeSet<String>) {
        self.wanted.send_if_modified(|w| {
            if *w == sites {
                false
            } else {
                *w = sites;
                true
            }
        });
    }

    /// Handshakes refused because the peer was not the roster site expected.
    pub fn refused(&self) -> u64 {
        self.keys.refused()
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.endpoint.close(VarInt::from_u32(0), b"node stopping");
    }
}

/// quinn's BBR, with a congestion window never below what the relay's own budget for the link
/// needs (twice the budget over a round trip).
///
/// BBR alone enters loss recovery on every lost packet and holds its window to what is in
/// flight: on a link that loses a few percent at random it never leaves recovery, and media
/// queued behind it is dropped unsent. The relay's estimator tells random loss from congestion
/// (see [`super::budget`]) and sets the floor; BBR still limits bursts above it.
#[derive(Debug)]
struct FlooredFactory {
    floor_bps: Arc<AtomicU64>,
}

impl quinn::congestion::ControllerFactory for FlooredFactory {
    fn build(
        self: Arc<Self>,
        now: std::time::Instant,
        current_mtu: u16,
    ) -> Box<dyn quinn::congestion::Controller> {
        let bbr = Arc::new(quinn::congestion::BbrConfig::default());
        Box::new(Floored {
            inner: quinn::congestion::ControllerFactory::build(bbr, now, current_mtu),
            floor_bps: self.floor_bps.clone(),
            srtt: Duration::from_millis(333),
        })
    }
}

struct Floored {
    inner: Box<dyn quinn::congestion::Controller>,
    floor_bps: Arc<AtomicU64>,
    srtt: Duration,
}

impl Floored {
    fn floor(&self) -> u64 {
        let rtt = self.srtt.max(Duration::from_millis(50)).as_secs_f64();
        (self.floor_bps.load(Ordering::Relaxed) as f64 / 8.0 * rtt * 2.0) as u64
    }
}

impl quinn::congestion::Controller for Floored {
    fn on_sent(&mut self, now: std::time::Instant, bytes: u64, last_packet_number: u64) {
        self.inner.on_sent(now, bytes, last_packet_number);
    }

    fn on_ack(
        &mut self,
        now: std::time::Instant,
        sent: std::time::Instant,
        bytes: u64,
        app_limited: bool,
        rtt: &quinn_proto::RttEstimator,
    ) {
        self.srtt = rtt.get();
        self.inner.on_ack(now, sent, bytes, app_limited, rtt);
    }

    fn on_end_acks(
        &mut self,
        now: std::time::Instant,
        in_flight: u64,
        app_limited: bool,
        largest_packet_num_acked: Option<u64>,
    ) {
        self.inner
            .on_end_acks(now, in_flight, app_limited, largest_packet_num_acked);
    }

    fn on_congestion_event(
        &mut self,
        now: std::time::Instant,
        sent: std::time::Instant,
        is_persistent_congestion: bool,
        lost_bytes: u64,
    ) {
        self.inner
            .on_congestion_event(now, sent, is_persistent_congestion, lost_bytes);
    }

    fn on_mtu_update(&mut self, new_mtu: u16) {
        self.inner.on_mtu_update(new_mtu);
    }

    fn window(&self) -> u64 {
        self.inner.window().max(self.floor())
    }

    fn metrics(&self) -> quinn::congestion::ControllerMetrics {
        self.inner.metrics()
    }

    fn clone_box(&self) -> Box<dyn quinn::congestion::Controller> {
        Box::new(Floored {
            inner: self.inner.clone_box(),
            floor_bps: self.floor_bps.clone(),
            srtt: self.srtt,
        })
    }

    fn initial_window(&self) -> u64 {
        self.inner.initial_window()
    }

    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any> {
        self
    }
}

fn transport(floor_bps: Arc<AtomicU64>) -> Arc<TransportConfig> {
    let mut t = TransportConfig::default();
    // The constant is within QUIC's idle-timeout range; fall back to quinn's default if not.
    if let Ok(idle) = IdleTimeout::try_from(IDLE_TIMEOUT) {
        t.max_idle_timeout(Some(idle));
    }
    t.keep_alive_interval(Some(Duration::from_secs(1)));
    t.datagram_send_buffer_size(DATAGRAM_SEND_BUFFER);
    t.datagram_receive_buffer_size(Some(1 << 20));
    t.max_concurrent_bidi_streams(VarInt::from_u32(1));
    t.max_concurrent_uni_streams(VarInt::from_u32(0));
    // BBR, not a loss-based controller: mountain links lose a few percent of packets at
    // random, which would hold Cubic or NewReno to a fraction of the line.
    t.congestion_controller_factory(Arc::new(FlooredFactory { floor_bps }));
    Arc::new(t)
}

#[derive(Debug, Default)]
struct Live {
    /// site → (connection id, dialled by us)
    conns: HashMap<String, (u64, bool, Connection)>,
    dials: HashMap<String, usize>,
}

struct Shared {
    me: String,
    server: Arc<QuicServerConfig>,
    key: Keypair,
    keys: Arc<RosterKeys>,
    peers: HashMap<String, RelayPeer>,
    endpoint: Endpoint,
    events: mpsc::Sender<NetEvent>,
    live: Mutex<Live>,
    next_id: AtomicU64,
}

/// Bind the relay endpoint and start accepting and dialling.
pub fn start(options: RelayOptions) -> Result<(Net, mpsc::Receiver<NetEvent>), Error> {
    let io_err = |source| Error::Io {
        addr: options.listen,
        source,
    };
    let keys = Arc::new(RosterKeys::new(
        options
            .peers
            .iter()
            .map(|p| (p.site.clone(), p.peer_id))
            .chain([(options.site.clone(), options.key.public().to_peer_id())]),
    ));
    let tls_err = |e: tls::TlsError| Error::Relay {
        reason: e.to_string(),
    };
    let server_tls = tls::server_config(&options.key, keys.clone()).map_err(tls_err)?;
    let quic = QuicServerConfig::try_from(server_tls).map_err(|e| Error::Relay {
        reason: e.to_string(),
    })?;
    let quic = Arc::new(quic);
    let mut server = quinn::ServerConfig::with_crypto(quic.clone());
    server.transport_config(transport(Arc::new(AtomicU64::new(0))));
    let endpoint = Endpoint::server(server, options.listen).map_err(io_err)?;
    let local_addr = endpoint.local_addr().map_err(io_err)?;
    let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
    let (wanted, wanted_rx) = watch::channel(BTreeSet::new());
    let shared = Arc::new(Shared {
        me: options.site.clone(),
        server: quic,
        key: options.key.clone(),
        keys: keys.clone(),
        peers: options
            .peers
            .iter()
            .map(|p| (p.site.clone(), p.clone()))
            .collect(),
        endpoint: endpoint.clone(),
        events: events_tx,
        live: Mutex::new(Live::default()),
        next_id: AtomicU64::new(1),
    });
    info!(%local_addr, "media relay listening");
    tokio::spawn(accept(shared.clone()));
    tokio::spawn(dial_loop(shared, wanted_rx));
    Ok((
        Net {
            wanted,
            keys,
            local_addr,
            endpoint,
        },
        events,
    ))
}

async fn accept(shared: Arc<Shared>) {
    while let Some(incoming) = shared.endpoint.accept().await {
        let shared = shared.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            // Each connection gets its own transport config: its own congestion floor.
            let floor = Arc::new(AtomicU64::new(0));
            let mut config = quinn::ServerConfig::with_crypto(shared.server.clone());
            config.transport_config(transport(floor.clone()));
            let connecting = match incoming.accept_with(Arc::new(config)) {
                Ok(connecting) => connecting,
                Err(e) => {
                    debug!(%remote, error = %e, "relay handshake refused");
                    return;
                }
            };
            let conn = match connecting.await {
                Ok(conn) => conn,
                Err(e) => {
                    debug!(%remote, error = %e, "relay handshake failed");
                    return;
                }
            };
            // The verifier only let roster sites through; find which one.
            let site = conn
                .peer_identity()
                .and_then(|id| id.downcast::<Vec<rustls::pki_types::CertificateDer>>().ok())
                .and_then(|certs| tls::peer_of(certs.first()?).ok())
                .and_then(|peer| shared.keys.site_of(&peer).map(str::to_owned));
            match site {
                Some(site) if site != shared.me => {
                    let span = info_span!("relay", peer = %site);
                    run_connection(shared.clone(), site, conn, false, floor)
                        .instrument(span)
                        .await;
                }
                _ => conn.close(VarInt::from_u32(CLOSE_PROTOCOL), b"not a roster site"),
            }
        });
    }
}

async fn dial_loop(shared: Arc<Shared>, mut wanted: watch::Receiver<BTreeSet<String>>) {
    let mut tick = tokio::time::interval(DIAL_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            changed = wanted.changed() => if changed.is_err() { return },
        }
        let sites: Vec<String> = wanted.borrow().iter().cloned().collect();
        for site in sites {
            let start = {
                let mut live = shared
                    .live
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                let dials = live.dials.get(&site).copied().unwrap_or(0);
                if live.conns.contains_key(&site) || dials >= DIALS_PER_SITE {
                    false
                } else {
                    live.dials.insert(site.clone(), dials + 1);
                    true
                }
            };
            if start {
                let span = info_span!("relay", peer = %site);
                tokio::spawn(dial(shared.clone(), site).instrument(span));
            }
        }
    }
}

async fn dial(shared: Arc<Shared>, site: String) {
    let floor = Arc::new(AtomicU64::new(0));
    let outcome = tokio::time::timeout(DIAL_TIMEOUT, connect(&shared, &site, floor.clone())).await;
    {
        let mut live = shared
            .live
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(n) = live.dials.get_mut(&site) {
            *n = n.saturating_sub(1);
        }
    }
    match outcome {
        Ok(Ok(conn)) => run_connection(shared, site, conn, true, floor).await,
        Ok(Err(reason)) => {
            debug!(%reason, "relay dial failed");
            let _ = shared.events.send(NetEvent::DialFailed { site }).await;
        }
        Err(_) => {
            debug!("relay dial timed out");
            let _ = shared.events.send(NetEvent::DialFailed { site }).await;
        }
    }
}

async fn connect(shared: &Shared, site: &str, floor: Arc<AtomicU64>) -> Result<Connection, String> {
    let peer = shared
        .peers
        .get(site)
        .ok_or_else(|| format!("site {site} is not an enrolled roster site"))?;
    let addr = tokio::net::lookup_host(&peer.addr)
        .await
        .map_err(|e| format!("cannot resolve {}: {e}", peer.addr))?
        .next()
        .ok_or_else(|| format!("{} resolves to no address", peer.addr))?;
    let tls = tls::client_config(&shared.key, shared.keys.clone(), peer.peer_id)
        .map_err(|e| e.to_string())?;
    let quic = QuicClientConfig::try_from(tls).map_err(|e| e.to_string())?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(transport(floor));
    shared
        .endpoint
        .connect_with(config, addr, SERVER_NAME)
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())
}

/// Exchange hellos, register the connection, then pump its control stream and datagrams until
/// it closes.
async fn run_connection(
    shared: Arc<Shared>,
    site: String,
    conn: Connection,
    dialled: bool,
    floor_bps: Arc<AtomicU64>,
) {
    let stream = if dialled {
        conn.open_bi().await
    } else {
        match tokio::time::timeout(Duration::from_secs(5), conn.accept_bi()).await {
            Ok(stream) => stream,
            Err(_) => {
                conn.close(VarInt::from_u32(CLOSE_PROTOCOL), b"no control stream");
                return;
            }
        }
    };
    let Ok((mut send, mut recv)) = stream else {
        return;
    };
    let hello = Control::Hello {
        version: VERSION,
        site: shared.me.clone(),
    };
    if send.write_all(&hello.encode()).await.is_err() {
        return;
    }
    match tokio::time::timeout(Duration::from_secs(5), read_frame(&mut recv)).await {
        Ok(Ok(Control::Hello { version, .. })) if version == VERSION => {}
        Ok(Ok(Control::Hello { version, .. })) => {
            warn!(
                version,
                "relay peer speaks another protocol version; closing"
            );
            let reason = format!("relay protocol {version} is not {VERSION}; run the same huiyan");
            conn.close(VarInt::from_u32(CLOSE_VERSION), reason.as_bytes());
            return;
        }
        _ => {
            conn.close(VarInt::from_u32(CLOSE_PROTOCOL), b"expected hello");
            return;
        }
    }

    // One connection per site. Two dialled by the same side: the first stays. Two dialled
    // by each side: the one dialled by the site whose id sorts first stays, on both sides.
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    {
        let mut live = shared
            .live
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((_, old_dialled, old)) = live.conns.get(&site) {
            let keep_new = *old_dialled != dialled && dialled == (shared.me < site);
            if keep_new {
                old.close(VarInt::from_u32(CLOSE_DUPLICATE), b"duplicate connection");
            } else {
                conn.close(VarInt::from_u32(CLOSE_DUPLICATE), b"duplicate connection");
                return;
            }
        }
        live.conns.insert(site.clone(), (id, dialled, conn.clone()));
    }
    info!(id, dialled, remote = %conn.remote_address(), "relay connection up");
    let (control, mut outgoing) = mpsc::channel::<Control>(CONTROL_QUEUE);
    let link = LinkHandle {
        id,
        conn: conn.clone(),
        control,
        floor_bps,
    };
    if shared
        .events
        .send(NetEvent::Up {
            site: site.clone(),
            link,
        })
        .await
        .is_err()
    {
        return;
    }

    let writer = tokio::spawn(async move {
        while let Some(msg) = outgoing.recv().await {
            if send.write_all(&msg.encode()).await.is_err() {
                break;
            }
        }
    });
    let reader = {
        let (events, site, conn) = (shared.events.clone(), site.clone(), conn.clone());
        tokio::spawn(async move {
            loop {
                match read_frame(&mut recv).await {
                    Ok(msg) => {
                        let site = site.clone();
                        if events
                            .send(NetEvent::Control { site, id, msg })
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                    Err(reason) => {
                        if !reason.is_empty() {
                            warn!(%reason, "relay peer sent a bad control frame; closing");
                            conn.close(VarInt::from_u32(CLOSE_PROTOCOL), reason.as_bytes());
                        }
                        break;
                    }
                }
            }
        })
    };
    loop {
        match conn.read_datagram().await {
            Ok(data) => {
                let event = NetEvent::Datagram {
                    site: site.clone(),
                    id,
                    data,
                };
                // A full queue means the engine is behind: drop media, never block the link.
                let _ = shared.events.try_send(event);
            }
            Err(e) => {
                info!(id, reason = %e, "relay connection closed");
                break;
            }
        }
    }
    writer.abort();
    reader.abort();
    {
        let mut live = shared
            .live
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if live.conns.get(&site).is_some_and(|(i, _, _)| *i == id) {
            live.conns.remove(&site);
        }
    }
    let _ = shared.events.send(NetEvent::Down { site, id }).await;
}

/// One control frame; `Err("")` when the stream ended cleanly.
async fn read_frame(recv: &mut quinn::RecvStream) -> Result<Control, String> {
    let mut len = [0u8; 4];
    if recv.read_exact(&mut len).await.is_err() {
        return Err(String::new());
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_CONTROL_FRAME {
        return Err(format!("control frame of {len} bytes is over the limit"));
    }
    let mut body = vec![0u8; len];
    if recv.read_exact(&mut body).await.is_err() {
        return Err(String::new());
    }
    Control::decode(&body).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(site: &str, key: &Keypair, peers: Vec<RelayPeer>) -> RelayOptions {
        RelayOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            key: key.clone(),
            site: site.into(),
            hub: None,
            uplink_kbps: 2048,
            peers,
        }
    }

    async fn next_up(events: &mut mpsc::Receiver<NetEvent>) -> LinkHandle {
        loop {
            let event = tokio::time::timeout(Duration::from_secs(10), events.recv())
                .await
                .expect("an event within 10 s")
                .expect("the network runs");
            if let NetEvent::Up { link, .. } = event {
                return link;
            }
        }
    }

    /// Two endpoints on loopback: dialling, hello, control frames and datagrams both ways.
    #[tokio::test]
    async fn two_sites_connect_and_exchange_control_and_datagrams() {
        let (ka, kb) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
        // The bureau knows scenic-2's key (it never dials it here).
        let a_peer = RelayPeer {
            site: "scenic-2".into(),
            peer_id: ka.public().to_peer_id(),
            addr: "127.0.0.1:9".into(),
        };
        let (net_b, mut events_b) = start(options("bureau", &kb, vec![a_peer])).unwrap();
        let b = RelayPeer {
            site: "bureau".into(),
            peer_id: kb.public().to_peer_id(),
            addr: net_b.local_addr().to_string(),
        };
        let (net_a, mut events_a) = start(options("scenic-2", &ka, vec![b])).unwrap();
        net_a.set_wanted(["bureau".to_owned()].into());

        let link_a = next_up(&mut events_a).await;
        let link_b = next_up(&mut events_b).await;
        link_a
            .control
            .send(Control::Attach {
                room: "bureau/med".into(),
            })
            .await
            .unwrap();
        link_a
            .conn
            .send_datagram(Bytes::from_static(b"rtp"))
            .unwrap();
        let mut got_control = false;
        let mut got_datagram = false;
        while !(got_control && got_datagram) {
            match tokio::time::timeout(Duration::from_secs(10), events_b.recv()).await {
                Ok(Some(NetEvent::Control { site, msg, .. })) => {
                    assert_eq!(site, "scenic-2");
                    assert_eq!(
                        msg,
                        Control::Attach {
                            room: "bureau/med".into()
                        }
                    );
                    got_control = true;
                }
                Ok(Some(NetEvent::Datagram { data, .. })) => {
                    assert_eq!(&data[..], b"rtp");
                    got_datagram = true;
                }
                Ok(Some(_)) => {}
                other => panic!("no traffic: {other:?}"),
            }
        }
        // Closing one side is seen by the other as Down.
        link_b.conn.close(VarInt::from_u32(0), b"test");
        loop {
            let event = tokio::time::timeout(Duration::from_secs(10), events_a.recv())
                .await
                .unwrap()
                .unwrap();
            if let NetEvent::Down { id, .. } = event {
                assert_eq!(id, link_a.id);
                break;
            }
        }
        assert_eq!(net_a.refused() + net_b.refused(), 0);
    }
}
