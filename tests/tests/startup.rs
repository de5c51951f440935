//! A node refuses to start, with exit code 2 and one clear message, when its key, data dir or
//! port is wrong; and it never leaves a half-started process behind.

use std::fs;
use std::net::TcpListener;
use std::time::Duration;

use huiyan_tests::{NodeProcess, TestMesh, wait_exit};

/// Starts the bureau node and expects it to refuse: returns its log.
fn refused(mesh: &TestMesh) -> String {
    let mut node = NodeProcess::start(mesh.site("bureau"), &[]);
    let status = wait_exit(&mut node.child, Duration::from_secs(10)).expect("the node exits");
    let log = node.log_text();
    assert_eq!(status.code(), Some(2), "{log}");
    log
}

#[test]
fn a_key_that_is_not_the_rosters_is_refused() {
    let mesh = TestMesh::single();
    let bureau = mesh.site("bureau");
    fs::remove_file(&bureau.key_file).unwrap();
    huiyan_mesh::identity::generate_key_file(&bureau.key_file).unwrap();
    let log = refused(&mesh);
    assert!(log.contains("but the roster"), "{log}");
    assert!(log.contains(&bureau.peer_id), "{log}");
}

#[test]
fn a_missing_key_says_how_to_make_one() {
    let mesh = TestMesh::single();
    fs::remove_file(&mesh.site("bureau").key_file).unwrap();
    let log = refused(&mesh);
    assert!(
        log.contains("is missing; create it with `huiyan keygen --out"),
        "{log}"
    );
}

#[test]
fn a_site_without_peer_id_is_told_the_line_to_add() {
    let mesh = TestMesh::single();
    let bureau = mesh.site("bureau");
    let roster = fs::read_to_string(&mesh.roster).unwrap();
    let line = format!("peer_id = \"{}\"\n", bureau.peer_id);
    fs::write(&mesh.roster, roster.replace(&line, "")).unwrap();
    let log = refused(&mesh);
    assert!(log.contains(&format!("add `{}`", line.trim())), "{log}");
}

#[test]
fn a_data_dir_from_a_newer_version_is_refused() {
    let mesh = TestMesh::single();
    let mut node = mesh.start("bureau");
    node.wait_ready(Duration::from_secs(20));
    node.stop(Duration::from_secs(5)).expect("stops");
    drop(node);

    // Pretend a newer huiyan wrote the store: bump the schema with sled directly.
    let store = mesh.site("bureau").data_dir.join("store");
    {
        let db = sled::open(&store).unwrap();
        let meta = db.open_tree("meta").unwrap();
        meta.insert("schema", &99u32.to_be_bytes()).unwrap();
        db.flush().unwrap();
    }
    let log = refused(&mesh);
    assert!(
        log.contains("written by a newer huiyan (store schema 99"),
        "{log}"
    );
}

#[test]
fn a_foreign_data_dir_is_refused() {
    let mesh = TestMesh::single();
    let store = mesh.site("bureau").data_dir.join("store");
    // The test admin's account made a store there; replace it with someone else's files.
    fs::remove_dir_all(&store).unwrap();
    fs::create_dir_all(&store).unwrap();
    fs::write(store.join("notes.txt"), "someone else's files").unwrap();
    let log = refused(&mesh);
    assert!(
        log.contains("holds data that is not a huiyan store"),
        "{log}"
    );
}

#[test]
fn a_port_in_use_is_named() {
    let mesh = TestMesh::single();
    let bureau = mesh.site("bureau");
    let _taken = TcpListener::bind(bureau.web).unwrap();
    let log = refused(&mesh);
    assert!(
        log.contains(&format!("cannot listen on {} for web", bureau.web)),
        "{log}"
    );
    assert!(log.contains("change `listen.web`"), "{log}");
}

#[test]
fn a_second_node_on_the_same_data_dir_is_refused() {
    let mesh = TestMesh::single();
    let mut first = mesh.start("bureau");
    first.wait_ready(Duration::from_secs(20));
    let log = refused(&mesh);
    assert!(log.contains("is in use by another process"), "{log}");
    // The first node is still serving.
    first.wait_ready(Duration::from_secs(1));
}
