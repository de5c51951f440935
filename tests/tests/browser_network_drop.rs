//! A browser whose network drops for 10 s shows that it is reconnecting while the network is
//! gone, and gets the call back by itself when it returns: it decodes the other side again, and
//! the other side decodes it again. The test only cuts and restores the network. Then a 25 s
//! drop, which outlasts the page's patience with a silent signaling socket: the page rejoins the
//! room as a new participant, and again both sides decode each other.
//!
//! Real parts: one `huiyan` node listening on every interface with HTTPS and WebRTC advertised
//! at a veth address (`[listen] rtc_advertise`); two participants of a mediation room, one a
//! headless Chromium on the host, the other a headless Chromium (and its chromedriver) in a
//! network namespace. The drop is an nftables table in that namespace that silently discards
//! every packet on its link except the test's own chromedriver connection.
//!
//! Needs root (namespaces), `nft`, `chromium`, `chromium-driver` and the `huiyan` binary.

mod common;

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use common::{CallNode, Page, browser, probe_page, start_chromedriver, start_chromedriver_in};
use fantoccini::Client;
use huiyan_tests::netns::Netns;

/// chromedriver's port inside the namespace; the drop spares it.
const NS_DRIVER_PORT: u16 = 9515;
const SHORT_DROP: Duration = Duration::from_secs(10);
/// Longer than the call page waits on a silent signaling socket (20 s).
const LONG_DROP: Duration = Duration::from_secs(25);

/// Cuts `away` off for `length`, checks that its page shows it is reconnecting meanwhile, and
/// that both sides decode each other again afterwards with no help. Returns how often the page
/// has rejoined the room so far.
async fn drop_network(ns: &Netns, here: &Client, away: &Client, length: Duration) -> Result<u64> {
    ns.set_offline(true, NS_DRIVER_PORT)?;
    let cut = Instant::now();
    let mut seen = Vec::new();
    while cut.elapsed() < length {
        let page = probe_page(away).await?;
        if seen.last().map(|(s, _): &(String, String)| s) != Some(&page.status) {
            println!(
                "{:>5.1} s offline: {} ({})",
                cut.elapsed().as_secs_f64(),
                page.status,
                page.text
            );
            seen.push((page.status, page.text));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    ns.set_offline(false, NS_DRIVER_PORT)?;
    let shown = seen
        .iter()
        .find(|(status, _)| status == "reconnecting" || status == "failed");
    let Some((_, text)) = shown else {
        bail!("during a {length:?} drop the page never showed that it was reconnecting: {seen:?}");
    };
    // The visible line says so in the page's language (Chinese by default).
    assert!(text.contains("重新连接") || text.contains("重试"), "{text}");

    // Back online: both sides decode each other again.
    let away_back =
        until_decoding("the browser back online", away, Duration::from_secs(60)).await?;
    let here_back =
        until_decoding("the browser on the host", here, Duration::from_secs(30)).await?;
    let page = probe_page(away).await?;
    println!(
        "back online after {length:?}: decoding again after {:.1} s (the other side after {:.1} s \
         more)",
        away_back.as_secs_f64(),
        here_back.as_secs_f64(),
    );
    Ok(page.reconnects)
}

/// Waits until `client` decodes the video of its first subscription: two probes 2 s apart on
/// the same subscription, frames growing. Returns the time it took.
async fn until_decoding(name: &str, client: &Client, within: Duration) -> Result<Duration> {
    let t0 = Instant::now();
    let mut last: Option<Page> = None;
    loop {
        let page = probe_page(client).await?;
        if let (Some(prev), Some(now)) = (
            last.as_ref().and_then(|p| p.subs.first()),
            page.subs.first(),
        ) && prev.publisher == now.publisher
            && now.frames >= prev.frames + 10
            && page.status == "connected"
        {
            return Ok(t0.elapsed());
        }
        if t0.elapsed() > within {
            bail!("{name} does not decode video again within {within:?}: {page:?}");
        }
        last = Some(page);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_back_from_a_network_drop_rejoins_by_itself() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ns = Netns::new()?;
    let node = CallNode::public("mediation", ns.host_ip()).await?;
    let host_port = huiyan_tests::free_port_block(1);
    let _host_driver = start_chromedriver(host_port)?;
    let _ns_driver = start_chromedriver_in(&ns, NS_DRIVER_PORT)?;

    let here = browser(([127, 0, 0, 1], host_port).into(), false).await?;
    here.goto(&node.page("here", "speaker", "")).await?;
    let away = browser((ns.ns_ip(), NS_DRIVER_PORT).into(), false).await?;
    away.goto(&node.page("away", "speaker", "")).await?;
    until_decoding("the browser on the host", &here, Duration::from_secs(60)).await?;
    until_decoding(
        "the browser in the namespace",
        &away,
        Duration::from_secs(30),
    )
    .await?;

    // A 10 s drop: the call comes back by itself.
    let rejoins = drop_network(&ns, &here, &away, SHORT_DROP).await?;
    println!("after the 10 s drop the page rejoined the room {rejoins} time(s)");

    // A drop longer than the page waits on a silent signaling socket (20 s): the page gives up
    // on its socket and connections and joins the room again as a new participant; the other
    // side sees the old one leave and the new one publish.
    let rejoins_after = drop_network(&ns, &here, &away, LONG_DROP).await?;
    println!("after the 25 s drop the page had rejoined the room {rejoins_after} time(s)");
    assert!(
        rejoins_after > rejoins,
        "after a {LONG_DROP:?} drop the page should have rejoined the room"
    );

    here.close().await?;
    away.close().await?;
    Ok(())
}
