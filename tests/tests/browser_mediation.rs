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
use common::{
    browser, click, click_first, decodes_in_frame, fill, shown, start_chromedriver, until,
    wait_shown,
};
use fantoccini::actions::{InputSource, MOUSE_BUTTON_LEFT, MouseActions, PointerAction};
use fantoccini::{Client, Locator};
use huiyan_mesh::netem::LinkParams;
use huiyan_tests::links::{LinkedMesh, eventually};
use huiyan_tests::{add_user, client, free_ports, pdf_text, sign_in};
use serde_json::Value;

const PASSWORD: &str = "mediator-password";

/// Just enough of an EBML reader to check a recording: the doc type, the tracks' codecs, the
/// duration and the blocks per track.
mod webm {
    #[derive(Debug, Default)]
    pub struct Check {
        pub doc_type: String,
        pub has_vp8: bool,
        pub has_opus: bool,
        pub duration_ms: u64,
        pub video_blocks: usize,
        pub audio_blocks: usize,
    }

    fn vint(data: &[u8], at: &mut usize, keep_marker: bool) -> Option<u64> {
        let first = *data.get(*at)?;
        let len = first.leading_zeros() as usize + 1;
        if len > 8 || *at + len > data.len() {
            return None;
        }
        let mut value = if keep_marker {
            u64::from(first)
        } else {
            u64::from(first) & ((1u64 << (8 - len)) - 1)
        };
        for b in &data[*at + 1..*at + len] {
            value = (value << 8) | u64::from(*b);
        }
        *at += len;
        let unknown = !keep_marker && value == (1u64 << (7 * len)) - 1;
        Some(if unknown { u64::MAX } else { value })
    }

    /// Walks every element in order, descending into containers (segment, info, tracks,
    /// track entries, clusters, and anything of unknown size).
    pub fn check(data: &[u8]) -> Check {
        const CONTAINERS: [u64; 6] = [
            0x1A45_DFA3,
            0x1853_8067,
            0x1549_A966,
            0x1654_AE6B,
            0xAE,
            0x1F43_B675,
        ];
        let mut c = Check::default();
        let mut at = 0;
        while at < data.len() {
            let (Some(id), Some(size)) = (vint(data, &mut at, true), vint(data, &mut at, false))
            else {
                break;
            };
            if size == u64::MAX || CONTAINERS.contains(&id) {
                continue;
            }
            let end = (at + size as usize).min(data.len());
            let body = &data[at..end];
            match id {
                0x4282 => c.doc_type = String::from_utf8_lossy(body).into_owned(),
                0x86 if body == b"V_VP8" => c.has_vp8 = true,
                0x86 if body == b"A_OPUS" => c.has_opus = true,
                0x4489 if body.len() == 8 => {
                    c.duration_ms = f64::from_be_bytes(body.try_into().unwrap()) as u64;
                }
                0xA3 => match body.first() {
                    Some(0x81) => c.video_blocks += 1,
                    Some(0x82) => c.audio_blocks += 1,
                    _ => {}
                },
                _ => {}
            }
            at = end;
        }
        c
    }
}
const ROOM: &str = "scenic-2-mediation";

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
    // No answer is status 0, so that a poll tries again (see tests/tests/mediation.rs).
    match client()
        .get(format!("http://{web}{path}"))
        .bearer_auth(token)
        .send()
    {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.json().unwrap_or(Value::Null))
        }
        Err(e) => (0, serde_json::json!({ "no_answer": e.to_string() })),
    }
}

