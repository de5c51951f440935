//! The whole 天池和 tourist path in headless Chromium, with the scenic room's uplink cut:
//! the signboard URL, the form and consent, the queue, the mediator taking the call in the
//! console, video both ways, the other party joining by the invite link, the case, the
//! agreement read and signed (name and a drawn signature) by both parties on their pages, the
//! PDF offered on the console; then the link returns and the bureau prints the same PDF.
//!
//! Real parts: three `huiyan` nodes (hub, bureau, scenic-2) with the scenic node behind the
//! link emulator, Debian's headless Chromium with its fake camera, driven by chromedriver
//! through fantoccini; the pages are the node's own `web/tianchi.html` and `web/mediator.html`.
//! `tests/tests/mediation.rs` covers the same flow through the API, with the closed room, the
//! failover to the bureau and bad input.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use common::{browser, probe, start_chromedriver};
use fantoccini::actions::{InputSource, MOUSE_BUTTON_LEFT, MouseActions, PointerAction};
use fantoccini::{Client, Locator};
use huiyan_mesh::netem::LinkParams;
use huiyan_tests::links::{LinkedMesh, eventually};
use huiyan_tests::{add_user, client, free_ports, pdf_text, sign_in};
use serde_json::Value;

const PASSWORD: &str = "mediator-password";
const ROOM: &str = "scenic-2-mediation";

