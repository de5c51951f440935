//! A tampered entry and a peer whose key is not in the roster are refused, logged and counted,
//! and the rest of the sync carries on.

use std::time::Duration;

use huiyan_mesh::identity::{Keypair, load_key_file};
use huiyan_mesh::swarm::Fault;
use huiyan_tests::links::{append, eventually, in_process_node, metric, records, sync_status};
use huiyan_tests::{TestMesh, free_ports};
use serde_json::json;

/// The hub's last sync error with office-1.
fn office_error(status: &serde_json::Value) -> String {
    status["peers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["site"] == "office-1")
        .and_then(|p| p["last_error"].as_str())
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn tampered_entries_and_strangers_are_refused_while_sync_goes_on() {
    let mesh = TestMesh::new(&[
        ("hub", "hub"),
        ("office-1", "office"),
        ("scenic-1", "scenic"),
    ]);
    let mut hub = mesh.start("hub");
    let mut scenic = mesh.start("scenic-1");
    hub.wait_ready(Duration::from_secs(30));
    scenic.wait_ready(Duration::from_secs(30));
    let hub_web = mesh.site("hub").web;

    // office-1 runs in the test with its real key and flips a payload byte in all it serves.
    let office = mesh.site("office-1");
    let key = load_key_file(&office.key_file).unwrap();
    let (_rt1, rogue) = in_process_node(
        "office-1",
        &mesh.roster,
        key,
        &mesh.dir.path().join("rogue-office"),
        office.mesh,
        Fault::TamperPayloads,
    );
    for i in 0..5 {
        rogue
            .append("mediation", "case", &json!({"case": i}))
            .unwrap();
    }

    // A stranger: a key the roster does not know, dialling every site.
    let stranger_port = free_ports(1)[0];
    let (_rt2, _stranger) = in_process_node(
        "office-1",
        &mesh.roster,
        Keypair::generate_ed25519(),
        &mesh.dir.path().join("stranger"),
        ([127, 0, 0, 1], stranger_port).into(),
        Fault::None,
    );

    // Meanwhile the scenic room writes; the hub must still get all of it.
    for i in 0..5 {
        append(
            mesh.site("scenic-1").web,
            "mediation",
            "call",
            json!({"call": i}),
        )
        .unwrap();
    }
    let carried_on = eventually(Duration::from_secs(60), || {
        records(hub_web, "scenic-1").is_ok_and(|r| r.len() == 5)
            && metric(
                hub_web,
                "huiyan_mesh_refused_entries_total{reason=\"bad_signature\"}",
            ) >= 1.0
            && metric(hub_web, "huiyan_mesh_refused_peers_total") >= 1.0
            && office_error(&sync_status(hub_web).unwrap()).contains("bad_signature")
    });
    let status = sync_status(hub_web).unwrap();
    assert!(carried_on, "hub state: {status:#}\n{}", hub.log_text());

    // Nothing tampered was stored, and the hub says why office-1 is not syncing.
    assert!(records(hub_web, "office-1").unwrap().is_empty());
    assert!(
        hub.log_text().contains("entry refused"),
        "{}",
        hub.log_text()
    );
}
