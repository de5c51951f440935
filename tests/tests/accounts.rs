//! Staff accounts across the mesh, the audit trail, and the role matrix, over real nodes.
//!
//! - An account made at the bureau signs in at an office, also while that office is cut off.
//! - Wrong passwords are refused and rate limited; sessions end on sign-out; a disabled
//!   account's session ends at once.
//! - Admins manage only their own units; sign-ins reach the bureau's audit trail.
//! - Every role against every `/api/v1` route of the OpenAPI document: allowed or 403 as the
//!   table below says, and a route missing from the table fails the test.

use std::net::SocketAddr;
use std::time::Duration;

use huiyan_mesh::netem::LinkParams;
use huiyan_tests::links::{LinkedMesh, eventually};
use huiyan_tests::{ADMIN_PASSWORD, ADMIN_USER, add_user, client, sign_in};
use reqwest::blocking::RequestBuilder;
use serde_json::{Value, json};

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Access {
    /// Anyone, signed in or not.
    Open,
    /// Any signed-in staff member.
    Staff,
    /// Admins only.
    Admin,
    /// Mediators only (on the unit of the room or case, checked after the role).
    Mediator,
    /// Duty lawyers only.
    DutyLawyer,
    /// Who watches the hotline's figures: duty lawyers, admins and viewers.
    HotlineFigures,
    /// Only the holder of a public call token (never a staff session).
    Caller,
}

/// Every `/api/v1` route and who may call it. New routes must be added here.
const MATRIX: &[(&str, &str, Access)] = &[
    ("get", "/api/v1/site", Access::Open),
    ("get", "/api/v1/sync", Access::Open),
    ("post", "/api/v1/session", Access::Open),
    ("get", "/api/v1/session", Access::Staff),
    ("delete", "/api/v1/session", Access::Staff),
    ("get", "/api/v1/users", Access::Admin),
    ("post", "/api/v1/users", Access::Admin),
    ("patch", "/api/v1/users/{username}", Access::Admin),
    ("get", "/api/v1/audit", Access::Admin),
    ("get", "/api/v1/records", Access::Admin),
    ("post", "/api/v1/records", Access::Admin),
    // TODO(#6): join tokens for staff and public callers, bound to their rooms.
    ("post", "/api/v1/media/token", Access::Open),
    // The public status page shows the relay links (budgets, rates, streams: no personal data).
    ("get", "/api/v1/media/links", Access::Open),
    ("get", "/api/v1/rooms", Access::Open),
    ("get", "/api/v1/rooms/{id}", Access::Open),
    ("get", "/api/v1/rooms/{id}/qr", Access::Open),
    ("post", "/api/v1/mediation/calls", Access::Open),
    ("get", "/api/v1/mediation/calls/{call}", Access::Caller),
    ("delete", "/api/v1/mediation/calls/{call}", Access::Caller),
    (
        "post",
        "/api/v1/mediation/calls/{call}/confirm",
        Access::Caller,
    ),
    (
        "post",
        "/api/v1/mediation/calls/{call}/consent",
        Access::Caller,
    ),
    ("get", "/api/v1/mediation/queue", Access::Mediator),
    ("post", "/api/v1/mediation/presence", Access::Mediator),
    (
        "post",
        "/api/v1/mediation/calls/{call}/take",
        Access::Mediator,
    ),
    ("get", "/api/v1/mediation/cases", Access::Mediator),
    ("get", "/api/v1/mediation/cases/{case}", Access::Mediator),
    ("patch", "/api/v1/mediation/cases/{case}", Access::Mediator),
    (
        "post",
        "/api/v1/mediation/cases/{case}/invite",
        Access::Mediator,
    ),
    (
        "post",
        "/api/v1/mediation/cases/{case}/join",
        Access::Mediator,
    ),
    (
        "post",
        "/api/v1/mediation/cases/{case}/agreement",
        Access::Mediator,
    ),
    (
        "get",
        "/api/v1/mediation/cases/{case}/agreement.pdf",
        Access::Mediator,
    ),
    (
        "post",
        "/api/v1/mediation/cases/{case}/end",
        Access::Mediator,
    ),
    (
        "get",
        "/api/v1/mediation/cases/{case}/recordings",
        Access::Mediator,
    ),
    (
        "get",
        "/api/v1/mediation/cases/{case}/recordings/{sha256}",
        Access::Mediator,
    ),
    ("get", "/api/v1/hotline", Access::Open),
    ("post", "/api/v1/hotline/calls", Access::Open),
    ("get", "/api/v1/hotline/calls/{call}", Access::Caller),
    ("delete", "/api/v1/hotline/calls/{call}", Access::Caller),
    (
        "post",
        "/api/v1/hotline/calls/{call}/callback",
        Access::Caller,
    ),
    (
        "post",
        "/api/v1/hotline/calls/{call}/rating",
        Access::Caller,
    ),
    ("post", "/api/v1/hotline/questions", Access::Open),
    (
        "get",
        "/api/v1/hotline/questions/{question}",
        Access::Caller,
    ),
    ("get", "/api/v1/hotline/desk", Access::DutyLawyer),
    ("post", "/api/v1/hotline/state", Access::DutyLawyer),
    (
        "post",
        "/api/v1/hotline/offers/{offer}/accept",
        Access::DutyLawyer,
    ),
    (
        "post",
        "/api/v1/hotline/calls/{call}/end",
        Access::DutyLawyer,
    ),
    (
        "post",
        "/api/v1/hotline/calls/{call}/note",
        Access::DutyLawyer,
    ),
    (
        "post",
        "/api/v1/hotline/questions/{question}/answer",
        Access::DutyLawyer,
    ),
    ("get", "/api/v1/hotline/stats", Access::HotlineFigures),
];

