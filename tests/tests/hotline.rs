//! The legal-advice hotline over real nodes (hub, bureau, office-1, scenic-2) on emulated links,
//! through the API the caller's app and the lawyer's console use:
//!
//! - calls are offered in order to the lawyer idle longest, whatever their site;
//! - an offer not accepted in 20 s moves on and pauses the lawyer;
//! - a caller whose page went quiet is dropped and rejoins in their place; a callback request
//!   keeps its place and is offered like a call;
//! - bad input (unknown topic, a second join, a forged token...) is refused and changes nothing;
//! - the figures match the calls made, at every site;
//! - with a lawyer's site cut off the queue goes on with the others, and a call with both
//!   parties on the cut-off site goes on.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use huiyan_mesh::netem::LinkParams;
use huiyan_tests::api::{delete, get, post};
use huiyan_tests::links::{LinkedMesh, metric};
use huiyan_tests::{add_user, sign_in};
use serde_json::{Value, json};

const PASSWORD: &str = "lawyer-password";
const PHONE: &str = "+86 138 0000 1111";

/// A caller: where they called from, their call and token.
struct Caller {
    web: SocketAddr,
    call: String,
    token: String,
    joined: Instant,
}

impl Caller {
    fn join(web: SocketAddr, topic: &str) -> Caller {
        let (status, body) = post(
            web,
            "/api/v1/hotline/calls",
            None,
            json!({ "topic": topic, "lang": "zh" }),
        );
        assert_eq!(status, 201, "{body}");
        Caller {
            web,
            call: body["call"].as_str().unwrap().to_owned(),
            token: body["token"].as_str().unwrap().to_owned(),
            joined: Instant::now(),
        }
    }

    fn path(&self, tail: &str) -> String {
        format!("/api/v1/hotline/calls/{}{tail}", self.call)
    }

    /// The caller's poll (also their heartbeat).
    fn status(&self) -> Value {
        get(self.web, &self.path(""), Some(&self.token)).1
    }

    fn post(&self, tail: &str, body: Value) -> (u16, Value) {
        post(self.web, &self.path(tail), Some(&self.token), body)
    }
}

/// A duty lawyer at the console of one site.
struct Lawyer {
    web: SocketAddr,
    token: String,
}

impl Lawyer {
    fn desk(&self) -> Value {
        get(self.web, "/api/v1/hotline/desk", Some(&self.token)).1
    }

    fn set(&self, state: &str) -> (u16, Value) {
        post(
            self.web,
            "/api/v1/hotline/state",
            Some(&self.token),
            json!({ "state": state }),
        )
    }

    fn post(&self, path: &str, body: Value) -> (u16, Value) {
        post(self.web, path, Some(&self.token), body)
    }

    /// Waits for an offer of `call` (polling the desk, and `keep` alive), and returns it.
    fn offer_of(&self, call: &str, keep: &dyn Fn()) -> Value {
        let mut last = Value::Null;
        let found = poll(Duration::from_secs(30), keep, || {
            last = self.desk();
            last["offer"]["call"] == call
        });
        assert!(found, "no offer of {call}; desk: {last}");
        last["offer"].clone()
    }

    /// Accepts the offer of `call`; returns the call as the console shows it.
    fn accept(&self, call: &str, keep: &dyn Fn()) -> Value {
        let offer = self.offer_of(call, keep);
        let path = format!(
            "/api/v1/hotline/offers/{}/accept",
            offer["offer"].as_str().unwrap()
        );
        let (status, current) = self.post(&path, json!({}));
        assert_eq!(status, 200, "{current}");
        current
    }

    fn end(&self, call: &str) {
        let path = format!("/api/v1/hotline/calls/{call}/end");
        let (status, body) = self.post(&path, json!({}));
        assert_eq!(status, 204, "{body}");
    }
}

