//! Headless Chromium for the relay scenarios: chromedriver as a child process, browsers with
//! the fake camera and microphone, and a probe of what a call page sends and receives.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`tests/run` installs them).

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use fantoccini::{Client, ClientBuilder};
use serde::Deserialize;
use serde_json::{Value, json};

/// chromedriver in its own process group, with every browser it started: all are stopped
/// (SIGTERM, then SIGKILL) when dropped, even when a test fails before closing its sessions.
#[derive(Debug)]
pub struct Driver {
    child: Child,
    /// Its port.
    pub port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        use nix::sys::signal::{Signal, killpg};
        let group = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = killpg(group, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Browsers outlive chromedriver's own exit: end the rest of the group.
        std::thread::sleep(Duration::from_millis(500));
        let _ = killpg(group, Signal::SIGKILL);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start chromedriver on a free port.
pub fn chromedriver() -> Result<Driver> {
    let port = crate::free_ports(1)[0];
    use std::os::unix::process::CommandExt;
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start chromedriver: apt-get install -y chromium chromium-driver")?;
    let driver = Driver { child, port };
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("chromedriver did not listen on {port} within 20 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(driver)
}

/// A headless Chromium with a fake camera and microphone.
pub async fn chromium(driver: &Driver) -> Result<Client> {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                "--autoplay-policy=no-user-gesture-required",
            ],
        }),
    );
    ClientBuilder::rustls()?
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .context("chromedriver refused a session")
}

/// What a call page measures, from `getStats()` of its connections.
const PROBE: &str = r#"
const done = arguments[arguments.length - 1];
(async () => {
  const s = window.huiyanCall;
  if (!s) return done({ status: 'loading', subs: [], sent: {} });
  const subs = [];
  for (const [id, sub] of s.subs) {
    const stats = await sub.pc.getStats();
    let frames = 0, freeze = 0, samples = 0, received = 0, packets = 0, plis = 0, ssrcs = [];
    stats.forEach((r) => {
      if (r.type === 'inbound-rtp' && r.kind === 'video') {
        ssrcs.push(r.ssrc);
        frames = r.framesDecoded ?? 0;
        freeze = r.totalFreezesDuration ?? 0;
        received = r.framesReceived ?? 0;
        packets = r.packetsReceived ?? 0;
        plis = r.pliCount ?? 0;
      }
      if (r.type === 'inbound-rtp' && r.kind === 'audio') samples = r.totalSamplesReceived ?? 0;
    });
    const notice = sub.tile.querySelector('.notice');
    subs.push({
      id, frames, freeze, samples, received, packets, plis, ssrcs,
      layer: sub.layer ?? null,
      limited: !!sub.videoLimited,
      notice: notice && !notice.hidden ? notice.textContent : '',
    });
  }
  const sent = {};
  if (s.publish) {
    const stats = await s.publish.getStats();
    stats.forEach((r) => {
      if (r.type === 'outbound-rtp' && r.kind === 'video') sent[r.rid ?? ''] = r.framesSent ?? 0;
    });
  }
  done({ status: s.status, subs, sent, reconnects: s.reconnects ?? 0 });
})().catch((e) => done({ error: String(e) }));
"#;

/// One subscription of a call page.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Sub {
    /// The publisher's participant id at this page's node.
    pub id: u64,
    /// Video frames decoded.
    pub frames: u64,
    /// Video frames received.
    pub received: u64,
    /// Video RTP packets received.
    #[serde(default)]
    pub packets: u64,
    /// PLIs the page sent for the video.
    #[serde(default)]
    pub plis: u64,
    /// SSRCs of the video's inbound RTP streams (the counters above are the last one's).
    #[serde(default)]
    pub ssrcs: Vec<u32>,
    /// Total freeze time, s.
    pub freeze: f64,
    /// Audio samples received.
    pub samples: u64,
    /// Simulcast layer this page receives (from the node's `quality` reports).
    pub layer: Option<usize>,
    /// The node said the video is held back between sites.
    pub limited: bool,
    /// Text of the notice shown on the tile, if any.
    pub notice: String,
}

/// What a call page measures now.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Probe {
    /// `connected`, `reconnecting`, ...
    pub status: String,
    /// Its subscriptions.
    pub subs: Vec<Sub>,
    /// Video frames sent, per simulcast rid.
    pub sent: std::collections::HashMap<String, u64>,
    /// How often the page lost the call and joined again.
    #[serde(default)]
    pub reconnects: u64,
}

impl Probe {
    /// Frames sent on the layer a receiver gets (`q`, `h`, `f` for layers 0, 1, 2).
    pub fn sent_on(&self, layer: usize) -> u64 {
        let rid = ["q", "h", "f"].get(layer).copied().unwrap_or("f");
        self.sent.get(rid).copied().unwrap_or(0)
    }
}

/// Measure a call page.
pub async fn probe(client: &Client) -> Result<Probe> {
    let v: Value = client.execute_async(PROBE, vec![]).await?;
    if let Some(err) = v.get("error") {
        bail!("probe failed in the page: {err}");
    }
    Ok(serde_json::from_value(v)?)
}

/// Poll `probe` until `ok` says yes, or fail after `within` with `what`.
pub async fn wait_for(
    client: &Client,
    within: Duration,
    what: &str,
    mut ok: impl FnMut(&Probe) -> bool,
) -> Result<Probe> {
    let deadline = Instant::now() + within;
    loop {
        let p = probe(client).await?;
        if ok(&p) {
            return Ok(p);
        }
        if Instant::now() > deadline {
            bail!("{what} within {within:?}; the page shows {p:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
