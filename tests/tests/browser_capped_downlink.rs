//! A viewer whose downlink is capped receives a lower simulcast layer than a viewer on an open
//! link, and keeps decoding.
//!
//! Real parts: one `huiyan` node listening on every interface with HTTPS and WebRTC advertised
//! at a veth address (`[listen] rtc_advertise`); the publisher and the open viewer are headless
//! Chromiums on the host; the capped viewer is a headless Chromium (and its chromedriver) in a
//! network namespace whose link to the host is shaped by `tc tbf` to 300 kbit/s towards the
//! browser. The SFU learns the cap only from the viewer's transport-wide congestion feedback.
//!
//! Needs root (namespaces, tc), `chromium`, `chromium-driver` and the `huiyan` binary.

mod common;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use common::{
    CallNode, Received, browser, probe, rates, start_chromedriver, start_chromedriver_in,
    video_kbps, wait_decoding,
};
use huiyan_tests::netns::Netns;

/// The capped viewer's downlink, in kbit/s: above the smallest layer with its audio (at most
/// 150 + 40), below the middle one (Chrome sends it at 300 to 500).
const CAP_KBIT: u32 = 300;
/// One-second samples of both viewers once the layers have settled, counted while the open
/// viewer receives more than the cap; at most `MAX_SAMPLES` are taken.
const SAMPLES: u32 = 6;
const MAX_SAMPLES: u32 = 20;
/// chromedriver's port inside the namespace (nothing else listens there).
const NS_DRIVER_PORT: u16 = 9515;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capped_viewer_gets_a_lower_layer_and_keeps_decoding() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ns = Netns::new()?;
    ns.cap_downlink(CAP_KBIT, 300)?;
    let node = CallNode::public("conference", ns.host_ip()).await?;
    let host_port = huiyan_tests::free_port_block(1);
    let _host_driver = start_chromedriver(host_port)?;
    let _ns_driver = start_chromedriver_in(&ns, NS_DRIVER_PORT)?;

    let publisher = browser(([127, 0, 0, 1], host_port).into(), false).await?;
    publisher.goto(&node.page("host", "owner", "")).await?;
    let open = browser(([127, 0, 0, 1], host_port).into(), false).await?;
    open.goto(&node.page("open", "viewer", "")).await?;
    let capped = browser((ns.ns_ip(), NS_DRIVER_PORT).into(), false).await?;
    capped.goto(&node.page("capped", "viewer", "")).await?;
    let viewers = [("open viewer", &open), ("capped viewer", &capped)];
    let all = [("publisher", &publisher), viewers[0], viewers[1]];
    wait_decoding(&viewers, &all, Duration::from_secs(60), &node.log()).await?;

    // The layers settle: the open viewer climbs as the publisher ramps up and its estimate
    // allows, the capped one falls when its estimate shows the cap. Wait (at most 60 s) until
    // the open viewer receives a layer that would not fit the cap, and the capped viewer a lower
    // layer, and smaller frames, than the open one. (`HUIYAN_TRACE=1` prints every probe.)
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut o = probe(&open)
        .await?
        .context("the open viewer lost the call")?;
    let mut c;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let o_next = probe(&open)
            .await?
            .context("the open viewer lost the call")?;
        c = probe(&capped)
            .await?
            .context("the capped viewer lost the call")?;
        let open_kbps = video_kbps(&o, &o_next);
        o = o_next;
        if std::env::var_os("HUIYAN_TRACE").is_some() {
            println!("open ({open_kbps:.0} kbit/s) {o:?}\ncapped {c:?}");
        }
        if open_kbps > f64::from(CAP_KBIT) * 1.2 && lower(&c, &o) {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "within 60 s the open viewer got no layer above the cap ({open_kbps:.0} kbit/s; \
                 is the machine too busy for the publisher to encode?) or the capped viewer no \
                 lower layer: open {o:?}, capped {c:?}; node log:\n{}",
                std::fs::read_to_string(node.log()).unwrap_or_default()
            );
        }
    }

    // ... and both keep decoding, the capped one on a lower layer. One-second samples count
    // only while the open viewer receives more than the cap (the open viewer's own estimate
    // also moves on a busy machine, and when it is on the smallest layer there is nothing
    // lower); in most counted samples the capped viewer must be lower. (Every so often the SFU
    // tries the capped viewer on the higher layer again, for longer intervals each time it
    // fails: a trial may fall inside this window.)
    let t0 = Instant::now();
    let (mut counted, mut lower_samples) = (0, 0);
    let (mut o2, mut c2) = (o.clone(), c.clone());
    for _ in 0..MAX_SAMPLES {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let o_next = probe(&open)
            .await?
            .context("the open viewer lost the call")?;
        c2 = probe(&capped)
            .await?
            .context("the capped viewer lost the call")?;
        let open_kbps = video_kbps(&o2, &o_next);
        o2 = o_next;
        let counts = open_kbps > f64::from(CAP_KBIT) * 1.2;
        let is_lower = lower(&c2, &o2);
        println!(
            "sample: open {open_kbps:.0} kbit/s layer {:?} {}x{}, capped layer {:?} {}x{}{}",
            o2.layer,
            o2.width,
            o2.height,
            c2.layer,
            c2.width,
            c2.height,
            match (counts, is_lower) {
                (false, _) => " (not counted)",
                (true, true) => " (lower)",
                (true, false) => " (NOT lower)",
            }
        );
        if counts {
            counted += 1;
            lower_samples += u32::from(is_lower);
        }
        if counted == SAMPLES {
            break;
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    for (name, before, after) in [("open", &o, &o2), ("capped", &c, &c2)] {
        let (fps, samples) = rates(before, after, secs);
        println!(
            "{name} viewer: layer {:?}, {}x{}, {fps:.1} frames/s, {samples} audio samples, \
             estimate {:?} kbit/s",
            after.layer, after.width, after.height, after.estimate_kbps
        );
        assert!(
            fps >= 5.0,
            "the {name} viewer decodes only {fps:.1} frames/s: {after:?}"
        );
        assert!(samples > 0, "the {name} viewer receives no audio");
    }
    println!("the capped viewer was on a lower layer in {lower_samples} of {counted} samples");
    assert!(
        counted >= SAMPLES / 2,
        "the open viewer received more than the cap in only {counted} of {MAX_SAMPLES} s"
    );
    assert!(
        lower_samples * 2 > counted,
        "the capped viewer was on a lower layer in only {lower_samples} of {counted} samples"
    );

    for client in [publisher, open, capped] {
        client.close().await?;
    }
    Ok(())
}

/// Whether `capped` receives a lower layer than `open`, as the SFU reports it and as the
/// decoded frame size shows.
fn lower(capped: &Received, open: &Received) -> bool {
    matches!((capped.layer, open.layer), (Some(c), Some(o)) if c < o)
        && capped.width > 0
        && capped.width < open.width
}
