//! A scenic node never stores a community-correction record, even when a peer sends it one:
//! it keeps only the signed header (so the log stays verifiable), counts the refusal, and the
//! payload never reaches its disk.

use std::time::Duration;

use huiyan_mesh::identity::load_key_file;
use huiyan_mesh::swarm::Fault;
use huiyan_tests::TestMesh;
use huiyan_tests::links::{dir_contains, eventually, in_process_node, metric, records};
use serde_json::json;

#[test]
fn scenic_keeps_only_headers_of_correction_records_sent_to_it() {
    let mesh = TestMesh::new(&[
        ("hub", "hub"),
        ("office-1", "office"),
        ("scenic-1", "scenic"),
    ]);
    let mut scenic = mesh.start("scenic-1");
    scenic.wait_ready(Duration::from_secs(30));
    let scenic_web = mesh.site("scenic-1").web;

    // office-1 runs in the test, with the office's real key, and sends payloads to everyone.
    let office = mesh.site("office-1");
    let rogue_dir = mesh.dir.path().join("rogue-office");
    let key = load_key_file(&office.key_file).unwrap();
    let (_rt, rogue) = in_process_node(
        "office-1",
        &mesh.roster,
        key,
        &rogue_dir,
        office.mesh,
        Fault::IgnoreScopes,
    );
    let marker = "supervised-person-7f3a9c";
    for i in 0..5 {
        rogue
            .append(
                "correction/office-1",
                "checkin",
                &json!({"person": marker, "n": i}),
            )
            .unwrap();
        rogue
            .append("mediation", "case", &json!({"case": i}))
            .unwrap();
    }

    let synced = eventually(Duration::from_secs(60), || {
        records(scenic_web, "office-1").is_ok_and(|r| r.len() == 10)
    });
    assert!(synced, "scenic did not catch up with office-1");

    let recs = records(scenic_web, "office-1").unwrap();
    for r in &recs {
        if r["scope"] == "correction/office-1" {
            assert_eq!(r["withheld"], true, "{r}");
            assert!(r["payload"].is_null(), "{r}");
        } else {
            assert!(r["payload"]["case"].as_u64().is_some(), "{r}");
        }
    }
    let out_of_scope = metric(
        scenic_web,
        "huiyan_mesh_refused_entries_total{reason=\"out_of_scope\"}",
    );
    assert!(out_of_scope >= 5.0, "out_of_scope refusals: {out_of_scope}");

    // After a clean stop nothing of the correction payload is on the scenic node's disk, while
    // the office's own store does hold it (so the search would have found it).
    scenic.stop(Duration::from_secs(5)).expect("scenic stops");
    assert!(dir_contains(&rogue_dir, marker.as_bytes()));
    assert!(!dir_contains(
        &mesh.site("scenic-1").data_dir,
        marker.as_bytes()
    ));
}
