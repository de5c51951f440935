//! Benchmark of the media relay between sites over emulated mountain links.
//!
//! `cargo build --release -p huiyan && cargo run --release -p huiyan-tests --bin bench-relay`
//! Optional argument: the link, as `2mbit,300ms,3%` (the default).
//!
//! Four real nodes (hub, bureau, office-1, scenic-2) whose relay traffic crosses emulated
//! links, and synthetic WebRTC clients (real ICE, DTLS, SRTP; `huiyan_tests::synth`) that
//! send 30 frames/s of video (two 1000-byte packets a frame, about 500 kbit/s) and reassemble
//! frames from RTP:
//!
//! 1. A publisher at the bureau and a viewer at scenic-2, over the link given: for 60 s, the
//!    frames sent, the share of them reassembled complete at the viewer, and the share of the
//!    time its picture would freeze (frames shown in order when complete; a gap over
//!    max(3 frame intervals, 1 interval + 150 ms) is a freeze, as WebRTC counts it).
//! 2. scenic-2's uplink is cut for 30 s: seconds from its return until the viewer again
//!    completes a frame sent after the return.
//! 3. A publisher at the hub, one then six viewers at office-1 (2 Mbit/s, 40 ms link): bytes
//!    the hub–office link carries in 10 s for each.
//!
//! Prints one JSON line: `rate`, `rtt_ms`, `loss`, `frames_sent`, `frames_decoded_ratio`,
//! `freeze_ratio`, `link_bytes_1_viewer`, `link_bytes_6_viewers`, `resume_seconds`.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use huiyan_mesh::netem::LinkParams;
use huiyan_tests::relay::RelayMesh;
use huiyan_tests::synth::{self, Viewer, epoch};
use serde_json::json;

const FPS: u32 = 30;

fn now_us() -> u64 {
    epoch().elapsed().as_micros() as u64
}

