//! Two browsers in one room each decode the other's video and audio through the node's SFU;
//! one of them cannot use UDP and is served over ICE-TCP on the same port number.
//!
//! Real parts: the `huiyan demo` pilot (eight nodes on loopback), Debian's headless Chromium
//! with its fake camera and microphone, driven by chromedriver through fantoccini. The call page
//! is the node's own `web/call.html`.
//!
//! TODO(#4): the other browser scenarios of the issue: one publisher and six subscribers all
//! decoding; a subscriber whose downlink is capped (tc in a network namespace) receiving a lower
//! layer and still decoding; a browser whose network drops for 10 s rejoining by itself.
//!
//! Needs `chromium` and `chromium-driver` (Debian packages; `.ci/run` installs them) and the
//! `huiyan` binary built first (`cargo build -p huiyan`), or `HUIYAN_BIN` pointing at one.

mod common;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use common::{ROOM, SCENIC_1, base_port, start_chromedriver, start_demo};
use fantoccini::{Client, ClientBuilder};
use serde_json::{Value, json};

/// A headless Chromium; with `tcp_only`, WebRTC may not use UDP (as behind a strict firewall).
async fn browser(driver_port: u16, tcp_only: bool) -> Result<Client> {
    let mut caps = serde_json::Map::new();
    let prefs = if tcp_only {
        json!({ "webrtc": { "ip_handling_policy": "disable_non_proxied_udp" } })
    } else {
        json!({})
    };
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
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
    let frames = 0, samples = 0, pair = null;
    stats.forEach((r) => {
      if (r.type === 'inbound-rtp' && r.kind === 'video') frames = r.framesDecoded ?? 0;
      if (r.type === 'inbound-rtp' && r.kind === 'audio') samples = r.totalSamplesReceived ?? 0;
      if (r.type === 'transport' && r.selectedCandidatePairId) pair = r.selectedCandidatePairId;
    });
    const local = pair && stats.get(stats.get(pair)?.localCandidateId);
    subs.push({ id, frames, samples, protocol: local?.protocol ?? null });
  }
  done({ status: s.status, subs });
})().catch((e) => done({ error: String(e) }));
"#;

/// What the first subscription of a page receives.
#[derive(Debug, Clone)]
struct Received {
    frames: u64,
    samples: u64,
    /// Transport protocol of the selected ICE candidate pair (`udp` or `tcp`).
    protocol: String,
}

async fn probe(client: &Client) -> Result<Option<Received>> {
    let v: Value = client.execute_async(PROBE, vec![]).await?;
    if let Some(err) = v.get("error") {
        bail!("probe failed in the page: {err}");
    }
    let first = v["subs"].get(0);
    Ok(first.map(|s| Received {
        frames: s["frames"].as_u64().unwrap_or(0),
        samples: s["samples"].as_u64().unwrap_or(0),
        protocol: s["protocol"].as_str().unwrap_or("").to_owned(),
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

    let alice = browser(driver_port, false).await?;
    let bob = browser(driver_port, true).await?;
    let page = |who: &str| format!("http://127.0.0.1:{web}/call.html?room={ROOM}&sub={who}");
    alice.goto(&page("alice")).await?;
    bob.goto(&page("bob")).await?;

    // Both pages start decoding within 45 s.
    let deadline = Instant::now() + Duration::from_secs(45);
    for (name, client) in [("alice", &alice), ("bob", &bob)] {
        loop {
            if let Some(received) = probe(client).await?
                && received.frames > 0
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
    for (name, before, after) in [("alice", &a0, &a1), ("bob", &b0, &b1)] {
        let fps = (after.frames - before.frames) as f64 / secs;
        let samples = after.samples - before.samples;
        let protocol = &after.protocol;
        println!("{name}: {fps:.1} frames/s decoded, {samples} audio samples, over {protocol}");
        assert!(fps >= 15.0, "{name} decodes only {fps:.1} frames/s");
        assert!(samples > 0, "{name} receives no audio");
    }
    // Bob's network blocks UDP: he is served over ICE-TCP on the same port number.
    assert_eq!(a1.protocol, "udp");
    assert_eq!(b1.protocol, "tcp");

    // For a person to look at: `HUIYAN_SCREENSHOT=call.png` saves what Alice sees.
    if let Some(path) = std::env::var_os("HUIYAN_SCREENSHOT") {
        std::fs::write(path, alice.screenshot().await?)?;
    }

    // The node's /metrics shows the call.
    let metrics = reqwest::get(format!("http://127.0.0.1:{web}/metrics"))
        .await?
        .text()
        .await?;
    let value = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    assert_eq!(value("huiyan_media_sessions "), 2.0, "{metrics}");
    assert!(
        value("huiyan_media_forwarded_packets_total ") > 500.0,
        "{metrics}"
    );
    assert_eq!(value("huiyan_media_tracks "), 4.0, "{metrics}");

    alice.close().await?;
    bob.close().await?;
    Ok(())
}
