//! The hotline outside duty hours, over real nodes (hub, bureau, scenic-2): the bureau's
//! schedule has one shift a day that starts six hours from now.
//!
//! - A caller at scenic-2 is told the hotline is closed and when it opens; a call is refused.
//! - A lawyer cannot make themselves available off shift.
//! - The caller leaves a question with a phone number (bad ones refused); it reaches the
//!   bureau's console; the lawyer's answer reaches the caller at scenic-2. Nobody else reads
//!   the question.

use std::fs::OpenOptions;
use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use huiyan_mesh::netem::LinkParams;
use huiyan_tests::api::{get, post};
use huiyan_tests::links::{LinkedMesh, eventually};
use huiyan_tests::{add_user, sign_in};
use serde_json::json;

const PASSWORD: &str = "lawyer-password";
const MINUTE_MS: u64 = 60_000;
const DAY_MINUTES: u64 = 24 * 60;
const CHINA_OFFSET_MS: u64 = 8 * 3600 * 1000;

fn hhmm(minute: u64) -> String {
    let m = minute % DAY_MINUTES;
    format!("{:02}:{:02}", m / 60, m % 60)
}

#[test]
fn outside_duty_hours_callers_leave_questions_that_lawyers_answer() {
    let params = LinkParams::parse("10mbit,5ms,0%").unwrap();
    let lm = LinkedMesh::new(
        &[("hub", "hub"), ("bureau", "bureau"), ("scenic-2", "scenic")],
        params,
    );
    // One shift every day, from six hours from now for an hour (China time).
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let minute = ((now_ms + CHINA_OFFSET_MS) / MINUTE_MS) % DAY_MINUTES;
    let (start, end) = (hhmm(minute + 6 * 60), hhmm(minute + 7 * 60));
    let bureau_config = lm.mesh.site("bureau").config.clone();
    let mut file = OpenOptions::new()
        .append(true)
        .open(&bureau_config)
        .unwrap();
    write!(
        file,
        "\n[hotline]\n[[hotline.shift]]\n\
         days = [\"mon\", \"tue\", \"wed\", \"thu\", \"fri\", \"sat\", \"sun\"]\n\
         start = \"{start}\"\nend = \"{end}\"\nlawyers = [\"zhang\"]\n"
    )
    .unwrap();
    add_user(
        &bureau_config,
        "zhang",
        PASSWORD,
        &["duty_lawyer@bureau".into()],
    );
    let _nodes = lm.mesh.start_ready(&["hub", "bureau", "scenic-2"]);
    let web = |id: &str| lm.mesh.site(id).web;
    let (bureau, scenic) = (web("bureau"), web("scenic-2"));

    // --- Closed, with the opening time, at the caller's site -----------------------------
    let mut info = json!(null);
    let told = eventually(Duration::from_secs(20), || {
        info = get(scenic, "/api/v1/hotline", None).1;
        info["closed_reason"] == "off_hours"
    });
    assert!(told, "scenic-2 never learnt the schedule: {info}");
    assert_eq!(info["open"], false, "{info}");
    let opens = info["next_open_ms"].as_u64().expect("an opening time");
    let in_hours = (opens as f64 - now_ms as f64) / 3_600_000.0;
    assert!(
        (5.95..=6.01).contains(&in_hours),
        "the hotline opens in {in_hours:.2} h, not 6 h: {info}"
    );
    let (status, body) = post(
        scenic,
        "/api/v1/hotline/calls",
        None,
        json!({ "topic": "labour", "lang": "zh" }),
    );
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("hotline_closed"))
    );

    // --- The lawyer is off shift ---------------------------------------------------------
    let zhang = sign_in(bureau, "zhang", PASSWORD).unwrap();
    let (status, body) = post(
        bureau,
        "/api/v1/hotline/state",
        Some(&zhang),
        json!({ "state": "available" }),
    );
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("off_shift")),
        "{body}"
    );
    let desk = get(bureau, "/api/v1/hotline/desk", Some(&zhang)).1;
    assert_eq!(desk["me"]["on_shift"], false, "{desk}");
    assert_eq!(desk["open"], false, "{desk}");

    // --- A question, with bad ones refused ---------------------------------------------------
    for (body, code) in [
        (
            json!({ "text": "  ", "phone": "13800001111" }),
            "text_missing",
        ),
        (
            json!({ "text": "工资被拖欠", "phone": "call me" }),
            "phone_invalid",
        ),
        (
            json!({ "text": "工资被拖欠", "phone": "13800001111", "topic": "astrology" }),
            "unknown_topic",
        ),
    ] {
        let (status, answer) = post(scenic, "/api/v1/hotline/questions", None, body);
        assert_eq!(
            (status, answer["code"].as_str()),
            (400, Some(code)),
            "{answer}"
        );
    }
    let (status, body) = post(
        scenic,
        "/api/v1/hotline/questions",
        None,
        json!({ "text": "x" }),
    );
    assert_eq!(status, 422, "a question without a phone: {body}");
    let (status, asked) = post(
        scenic,
        "/api/v1/hotline/questions",
        None,
        json!({
            "topic": "labour",
            "text": "老板拖欠三个月工资，怎么办？",
            "phone": "13800001111",
            "lang": "zh",
        }),
    );
    assert_eq!(status, 201, "{asked}");
    let id = asked["question"].as_str().unwrap().to_owned();
    let token = asked["token"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/hotline/questions/{id}");
    let (status, mine) = get(scenic, &path, Some(&token));
    assert_eq!(status, 200, "{mine}");
    assert_eq!(mine["answer"], json!(null), "{mine}");
    let (status, _) = get(scenic, &path, Some("forged"));
    assert_eq!(status, 401, "a forged token read the question");
    let (status, _) = get(scenic, &path, None);
    assert_eq!(status, 401, "anyone read the question");

    // --- The bureau's console has it; the lawyer answers ------------------------------------
    let mut desk = json!(null);
    let arrived = eventually(Duration::from_secs(20), || {
        desk = get(bureau, "/api/v1/hotline/desk", Some(&zhang)).1;
        desk["questions"]
            .as_array()
            .is_some_and(|q| q.iter().any(|q| q["question"] == id))
    });
    assert!(arrived, "the question never reached the bureau: {desk}");
    let item = &desk["questions"][0];
    assert_eq!(item["phone"], "13800001111", "{item}");
    assert_eq!(item["topic"], "labour", "{item}");
    let answer_path = format!("{path}/answer");
    let (status, body) = post(bureau, &answer_path, Some(&zhang), json!({ "text": " " }));
    assert_eq!((status, body["code"].as_str()), (400, Some("text_missing")));
    let answer = "可以向劳动争议仲裁委员会申请仲裁，请保留工资条和考勤记录。";
    let (status, body) = post(
        bureau,
        &answer_path,
        Some(&zhang),
        json!({ "text": answer }),
    );
    assert_eq!(status, 204, "{body}");
    let (status, body) = post(
        bureau,
        &answer_path,
        Some(&zhang),
        json!({ "text": "again" }),
    );
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("already_answered"))
    );

    // --- The caller reads the answer at scenic-2 ------------------------------------------
    let mut mine = json!(null);
    let answered = eventually(Duration::from_secs(20), || {
        mine = get(scenic, &path, Some(&token)).1;
        mine["answer"] == answer
    });
    assert!(answered, "the answer never reached the caller: {mine}");
    assert!(mine["answered_ms"].is_u64(), "{mine}");
}
