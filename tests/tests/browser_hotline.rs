//! The hotline's queue in headless Chromium: two duty lawyers on their consoles at two sites
//! (zhang at the bureau, li at the Chibei office) and three callers on the hotline app at three
//! sites (A at the West Slope room in English, B at the office in Chinese, C at the hub in
//! Korean).
//!
//! 1. Both lawyers make themselves available, zhang first: A's call is offered to zhang, who
//!    has been idle longest. zhang lets it run: after 20 s it goes to li, and zhang's console
//!    shows the pause. li accepts: video flows both ways between the room and the office.
//! 2. B, then C, join. B's page goes away: B is dropped (C moves up), comes back within the
//!    two minutes, and has the first place again. C asks for a callback and keeps the second.
//! 3. zhang comes back and gets B; li ends A's call, writes the note, A rates it; li comes
//!    back and gets C's callback, shown with the number to call.
//! 4. The supervisor's tab and the API count the three calls.
//!
//! Real parts: four `huiyan` nodes (hub, bureau, office-1, scenic-2) over the link emulator,
//! Debian's headless Chromium with its fake camera, driven by chromedriver through fantoccini;
//! the pages are the node's own `web/hotline.html` and `web/lawyer.html`.
//! `tests/tests/hotline.rs` covers the same rules through the API, with bad input and a cut.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use common::{
    browser, click, decodes_in_frame, fill, shown, start_chromedriver, until, wait_shown,
};
use fantoccini::{Client, Locator};
use huiyan_mesh::netem::LinkParams;
use huiyan_tests::api::get;
use huiyan_tests::links::LinkedMesh;
use huiyan_tests::{add_user, free_ports, sign_in};

const PASSWORD: &str = "lawyer-password";
const PHONE: &str = "13800001111";

async fn text(page: &Client, id: &str) -> Result<String> {
    Ok(page.find(Locator::Id(id)).await?.text().await?)
}

/// Waits (at most `secs`) until the element with `id` is shown; fails with `what`.
async fn wait_shown_within(page: &Client, secs: u64, id: &str, what: &str) -> Result<()> {
    until(page, Duration::from_secs(secs), what, async || {
        shown(page, id).await
    })
    .await
}

/// The lawyer's state as the console shows it.
async fn state(page: &Client) -> Result<String> {
    Ok(page
        .find(Locator::Id("state"))
        .await?
        .attr("data-state")
        .await?
        .unwrap_or_default())
}

/// The caller's place in the queue as the app shows it.
async fn position(page: &Client) -> Result<String> {
    text(page, "position").await
}

/// Opens the console at `web`, signs in and makes the lawyer available.
async fn console(driver: SocketAddr, web: SocketAddr, user: &str) -> Result<Client> {
    let page = browser(driver, false).await?;
    page.goto(&format!("http://{web}/lawyer.html")).await?;
    wait_shown(&page, "signin", "no sign-in form").await?;
    fill(&page, "username", user).await?;
    fill(&page, "password", PASSWORD).await?;
    click_css(&page, "#signin-form button").await?;
    wait_shown(&page, "desk", "the console did not open").await?;
    available(&page).await?;
    Ok(page)
}

/// Clicks "available" and waits until the console shows it.
async fn available(page: &Client) -> Result<()> {
    click(page, "available").await?;
    until(
        page,
        Duration::from_secs(15),
        "the lawyer did not become available",
        async || Ok(state(page).await? == "available"),
    )
    .await
}

async fn click_css(page: &Client, css: &str) -> Result<()> {
    page.find(Locator::Css(css)).await?.click().await?;
    Ok(())
}

