//! A province meeting watched at an office over a link that shrinks to 128 kbit/s: the viewer
//! falls back to audio, its call page says why, and video comes back when the link widens.
//!
//! Real nodes (`huiyan` processes: hub and office-1, relaying over an emulated link), headless
//! Chromium with the fake camera publishing at the hub and watching at the office, the nodes'
//! own call page. Takes about 2 minutes.

use std::time::Duration;

use anyhow::{Result, ensure};
use huiyan_mesh::netem::LinkParams;
use huiyan_tests::browser::{chromedriver, chromium, probe, wait_for};
use huiyan_tests::relay::{RelayMesh, link_to, media_links};

/// What the call page shows (in Chinese, its default) while video is held back.
const NOTICE: &str = "站点间网络带宽不足，暂时只传声音";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thin_link_falls_back_to_audio_and_video_returns_when_it_widens() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let office_line = LinkParams::parse("2mbit,40ms").expect("link spec");
    let mesh = RelayMesh::new(
        &[("hub", "hub"), ("office-1", "office")],
        &[("hub", "province-meeting", "conference")],
        office_line.clone(),
    )
    .await;
    let _nodes = mesh.start_all();
    let driver = chromedriver()?;
    let chair = chromium(&driver).await?;
    let viewer = chromium(&driver).await?;
    let (hub, office) = (mesh.web("hub"), mesh.web("office-1"));
    chair
        .goto(&format!(
            "http://{hub}/call.html?room=province-meeting&sub=chair&role=owner"
        ))
        .await?;
    viewer
        .goto(&format!(
            "http://{office}/call.html?room=hub/province-meeting&sub=office-1-viewer&role=viewer"
        ))
        .await?;
    wait_for(
        &viewer,
        Duration::from_secs(60),
        "the office decodes the meeting",
        |p| p.subs.first().is_some_and(|s| s.frames > 30),
    )
    .await?;

    // The line shrinks to 128 kbit/s: audio only, and the page says why.
    mesh.set(
        "hub",
        "office-1",
        LinkParams::parse("128kbit,40ms").expect("link spec"),
    );
    let limited = wait_for(
        &viewer,
        Duration::from_secs(60),
        "the office page says video is held back",
        |p| {
            p.subs
                .first()
                .is_some_and(|s| s.limited && s.notice == NOTICE)
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = probe(&viewer).await?.subs[0].clone();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let after = probe(&viewer).await?.subs[0].clone();
    println!(
        "at 128 kbit/s over 8 s: {} video frames, {} audio samples",
        after.frames - before.frames,
        after.samples - before.samples
    );
    ensure!(
        after.frames - before.frames <= 5,
        "video still plays at 128 kbit/s: {before:?} → {after:?}"
    );
    ensure!(
        after.samples - before.samples > 8 * 16_000,
        "audio stopped at 128 kbit/s: {before:?} → {after:?}"
    );
    let links = tokio::task::block_in_place(|| media_links(hub))?;
    let link = link_to(&links, "office-1").expect("hub–office-1 link");
    println!("hub's link to office-1 at 128 kbit/s: {link}");
    ensure!(limited.subs[0].limited);

    // The line widens again: video returns and the notice goes.
    mesh.set("hub", "office-1", office_line);
    let frames = probe(&viewer).await?.subs[0].frames;
    wait_for(
        &viewer,
        Duration::from_secs(90),
        "video returns when the link widens",
        |p| {
            p.subs
                .first()
                .is_some_and(|s| s.frames > frames + 30 && !s.limited && s.notice.is_empty())
        },
    )
    .await?;
    Ok(())
}