fn recording(web: SocketAddr, case: &str, sha256: &str, token: &str) -> Vec<u8> {
    let r = client()
        .get(format!(
            "http://{web}/api/v1/mediation/cases/{case}/recordings/{sha256}"
        ))
        .bearer_auth(token)
        .send()
        .expect("the node answers");
    assert_eq!(r.status().as_u16(), 200, "no recording at {web}");
    assert_eq!(r.headers()["content-type"].to_str().unwrap(), "video/webm");
    r.bytes().unwrap().to_vec()
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
        &config("scenic-2"),
        "admin",
        PASSWORD,
        &["admin@scenic-2".into()],
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

            // Recording is shown to the tourist; about 5 s are recorded, then it stops and
            // the console lists the files and plays one.
            click(&mediator, "rec").await?;
            wait_shown(&tourist, "recording", "no recording badge").await?;
            let recording = Instant::now();
            tokio::time::sleep(Duration::from_secs(5)).await;
            click(&mediator, "rec").await?;
            let recorded_s = recording.elapsed().as_secs_f64();
            until(
                &tourist,
                Duration::from_secs(10),
                "the recording badge stays",
                async || Ok(!shown(&tourist, "recording").await?),
            )
            .await?;
            until(
                &mediator,
                Duration::from_secs(20),
                "the console lists no two recordings",
                async || {
                    let buttons = mediator.find_all(Locator::Css("#recordings button")).await?;
                    Ok(buttons.len() >= 2)
                },
            )
            .await?;
            click_first(&mediator, "#recordings button").await?;
            let played: Value = mediator
                .execute_async(
                    r#"const done = arguments[arguments.length - 1];
                    const v = document.getElementById('player');
                    v.muted = true;
                    const t0 = Date.now();
                    (function check() {
                      if (v.readyState >= 2 && Number.isFinite(v.duration) || Date.now() - t0 > 15000) {
                        done({ readyState: v.readyState, duration: v.duration,
                               error: v.error && v.error.message });
                      } else {
                        setTimeout(check, 200);
                      }
                    })();"#,
                    vec![],
                )
                .await?;
            println!("the console plays a recording: {played}");
            let ready = played["readyState"].as_u64().unwrap_or(0);
            let duration = played["duration"].as_f64().unwrap_or(0.0);
            if ready < 2 || duration <= 2.0 {
                bail!("the recording does not play in the console: {played}");
            }
            println!("recorded for {recorded_s:.1} s");

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
            click(&respondent, "invite-consent-recording").await?;
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

    // --- The recordings: one WebM per participant, kept at the room's node --------------------
    let li = sign_in(scenic, "li", PASSWORD).unwrap();
    let (status, list) = get_json(
        scenic,
        &format!("/api/v1/mediation/cases/{case_id}/recordings"),
        &li,
    );
    assert_eq!(status, 200);
    let list = list.as_array().cloned().unwrap_or_default();
    let mut roles: Vec<&str> = list.iter().filter_map(|r| r["role"].as_str()).collect();
    roles.sort_unstable();
    assert_eq!(roles, ["applicant", "mediator"], "recordings: {list:?}");
    for r in &list {
        let sha = r["sha256"].as_str().unwrap();
        let webm = recording(scenic, &case_id, sha, &li);
        assert_eq!(webm.len() as u64, r["size"].as_u64().unwrap());
        let check = webm::check(&webm);
        println!("{} recording: {} bytes, {check:?}", r["role"], webm.len());
        assert!(
            webm.starts_with(&[0x1a, 0x45, 0xdf, 0xa3]),
            "no EBML header"
        );
        assert_eq!(check.doc_type, "webm");
        assert!(check.has_vp8 && check.has_opus, "both tracks: {check:?}");
        // About 5 s were recorded; generous bounds for a loaded machine.
        assert!(
            (2_000..=12_000).contains(&check.duration_ms),
            "duration {check:?}"
        );
        assert!(
            check.video_blocks > 10 && check.audio_blocks > 50,
            "{check:?}"
        );
    }
    // Every playback was audited at the room's node (the console's and the test's).
    let admin = sign_in(scenic, "admin", PASSWORD).unwrap();
    let (_, audit) = get_json(scenic, "/api/v1/audit?limit=1000", &admin);
    let plays = audit
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter(|e| e["action"] == "recording.play" && e["target"] == case_id.as_str())
                .count()
        })
        .unwrap_or(0);
    assert!(plays >= 3, "playbacks audited: {plays} in {audit}");

    // --- The link returns: the bureau prints the same agreement ------------------------------
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