/// Opens the hotline app at `web` in `lang` (zh, en or ko) and calls, with `topic`; returns
/// once the caller waits.
async fn call(driver: SocketAddr, web: SocketAddr, lang: &str, topic: &str) -> Result<Client> {
    let page = browser(driver, false).await?;
    page.goto(&format!("http://{web}/hotline.html")).await?;
    click_css(&page, &format!("button[data-lang={lang}]")).await?;
    wait_shown(&page, "join", "the hotline did not open").await?;
    let label = text(&page, "join").await?;
    let expected = match lang {
        "en" => "Call a lawyer",
        "ko" => "변호사 연결",
        _ => "呼叫律师",
    };
    ensure!(label == expected, "the app is not in {lang}: {label:?}");
    click_css(&page, &format!("#topic option[value={topic}]")).await?;
    click(&page, "join").await?;
    wait_shown(&page, "waiting", "no waiting screen").await?;
    Ok(page)
}

/// Waits for an offer on the console naming `what`, and accepts it.
async fn accept(page: &Client, what: &str) -> Result<()> {
    wait_shown(page, "offer", "no offer on the console").await?;
    let offer = text(page, "offer-what").await?;
    ensure!(
        offer.contains(what),
        "the offer {offer:?} is not for {what:?}"
    );
    click(page, "accept").await?;
    wait_shown(page, "current", "the call did not open on the console").await
}

/// Ends the console's call and saves the note.
async fn end_and_note(page: &Client, note: &str) -> Result<()> {
    click(page, "end").await?;
    wait_shown(page, "note", "no note form after the call").await?;
    fill(page, "note-text", note).await?;
    click(page, "save-note").await?;
    until(
        page,
        Duration::from_secs(15),
        "the note was not saved",
        async || Ok(!shown(page, "note").await?),
    )
    .await
}

