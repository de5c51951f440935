//! Two sites that cannot reach each other directly (their direct path is cut on the emulated
//! links) but both reach the hub get a relayed connection through the hub: `/api/v1/sync` says
//! so, and their records converge. When the direct path returns, the relayed connection is
//! replaced by a direct one.

use std::time::Duration;

use huiyan_mesh::netem::LinkParams;
use huiyan_tests::links::{LinkedMesh, append, eventually, records, sync_status};
use serde_json::{Value, json};

/// How `site` sees its connection to `peer`: `direct`, `relayed` or null.
fn connection(status: &Value, peer: &str) -> Value {
    status["peers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["site"] == peer)
        .map_or(Value::Null, |p| p["connection"].clone())
}

#[test]
fn sites_cut_from_each_other_meet_through_the_hub_relay() {
    let params = LinkParams::parse("10mbit,20ms").unwrap();
    let lm = LinkedMesh::new(
        &[
            ("hub", "hub"),
            ("office-1", "office"),
            ("scenic-1", "scenic"),
        ],
        params,
    );
    lm.cut("office-1", "scenic-1", true);
    let mut nodes: Vec<_> = ["hub", "office-1", "scenic-1"]
        .iter()
        .map(|id| lm.mesh.start(id))
        .collect();
    for n in &mut nodes {
        n.wait_ready(Duration::from_secs(30));
    }
    let web = |id: &str| lm.mesh.site(id).web;
    for i in 0..5 {
        append(web("office-1"), "mediation", "case", json!({ "case": i })).unwrap();
        append(web("scenic-1"), "mediation", "call", json!({ "call": i })).unwrap();
    }

    // Both hold a reservation at the hub and reach each other through it.
    let relayed = eventually(Duration::from_secs(120), || {
        let (Ok(o), Ok(s)) = (sync_status(web("office-1")), sync_status(web("scenic-1"))) else {
            return false;
        };
        connection(&o, "scenic-1") == "relayed"
            && connection(&s, "office-1") == "relayed"
            && o["relay"]["reserved"] == true
            && s["relay"]["reserved"] == true
    });
    let state = |id: &str| sync_status(web(id)).unwrap_or_default();
    assert!(
        relayed,
        "no relayed connection:\noffice-1 {:#}\nscenic-1 {:#}\n{}",
        state("office-1"),
        state("scenic-1"),
        nodes[1].log_text()
    );
    assert_eq!(state("hub")["relay"]["role"], "server");
    assert_eq!(connection(&state("office-1"), "hub"), "direct");

    let converged = eventually(Duration::from_secs(60), || {
        records(web("office-1"), "scenic-1").is_ok_and(|r| r.len() == 5)
            && records(web("scenic-1"), "office-1").is_ok_and(|r| r.len() == 5)
    });
    assert!(converged, "office-1 {:#}", state("office-1"));

    // The direct path returns: a later direct dial replaces the circuit.
    lm.cut("office-1", "scenic-1", false);
    let direct = eventually(Duration::from_secs(150), || {
        sync_status(web("office-1")).is_ok_and(|o| connection(&o, "scenic-1") == "direct")
    });
    assert!(direct, "still relayed: {:#}", state("office-1"));
}
