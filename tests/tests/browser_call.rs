//! Two browsers in one room each decode the other's video and audio through the node's SFU;
//! one of them cannot use UDP and is served over ICE-TCP on the same port number.
//!
//! Real parts: the `huiyan demo` pilot (eight nodes on loopback), Debian's headless Chromium
//! with its fake camera and microphone, driven by chromedriver through fantoccini. The call page
//! is the node's own `web/call.html`.
//!
//! The other browser scenarios: `browser_six_subscribers.rs`, `browser_capped_downlink.rs`,
//! `browser_network_drop.rs`.
//!
//! Needs `chromium` and `chromium-driver` (Debian packages; `.ci/run` installs them) and the
//! `huiyan` binary built first (`cargo build -p huiyan`), or `HUIYAN_BIN` pointing at one.

mod common;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use common::{ROOM, SCENIC_1, base_port, browser, probe, start_chromedriver, start_demo};

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

    let driver = ([127, 0, 0, 1], driver_port).into();
    let alice = browser(driver, false).await?;
    let bob = browser(driver, true).await?;
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
