//! One publisher at the hub and six viewers at an office: the hub–office relay link carries one
//! copy of the stream, so its bytes stay within 5 % of what it carried for a single viewer.
//!
//! Real nodes (`huiyan` processes) and real WebRTC clients (webrtc-rs peers with ICE, DTLS and
//! SRTP, driven over the nodes' `/ws` signaling); the relay traffic crosses emulated links.
//! The clients are synthetic (`huiyan_tests::synth`): a browser's own bitrate adaptation moves
//! its byte count by more than 5 % between two windows, and seven Chromiums do not fit the
//! 2-core CI machine.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use huiyan_mesh::netem::LinkParams;
use huiyan_tests::relay::{RelayMesh, link_to, media_links};
use huiyan_tests::synth;

const ROOM: &str = "hub/province-meeting";

async fn wait_packets(viewer: &synth::Viewer, at_least: u64, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    while viewer.packets() < at_least {
        if Instant::now() > deadline {
            bail!(
                "a viewer got only {} packets within {within:?}",
                viewer.packets()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// Bytes over the hub–office links during `window`.
async fn measure(mesh: &RelayMesh, window: Duration) -> u64 {
    let before = mesh.bytes("hub", "office-1");
    tokio::time::sleep(window).await;
    mesh.bytes("hub", "office-1") - before
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_viewers_behind_one_link_cost_the_link_one_copy() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mesh = RelayMesh::new(
        &[("hub", "hub"), ("office-1", "office")],
        &[("hub", "province-meeting", "conference")],
        LinkParams::parse("2mbit,40ms").expect("link spec"),
    )
    .await;
    let nodes = mesh.start_all();
    let (hub, office) = (mesh.web("hub"), mesh.web("office-1"));

    // About 480 kbit/s of video: 30 frames/s of two 1000-byte packets.
    let _publisher = synth::publish(hub, "province-meeting", "chair", 30, 2, 1000).await?;
    let first = synth::view(office, ROOM, "viewer-0").await?;
    wait_packets(&first, 200, Duration::from_secs(30)).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let one = measure(&mesh, Duration::from_secs(10)).await;

    let mut others = Vec::new();
    for i in 1..6 {
        others.push(synth::view(office, ROOM, &format!("viewer-{i}")).await?);
    }
    for viewer in &others {
        wait_packets(viewer, 100, Duration::from_secs(30)).await?;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let received: Vec<u64> = others.iter().map(|v| v.packets()).collect();
    let six = measure(&mesh, Duration::from_secs(10)).await;
    let grown: Vec<u64> = others.iter().map(|v| v.packets()).collect();

    let ratio = six as f64 / one as f64;
    println!(
        "hub–office link: {one} bytes in 10 s for one viewer, {six} for six ({:+.1} %)",
        (ratio - 1.0) * 100.0
    );
    // Every viewer kept receiving while the link carried one copy.
    for (before, after) in received.iter().zip(&grown) {
        assert!(after > before, "a viewer stopped receiving");
    }
    assert!(
        one > 400_000,
        "the link carried only {one} bytes for one viewer"
    );
    assert!(
        (0.95..=1.05).contains(&ratio),
        "six viewers cost the link {six} bytes against {one} for one"
    );

    // The hub's API shows one video stream to office-1, one layer.
    let links = tokio::task::block_in_place(|| media_links(hub))?;
    let link = link_to(&links, "office-1").expect("a hub–office-1 link");
    let sending = link["sending"].as_array().expect("sending");
    assert_eq!(sending.len(), 1, "{link}");
    assert_eq!(sending[0]["kind"], "video");
    drop(nodes);
    Ok(())
}