async fn wait_packets(viewer: &Viewer, at_least: u64, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    while viewer.packets() < at_least {
        if Instant::now() > deadline {
            bail!(
                "the viewer got only {} packets in {within:?}",
                viewer.packets()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let spec = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "2mbit,300ms,3%".to_owned());
    let mountain = LinkParams::parse(&spec).map_err(anyhow::Error::msg)?;
    let office_line = LinkParams::parse("2mbit,40ms").map_err(anyhow::Error::msg)?;
    let mesh = RelayMesh::new(
        &[
            ("hub", "hub"),
            ("bureau", "bureau"),
            ("office-1", "office"),
            ("scenic-2", "scenic"),
        ],
        &[
            ("bureau", "mediation-centre", "mediation"),
            ("hub", "province-meeting", "conference"),
        ],
        LinkParams::default(),
    )
    .await;
    mesh.set("scenic-2", "bureau", mountain.clone());
    mesh.set("hub", "office-1", office_line);
    let _nodes = mesh.start_all();
    let (hub, bureau, office, scenic) = (
        mesh.web("hub"),
        mesh.web("bureau"),
        mesh.web("office-1"),
        mesh.web("scenic-2"),
    );

    // 1. A call over the mountain link.
    let publisher = synth::publish(bureau, "mediation-centre", "mediator", FPS, 2, 1000).await?;
    let viewer = synth::view(scenic, "bureau/mediation-centre", "tourist").await?;
    wait_packets(&viewer, 300, Duration::from_secs(60)).await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (from, frames0) = (
        now_us(),
        publisher.frames.load(std::sync::atomic::Ordering::Relaxed),
    );
    tokio::time::sleep(Duration::from_secs(60)).await;
    let (to, frames1) = (
        now_us(),
        publisher.frames.load(std::sync::atomic::Ordering::Relaxed),
    );
    // Frames still in flight (a late retransmission) get a moment.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (complete, frozen) = {
        let r = viewer
            .received
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?;
        let interval = 1_000_000 / u64::from(FPS);
        (
            r.complete_between(from, to),
            r.freeze_us(from, to, interval),
        )
    };
    let frames_sent = frames1 - frames0;
    eprintln!("call: {complete} of {frames_sent} frames complete, {frozen} µs frozen");
    if std::env::var_os("BENCH_DEBUG").is_some() {
        let r = viewer
            .received
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?;
        let mut delays: Vec<u64> = r
            .frames
            .values()
            .filter(|f| (from..to).contains(&f.sent_us))
            .filter_map(|f| Some(f.complete_us? - f.sent_us))
            .collect();
        delays.sort_unstable();
        let pick = |q: f64| delays[((delays.len() - 1) as f64 * q) as usize] / 1000;
        let slow = delays.iter().filter(|d| **d > 300_000).count();
        let mid = delays
            .iter()
            .filter(|d| (180_000..=300_000).contains(*d))
            .count();
        eprintln!(
            "delay ms p50 {} p90 {} p99 {} max {}; {mid} frames 180-300 ms, {slow} over 300 ms",
            pick(0.5),
            pick(0.9),
            pick(0.99),
            pick(1.0)
        );
        drop(r);
        let links = tokio::task::block_in_place(|| {
            [bureau, scenic].map(|web| huiyan_tests::relay::media_links(web).map(|l| l.to_string()))
        });
        eprintln!("{links:?}");
    }

    // 2. scenic-2's uplink is cut for 30 s (no way round through the hub either).
    mesh.isolate("scenic-2", true);
    tokio::time::sleep(Duration::from_secs(30)).await;
    mesh.isolate("scenic-2", false);
    let back = now_us();
    let deadline = Instant::now() + Duration::from_secs(60);
    let resumed = loop {
        let done = viewer.received.lock().ok().and_then(|r| {
            r.frames
                .values()
                .filter(|f| f.sent_us >= back)
                .filter_map(|f| f.complete_us)
                .min()
        });
        if let Some(at) = done {
            break (at - back) as f64 / 1e6;
        }
        if Instant::now() > deadline {
            let links = tokio::task::block_in_place(|| {
                [bureau, scenic]
                    .map(|web| huiyan_tests::relay::media_links(web).map(|l| l.to_string()))
            });
            bail!("video did not resume within 60 s of the link's return; links: {links:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    drop(viewer);
    drop(publisher);

    // 3. One copy across the hub–office link, whatever the number of viewers.
    let _chair = synth::publish(hub, "province-meeting", "chair", FPS, 2, 1000).await?;
    let first = synth::view(office, "hub/province-meeting", "viewer-0").await?;
    wait_packets(&first, 300, Duration::from_secs(30)).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let b0 = mesh.bytes("hub", "office-1");
    tokio::time::sleep(Duration::from_secs(10)).await;
    let one = mesh.bytes("hub", "office-1") - b0;
    let mut more = Vec::new();
    for i in 1..6 {
        more.push(synth::view(office, "hub/province-meeting", &format!("viewer-{i}")).await?);
    }
    for v in &more {
        wait_packets(v, 100, Duration::from_secs(30)).await?;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let b1 = mesh.bytes("hub", "office-1");
    tokio::time::sleep(Duration::from_secs(10)).await;
    let six = mesh.bytes("hub", "office-1") - b1;

    let secs = (to - from) as f64 / 1e6;
    println!(
        "{}",
        json!({
            "bench": "relay",
            "rate": format!("{} kbit/s", mountain.rate_kbps),
            "rtt_ms": (mountain.delay * 2).as_millis(),
            "loss": mountain.loss,
            "frames_sent": frames_sent,
            "frames_decoded_ratio": round(complete as f64 / frames_sent.max(1) as f64, 4),
            "freeze_ratio": round(frozen as f64 / 1e6 / secs, 4),
            "link_bytes_1_viewer": one,
            "link_bytes_6_viewers": six,
            "resume_seconds": round(resumed, 2),
        })
    );
    Ok(())
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}
