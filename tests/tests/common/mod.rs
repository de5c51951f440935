//! Helpers shared by the process-level scenarios: the demo pilot and chromedriver as child
//! processes that stop when the test ends.

#![allow(dead_code)] // each scenario uses a subset

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use fantoccini::{Client, Locator};

/// scenic-1 is site 5 of the roster; the demo gives it `base + 50` (web), `+53` (WebRTC).
pub const SCENIC_1: u16 = 5;
/// The mediation room of scenic-1 (from its site config).
pub const ROOM: &str = "scenic-1-mediation";

/// A child process that is stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(6);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A base port whose 80 following ports this test may use.
pub fn base_port() -> u16 {
    huiyan_tests::free_port_block(80)
}

/// Start the demo pilot and wait until every node is ready.
pub fn start_demo(dir: &std::path::Path, base: u16) -> Result<Guard> {
    let mut child = Command::new(huiyan_tests::huiyan_bin())
        .args(["demo", "--dir"])
        .arg(dir)
        .args(["--base-port", &base.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot start `huiyan demo`")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let guard = Guard(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains("sites ready") => return Ok(guard),
            Ok(_) => {}
            Err(_) => bail!("the demo was not ready within 90 s; see {}", dir.display()),
        }
    }
}

pub fn start_chromedriver(port: u16) -> Result<Guard> {
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start chromedriver: apt-get install -y chromium chromium-driver")?;
    let guard = Guard(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("chromedriver did not listen on {port} within 20 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(guard)
}

// ----- browsers -----

/// Start chromedriver inside `ns`, reachable from the host at `ns.ns_ip():port`.
pub fn start_chromedriver_in(ns: &huiyan_tests::netns::Netns, port: u16) -> Result<Guard> {
    let child = ns
        .command("chromedriver")
        .arg(format!("--port={port}"))
        .arg(format!("--allowed-ips={}", ns.host_ip()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start chromedriver in a namespace")?;
    let guard = Guard(child);
    let addr = std::net::SocketAddr::from((ns.ns_ip(), port));
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_err() {
        if Instant::now() > deadline {
            bail!("chromedriver did not listen on {addr} within 20 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(guard)
}

/// A headless Chromium with a fake camera and microphone, driven by the chromedriver at
/// `driver`; with `tcp_only`, WebRTC may not use UDP (as behind a strict firewall). It accepts
/// the test node's self-signed certificate.
pub async fn browser(driver: std::net::SocketAddr, tcp_only: bool) -> Result<fantoccini::Client> {
    let mut caps = serde_json::Map::new();
    let prefs = if tcp_only {
        serde_json::json!({ "webrtc": { "ip_handling_policy": "disable_non_proxied_udp" } })
    } else {
        serde_json::json!({})
    };
    caps.insert("acceptInsecureCerts".into(), serde_json::json!(true));
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "prefs": prefs,
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                "--autoplay-policy=no-user-gesture-required",
                "--ignore-certificate-errors",
            ],
        }),
    );
    let client = fantoccini::ClientBuilder::rustls()?
        .capabilities(caps)
        .connect(&format!("http://{driver}"))
        .await
        .context("chromedriver refused a session")?;
    Ok(client)
}

/// What a call page shows and receives: its status line and, per subscription, the decoded
/// video frames, the audio samples, the frame size, the layer the SFU reports and the
/// transport of the selected ICE pair.
const PROBE: &str = r#"
const done = arguments[arguments.length - 1];
(async () => {
  const s = window.huiyanCall;
  const el = document.getElementById('status');
  const page = { status: el?.dataset.state ?? null, text: el?.textContent ?? '',
                 reconnects: s?.reconnects ?? 0, subs: [] };
  if (!s) {
    // The page's script did not run: say what the page loaded.
    page.text = `no call script at ${location.href} (${document.title}): `
      + (document.body?.innerText ?? '').slice(0, 300).replace(/\s+/g, ' ') + '; loaded: '
      + performance.getEntriesByType('resource')
        .map((r) => `${r.name} ${r.responseStatus ?? ''} ${r.transferSize} B`).join(', ');
    return done(page);
  }
  for (const [id, sub] of s.subs) {
    const stats = await sub.pc.getStats();
    let frames = 0, samples = 0, width = 0, height = 0, bytes = 0, pair = null, video = {};
    stats.forEach((r) => {
      if (r.type === 'inbound-rtp' && r.kind === 'video') {
        frames = r.framesDecoded ?? 0;
        width = r.frameWidth ?? 0;
        height = r.frameHeight ?? 0;
        bytes = r.bytesReceived ?? 0;
        video = { received: r.framesReceived, dropped: r.framesDropped,
                  keyframes: r.keyFramesDecoded, lost: r.packetsLost, plis: r.pliCount,
                  nacks: r.nackCount, packets: r.packetsReceived };
      }
      if (r.type === 'inbound-rtp' && r.kind === 'audio') samples = r.totalSamplesReceived ?? 0;
      if (r.type === 'transport' && r.selectedCandidatePairId) pair = r.selectedCandidatePairId;
    });
    const local = pair && stats.get(stats.get(pair)?.localCandidateId);
    page.subs.push({ id, frames, samples, width, height, bytes, at: performance.now(),
                     layer: sub.layer ?? null,
                     estimate_kbps: sub.estimateKbps ?? null, protocol: local?.protocol ?? null,
                     video: JSON.stringify(video) });
  }
  done(page);
})().catch((e) => done({ error: String(e) }));
"#;

/// One subscription as the page sees it.
#[derive(Debug, Clone, Default)]
pub struct Received {
    /// The publisher's participant id.
    pub publisher: u64,
    pub frames: u64,
    pub samples: u64,
    pub width: u64,
    pub height: u64,
    /// Video payload bytes received so far, and when the page counted them (ms).
    pub bytes: u64,
    pub at_ms: f64,
    /// The simulcast layer the node reports sending (0 = smallest).
    pub layer: Option<u64>,
    /// The node's estimate of the bandwidth to this browser, kbit/s.
    pub estimate_kbps: Option<u64>,
    /// Transport protocol of the selected ICE candidate pair (`udp` or `tcp`).
    pub protocol: String,
    /// More of the video's inbound-rtp statistics (for failure messages): frames received
    /// and dropped, keyframes, packets lost, PLIs and NACKs sent.
    pub video: String,
}

/// A call page as the user sees it.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// `connecting`, `connected`, `reconnecting`, `failed`, `error` or `ended`.
    pub status: String,
    /// The status line's text.
    pub text: String,
    /// How often the page lost its socket and joined again.
    pub reconnects: u64,
    pub subs: Vec<Received>,
}

pub async fn probe_page(client: &fantoccini::Client) -> Result<Page> {
    let v: serde_json::Value = client.execute_async(PROBE, vec![]).await?;
    if let Some(err) = v.get("error") {
        bail!("probe failed in the page: {err}");
    }
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("").to_owned();
    let subs = v["subs"].as_array().cloned().unwrap_or_default();
    Ok(Page {
        status: text(&v["status"]),
        text: text(&v["text"]),
        reconnects: v["reconnects"].as_u64().unwrap_or(0),
        subs: subs
            .iter()
            .map(|s| Received {
                publisher: s["id"].as_u64().unwrap_or(0),
                frames: s["frames"].as_u64().unwrap_or(0),
                samples: s["samples"].as_u64().unwrap_or(0),
                width: s["width"].as_u64().unwrap_or(0),
                height: s["height"].as_u64().unwrap_or(0),
                bytes: s["bytes"].as_u64().unwrap_or(0),
                at_ms: s["at"].as_f64().unwrap_or(0.0),
                layer: s["layer"].as_u64(),
                estimate_kbps: s["estimate_kbps"].as_u64(),
                protocol: text(&s["protocol"]),
                video: text(&s["video"]),
            })
            .collect(),
    })
}

/// The first subscription of a page, if any.
pub async fn probe(client: &fantoccini::Client) -> Result<Option<Received>> {
    Ok(probe_page(client).await?.subs.into_iter().next())
}

/// Waits until the first subscription of each of `waiting` decodes video; when one does not
/// within `within`, fails showing what every page of the call (`all`) says and the node's log.
pub async fn wait_decoding(
    waiting: &[(&str, &fantoccini::Client)],
    all: &[(&str, &fantoccini::Client)],
    within: Duration,
    log: &std::path::Path,
) -> Result<()> {
    let deadline = Instant::now() + within;
    for (name, client) in waiting {
        loop {
            if let Some(received) = probe(client).await?
                && received.frames > 0
            {
                break;
            }
            if Instant::now() > deadline {
                let mut pages = String::new();
                for (other, client) in all {
                    let page = match probe_page(client).await {
                        Ok(page) => format!(
                            "{} ({}), {} subscriptions",
                            page.status,
                            page.text,
                            page.subs.len()
                        ),
                        Err(e) => format!("cannot probe: {e}"),
                    };
                    pages.push_str(&format!("\n  {other}: {page}"));
                }
                let logs = std::fs::read_to_string(log).unwrap_or_default();
                bail!(
                    "{name} decoded no video within {within:?}; the pages:{pages}\nnode log:\n{logs}"
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    Ok(())
}

/// Video kbit/s a subscription received between two probes.
pub fn video_kbps(before: &Received, after: &Received) -> f64 {
    let ms = after.at_ms - before.at_ms;
    if ms <= 0.0 {
        return 0.0;
    }
    after.bytes.saturating_sub(before.bytes) as f64 * 8.0 / ms
}

/// Frames per second and audio samples a subscription decoded between two probes.
pub fn rates(before: &Received, after: &Received, secs: f64) -> (f64, u64) {
    let frames = after.frames.saturating_sub(before.frames);
    (
        frames as f64 / secs,
        after.samples.saturating_sub(before.samples),
    )
}

// ----- one node for a call -----

/// A bureau node with one room for calls, its web and WebRTC ports, stopped when dropped.
pub struct CallNode {
    /// Kept for its temp dir (configs and the node's log).
    pub mesh: huiyan_tests::TestMesh,
    pub node: huiyan_tests::NodeProcess,
    /// `http://127.0.0.1:PORT` or `https://ADVERTISED:PORT`.
    pub base_url: String,
    pub room: String,
}

impl CallNode {
    /// On loopback, plain HTTP (a secure context for the browser).
    pub async fn loopback(room_kind: &str) -> Result<CallNode> {
        Self::start(room_kind, None).await
    }

    /// Listening on every interface with HTTPS (a self-signed certificate) and WebRTC on a
    /// wildcard bind, telling browsers `[listen] rtc_advertise = advertise`: how a site node
    /// is set up, and what browsers in network namespaces can reach.
    pub async fn public(room_kind: &str, advertise: std::net::Ipv4Addr) -> Result<CallNode> {
        Self::start(room_kind, Some(advertise)).await
    }

    async fn start(room_kind: &str, advertise: Option<std::net::Ipv4Addr>) -> Result<CallNode> {
        let mut mesh = huiyan_tests::TestMesh::single();
        if std::env::var_os("HUIYAN_KEEP_DIR").is_some() {
            // For debugging: the node's config and log survive the test.
            mesh.dir.disable_cleanup(true);
            println!("node dir kept: {}", mesh.dir.path().display());
        }
        let site = mesh.site("bureau").clone();
        let room = format!("test-{room_kind}");
        let mut config = std::fs::read_to_string(&site.config)?;
        let base_url = match advertise {
            None => format!("http://{}", site.web),
            Some(ip) => {
                for addr in [site.web, site.rtc] {
                    config = config.replace(&addr.to_string(), &format!("0.0.0.0:{}", addr.port()));
                }
                config = config.replacen(
                    "[listen]\n",
                    &format!("[listen]\nrtc_advertise = \"{ip}\"\n"),
                    1,
                );
                let dir = mesh.dir.path();
                let cert = rcgen::generate_simple_self_signed(vec![ip.to_string()])?;
                std::fs::write(dir.join("cert.pem"), cert.cert.pem())?;
                std::fs::write(dir.join("key.pem"), cert.key_pair.serialize_pem())?;
                config.push_str("\n[tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n");
                format!("https://{ip}:{}", site.web.port())
            }
        };
        config.push_str(&format!(
            "\n[[rooms]]\nid = \"{room}\"\nkind = \"{room_kind}\"\nname_zh = \"测试\"\n\
             name_en = \"Test\"\n"
        ));
        std::fs::write(&site.config, config)?;
        let mut node = huiyan_tests::NodeProcess::start(&site, &[]);
        let http = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .timeout(Duration::from_secs(2))
            .build()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = node.child.try_wait() {
                bail!("the node exited ({status}):\n{}", node.log_text());
            }
            let ready = http.get(format!("{base_url}/readyz")).send().await;
            if ready.is_ok_and(|r| r.status() == 200) {
                break;
            }
            if Instant::now() > deadline {
                bail!("the node was not ready within 30 s:\n{}", node.log_text());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(CallNode {
            mesh,
            node,
            base_url,
            room,
        })
    }

    /// The call page for caller `sub` with `role`, and extra URL parameters.
    pub fn page(&self, sub: &str, role: &str, extra: &str) -> String {
        format!(
            "{}/call.html?room={}&sub={sub}&role={role}{extra}",
            self.base_url, self.room
        )
    }

    pub fn log(&self) -> std::path::PathBuf {
        self.node.log.clone()
    }

    /// The node's `/metrics` value of a metric (0 when absent).
    pub async fn metric(&self, name: &str) -> Result<f64> {
        let http = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .build()?;
        let text = http
            .get(format!("{}/metrics", self.base_url))
            .send()
            .await?
            .text()
            .await?;
        let prefix = format!("{name} ");
        Ok(text
            .lines()
            .find_map(|l| l.strip_prefix(&prefix)?.trim().parse::<f64>().ok())
            .unwrap_or(0.0))
    }
}

// ----- Pages: waiting for, reading and filling in elements -----------------------------------

/// Polls `check` every 300 ms for up to `within`; fails with `what` and the page's error line.
pub async fn until(
    page: &Client,
    within: Duration,
    what: &str,
    mut check: impl AsyncFnMut() -> Result<bool>,
) -> Result<()> {
    let deadline = Instant::now() + within;
    loop {
        if check().await.unwrap_or(false) {
            return Ok(());
        }
        if Instant::now() > deadline {
            let error = match page.find(Locator::Id("error")).await {
                Ok(e) => e.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            let url = page.current_url().await.map(|u| u.to_string());
            bail!("{what} within {within:?} (page {url:?}, error line: {error:?})");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Waits (at most 30 s) until the element with `id` is shown; fails with `what`.
pub async fn wait_shown(page: &Client, id: &str, what: &str) -> Result<()> {
    until(page, Duration::from_secs(30), what, async || {
        shown(page, id).await
    })
    .await
}

/// True when the element with `id` is shown.
pub async fn shown(page: &Client, id: &str) -> Result<bool> {
    Ok(page.find(Locator::Id(id)).await?.is_displayed().await?)
}

/// Types `text` into the field with `id`.
pub async fn fill(page: &Client, id: &str, text: &str) -> Result<()> {
    let field = page.find(Locator::Id(id)).await?;
    field.clear().await?;
    field.send_keys(text).await?;
    Ok(())
}

pub async fn click_first(page: &Client, css: &str) -> Result<()> {
    page.find(Locator::Css(css)).await?.click().await?;
    Ok(())
}

pub async fn click(page: &Client, id: &str) -> Result<()> {
    page.find(Locator::Id(id)).await?.click().await?;
    Ok(())
}

/// Waits until the call page in the frame `call` decodes video from the other side.
pub async fn decodes_in_frame(page: &Client, who: &str) -> Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        page.find(Locator::Id("call")).await?.enter_frame().await?;
        let received = probe(page).await;
        page.enter_parent_frame().await?;
        if let Ok(Some(r)) = &received
            && r.frames > 0
        {
            return Ok(r.frames);
        }
        if Instant::now() > deadline {
            bail!("the {who} decoded no video within 60 s: {received:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
