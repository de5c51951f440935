//! The status page a site's staff open shows the mesh peers as `/api/v1/sync` reports them:
//! connected directly, no error, in Chinese by default and in English after the switch.
//!
//! Real parts: two `huiyan` nodes on loopback, Debian's headless Chromium driven by
//! chromedriver (`tests/run` installs both packages).

mod common;

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use common::start_chromedriver;
use fantoccini::{ClientBuilder, Locator};
use huiyan_tests::links::{eventually, sync_status};
use huiyan_tests::{TestMesh, free_ports};
use serde_json::json;

/// Waits until the text of `selector` contains `want`; returns the last text seen.
async fn wait_text(c: &fantoccini::Client, selector: &str, want: &str) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Ok(el) = c.find(Locator::Css(selector)).await {
            last = el.text().await.unwrap_or_default();
            if last.contains(want) {
                return Ok(last);
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    bail!("`{selector}` never showed `{want}`; last text: `{last}`")
}

#[test]
fn status_page_shows_mesh_peers() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mesh = TestMesh::new(&[("hub", "hub"), ("scenic-1", "scenic")]);
    let mut hub = mesh.start("hub");
    let mut scenic = mesh.start("scenic-1");
    hub.wait_ready(Duration::from_secs(30));
    scenic.wait_ready(Duration::from_secs(30));
    let web = mesh.site("scenic-1").web;
    let connected = eventually(Duration::from_secs(30), || {
        sync_status(web).is_ok_and(|s| s["peers"][0]["connected"] == true)
    });
    assert!(connected, "scenic-1 never connected to the hub");

    let port = free_ports(1)[0];
    let _driver = start_chromedriver(port)?;
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        }),
    );
    // The blocking HTTP helpers above stay out of the async part.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let c = ClientBuilder::rustls()?
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await?;
        let result = browse(&c, web).await;
        c.close().await?;
        result
    })
}

async fn browse(c: &fantoccini::Client, web: std::net::SocketAddr) -> Result<()> {
    {
        c.goto(&format!("http://{web}/")).await?;
        let row = "#mesh-peers tr[data-site=hub]";
        let zh = wait_text(c, row, "直连").await?;
        assert!(zh.contains("无"), "a connected peer without error: {zh}");
        wait_text(c, "#mesh-summary", "本站共保存").await?;

        c.find(Locator::Css("button[data-lang=en]"))
            .await?
            .click()
            .await?;
        let en = wait_text(c, row, "direct").await?;
        assert!(en.contains("none"), "{en}");
        wait_text(
            c,
            "#mesh-summary",
            "can reach this one through the hub relay",
        )
        .await?;
        Ok(())
    }
}