#[test]
fn three_callers_and_two_lawyers_at_four_sites_share_one_fair_queue() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let params = LinkParams::parse("10mbit,5ms,0%").unwrap();
    let lm = LinkedMesh::new(
        &[
            ("hub", "hub"),
            ("bureau", "bureau"),
            ("office-1", "office"),
            ("scenic-2", "scenic"),
        ],
        params,
    );
    for (site, user) in [("bureau", "zhang"), ("office-1", "li")] {
        add_user(
            &lm.mesh.site(site).config,
            user,
            PASSWORD,
            &[format!("duty_lawyer@{site}")],
        );
    }
    let nodes = lm
        .mesh
        .start_ready(&["hub", "bureau", "office-1", "scenic-2"]);
    let web = |id: &str| lm.mesh.site(id).web;
    let (bureau, office, scenic, hub) =
        (web("bureau"), web("office-1"), web("scenic-2"), web("hub"));

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let driver_port = free_ports(1)[0];
    let _driver = start_chromedriver(driver_port).unwrap();
    let driver: SocketAddr = ([127, 0, 0, 1], driver_port).into();

    let session = rt.block_on(async {
        // --- 1. zhang idle longest gets A's call, lets it run; li takes it ------------------
        let zhang = console(driver, bureau, "zhang").await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let li = console(driver, office, "li").await?;
        let a = call(driver, scenic, "en", "labour").await?;
        wait_shown(&zhang, "offer", "A's call was not offered to zhang").await?;
        let offered = Instant::now();
        assert!(!shown(&li, "offer").await?, "both lawyers got the offer");
        wait_shown_within(&li, 40, "offer", "the offer never moved on to li").await?;
        let moved = offered.elapsed().as_secs_f64();
        println!("the unanswered offer moved on after {moved:.1} s");
        assert!(
            moved >= 15.0,
            "the offer moved on after {moved:.1} s, not 20 s"
        );
        until(
            &zhang,
            Duration::from_secs(10),
            "zhang was not paused",
            async || Ok(state(&zhang).await? == "break"),
        )
        .await?;
        assert_eq!(
            text(&zhang, "state-reason").await?,
            "（错过来电，已自动暂停）"
        );
        accept(&li, "劳动争议").await?;
        wait_shown(&a, "in-call", "A's call did not open").await?;
        let frames = decodes_in_frame(&a, "caller").await?;
        println!("A at scenic-2 decodes li's video ({frames} frames)");
        let frames = decodes_in_frame(&li, "lawyer").await?;
        println!("li at office-1 decodes A's video ({frames} frames)");

        // --- 2. B and C wait; B drops and comes back in place; C asks for a callback -------
        let b = call(driver, office, "zh", "family").await?;
        until(&b, Duration::from_secs(10), "B is not first", async || {
            Ok(position(&b).await? == "1")
        })
        .await?;
        let c = call(driver, hub, "ko", "contract").await?;
        until(&c, Duration::from_secs(10), "C is not second", async || {
            Ok(position(&c).await? == "2")
        })
        .await?;
        b.goto("about:blank").await?;
        until(
            &c,
            Duration::from_secs(40),
            "B's dropped call still held a place ahead of C",
            async || Ok(position(&c).await? == "1"),
        )
        .await?;
        b.goto(&format!("http://{office}/hotline.html")).await?;
        until(
            &b,
            Duration::from_secs(20),
            "B did not get the first place back",
            async || Ok(shown(&b, "waiting").await? && position(&b).await? == "1"),
        )
        .await?;
        until(
            &c,
            Duration::from_secs(10),
            "C is not second again",
            async || Ok(position(&c).await? == "2"),
        )
        .await?;
        fill(&c, "callback-phone", PHONE).await?;
        click(&c, "callback").await?;
        wait_shown(&c, "callback-note", "the callback was not taken").await?;
        assert_eq!(position(&c).await?, "2", "the callback lost its place");

        // --- 3. zhang comes back and gets B; li gets C's callback after A's call ------------
        available(&zhang).await?;
        accept(&zhang, "婚姻家庭").await?;
        wait_shown(&b, "in-call", "B's call did not open").await?;
        end_and_note(&li, "Explained the labour arbitration steps.").await?;
        wait_shown(&a, "ended", "A's call did not end on the phone").await?;
        click_css(&a, "#stars button[data-stars='4']").await?;
        wait_shown(&a, "thanks", "A's rating was not taken").await?;
        available(&li).await?;
        accept(&li, "合同纠纷 · 한국어").await?;
        wait_shown(&li, "callback-box", "the console shows no number to call").await?;
        assert_eq!(text(&li, "phone-link").await?, PHONE);
        wait_shown(&c, "phone-note", "C was not told a lawyer is calling").await?;
        end_and_note(&li, "Called back about the contract.").await?;
        end_and_note(&zhang, "Family matter, referred to mediation.").await?;
        wait_shown(&b, "ended", "B's call did not end on the phone").await?;

        // --- 4. The supervisor's tab ---------------------------------------------------------
        zhang
            .goto(&format!("http://{bureau}/lawyer.html#stats"))
            .await?;
        until(
            &zhang,
            Duration::from_secs(20),
            "the figures never showed the three calls",
            async || Ok(text(&zhang, "stats-answered").await? == "3"),
        )
        .await?;
        for page in [zhang, li, a, b, c] {
            page.close().await?;
        }
        anyhow::Ok(())
    });
    if let Err(e) = session {
        // The last lines of the nodes' logs say what the pages could not.
        let tail = |i: usize| {
            let log = nodes[i].log_text();
            let lines: Vec<&str> = log.lines().collect();
            lines[lines.len().saturating_sub(30)..].join("\n")
        };
        panic!(
            "{e:#}\nbureau log:\n{}\noffice-1 log:\n{}\nscenic-2 log:\n{}",
            tail(1),
            tail(2),
            tail(3)
        );
    }

    // The same figures through the API: three answered, per lawyer, with A's rating.
    let token = sign_in(bureau, "zhang", PASSWORD).unwrap();
    let (status, stats) = get(bureau, "/api/v1/hotline/stats", Some(&token));
    assert_eq!(status, 200, "{stats}");
    assert_eq!(stats["answered"], 3, "{stats}");
    assert_eq!(stats["abandoned"], 0, "{stats}");
    let per: Vec<(String, u64)> = stats["lawyers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let name = l["username"].as_str().unwrap().to_owned();
            (name, l["answered"].as_u64().unwrap())
        })
        .collect();
    assert_eq!(per, [("li".into(), 2), ("zhang".into(), 1)], "{stats}");
    let li = stats["lawyers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["username"] == "li");
    assert_eq!(li.unwrap()["avg_rating"], 4.0, "{stats}");
}
