//! Two browsers in one room each decode the other's video and audio through the node's SFU.
//!
//! Real parts: the `huiyan demo` pilot (eight nodes on loopback), Debian's headless Chromium
//! with its fake camera and microphone, driven by chromedriver through fantoccini. The call page
//! is the node's own `web/call.html`.
//!
//! Needs `chromium` and `chromium-driver` (Debian packages; `.ci/run` installs them) and the
//! `huiyan` binary built first (`cargo build -p huiyan`), or `HUIYAN_BIN` pointing at one.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use fantoccini::{Client, ClientBuilder};
use serde_json::{Value, json};

/// scenic-1 is site 5 of the roster; the demo gives it `base + 50` (web).
const SCENIC_1: u16 = 5;
const ROOM: &str = "scenic-1-mediation";

/// A child process that is stopped (SIGTERM, then SIGKILL) when dropped.
struct Guard(Child);

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

fn huiyan_bin() -> Result<PathBuf> {
    if let Ok(bin) = std::env::var("HUIYAN_BIN") {
        return Ok(bin.into());
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let bin = target.join("debug/huiyan");
    if !bin.exists() {
        bail!(
            "{} is missing: run `cargo build -p huiyan` first",
            bin.display()
        );
    }
    Ok(bin)
}

/// A base port whose 80 following ports this test run may use.
fn base_port() -> u16 {
    20_000 + (std::process::id() % 400) as u16 * 100
}

/// Start the demo pilot and wait until every node is ready.
fn start_demo(dir: &std::path::Path, base: u16) -> Result<Guard> {
    let mut child = Command::new(huiyan_bin()?)
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

fn start_chromedriver(port: u16) -> Result<Guard> {
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

async fn browser(driver_port: u16) -> Result<Client> {
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
    let client = ClientBuilder::rustls()?
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{driver_port}"))
        .await
        .context("chromedriver refused a session")?;
    Ok(client)
}

/// What a call page receives from each publisher it subscribes to.
const PROBE: &str = r#"
const done = arguments[arguments.length - 1];
(async () => {
  const s = window.huiyanCall;
  if (!s) return done({ subs: [] });
  const subs = [];
  for (const [id, sub] of s.subs) {
    const stats = await sub.pc.getStats();
    let frames = 0, samples = 0;
    stats.forEach((r) => {
      if (r.type === 'inbound-rtp' && r.kind === 'video') frames = r.framesDecoded ?? 0;
      if (r.type === 'inbound-rtp' && r.kind === 'audio') samples = r.totalSamplesReceived ?? 0;
    });
    subs.push({ id, frames, samples });
  }
  done({ status: s.status, subs });
})().catch((e) => done({ error: String(e) }));
"#;

/// (frames decoded, audio samples received) from the first subscription, if any.
async fn probe(client: &Client) -> Result<Option<(u64, u64)>> {
    let v: Value = client.execute_async(PROBE, vec![]).await?;
    if let Some(err) = v.get("error") {
        bail!("probe failed in the page: {err}");
    }
    let first = v["subs"].get(0);
    Ok(first.map(|s| {
        (
            s["frames"].as_u64().unwrap_or(0),
            s["samples"].as_u64().unwrap_or(0),
        )
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_browsers_in_a_room_decode_each_others_video_and_audio() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut dir = tempfile::tempdir()?;
    if std::env::var_os("HUIYAN_KEEP_DIR").is_some() {
        // For debugging: the demo dir (configs and node logs) survives the test.
        dir.disable_cleanup(true);
        println!("demo dir kept: {}", dir.path().display());
    }
    let base = base_port();
    let _demo = start_demo(dir.path(), base)?;
    let driver_port = base + 90;
    let _driver = start_chromedriver(driver_port)?;
    let web = base + 10 * SCENIC_1;

    let alice = browser(driver_port).await?;
    let bob = browser(driver_port).await?;
    let page = |who: &str| format!("http://127.0.0.1:{web}/call.html?room={ROOM}&sub={who}");
    alice.goto(&page("alice")).await?;
    bob.goto(&page("bob")).await?;

    // Both pages start decoding within 45 s.
    let deadline = Instant::now() + Duration::from_secs(45);
    for (name, client) in [("alice", &alice), ("bob", &bob)] {
        loop {
            if let Some((frames, _)) = probe(client).await?
                && frames > 0
            {
                break;
            }
            if Instant::now() > deadline {
                let logs =
                    std::fs::read_to_string(dir.path().join("scenic-1.log")).unwrap_or_default();
                bail!("{name} decoded no video within 45 s; node log:\n{logs}");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    // Then each keeps decoding at least 15 frames per second, and audio keeps arriving.
    let t0 = Instant::now();
    let a0 = probe(&alice)
        .await?
        .context("alice lost her subscription")?;
    let b0 = probe(&bob).await?.context("bob lost his subscription")?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let a1 = probe(&alice)
        .await?
        .context("alice lost her subscription")?;
    let b1 = probe(&bob).await?.context("bob lost his subscription")?;
    let secs = t0.elapsed().as_secs_f64();
    for (name, before, after) in [("alice", a0, a1), ("bob", b0, b1)] {
        let fps = (after.0 - before.0) as f64 / secs;
        println!(
            "{name}: {fps:.1} frames/s decoded, {} audio samples",
            after.1 - before.1
        );
        assert!(fps >= 15.0, "{name} decodes only {fps:.1} frames/s");
        assert!(after.1 > before.1, "{name} receives no audio");
    }

    alice.close().await?;
    bob.close().await?;
    Ok(())
}
