//! A userspace link emulator for tests, benchmarks and the demo: a UDP forwarder that puts a
//! thin, slow, lossy link in front of a node's QUIC port.
//!
//! [`Link::start`] listens on one UDP address and forwards to a target (the node's real mesh
//! port). Every client source gets its own upstream socket, like a NAT. Each direction is a
//! pipe with a rate (serialisation delay, tail drop beyond a queue of `queue_ms`), a one-way
//! delay with jitter (packets stay in order), random loss, an MTU (larger datagrams are
//! dropped) and an up/down switch. [`Link::set`] changes any of these while it runs.
//!
//! The emulator only ever sends to loopback or to the addresses it is given.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// A packet scheduled for delivery: when, bytes, to whom.
type Scheduled = (Instant, Vec<u8>, SocketAddr);

/// Parameters of a link (both directions alike).
#[derive(Debug, Clone, PartialEq)]
pub struct LinkParams {
    /// Rate in kbit/s per direction; 0 = unlimited.
    pub rate_kbps: u64,
    /// One-way delay (half the RTT the link adds).
    pub delay: Duration,
    /// Extra random delay, uniform in `0..jitter`; packet order is kept.
    pub jitter: Duration,
    /// Probability of dropping a packet, 0.0..=1.0.
    pub loss: f64,
    /// Largest datagram carried, in bytes.
    pub mtu: usize,
    /// When false every packet is dropped.
    pub up: bool,
    /// Queue depth in ms of transmission at `rate_kbps`; beyond it packets are tail-dropped.
    pub queue_ms: u64,
}

impl Default for LinkParams {
    fn default() -> Self {
        Self {
            rate_kbps: 0,
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            loss: 0.0,
            mtu: 1500,
            up: true,
            queue_ms: 500,
        }
    }
}

impl LinkParams {
    /// Parses `256kbit,300ms,2%` style specs: a rate (`kbit` or `mbit`), an RTT (`ms`, split
    /// evenly between the directions), a loss (`%`), `jitter=Nms`, `mtu=N`, `down`. Any subset,
    /// in any order.
    pub fn parse(spec: &str) -> Result<LinkParams, String> {
        let mut p = LinkParams::default();
        for part in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let num = |s: &str| {
                s.parse::<f64>()
                    .map_err(|_| format!("`{part}`: not a number"))
            };
            if let Some(v) = part.strip_prefix("jitter=") {
                let ms = num(v.trim_end_matches("ms"))?;
                p.jitter = Duration::from_micros((ms * 1000.0) as u64);
            } else if let Some(v) = part.strip_prefix("mtu=") {
                p.mtu = num(v)? as usize;
            } else if part == "down" {
                p.up = false;
            } else if let Some(v) = part.strip_suffix("kbit") {
                p.rate_kbps = num(v)? as u64;
            } else if let Some(v) = part.strip_suffix("mbit") {
                p.rate_kbps = (num(v)? * 1000.0) as u64;
            } else if let Some(v) = part.strip_suffix("ms") {
                p.delay = Duration::from_micros((num(v)? * 500.0) as u64);
            } else if let Some(v) = part.strip_suffix('%') {
                let l = num(v)?;
                if !(0.0..=100.0).contains(&l) {
                    return Err(format!("`{part}`: loss must be 0-100%"));
                }
                p.loss = l / 100.0;
            } else {
                return Err(format!(
                    "`{part}` is not understood; use e.g. `256kbit,300ms,2%,jitter=20ms,mtu=1280`"
                ));
            }
        }
        Ok(p)
    }
}

impl std::fmt::Display for LinkParams {
    /// A short description, such as `256 kbit/s, 300 ms RTT, 2% loss`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if self.rate_kbps > 0 {
            parts.push(format!("{} kbit/s", self.rate_kbps));
        }
        if !self.delay.is_zero() {
            parts.push(format!("{} ms RTT", (self.delay * 2).as_millis()));
        }
        if self.loss > 0.0 {
            parts.push(format!("{}% loss", (self.loss * 1000.0).round() / 10.0));
        }
        if !self.jitter.is_zero() {
            parts.push(format!("{} ms jitter", self.jitter.as_millis()));
        }
        if self.mtu != LinkParams::default().mtu {
            parts.push(format!("MTU {}", self.mtu));
        }
        if !self.up {
            parts.push("down".into());
        }
        if parts.is_empty() {
            parts.push("unlimited".into());
        }
        f.write_str(&parts.join(", "))
    }
}

