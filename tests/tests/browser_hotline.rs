//! The hotline in headless Chromium, across two sites: a duty lawyer at the bureau signs in on
//! the console and makes themselves available; a caller at the West Slope room (scenic-2) opens
//! the hotline app in English, picks a topic and calls; the lawyer gets the offer and accepts
//! it; video flows both ways through the mesh; the lawyer ends the call and writes the note;
//! the caller rates the advice; the supervisor's tab shows the figures.
//!
//! Real parts: three `huiyan` nodes (hub, bureau, scenic-2) over the link emulator, Debian's
//! headless Chromium with its fake camera, driven by chromedriver through fantoccini; the pages
//! are the node's own `web/hotline.html` and `web/lawyer.html`. `tests/tests/hotline.rs`
//! covers the queue's rules through the API.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Result;
use common::{
    browser, click, decodes_in_frame, fill, shown, start_chromedriver, until, wait_shown,
};
use fantoccini::{Client, Locator};
use huiyan_mesh::netem::LinkParams;
use huiyan_tests::api::get;
use huiyan_tests::links::LinkedMesh;
use huiyan_tests::{add_user, free_ports, sign_in};

const PASSWORD: &str = "lawyer-password";

async fn text(page: &Client, id: &str) -> Result<String> {
    Ok(page.find(Locator::Id(id)).await?.text().await?)
}

async fn lawyer_state(page: &Client) -> Result<Option<String>> {
    Ok(page
        .find(Locator::Id("state"))
        .await?
        .attr("data-state")
        .await?)
}

#[test]
fn a_caller_at_a_scenic_room_talks_to_the_bureaus_lawyer_and_rates_the_call() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let params = LinkParams::parse("10mbit,5ms,0%").unwrap();
    let lm = LinkedMesh::new(
        &[("hub", "hub"), ("bureau", "bureau"), ("scenic-2", "scenic")],
        params,
    );
    add_user(
        &lm.mesh.site("bureau").config,
        "zhang",
        PASSWORD,
        &["duty_lawyer@bureau".into()],
    );
    let nodes = lm.mesh.start_ready(&["hub", "bureau", "scenic-2"]);
    let web = |id: &str| lm.mesh.site(id).web;
    let (scenic, bureau) = (web("scenic-2"), web("bureau"));

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let driver_port = free_ports(1)[0];
    let _driver = start_chromedriver(driver_port).unwrap();
    let driver: SocketAddr = ([127, 0, 0, 1], driver_port).into();

    let session = rt.block_on(async {
        // --- The lawyer signs in at the bureau and takes calls -------------------------------
        let lawyer = browser(driver, false).await?;
        lawyer.goto(&format!("http://{bureau}/lawyer.html")).await?;
        wait_shown(&lawyer, "signin", "no sign-in form").await?;
        fill(&lawyer, "username", "zhang").await?;
        fill(&lawyer, "password", PASSWORD).await?;
        lawyer
            .find(Locator::Css("#signin-form button"))
            .await?
            .click()
            .await?;
        wait_shown(&lawyer, "desk", "the console did not open").await?;
        click(&lawyer, "available").await?;
        until(
            &lawyer,
            Duration::from_secs(15),
            "the lawyer did not become available",
            async || Ok(lawyer_state(&lawyer).await?.as_deref() == Some("available")),
        )
        .await?;

        // --- The caller at scenic-2, in English, picks a topic and calls ---------------------
        let caller = browser(driver, false).await?;
        caller
            .goto(&format!("http://{scenic}/hotline.html"))
            .await?;
        caller
            .find(Locator::Css("button[data-lang=en]"))
            .await?
            .click()
            .await?;
        // The hotline opens at scenic-2 once the lawyer's availability has arrived by sync.
        until(
            &caller,
            Duration::from_secs(20),
            "the hotline never showed open with a lawyer",
            async || {
                Ok(shown(&caller, "join").await?
                    && text(&caller, "hotline-state")
                        .await?
                        .starts_with("Lawyers on duty: 1."))
            },
        )
        .await?;
        assert_eq!(text(&caller, "join").await?, "Call a lawyer");
        caller
            .find(Locator::Css("#topic option[value=labour]"))
            .await?
            .click()
            .await?;
        click(&caller, "join").await?;
        wait_shown(&caller, "waiting", "no waiting screen").await?;

        // --- The offer reaches the lawyer; accepted, video both ways ------------------------
        wait_shown(&lawyer, "offer", "no offer on the console").await?;
        let offer = text(&lawyer, "offer-what").await?;
        assert!(
            offer.contains("劳动争议"),
            "the offer names the topic: {offer:?}"
        );
        click(&lawyer, "accept").await?;
        wait_shown(&lawyer, "current", "the call did not open on the console").await?;
        wait_shown(&caller, "in-call", "the call did not open on the phone").await?;
        let frames = decodes_in_frame(&caller, "caller").await?;
        println!("the caller decodes the lawyer's video ({frames} frames)");
        let frames = decodes_in_frame(&lawyer, "lawyer").await?;
        println!("the lawyer decodes the caller's video ({frames} frames)");

        // --- The lawyer ends the call and writes the note; the caller rates it --------------
        click(&lawyer, "end").await?;
        wait_shown(&lawyer, "note", "no note form after the call").await?;
        assert_eq!(
            lawyer
                .find(Locator::Id("note-category"))
                .await?
                .prop("value")
                .await?
                .as_deref(),
            Some("labour"),
            "the note starts from the caller's topic"
        );
        fill(
            &lawyer,
            "note-text",
            "Explained the labour arbitration steps.",
        )
        .await?;
        click(&lawyer, "save-note").await?;
        until(
            &lawyer,
            Duration::from_secs(15),
            "the note was not saved",
            async || Ok(!shown(&lawyer, "note").await?),
        )
        .await?;
        wait_shown(&caller, "ended", "the call did not end on the phone").await?;
        caller
            .find(Locator::Css("#stars button[data-stars='4']"))
            .await?
            .click()
            .await?;
        wait_shown(&caller, "thanks", "the rating was not taken").await?;

        // --- The supervisor's tab: one call answered, rated 4 -------------------------------
        lawyer
            .goto(&format!("http://{bureau}/lawyer.html#stats"))
            .await?;
        until(
            &lawyer,
            Duration::from_secs(20),
            "the figures never showed the call",
            async || Ok(text(&lawyer, "stats-answered").await? == "1"),
        )
        .await?;
        lawyer.close().await?;
        caller.close().await?;
        anyhow::Ok(())
    });
    if let Err(e) = session {
        // The last lines of the two nodes' logs say what the pages could not.
        let tail = |i: usize| {
            let log = nodes[i].log_text();
            let lines: Vec<&str> = log.lines().collect();
            lines[lines.len().saturating_sub(40)..].join("\n")
        };
        panic!(
            "{e:#}\nbureau log:\n{}\nscenic-2 log:\n{}",
            tail(1),
            tail(2)
        );
    }

    // The same figures through the API, with the note and the rating recorded.
    let token = sign_in(bureau, "zhang", PASSWORD).unwrap();
    let (status, stats) = get(bureau, "/api/v1/hotline/stats", Some(&token));
    assert_eq!(status, 200, "{stats}");
    assert_eq!(stats["answered"], 1, "{stats}");
    assert_eq!(stats["lawyers"][0]["username"], "zhang", "{stats}");
    assert_eq!(stats["lawyers"][0]["avg_rating"], 4.0, "{stats}");
}
