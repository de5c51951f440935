//! Mediation over real nodes, through the API the tourist app and the mediator console use.
//!
//! - A closed room (no mediator) refuses calls and names the bureau's centre instead.
//! - Bad input on the public form is refused with a code, and nothing is queued.
//! - With the scenic room's uplink cut, its node still queues callers, opens the case, runs
//!   the agreement to both signatures; everything reaches the bureau when the link returns.
//! - The invited party joins only after consenting online, and the session is recorded only with
//!   their consent to recording too.
//! - A scenic room that holds no other room's scope never stores the case's content.
//! - A caller of a closed room goes to the bureau's queue, marked as rerouted.

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine;
use huiyan_mesh::netem::LinkParams;
use huiyan_tests::api::{get, post, send};
use huiyan_tests::links::{LinkedMesh, eventually};
use huiyan_tests::{add_user, admin_token, client, pdf_text, sign_in};
use serde_json::{Value, json};

const PASSWORD: &str = "mediator-password";

fn call_body(room: &str) -> Value {
    json!({
        "room": room,
        "lang": "ko",
        "form": {
            "what_happened": "택시 기사가 요금을 두 번 받았습니다",
            "other_party": "出租车司机",
            "amount_cny": 200,
            "name": "김철수",
            "phone": "+82 10-1234-5678",
        },
        "consent": { "online": true, "recording": true },
    })
}

/// A tiny valid PNG, as a drawn signature would be.
fn signature() -> String {
    let mut png = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut png, 8, 4);
        enc.set_color(png::ColorType::Grayscale);
        let mut w = enc.write_header().unwrap();
        w.write_image_data(&[0u8; 32]).unwrap();
    }
    base64::engine::general_purpose::STANDARD.encode(png)
}