const ROLES: [&str; 6] = [
    "admin",
    "mediator",
    "duty_lawyer",
    "correction_officer",
    "commander",
    "viewer",
];
const PASSWORD: &str = "role-password";

fn with_token(req: RequestBuilder, token: Option<&str>) -> RequestBuilder {
    match token {
        Some(t) => req.bearer_auth(t),
        None => req,
    }
}

fn call(web: SocketAddr, method: &str, path: &str, token: Option<&str>, body: Value) -> u16 {
    let mut url = format!("http://{web}{path}");
    for param in [
        "{username}",
        "{id}",
        "{call}",
        "{case}",
        "{sha256}",
        "{offer}",
        "{question}",
    ] {
        url = url.replace(param, "nobody");
    }
    let http = client();
    let req = match method {
        "get" => http.get(url),
        "post" => http.post(url).json(&body),
        "patch" => http.patch(url).json(&body),
        "delete" => http.delete(url),
        other => panic!("method {other} is not in the test"),
    };
    with_token(req, token)
        .send()
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

fn get(web: SocketAddr, path: &str, token: &str) -> (u16, Value) {
    let r = client()
        .get(format!("http://{web}{path}"))
        .bearer_auth(token)
        .send()
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

fn post(web: SocketAddr, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
    let req = client().post(format!("http://{web}{path}")).json(&body);
    let r = with_token(req, token).send().unwrap();
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

#[test]
fn accounts_roles_and_audit_across_the_mesh() {
    let params = LinkParams::parse("10mbit,5ms,0%").unwrap();
    let lm = LinkedMesh::new(
        &[("hub", "hub"), ("bureau", "bureau"), ("office-1", "office")],
        params,
    );
    // One account per role at the bureau (on a stopped node, like `huiyan user add` at deploy).
    let bureau_config = lm.mesh.site("bureau").config.clone();
    for role in ROLES {
        add_user(&bureau_config, role, PASSWORD, &[format!("{role}@bureau")]);
    }
    let _nodes = lm.mesh.start_ready(&["hub", "bureau", "office-1"]);
    let web = |id: &str| lm.mesh.site(id).web;
    let bureau = web("bureau");

    // --- The role matrix, on the bureau ---------------------------------------------------
    let spec: Value = client()
        .get(format!("http://{bureau}/api/openapi.json"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let mut documented = Vec::new();
    for (path, ops) in spec["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            documented.push((method.clone(), path.clone()));
        }
    }
    for (method, path) in &documented {
        assert!(
            MATRIX.iter().any(|(m, p, _)| m == method && p == path),
            "{method} {path} is not in the role matrix: add it with who may call it"
        );
    }
    let tokens: Vec<(&str, String)> = ROLES
        .iter()
        .map(|r| (*r, sign_in(bureau, r, PASSWORD).unwrap()))
        .collect();
    for (method, path, access) in MATRIX {
        assert!(
            documented.iter().any(|(m, p)| m == method && p == path),
            "{method} {path} is in the matrix but not in the OpenAPI document"
        );
        if *path == "/api/v1/session" && *method == "delete" {
            // Signing out ends the session the rest of the matrix uses; checked below.
            continue;
        }
        let anonymous = call(bureau, method, path, None, json!({}));
        let expect_anonymous_refused = *access != Access::Open;
        assert_eq!(
            anonymous == 401,
            expect_anonymous_refused,
            "{method} {path} without a session answered {anonymous}"
        );
        for (role, token) in &tokens {
            let status = call(bureau, method, path, Some(token), json!({}));
            let allowed = match access {
                Access::Open | Access::Staff => true,
                Access::Admin => *role == "admin",
                Access::Mediator => *role == "mediator",
                Access::DutyLawyer => *role == "duty_lawyer",
                Access::HotlineFigures => matches!(*role, "duty_lawyer" | "admin" | "viewer"),
                Access::Caller => false,
            };
            assert_eq!(
                !matches!(status, 401 | 403),
                allowed,
                "{role} on {method} {path} answered {status}"
            );
        }
    }

    // --- Sign-in: wrong passwords, the rate limit, sign-out ----------------------------------
    let (status, body) = post(
        bureau,
        "/api/v1/session",
        None,
        json!({"username": "mediator", "password": "wrong-password"}),
    );
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["code"], "bad_credentials");
    let (status, body) = post(bureau, "/api/v1/session", None, json!({"username": 3}));
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("username"),
        "{body}"
    );
    let office_web = web("office-1");
    // The rate limit is per node and address: tried on the hub, whose admin signs in first.
    let hub_admin = sign_in(web("hub"), ADMIN_USER, ADMIN_PASSWORD).unwrap();
    let mut limited = false;
    for _ in 0..12 {
        let (status, _) = post(
            web("hub"),
            "/api/v1/session",
            None,
            json!({"username": "nobody", "password": "guessing-1234"}),
        );
        limited |= status == 429;
    }
    assert!(
        limited,
        "twelve failed sign-ins in a row were never rate limited"
    );
    let viewer = &tokens.iter().find(|(r, _)| *r == "viewer").unwrap().1;
    assert_eq!(
        call(bureau, "delete", "/api/v1/session", Some(viewer), json!({})),
        204
    );
    assert_eq!(get(bureau, "/api/v1/session", viewer).0, 401);

    // --- An account made by the bureau's admin signs in at the office ------------------------
    let admin = &tokens.iter().find(|(r, _)| *r == "admin").unwrap().1;
    let (status, body) = post(
        bureau,
        "/api/v1/users",
        Some(admin),
        json!({
            "username": "wang",
            "display_name": "王调解员",
            "password": "wang-password",
            "grants": [{"role": "mediator", "unit": "office-1"}],
        }),
    );
    assert_eq!(status, 201, "{body}");
    assert!(body.get("password_hash").is_none(), "{body}");
    let (status, body) = post(
        bureau,
        "/api/v1/users",
        Some(admin),
        json!({
            "username": "Bad Name",
            "display_name": "x",
            "password": "short",
            "grants": [{"role": "mediator", "unit": "nowhere"}],
        }),
    );
    assert_eq!(status, 400, "{body}");
    let msg = body["error"].as_str().unwrap();
    assert!(
        msg.contains("username") && msg.contains("unknown unit"),
        "{msg}"
    );
    let (status, _) = post(
        bureau,
        "/api/v1/users",
        Some(admin),
        json!({
            "username": "province-boss",
            "display_name": "x",
            "password": "long-enough-password",
            "grants": [{"role": "admin", "unit": "hub"}],
        }),
    );
    assert_eq!(
        status, 403,
        "a bureau admin may not grant roles on the province"
    );

    let synced = eventually(Duration::from_secs(30), || {
        sign_in(office_web, "wang", "wang-password").is_ok()
    });
    assert!(
        synced,
        "the account made at the bureau never signed in at office-1"
    );

    // --- ...also while the office is cut off from every other site ---------------------------
    lm.isolate("office-1", true);
    std::thread::sleep(Duration::from_secs(2));
    let token = sign_in(office_web, "wang", "wang-password").expect("sign-in while cut off");
    let (status, me) = get(office_web, "/api/v1/session", &token);
    assert_eq!(status, 200);
    assert_eq!(me["account"]["display_name"], "王调解员");
    assert_eq!(me["site"], "office-1");
    lm.isolate("office-1", false);

    // --- Disabling the account ends its sessions once the change arrives ---------------------
    let r = client()
        .patch(format!("http://{bureau}/api/v1/users/wang"))
        .bearer_auth(admin)
        .json(&json!({"disabled": true}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let ended = eventually(Duration::from_secs(30), || {
        get(office_web, "/api/v1/session", &token).0 == 401
    });
    assert!(ended, "a disabled account kept its session at the office");

    // --- The audit trail: the office's sign-ins reach the bureau; only admins read it -------
    let audited = eventually(Duration::from_secs(30), || {
        let (_, events) = get(bureau, "/api/v1/audit?limit=1000", admin);
        events.as_array().is_some_and(|e| {
            e.iter()
                .any(|x| x["site"] == "office-1" && x["who"] == "wang" && x["action"] == "signin")
        })
    });
    assert!(
        audited,
        "the office's sign-in never reached the bureau's audit trail"
    );
    let (_, events) = get(bureau, "/api/v1/audit?limit=1000", admin);
    let failed =
        events.as_array().unwrap().iter().any(|x| {
            x["action"] == "signin_failed" && x["who"] == "mediator" && x["site"] == "bureau"
        });
    assert!(failed, "the failed sign-in is not audited: {events:#}");
    let mediator = &tokens.iter().find(|(r, _)| *r == "mediator").unwrap().1;
    assert_eq!(get(bureau, "/api/v1/audit", mediator).0, 403);

    // The hub holds every scope: the office's audit trail reaches it too.
    let at_hub = eventually(Duration::from_secs(30), || {
        let (_, events) = get(web("hub"), "/api/v1/audit?limit=1000", &hub_admin);
        events.as_array().is_some_and(|e| {
            e.iter()
                .any(|x| x["site"] == "office-1" && x["who"] == "wang")
        })
    });
    assert!(at_hub, "the office's audit trail never reached the hub");
}
