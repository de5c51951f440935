//! Three sites over emulated links. The hub is cut off for a while; the office and the scenic
//! room keep writing; after the hub returns, all three hold identical version vectors and
//! identical digests of their logs, with every acknowledged record present exactly once.

use std::time::Duration;

use huiyan_mesh::netem::LinkParams;
use huiyan_tests::links::{
    LinkedMesh, append, eventually, logs_have_no_gaps, records, sync_status,
};
use serde_json::json;

#[test]
fn sites_converge_after_the_hub_returns() {
    let params = LinkParams::parse("2mbit,40ms,1%,jitter=5ms").unwrap();
    let lm = LinkedMesh::new(
        &[
            ("hub", "hub"),
            ("office-1", "office"),
            ("scenic-1", "scenic"),
        ],
        params,
    );
    let mut nodes: Vec<_> = ["hub", "office-1", "scenic-1"]
        .iter()
        .map(|id| lm.mesh.start(id))
        .collect();
    for n in &mut nodes {
        n.wait_ready(Duration::from_secs(30));
    }
    let web = |id: &str| lm.mesh.site(id).web;

    // Everyone writes while connected.
    // Per site, the seqs its node acknowledged.
    let mut written: Vec<(&str, Vec<u64>)> =
        vec![("office-1", vec![]), ("scenic-1", vec![]), ("hub", vec![])];
    let write = |written: &mut Vec<(&str, Vec<u64>)>, round: u32| {
        for (id, acked) in written.iter_mut() {
            if *id == "hub" && round == 1 {
                continue;
            }
            let payload = json!({ "case": format!("{id}-{}", acked.len()), "round": round });
            let seq = append(web(id), "mediation", "case", payload).expect("append");
            assert!(acked.last().is_none_or(|last| seq > *last), "seqs grow");
            acked.push(seq);
        }
    };
    for _ in 0..10 {
        write(&mut written, 0);
    }

    // The hub is cut off; the others keep writing (and reach each other directly).
    lm.isolate("hub", true);
    for _ in 0..20 {
        write(&mut written, 1);
    }
    std::thread::sleep(Duration::from_secs(3));
    let hub_vv = sync_status(web("hub")).unwrap()["version_vector"].clone();
    let office_acked = written[0].1.last().copied().unwrap_or(0);
    let office_seq_at_hub = hub_vv
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["site"] == "office-1")
        .and_then(|v| v["seq"].as_u64())
        .unwrap_or(0);
    assert!(
        office_seq_at_hub < office_acked,
        "the hub was cut off, yet it holds {office_seq_at_hub} office entries"
    );

    // The hub returns: everything converges.
    lm.isolate("hub", false);
    let converged = eventually(Duration::from_secs(90), || {
        let s: Vec<_> = ["hub", "office-1", "scenic-1"]
            .iter()
            .filter_map(|id| sync_status(web(id)).ok())
            .collect();
        s.len() == 3
            && s.iter().all(logs_have_no_gaps)
            && s.iter().all(|x| x["digest"] == s[0]["digest"])
            && s.iter()
                .all(|x| x["version_vector"] == s[0]["version_vector"])
    });
    let states: Vec<_> = ["hub", "office-1", "scenic-1"]
        .iter()
        .map(|id| sync_status(web(id)).unwrap())
        .collect();
    assert!(converged, "no convergence: {states:#?}");

    // Every acknowledged record is there exactly once, at every site.
    for id in ["hub", "office-1", "scenic-1"] {
        for (origin, acked) in &written {
            let recs = records(web(id), origin).unwrap();
            let seqs: Vec<u64> = recs.iter().filter_map(|r| r["seq"].as_u64()).collect();
            assert_eq!(&seqs, acked, "{origin}'s log at {id}");
        }
    }
}