#[test]
fn a_tourist_call_runs_to_a_signed_agreement_offline_and_reaches_the_bureau() {
    let params = LinkParams::parse("10mbit,5ms,0%").unwrap();
    let lm = LinkedMesh::new(
        &[
            ("hub", "hub"),
            ("bureau", "bureau"),
            ("scenic-2", "scenic"),
            ("scenic-3", "scenic"),
        ],
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
    let _nodes = lm
        .mesh
        .start_ready(&["hub", "bureau", "scenic-2", "scenic-3"]);
    let web = |id: &str| lm.mesh.site(id).web;
    let (scenic, bureau) = (web("scenic-2"), web("bureau"));
    let room = "scenic-2-mediation";

    // --- Nobody staffs the room: calls are refused, the bureau's centre is offered ---------
    let bureau_room = "bureau-mediation";
    let offered = eventually(Duration::from_secs(30), || {
        let (_, info) = get(scenic, &format!("/api/v1/rooms/{room}"), None);
        info["closed_reason"] == "unstaffed" && info["alternative"]["id"] == bureau_room
    });
    assert!(offered, "a closed room did not offer the bureau's centre");
    let (status, body) = post(scenic, "/api/v1/mediation/calls", None, call_body(room));
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("room_unstaffed")),
        "{body}"
    );

    // --- The mediator comes on duty ----------------------------------------------------------
    let li = sign_in(scenic, "li", PASSWORD).unwrap();
    let presence = json!({ "room": room, "available": true });
    assert_eq!(
        post(scenic, "/api/v1/mediation/presence", Some(&li), presence).0,
        204
    );
    let (_, info) = get(scenic, &format!("/api/v1/rooms/{room}"), None);
    assert_eq!(info["staffed"], true, "{info}");

    // --- Bad input is refused with a code and queues nothing ---------------------------------
    let mut no_consent = call_body(room);
    no_consent["consent"]["online"] = json!(false);
    let mut bad_amount = call_body(room);
    bad_amount["form"]["amount_cny"] = json!(-5);
    let mut bad_phone = call_body(room);
    bad_phone["form"]["phone"] = json!("call me maybe");
    let mut extra_field = call_body(room);
    extra_field["form"]["ssn"] = json!("123");
    for (body, code) in [
        (no_consent, "consent_required"),
        (bad_amount, "amount_invalid"),
        (bad_phone, "phone_invalid"),
        (extra_field, "bad_json"),
        (call_body("no-such-room"), "not_found"),
    ] {
        let (status, answer) = post(scenic, "/api/v1/mediation/calls", None, body);
        assert!((400..500).contains(&status), "{code}: {status} {answer}");
        assert_eq!(answer["code"], code, "{answer}");
        assert!(!answer["error"].as_str().unwrap_or("").is_empty());
    }
    let (_, queue) = get(
        scenic,
        &format!("/api/v1/mediation/queue?room={room}"),
        Some(&li),
    );
    assert_eq!(queue["waiting"].as_array().unwrap().len(), 0, "{queue}");

    // --- The scenic room's uplink is cut: it goes on by itself ------------------------------
    lm.isolate("scenic-2", true);
    let (status, first) = post(scenic, "/api/v1/mediation/calls", None, call_body(room));
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["position"], 1);
    let (_, second) = post(scenic, "/api/v1/mediation/calls", None, call_body(room));
    assert_eq!(second["position"], 2);
    assert!(second["expected_wait_s"].as_u64().unwrap() > 0, "{second}");
    let (call, caller) = (
        first["call"].as_str().unwrap(),
        first["token"].as_str().unwrap(),
    );
    // A call token opens only its own call.
    let other = second["call"].as_str().unwrap();
    assert_eq!(
        get(
            scenic,
            &format!("/api/v1/mediation/calls/{other}"),
            Some(caller)
        )
        .0,
        403
    );
    let (status, view) = get(
        scenic,
        &format!("/api/v1/mediation/calls/{call}"),
        Some(caller),
    );
    assert_eq!(
        (status, view["status"].as_str()),
        (200, Some("waiting")),
        "{view}"
    );

    // The queue shows no names or phone numbers; taking the call opens the case.
    let (_, queue) = get(
        scenic,
        &format!("/api/v1/mediation/queue?room={room}"),
        Some(&li),
    );
    let text = queue.to_string();
    assert!(!text.contains("김철수") && !text.contains("1234"), "{text}");
    let (status, case) = post(
        scenic,
        &format!("/api/v1/mediation/calls/{call}/take"),
        Some(&li),
        json!({}),
    );
    assert_eq!(status, 201, "{case}");
    assert_eq!(case["form"]["name"], "김철수");
    let case_id = case["case"]["case"].as_str().unwrap().to_owned();
    let (status, again) = post(
        scenic,
        &format!("/api/v1/mediation/calls/{call}/take"),
        Some(&li),
        json!({}),
    );
    assert_eq!(
        (status, again["code"].as_str()),
        (409, Some("call_not_waiting"))
    );

    // The caller now has a session to join; the other party is invited by link.
    let (_, view) = get(
        scenic,
        &format!("/api/v1/mediation/calls/{call}"),
        Some(caller),
    );
    assert_eq!(view["status"], "taken", "{view}");
    assert!(view["session"]["media_token"].as_str().is_some(), "{view}");

    // The mediator records while only the caller (who consented) is in the session.
    let patch = |body: Value| {
        send(
            reqwest::Method::PATCH,
            scenic,
            &format!("/api/v1/mediation/cases/{case_id}"),
            Some(&li),
            Some(body),
        )
    };
    let recording_seen = || {
        get(
            scenic,
            &format!("/api/v1/mediation/calls/{call}"),
            Some(caller),
        )
        .1["session"]["recording"]
            .clone()
    };
    assert_eq!(patch(json!({ "recording": true })).0, 200);
    assert_eq!(recording_seen(), true, "everyone sees the recording");

    let (status, invitation) = post(
        scenic,
        &format!("/api/v1/mediation/cases/{case_id}/invite"),
        Some(&li),
        json!({}),
    );
    assert_eq!(status, 201, "{invitation}");
    let link = invitation["link"].as_str().unwrap();
    let respondent = link.split("#invite=").nth(1).unwrap().to_owned();
    let rstatus = || {
        get(
            scenic,
            &format!("/api/v1/mediation/calls/{call}"),
            Some(&respondent),
        )
        .1
    };
    let rview = rstatus();
    assert_eq!(rview["role"], "respondent", "{rview}");
    assert_eq!(
        rview["session"],
        Value::Null,
        "the invited party joined before consenting: {rview}"
    );
    // The invitation stopped the recording: the invited party has not consented to it.
    assert_eq!(
        recording_seen(),
        false,
        "the invitation stops the recording"
    );
    let consent = |who: &str, online: bool, recording: bool| {
        post(
            scenic,
            &format!("/api/v1/mediation/calls/{call}/consent"),
            Some(who),
            json!({ "online": online, "recording": recording }),
        )
    };
    let (status, body) = consent(&respondent, false, true);
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("consent_required")),
        "{body}"
    );
    let (status, body) = consent(caller, true, true);
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("consent_given")),
        "{body}"
    );
    // Online yes, recording no: they join, and the session cannot be recorded.
    assert_eq!(consent(&respondent, true, false).0, 204);
    let rview = rstatus();
    assert!(
        rview["session"]["media_token"].as_str().is_some(),
        "{rview}"
    );
    let (status, refused) = patch(json!({ "recording": true }));
    assert_eq!(
        (status, refused["code"].as_str()),
        (400, Some("no_recording_consent")),
        "{refused}"
    );
    // Asked again, they agree: the mediator records with both parties in.
    assert_eq!(consent(&respondent, true, true).0, 204);
    assert_eq!(patch(json!({ "recording": true })).0, 200);
    assert_eq!(rstatus()["session"]["recording"], true);
    // They change their mind: the recording stops.
    assert_eq!(consent(&respondent, true, false).0, 204);
    assert_eq!(rstatus()["session"]["recording"], false);

    // The mediator moves the respondent to the side room and back; notes the case.
    let (status, _) = patch(json!({ "place": { "role": "respondent", "place": "side" } }));
    assert_eq!(status, 200);
    let (_, rview) = get(
        scenic,
        &format!("/api/v1/mediation/calls/{call}"),
        Some(&respondent),
    );
    assert_eq!(rview["session"]["place"], "side");
    assert!(
        rview["session"]["media_room"]
            .as_str()
            .unwrap()
            .ends_with("-side")
    );
    let (_, view) = get(
        scenic,
        &format!("/api/v1/mediation/calls/{call}"),
        Some(caller),
    );
    assert_eq!(
        view["session"]["place"], "main",
        "the applicant stays in the main room"
    );
    patch(json!({ "place": { "role": "respondent", "place": "main" } }));
    let (status, _) = patch(json!({
        "category": "transport",
        "parties": [{ "role": "respondent", "name": "王师傅", "phone": null }],
        "step": "双方陈述",
    }));
    assert_eq!(status, 200);

    // The agreement: drafted, confirmed by both with name and signature.
    let (status, _) = post(
        scenic,
        &format!("/api/v1/mediation/cases/{case_id}/agreement"),
        Some(&li),
        json!({ "terms": ["司机退还多收车费 100 元。", "双方再无其他争议。"] }),
    );
    assert_eq!(status, 201);
    let confirm = |token: &str, name: &str, sig: String| {
        post(
            scenic,
            &format!("/api/v1/mediation/calls/{call}/confirm"),
            Some(token),
            json!({ "version": 1, "name": name, "signature_png": sig }),
        )
    };
    let (status, body) = confirm(caller, "김철수", "bm90IGEgcG5n".into());
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("signature_invalid"))
    );
    let (status, body) = confirm(caller, " ", signature());
    assert_eq!((status, body["code"].as_str()), (400, Some("name_missing")));
    let (status, body) = confirm(caller, "😀", signature());
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("name_unprintable"))
    );
    assert_eq!(confirm(caller, "김철수", signature()).0, 204);
    let (_, view) = get(
        scenic,
        &format!("/api/v1/mediation/calls/{call}"),
        Some(caller),
    );
    assert_eq!(
        view["agreement"]["complete"], false,
        "one signature is not an agreement"
    );
    assert_eq!(confirm(&respondent, "王师傅", signature()).0, 204);
    let (_, view) = get(
        scenic,
        &format!("/api/v1/mediation/calls/{call}"),
        Some(caller),
    );
    assert_eq!(view["agreement"]["complete"], true, "{view}");
    patch(json!({ "status": "agreed", "outcome": "已达成协议" }));
    let (status, _) = post(
        scenic,
        &format!("/api/v1/mediation/cases/{case_id}/end"),
        Some(&li),
        json!({}),
    );
    assert_eq!(status, 204);

    // While the link is down the bureau knows nothing of it.
    let zhao = sign_in(bureau, "zhao", PASSWORD).unwrap();
    assert_eq!(
        get(
            bureau,
            &format!("/api/v1/mediation/cases/{case_id}"),
            Some(&zhao)
        )
        .0,
        404
    );

    // --- The link returns: the case and the signed agreement reach the bureau ---------------
    lm.isolate("scenic-2", false);
    let arrived = eventually(Duration::from_secs(60), || {
        let (status, v) = get(
            bureau,
            &format!("/api/v1/mediation/cases/{case_id}"),
            Some(&zhao),
        );
        status == 200 && v["case"]["status"] == "agreed" && v["agreement"]["complete"] == true
    });
    assert!(
        arrived,
        "the case did not reach the bureau after the link returned"
    );
    let (_, v) = get(
        bureau,
        &format!("/api/v1/mediation/cases/{case_id}"),
        Some(&zhao),
    );
    assert_eq!(v["case"]["parties"][1]["name"], "王师傅");

    // The signed agreement prints at the bureau as at the scenic room: the same document, made
    // from the same signed records, with both names in it.
    let pdf_at = |web: SocketAddr, token: &str| {
        let r = client()
            .get(format!(
                "http://{web}/api/v1/mediation/cases/{case_id}/agreement.pdf"
            ))
            .bearer_auth(token)
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        r.bytes().unwrap().to_vec()
    };
    let at_bureau = pdf_at(bureau, &zhao);
    assert!(at_bureau.starts_with(b"%PDF-"));
    assert_eq!(
        at_bureau,
        pdf_at(scenic, &li),
        "the bureau's PDF differs from the room's"
    );
    let text = pdf_text(&at_bureau);
    for needle in ["人民调解协议书", "김철수", "王师傅", "司机退还多收车费"] {
        assert!(
            text.contains(needle),
            "`{needle}` is not in the PDF:\n{text}"
        );
    }

    // Another scenic room holds only the headers of scenic-2's mediation records.
    let s3 = web("scenic-3");
    let token = admin_token(s3).unwrap();
    let held = eventually(Duration::from_secs(30), || {
        let (_, page) = get(
            s3,
            "/api/v1/records?origin=scenic-2&limit=1000",
            Some(&token),
        );
        page["records"].as_array().is_some_and(|records| {
            let case_records: Vec<&Value> = records
                .iter()
                .filter(|r| r["scope"] == "mediation/scenic-2")
                .collect();
            !case_records.is_empty() && case_records.iter().all(|r| r["withheld"] == true)
        })
    });
    assert!(
        held,
        "scenic-3 holds scenic-2's case records, or none arrived"
    );

    // --- The room closes; a caller is sent to the bureau's centre ----------------------------
    let presence = json!({ "room": room, "available": false });
    post(scenic, "/api/v1/mediation/presence", Some(&li), presence);
    let bureau_on = json!({ "room": bureau_room, "available": true });
    assert_eq!(
        post(bureau, "/api/v1/mediation/presence", Some(&zhao), bureau_on).0,
        204
    );
    let offered = eventually(Duration::from_secs(30), || {
        let (_, info) = get(scenic, &format!("/api/v1/rooms/{bureau_room}"), None);
        info["staffed"] == true && info["reachable"] == true
    });
    assert!(
        offered,
        "the bureau's centre never showed as open from the scenic room"
    );
    let mut rerouted = call_body(bureau_room);
    rerouted["rerouted_from"] = json!(room);
    let (status, placed) = post(scenic, "/api/v1/mediation/calls", None, rerouted);
    assert_eq!(status, 201, "{placed}");
    let queued = eventually(Duration::from_secs(30), || {
        let (_, q) = get(
            bureau,
            &format!("/api/v1/mediation/queue?room={bureau_room}"),
            Some(&zhao),
        );
        q["waiting"]
            .as_array()
            .is_some_and(|w| w.iter().any(|c| c["rerouted_from"] == room))
    });
    assert!(
        queued,
        "the rerouted caller never reached the bureau's queue"
    );
}