/// Polls `f` every 250 ms for up to `within`, calling `keep` (heartbeats) each time.
fn poll(within: Duration, keep: &dyn Fn(), mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < within {
        keep();
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    false
}

#[test]
fn the_hotline_queue_is_fair_across_sites_and_survives_drops_and_cuts() {
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
    let config = |id: &str| lm.mesh.site(id).config.clone();
    // Short after-call work keeps the test short; the bureau publishes it with the schedule.
    let mut bureau_config = std::fs::read_to_string(config("bureau")).unwrap();
    bureau_config.push_str("\n[hotline]\nafter_call_seconds = 5\n");
    std::fs::write(config("bureau"), bureau_config).unwrap();
    add_user(
        &config("bureau"),
        "zhang",
        PASSWORD,
        &["duty_lawyer@bureau".into()],
    );
    add_user(
        &config("bureau"),
        "li",
        PASSWORD,
        &["duty_lawyer@office-1".into()],
    );
    add_user(&config("bureau"), "wang", PASSWORD, &["viewer@hub".into()]);
    add_user(
        &config("bureau"),
        "mei",
        PASSWORD,
        &["mediator@scenic-2".into()],
    );
    let _nodes = lm
        .mesh
        .start_ready(&["hub", "bureau", "office-1", "scenic-2"]);
    let web = |id: &str| lm.mesh.site(id).web;
    let (scenic, bureau, office) = (web("scenic-2"), web("bureau"), web("office-1"));
    let none = || {};

    // --- The hotline opens at scenic-2 once it reaches the bureau ---------------------------
    let mut info = Value::Null;
    let open = poll(Duration::from_secs(30), &none, || {
        info = get(scenic, "/api/v1/hotline", None).1;
        info["open"] == true
    });
    assert!(open, "the hotline never opened at scenic-2: {info}");
    assert_eq!(info["topics"].as_array().map(Vec::len), Some(7), "{info}");

    // --- Two lawyers on two sites come on duty, zhang first ----------------------------------
    let zhang = Lawyer {
        web: bureau,
        token: sign_in(bureau, "zhang", PASSWORD).unwrap(),
    };
    let li = Lawyer {
        web: office,
        token: sign_in(office, "li", PASSWORD).unwrap(),
    };
    assert_eq!(zhang.set("available").0, 204);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(li.set("available").0, 204);
    let desks = || {
        zhang.desk();
        li.desk();
    };
    let both = poll(Duration::from_secs(20), &desks, || {
        get(scenic, "/api/v1/hotline", None).1["lawyers_available"] == 2
    });
    assert!(both, "scenic-2 never saw both lawyers available");

    // --- Bad input is refused with a code and queues nothing ---------------------------------
    for (body, code) in [
        (json!({ "topic": "astrology" }), "unknown_topic"),
        (json!({ "callback": true }), "phone_required"),
        (
            json!({ "callback": true, "phone": "call me" }),
            "phone_invalid",
        ),
        (json!({ "topic": "labour", "name": "x" }), "bad_json"),
    ] {
        let (status, answer) = post(scenic, "/api/v1/hotline/calls", None, body);
        assert!((400..500).contains(&status), "{code}: {status} {answer}");
        assert_eq!(answer["code"], code, "{answer}");
        assert!(!answer["error"].as_str().unwrap_or("").is_empty());
    }
    let (status, answer) = get(scenic, "/api/v1/hotline/calls/x", Some("forged"));
    assert_eq!(
        (status, answer["code"].as_str()),
        (401, Some("bad_call_token"))
    );
    assert_eq!(li.set("on_call").0, 400, "a lawyer cannot claim a call");
    assert_eq!(get(scenic, "/api/v1/hotline", None).1["waiting"], 0);

    // --- Three callers at scenic-2: offered in order to the longest idle ---------------------
    let a = Caller::join(scenic, "labour");
    let b = Caller::join(scenic, "consumer");
    let c = Caller::join(scenic, "family");
    assert_eq!(b.status()["position"], 2);
    assert_eq!(c.status()["position"], 3);
    // A second join by the same caller is refused and queues nothing.
    let (status, answer) = post(scenic, "/api/v1/hotline/calls", Some(&a.token), json!({}));
    assert_eq!(
        (status, answer["code"].as_str()),
        (409, Some("already_in_queue"))
    );
    assert_eq!(get(scenic, "/api/v1/hotline", None).1["waiting"], 3);

    let keep_all = || {
        desks();
        a.status();
        b.status();
        c.status();
    };
    zhang.offer_of(&a.call, &keep_all);
    let li_offer = li.offer_of(&b.call, &keep_all);
    let current = zhang.accept(&a.call, &keep_all);
    assert!(
        current["media_room"]
            .as_str()
            .unwrap()
            .starts_with("scenic-2/hotline-"),
        "{current}"
    );
    let a_answered = a.joined.elapsed();
    let connected = poll(Duration::from_secs(10), &keep_all, || {
        let s = a.status();
        s["status"] == "connected" && s["media_token"].is_string() && s["lawyer_site"] == "bureau"
    });
    assert!(
        connected,
        "caller A never saw the call connected: {}",
        a.status()
    );

    // --- li lets the offer run out; c's page goes quiet meanwhile ----------------------------
    let keep_but_c = || {
        desks();
        a.status();
        b.status();
    };
    let mut desk = Value::Null;
    let paused = poll(Duration::from_secs(40), &keep_but_c, || {
        desk = li.desk();
        desk["me"]["state"] == "break"
    });
    assert!(paused, "li was never paused: {desk}");
    assert_eq!(desk["me"]["reason"], "missed_offer", "{desk}");
    let expires = li_offer["expires_ms"].as_u64().unwrap();
    let now_ms = huiyan_mesh::replica::wall_ms();
    assert!(
        now_ms >= expires,
        "paused {} ms before the offer ran out",
        expires - now_ms
    );
    assert!(desk["offer"].is_null(), "{desk}");
    let b_now = b.status();
    assert_eq!(
        (b_now["status"].as_str(), b_now["position"].as_u64()),
        (Some("waiting"), Some(1))
    );
    // c has been quiet for over 15 s: dropped, out of the lawyers' queue...
    let dropped = poll(Duration::from_secs(15), &keep_but_c, || {
        let q = zhang.desk()["queue"].clone();
        q.as_array()
            .is_some_and(|q| q.iter().all(|x| x["call"] != c.call.as_str()))
    });
    assert!(dropped, "c was never dropped");
    // ...and back in its place when its page asks again.
    let back = c.status();
    assert_eq!(
        (back["status"].as_str(), back["position"].as_u64()),
        (Some("waiting"), Some(2))
    );

    // --- b turns its wait into a callback request and keeps its place -----------------------
    let (status, body) = b.post("/callback", json!({ "phone": PHONE }));
    assert_eq!(status, 204, "{body}");
    let b_now = b.status();
    assert_eq!(
        (b_now["status"].as_str(), b_now["position"].as_u64()),
        (Some("callback"), Some(1))
    );
    assert_eq!(c.status()["position"], 2);

    // --- zhang ends a's call, notes it; a rates it -------------------------------------------
    zhang.end(&a.call);
    assert_eq!(zhang.desk()["me"]["state"], "after_call");
    let note = format!("/api/v1/hotline/calls/{}/note", a.call);
    let (status, body) = zhang.post(&note, json!({ "category": "tax", "note": "x" }));
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("unknown_topic"))
    );
    let (status, body) = li.post(&note, json!({ "category": "labour", "note": "x" }));
    assert_eq!(status, 403, "another lawyer's call: {body}");
    let (status, body) = zhang.post(&note, json!({ "category": "labour", "note": "wages owed" }));
    assert_eq!(status, 204, "{body}");
    let ended = poll(Duration::from_secs(10), &desks, || {
        a.status()["status"] == "ended"
    });
    assert!(ended, "a never saw the call end: {}", a.status());
    assert_eq!(
        a.post("/rating", json!({ "stars": 9 })).1["code"],
        "stars_invalid"
    );
    assert_eq!(a.post("/rating", json!({ "stars": 4 })).0, 204);
    assert_eq!(
        a.post("/rating", json!({ "stars": 5 })).1["code"],
        "already_rated"
    );

    // --- After 5 s of after-call work zhang takes the callback (li is still paused) ----------
    let keep_bc = || {
        desks();
        b.status();
        c.status();
    };
    let current = zhang.accept(&b.call, &keep_bc);
    assert_eq!(current["callback"], true, "{current}");
    assert_eq!(current["phone"], PHONE, "{current}");
    assert!(current["media_token"].is_null(), "{current}");
    let b_answered = b.joined.elapsed();
    zhang.end(&b.call);

    // --- li comes back and takes c, who waited in place --------------------------------------
    assert_eq!(li.set("available").0, 204);
    li.accept(&c.call, &|| {
        desks();
        c.status();
    });
    let c_answered = c.joined.elapsed();
    let connected = poll(Duration::from_secs(10), &desks, || {
        let s = c.status();
        s["status"] == "connected" && s["lawyer_site"] == "office-1"
    });
    assert!(connected, "c never saw li's answer: {}", c.status());
    li.end(&c.call);
    let ended = poll(Duration::from_secs(10), &desks, || {
        c.status()["status"] == "ended"
    });
    assert!(ended, "c never saw the call end: {}", c.status());
    assert_eq!(c.post("/rating", json!({ "stars": 5 })).0, 204);

    // --- d joins and leaves ------------------------------------------------------------------
    let d = Caller::join(scenic, "other");
    assert_eq!(delete(scenic, &d.path(""), Some(&d.token)).0, 204);
    assert_eq!(d.status()["status"], "left");

    // --- The figures match the calls made, at every site -------------------------------------
    let waits = [a_answered, b_answered, c_answered].map(|w| w.as_secs_f64());
    let mut stats = Value::Null;
    let settled = poll(Duration::from_secs(20), &desks, || {
        stats = get(bureau, "/api/v1/hotline/stats", Some(&zhang.token)).1;
        stats["answered"] == 3 && stats["abandoned"] == 1
    });
    assert!(settled, "{stats}");
    assert_eq!(stats["waiting"], 0, "{stats}");
    let avg = waits.iter().sum::<f64>() / 3.0;
    let node_avg = stats["avg_wait_s"].as_f64().unwrap();
    assert!(
        (node_avg - avg).abs() < 3.0,
        "average wait {node_avg} s, the test saw {avg} s"
    );
    let p90 = stats["p90_wait_s"].as_f64().unwrap();
    let longest = waits.iter().copied().fold(0.0, f64::max);
    assert!(
        (p90 - longest).abs() < 3.0,
        "p90 {p90} s, the longest wait seen {longest} s"
    );
    if waits.iter().all(|w| (w - 60.0).abs() > 3.0) {
        let within = waits.iter().filter(|w| **w <= 60.0).count() as f64;
        assert_eq!(
            stats["service_level"].as_f64(),
            Some(within / 4.0),
            "{stats}"
        );
    }
    let per: Vec<(String, u64, f64)> = stats["lawyers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let name = l["username"].as_str().unwrap().to_owned();
            (
                name,
                l["answered"].as_u64().unwrap(),
                l["avg_rating"].as_f64().unwrap_or(0.0),
            )
        })
        .collect();
    assert_eq!(
        per,
        [("li".into(), 1, 5.0), ("zhang".into(), 2, 4.0)],
        "{stats}"
    );
    let same = poll(Duration::from_secs(20), &desks, || {
        [web("hub"), office, scenic].iter().all(|w| {
            let token = sign_in(*w, "wang", PASSWORD).unwrap();
            let s = get(*w, "/api/v1/hotline/stats", Some(&token)).1;
            s["answered"] == stats["answered"] && s["avg_wait_s"] == stats["avg_wait_s"]
        })
    });
    assert!(same, "the figures differ between sites");
    assert_eq!(metric(bureau, "huiyan_hotline_answered"), 3.0);
    let mei = sign_in(scenic, "mei", PASSWORD).unwrap();
    assert_eq!(get(scenic, "/api/v1/hotline/stats", Some(&mei)).0, 403);
    assert_eq!(get(scenic, "/api/v1/hotline/desk", Some(&mei)).0, 403);

    // --- office-1 is cut off: its call goes on, the queue goes on with zhang -----------------
    // Both available, li idle longest; a caller at office-1 goes to li.
    let back_to_work = poll(Duration::from_secs(20), &desks, || {
        zhang.desk()["me"]["state"] == "available" && li.desk()["me"]["state"] == "available"
    });
    assert!(back_to_work, "after-call work did not end by itself");
    assert_eq!(zhang.set("break").0, 204);
    let f = Caller::join(office, "property");
    li.accept(&f.call, &|| {
        desks();
        f.status();
    });
    assert_eq!(zhang.set("available").0, 204);
    // The cut comes once the bureau knows the call is li's.
    let known = poll(Duration::from_secs(20), &|| drop(f.status()), || {
        zhang.desk()["lawyers"].as_array().is_some_and(|l| {
            l.iter()
                .any(|x| x["username"] == "li" && x["state"] == "on_call")
        })
    });
    assert!(known, "the bureau never learnt that li took the call");
    lm.isolate("office-1", true);
    let keep_f = || {
        li.desk();
        f.status();
    };
    let seen_cut = poll(Duration::from_secs(70), &keep_f, || {
        let d = zhang.desk();
        d["lawyers"].as_array().is_some_and(|l| {
            l.iter()
                .any(|x| x["username"] == "li" && x["reachable"] == false)
        })
    });
    assert!(seen_cut, "the bureau never saw office-1 cut off");
    let e = Caller::join(scenic, "traffic");
    zhang.accept(&e.call, &|| {
        zhang.desk();
        li.desk();
        e.status();
        f.status();
    });
    // Both of f's parties are on office-1: the call goes on there, and ends there.
    let s = f.status();
    assert_eq!(s["status"], "connected", "{s}");
    assert!(s["media_token"].is_string(), "{s}");
    li.end(&f.call);
    zhang.end(&e.call);
    lm.isolate("office-1", false);
    let synced = poll(Duration::from_secs(60), &desks, || {
        get(bureau, "/api/v1/hotline/stats", Some(&zhang.token)).1["answered"] == 5
    });
    assert!(synced, "the cut-off call never reached the bureau");
}