/// Polls `check` every 300 ms for up to `within`; fails with `what` and the page's error line.
async fn until(
    page: &Client,
    within: Duration,
    what: &str,
    mut check: impl AsyncFnMut() -> Result<bool>,
) -> Result<()> {
    let deadline = Instant::now() + within;
    loop {
        if check().await.unwrap_or(false) {
            return Ok(());
        }
        if Instant::now() > deadline {
            let error = match page.find(Locator::Id("error")).await {
                Ok(e) => e.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            let url = page.current_url().await.map(|u| u.to_string());
            bail!("{what} within {within:?} (page {url:?}, error line: {error:?})");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Waits (at most 30 s) until the element with `id` is shown; fails with `what`.
async fn wait_shown(page: &Client, id: &str, what: &str) -> Result<()> {
    until(page, Duration::from_secs(30), what, async || {
        shown(page, id).await
    })
    .await
}

/// True when the element with `id` is shown.
async fn shown(page: &Client, id: &str) -> Result<bool> {
    Ok(page.find(Locator::Id(id)).await?.is_displayed().await?)
}

/// Types `text` into the field with `id`.
async fn fill(page: &Client, id: &str, text: &str) -> Result<()> {
    let field = page.find(Locator::Id(id)).await?;
    field.clear().await?;
    field.send_keys(text).await?;
    Ok(())
}

async fn click(page: &Client, id: &str) -> Result<()> {
    page.find(Locator::Id(id)).await?.click().await?;
    Ok(())
}

/// Waits until the call page in the frame `call` decodes video from the other side.
async fn decodes_in_frame(page: &Client, who: &str) -> Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        page.find(Locator::Id("call")).await?.enter_frame().await?;
        let received = probe(page).await;
        page.enter_parent_frame().await?;
        if let Ok(Some(r)) = &received
            && r.frames > 0
        {
            return Ok(r.frames);
        }
        if Instant::now() > deadline {
            bail!("the {who} decoded no video within 60 s: {received:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Signs the agreement on a party's page: the name, a stroke on the pad with the mouse, confirm.
async fn sign(page: &Client, name: &str) -> Result<()> {
    wait_shown(page, "sign", "no agreement to sign").await?;
    fill(page, "sign-name", name).await?;
    let pad = page.find(Locator::Id("pad")).await?;
    let stroke = MouseActions::new("pen".into())
        .then(PointerAction::MoveToElement {
            element: pad,
            duration: None,
            x: -80.0,
            y: 0.0,
        })
        .then(PointerAction::Down {
            button: MOUSE_BUTTON_LEFT,
        })
        .then(PointerAction::MoveBy {
            duration: Some(Duration::from_millis(100)),
            x: 60.0,
            y: 20.0,
        })
        .then(PointerAction::MoveBy {
            duration: Some(Duration::from_millis(100)),
            x: 60.0,
            y: -20.0,
        })
        .then(PointerAction::Up {
            button: MOUSE_BUTTON_LEFT,
        });
    page.perform_actions(stroke).await?;
    click(page, "confirm").await?;
    until(
        page,
        Duration::from_secs(30),
        "the signature was not taken",
        async || Ok(shown(page, "signed").await? && !shown(page, "sign").await?),
    )
    .await
}

fn get_json(web: SocketAddr, path: &str, token: &str) -> (u16, Value) {
    let r = client()
        .get(format!("http://{web}{path}"))
        .bearer_auth(token)
        .send()
        .expect("the node answers");
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

fn pdf(web: SocketAddr, case: &str, token: &str) -> Vec<u8> {
    let r = client()
        .get(format!(
            "http://{web}/api/v1/mediation/cases/{case}/agreement.pdf"
        ))
        .bearer_auth(token)
        .send()
        .expect("the node answers");
    assert_eq!(r.status().as_u16(), 200, "no agreement PDF at {web}");
    r.bytes().unwrap().to_vec()
}

#[test]
fn a_tourist_call_in_browsers_runs_to_a_signed_pdf_offline_and_reaches_the_bureau() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let params = LinkParams::parse("10mbit,5ms,0%").unwrap();
    let lm = LinkedMesh::new(
        &[("hub", "hub"), ("bureau", "bureau"), ("scenic-2", "scenic")],
        params,
    );
    let config = |id: &str| lm.mesh.site(id).config.clone();
    add_user(
        &config("scenic-2"),
        "li",
        PASSWORD,
        &["mediator@scenic-2".into()],
    );
    add_user(
        &config("bureau"),
        "zhao",
        PASSWORD,
        &["mediator@bureau".into()],
    );
    let nodes = lm.mesh.start_ready(&["hub", "bureau", "scenic-2"]);
    let web = |id: &str| lm.mesh.site(id).web;
    let (scenic, bureau) = (web("scenic-2"), web("bureau"));

    // The scenic room's uplink is cut for the whole session: it runs on the room's Wi-Fi.
    lm.isolate("scenic-2", true);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let driver_port = free_ports(1)[0];
    let _driver = start_chromedriver(driver_port).unwrap();
    let driver: SocketAddr = ([127, 0, 0, 1], driver_port).into();
    let scenic_log = || nodes[2].log_text();

    let case_id = rt.block_on(async {
        let session = async {
            // --- The mediator signs in at the room's node; the console takes calls -------------
            let mediator = browser(driver, false).await?;
            mediator
                .goto(&format!("http://{scenic}/mediator.html"))
                .await?;
            wait_shown(&mediator, "signin", "no sign-in form").await?;
            fill(&mediator, "username", "li").await?;
            fill(&mediator, "password", PASSWORD).await?;
            mediator
                .find(Locator::Css("#signin-form button"))
                .await?
                .click()
                .await?;
            until(
                &mediator,
                Duration::from_secs(15),
                "the console did not open",
                async || {
                    Ok(shown(&mediator, "console").await?
                        && mediator
                            .find(Locator::Id("room"))
                            .await?
                            .prop("value")
                            .await?
                            == Some(ROOM.into()))
                },
            )
            .await?;

            // --- The tourist opens the signboard URL, in Korean, fills in the form -----------
            let tourist = browser(driver, false).await?;
            tourist.goto(&format!("http://{scenic}/m/{ROOM}")).await?;
            wait_shown(&tourist, "form-screen", "the room did not open").await?;
            tourist
                .find(Locator::Css("button[data-lang=ko]"))
                .await?
                .click()
                .await?;
            let brand = tourist
                .find(Locator::Css("[data-i18n=brand]"))
                .await?
                .text()
                .await?;
            assert!(brand.starts_with("천지화"), "the app in Korean: {brand:?}");
            fill(&tourist, "what", "택시 기사가 요금을 두 번 받았습니다").await?;
            fill(&tourist, "other", "出租车司机").await?;
            fill(&tourist, "amount", "200").await?;
            fill(&tourist, "name", "김철수").await?;
            // Without consent to an online session the call is not placed.
            tourist
                .find(Locator::Css("#call-form button[type=submit]"))
                .await?
                .click()
                .await?;
            wait_shown(&tourist, "error", "no consent error").await?;
            assert!(
                shown(&tourist, "form-screen").await?,
                "placed without consent"
            );
            click(&tourist, "consent-online").await?;
            click(&tourist, "consent-recording").await?;
            tourist
                .find(Locator::Css("#call-form button[type=submit]"))
                .await?
                .click()
                .await?;
            until(
                &tourist,
                Duration::from_secs(15),
                "no waiting screen",
                async || {
                    Ok(shown(&tourist, "waiting").await?
                        && tourist.find(Locator::Id("position")).await?.text().await? == "0")
                },
            )
            .await?;

            // --- The mediator takes the call: video both ways ---------------------------------
            until(
                &mediator,
                Duration::from_secs(15),
                "the call is not queued",
                async || Ok(mediator.find(Locator::Css("#queue button")).await.is_ok()),
            )
            .await?;
            mediator
                .find(Locator::Css("#queue button"))
                .await?
                .click()
                .await?;
            wait_shown(&mediator, "case", "the case did not open").await?;
            let what = mediator
                .find(Locator::Id("case-what"))
                .await?
                .text()
                .await?;
            assert!(
                what.contains("택시"),
                "the console shows the form: {what:?}"
            );
            wait_shown(&tourist, "session", "no session on the phone").await?;
            let frames = decodes_in_frame(&tourist, "tourist").await?;
            println!("the tourist decodes the mediator's video ({frames} frames)");
            let frames = decodes_in_frame(&mediator, "mediator").await?;
            println!("the mediator decodes the tourist's video ({frames} frames)");

            // Recording is shown to the tourist.
            click(&mediator, "rec").await?;
            wait_shown(&tourist, "recording", "no recording badge").await?;

            // --- The other party joins by the invite link --------------------------------------
            click(&mediator, "invite").await?;
            wait_shown(&mediator, "invite-link", "no invite link").await?;
            let link = mediator
                .find(Locator::Id("invite-link"))
                .await?
                .text()
                .await?;
            let respondent = browser(driver, false).await?;
            respondent.goto(&link).await?;
            wait_shown(&respondent, "invite-screen", "no invitation").await?;
            click(&respondent, "invite-consent-online").await?;
            click(&respondent, "accept-invite").await?;
            wait_shown(&respondent, "session", "the respondent is not in").await?;

            // --- The case and the agreement ---------------------------------------------------
            fill(&mediator, "respondent", "王师傅").await?;
            mediator
                .find(Locator::Id("category"))
                .await?
                .select_by_value("transport")
                .await?;
            mediator
                .find(Locator::Id("status"))
                .await?
                .select_by_value("agreed")
                .await?;
            fill(&mediator, "outcome", "司机退还多收车费").await?;
            click(&mediator, "save").await?;
            fill(
                &mediator,
                "terms",
                "司机退还多收车费200元。\n双方无其他争议。",
            )
            .await?;
            click(&mediator, "draft").await?;
            sign(&tourist, "김철수").await?;
            sign(&respondent, "王师傅").await?;
            wait_shown(&mediator, "pdf", "no PDF on the console").await?;
            let href = mediator
                .find(Locator::Id("pdf"))
                .await?
                .attr("href")
                .await?
                .context("the PDF link has no href")?;
            let case_id = href
                .split('/')
                .rev()
                .nth(1)
                .context("no case in the PDF link")?
                .to_owned();
            for page in [mediator, tourist, respondent] {
                page.close().await?;
            }
            Ok::<_, anyhow::Error>(case_id)
        };
        session.await
    });
    let case_id = case_id.unwrap_or_else(|e| panic!("{e:#}\nscenic-2 log:\n{}", scenic_log()));

    // --- The link returns: the bureau prints the same agreement ------------------------------
    let li = sign_in(scenic, "li", PASSWORD).unwrap();
    let at_room = pdf(scenic, &case_id, &li);
    lm.isolate("scenic-2", false);
    let zhao = sign_in(bureau, "zhao", PASSWORD).unwrap();
    let path = format!("/api/v1/mediation/cases/{case_id}");
    let arrived = eventually(Duration::from_secs(60), || {
        let (status, v) = get_json(bureau, &path, &zhao);
        status == 200 && v["agreement"]["complete"] == true
    });
    assert!(arrived, "the signed case did not reach the bureau");
    let (_, v) = get_json(bureau, &path, &zhao);
    assert_eq!(v["case"]["status"], "agreed");
    assert_eq!(v["case"]["category"], "transport");
    let at_bureau = pdf(bureau, &case_id, &zhao);
    assert!(at_bureau.starts_with(b"%PDF-"));
    assert_eq!(
        at_bureau, at_room,
        "the bureau's PDF differs from the room's"
    );
    let text = pdf_text(&at_bureau);
    for needle in [
        "人民调解协议书",
        "김철수",
        "王师傅",
        "司机退还多收车费200元",
    ] {
        assert!(
            text.contains(needle),
            "{needle} missing from the PDF:\n{text}"
        );
    }
}