/// Counters of a link.
#[derive(Debug, Default)]
pub struct LinkStats {
    /// Bytes offered to the link, both directions (UDP payloads).
    pub bytes: AtomicU64,
    /// Packets offered, both directions.
    pub packets: AtomicU64,
    /// Packets dropped (loss, down, MTU, queue).
    pub dropped: AtomicU64,
}

#[derive(Debug)]
struct Shared {
    params: Mutex<LinkParams>,
    blocked: Mutex<HashSet<SocketAddr>>,
    stats: LinkStats,
}

/// A running emulated link. Dropping it stops the forwarder.
#[derive(Debug)]
pub struct Link {
    shared: Arc<Shared>,
    local: SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Link {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// One direction of the link: a serialising queue with delay.
#[derive(Debug)]
struct Pipe {
    next_free: Instant,
    last_delivery: Instant,
}

impl Pipe {
    fn new() -> Self {
        let now = Instant::now();
        Self {
            next_free: now,
            last_delivery: now,
        }
    }

    /// When the packet of `len` bytes is delivered, or `None` if dropped.
    fn admit(
        &mut self,
        s: &Shared,
        len: usize,
        from: SocketAddr,
        to: SocketAddr,
    ) -> Option<Instant> {
        s.stats.packets.fetch_add(1, Ordering::Relaxed);
        s.stats.bytes.fetch_add(len as u64, Ordering::Relaxed);
        let p = s.params.lock().map(|p| p.clone()).unwrap_or_default();
        let blocked = s
            .blocked
            .lock()
            .map(|b| b.contains(&from) || b.contains(&to))
            .unwrap_or(false);
        let mut rng = rand::thread_rng();
        if !p.up || blocked || len > p.mtu || (p.loss > 0.0 && rng.gen_bool(p.loss.min(1.0))) {
            s.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let now = Instant::now();
        let start = self.next_free.max(now);
        let departure = if let Some(ns) = (len as u64 * 8 * 1_000_000).checked_div(p.rate_kbps) {
            let tx = Duration::from_nanos(ns);
            if start.duration_since(now) > Duration::from_millis(p.queue_ms) {
                s.stats.dropped.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            start + tx
        } else {
            now
        };
        self.next_free = departure;
        let jitter = if p.jitter.is_zero() {
            Duration::ZERO
        } else {
            p.jitter.mul_f64(rng.gen_range(0.0..1.0))
        };
        let at = (departure + p.delay + jitter).max(self.last_delivery);
        self.last_delivery = at;
        Some(at)
    }
}

/// Sends packets at their delivery time, in order.
fn spawn_sender(sock: Arc<UdpSocket>) -> (mpsc::Sender<Scheduled>, tokio::task::JoinHandle<()>) {
    // Bounded: the pipe's queue limit already bounds what is in flight; 4096 is a backstop.
    let (tx, mut rx) = mpsc::channel::<Scheduled>(4096);
    let task = tokio::spawn(async move {
        while let Some((at, pkt, to)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            let _ = sock.send_to(&pkt, to).await;
        }
    });
    (tx, task)
}

impl Link {
    /// Starts a link listening on `listen` (port 0 picks one) and forwarding to `target`.
    pub async fn start(
        listen: SocketAddr,
        target: SocketAddr,
        params: LinkParams,
    ) -> std::io::Result<Link> {
        let front = Arc::new(UdpSocket::bind(listen).await?);
        let local = front.local_addr()?;
        let shared = Arc::new(Shared {
            params: Mutex::new(params),
            blocked: Mutex::new(HashSet::new()),
            stats: LinkStats::default(),
        });
        let (back_tx, back_task) = spawn_sender(front.clone());
        let s = shared.clone();
        let main = tokio::spawn(async move {
            // client address -> (upstream sender, its pipe toward the target)
            let mut clients: HashMap<SocketAddr, (mpsc::Sender<Scheduled>, Pipe)> = HashMap::new();
            let back_pipe = Arc::new(Mutex::new(Pipe::new()));
            let mut buf = vec![0u8; 65536];
            let mut helpers = Vec::new();
            loop {
                let Ok((n, from)) = front.recv_from(&mut buf).await else {
                    break;
                };
                if !clients.contains_key(&from) {
                    if clients.len() >= 256 {
                        continue;
                    }
                    let Ok(up) = UdpSocket::bind(SocketAddr::new(target.ip(), 0)).await else {
                        continue;
                    };
                    let up = Arc::new(up);
                    let (tx, t) = spawn_sender(up.clone());
                    helpers.push(t);
                    // Replies from the target go back to this client through the return pipe.
                    let (s2, back, bp) = (s.clone(), back_tx.clone(), back_pipe.clone());
                    helpers.push(tokio::spawn(async move {
                        let mut b = vec![0u8; 65536];
                        while let Ok((n, _)) = up.recv_from(&mut b).await {
                            let at = bp
                                .lock()
                                .ok()
                                .and_then(|mut p| p.admit(&s2, n, target, from));
                            if let Some(at) = at
                                && back.send((at, b[..n].to_vec(), from)).await.is_err()
                            {
                                break;
                            }
                        }
                    }));
                    clients.insert(from, (tx, Pipe::new()));
                }
                if let Some((tx, pipe)) = clients.get_mut(&from)
                    && let Some(at) = pipe.admit(&s, n, from, target)
                {
                    let _ = tx.send((at, buf[..n].to_vec(), target)).await;
                }
            }
            for h in helpers {
                h.abort();
            }
        });
        Ok(Link {
            shared,
            local,
            tasks: vec![main, back_task],
        })
    }

    /// The address clients send to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Current parameters.
    pub fn params(&self) -> LinkParams {
        self.shared
            .params
            .lock()
            .map(|p| p.clone())
            .unwrap_or_default()
    }

    /// Changes the parameters; takes effect from the next packet.
    pub fn set(&self, params: LinkParams) {
        if let Ok(mut p) = self.shared.params.lock() {
            *p = params;
        }
    }

    /// Switches the link up or down.
    pub fn set_up(&self, up: bool) {
        if let Ok(mut p) = self.shared.params.lock() {
            p.up = up;
        }
    }

    /// Drops every packet from or to `addr` (to cut a node whose own dials enter through this
    /// link) until unblocked.
    pub fn block(&self, addr: SocketAddr, blocked: bool) {
        if let Ok(mut b) = self.shared.blocked.lock() {
            if blocked {
                b.insert(addr);
            } else {
                b.remove(&addr);
            }
        }
    }

    /// Counters.
    pub fn stats(&self) -> &LinkStats {
        &self.shared.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_specs() {
        let p = LinkParams::parse("256kbit,300ms,2%").unwrap();
        assert_eq!(p.rate_kbps, 256);
        assert_eq!(p.delay, Duration::from_millis(150));
        assert!((p.loss - 0.02).abs() < 1e-9);
        let p = LinkParams::parse("1mbit, jitter=10ms, mtu=1280, down").unwrap();
        assert_eq!((p.rate_kbps, p.mtu, p.up), (1000, 1280, false));
        assert!(
            LinkParams::parse("fast")
                .unwrap_err()
                .contains("not understood")
        );
        assert!(LinkParams::parse("200%").is_err());
        let p = LinkParams::parse("256kbit,300ms,2%,jitter=20ms").unwrap();
        assert_eq!(
            p.to_string(),
            "256 kbit/s, 300 ms RTT, 2% loss, 20 ms jitter"
        );
    }

    #[tokio::test]
    async fn forwards_with_delay_and_obeys_down_and_mtu() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let target = server.local_addr().unwrap();
        let params = LinkParams {
            delay: Duration::from_millis(50),
            mtu: 100,
            ..Default::default()
        };
        let link = Link::start("127.0.0.1:0".parse().unwrap(), target, params)
            .await
            .unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();

        let t0 = Instant::now();
        client.send_to(b"ping", link.local_addr()).await.unwrap();
        let mut b = [0u8; 200];
        let (n, from) = server.recv_from(&mut b).await.unwrap();
        assert_eq!(&b[..n], b"ping");
        assert!(t0.elapsed() >= Duration::from_millis(50));
        server.send_to(b"pong", from).await.unwrap();
        let (n, _) = client.recv_from(&mut b).await.unwrap();
        assert_eq!(&b[..n], b"pong");

        // Too large for the MTU, then link down: neither arrives.
        client
            .send_to(&[0u8; 150], link.local_addr())
            .await
            .unwrap();
        link.set_up(false);
        client.send_to(b"lost", link.local_addr()).await.unwrap();
        let r = tokio::time::timeout(Duration::from_millis(200), server.recv_from(&mut b)).await;
        assert!(r.is_err());
        assert_eq!(link.stats().dropped.load(Ordering::Relaxed), 2);
        link.set_up(true);
        client.send_to(b"back", link.local_addr()).await.unwrap();
        let (n, _) = server.recv_from(&mut b).await.unwrap();
        assert_eq!(&b[..n], b"back");
    }
}
