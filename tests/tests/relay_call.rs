//! A call across sites over a mountain link: a browser at scenic-2 and one at the bureau, in
//! the bureau's mediation room, with the relay between the two nodes crossing an emulated
//! 2 Mbit/s, 300 ms round-trip, 3 % loss link.
//!
//! 1. Over 60 s each browser decodes at least 95 % of the video frames the other sends on the
//!    layer it receives, and its video freezes (WebRTC's `totalFreezesDuration`) for under 2 %
//!    of the time.
//! 2. The link is cut for 30 s: both pages stay in the call (nobody is told the other left),
//!    and video comes back after the link returns. How fast is measured by `bench-relay`
//!    (`resume_seconds`); this test allows 15 s.
//!
//! Real nodes (`huiyan` processes), headless Chromium with the fake camera, the nodes' own
//! call page. Takes about 3 minutes.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use huiyan_mesh::netem::LinkParams;
use huiyan_tests::browser::{self, Probe, chromedriver, chromium, probe, wait_for};
use huiyan_tests::relay::{RelayMesh, link_to, media_links};

/// Frames decoded by `receiver` over frames `sender` sent on the receiver's layer, and the
/// share of the window the receiver's video was frozen.
fn quality(
    (sender0, receiver0): (&Probe, &Probe),
    (sender1, receiver1): (&Probe, &Probe),
    secs: f64,
) -> Result<(f64, f64, u64)> {
    let (r0, r1) = (&receiver0.subs[0], &receiver1.subs[0]);
    let layer = r1.layer.context("the node reported no layer")?;
    let sent = sender1.sent_on(layer) - sender0.sent_on(layer);
    let decoded = r1.frames - r0.frames;
    ensure!(sent > 0, "no frames sent on layer {layer}");
    Ok((
        decoded as f64 / sent as f64,
        (r1.freeze - r0.freeze) / secs,
        sent,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "TODO(#5): after the cut the bureau drops and re-adds the scenic-2 member (the hub \
            route's `left` overtakes the direct re-attach), so the page re-subscribes; and the \
            freeze share exceeds 2 % when the 2-core machine is loaded (docs/relay.md)"]
async fn a_call_across_a_thin_lossy_link_is_smooth_and_survives_a_cut() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mountain = LinkParams::parse("2mbit,300ms,3%").expect("link spec");
    let mesh = RelayMesh::new(
        &[("hub", "hub"), ("bureau", "bureau"), ("scenic-2", "scenic")],
        &[("bureau", "mediation-centre", "mediation")],
        LinkParams::default(),
    )
    .await;
    mesh.set("scenic-2", "bureau", mountain);
    let _nodes = mesh.start_all();
    let driver = chromedriver()?;
    let alice = chromium(&driver).await?;
    let bob = chromium(&driver).await?;
    let (bureau, scenic) = (mesh.web("bureau"), mesh.web("scenic-2"));
    alice
        .goto(&format!(
            "http://{bureau}/call.html?room=mediation-centre&sub=alice"
        ))
        .await?;
    bob.goto(&format!(
        "http://{scenic}/call.html?room=bureau/mediation-centre&sub=bob"
    ))
    .await?;

    // Both decode the other's video, then the layers settle.
    for (name, page) in [("alice", &alice), ("bob", &bob)] {
        let what = format!("{name} decodes the other site's video");
        let decoding = wait_for(page, Duration::from_secs(60), &what, |p| {
            p.subs.first().is_some_and(|s| s.frames > 30)
        })
        .await;
        if let Err(e) = decoding {
            let links = tokio::task::block_in_place(|| {
                [bureau, scenic].map(|web| media_links(web).map(|l| l.to_string()))
            });
            let other = probe(if name == "alice" { &bob } else { &alice }).await?;
            anyhow::bail!("{e}\nthe other page: {other:?}\nrelay links: {links:?}");
        }
    }
    tokio::time::sleep(Duration::from_secs(10)).await;

    // 1. Sixty seconds of call.
    let t0 = Instant::now();
    let (a0, b0) = (probe(&alice).await?, probe(&bob).await?);
    tokio::time::sleep(Duration::from_secs(60)).await;
    let (a1, b1) = (probe(&alice).await?, probe(&bob).await?);
    let secs = t0.elapsed().as_secs_f64();
    let mut failures = Vec::new();
    for (name, sender, receiver) in [
        ("bureau → scenic-2", (&a0, &a1), (&b0, &b1)),
        ("scenic-2 → bureau", (&b0, &b1), (&a0, &a1)),
    ] {
        let (ratio, freeze, sent) = quality((sender.0, receiver.0), (sender.1, receiver.1), secs)?;
        println!(
            "{name}: {sent} frames sent, {:.1} % decoded, frozen {:.2} % of {secs:.0} s",
            ratio * 100.0,
            freeze * 100.0
        );
        if ratio < 0.95 {
            failures.push(format!(
                "{name}: only {:.1} % of frames decoded",
                ratio * 100.0
            ));
        }
        if freeze >= 0.02 {
            failures.push(format!(
                "{name}: frozen {:.2} % of the call",
                freeze * 100.0
            ));
        }
    }
    let links = tokio::task::block_in_place(|| media_links(bureau))?;
    println!(
        "bureau's link to scenic-2: {}",
        link_to(&links, "scenic-2").unwrap_or(&links)
    );
    ensure!(failures.is_empty(), "{}", failures.join("; "));

    // 2. scenic-2's uplink is cut for 30 s (no way round through the hub either).
    mesh.isolate("scenic-2", true);
    tokio::time::sleep(Duration::from_secs(30)).await;
    for (name, page) in [("alice", &alice), ("bob", &bob)] {
        let p = probe(page).await?;
        ensure!(
            p.subs.len() == 1 && p.status != "ended",
            "{name} left the call during the cut: {p:?}"
        );
    }
    let before = (probe(&alice).await?, probe(&bob).await?);
    mesh.isolate("scenic-2", false);
    let back = Instant::now();
    for (name, page, was) in [("alice", &alice, &before.0), ("bob", &bob, &before.1)] {
        let frames = was.subs[0].frames;
        let what = format!("{name}'s video resumes after the link returns");
        browser::wait_for(page, Duration::from_secs(15), &what, |p| {
            p.subs.first().is_some_and(|s| s.frames > frames + 10)
        })
        .await?;
        println!(
            "{name}: video again {:.1} s after the link returned",
            back.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
