//! Three in-process meshes over real QUIC on loopback: appends replicate, scopes hold, and a
//! peer outside the roster is refused.

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::Duration;

use huiyan_mesh::identity::Keypair;
use huiyan_mesh::replica::Mesh;
use huiyan_mesh::roster::Roster;
use huiyan_mesh::store::Store;
use huiyan_mesh::swarm::{Fault, MeshConfig, Timing, start};
use huiyan_mesh::sync::SyncConfig;
use serde_json::json;

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Site {
    id: &'static str,
    role: &'static str,
    scopes: &'static str,
    key: Keypair,
    port: u16,
}

fn roster(sites: &[Site]) -> Roster {
    let mut text = String::new();
    for s in sites {
        let p = s.port;
        text += &format!(
            "[[site]]\nid = \"{}\"\nname_zh = \"站\"\nname_en = \"Site\"\nrole = \"{}\"\n\
             peer_id = \"{}\"\nmesh = \"127.0.0.1:{p}\"\nmedia = \"127.0.0.1:{}\"\n\
             web = \"127.0.0.1:{}\"\nscopes = {}\n\n",
            s.id,
            s.role,
            s.key.public().to_peer_id(),
            p + 1,
            p + 2,
            s.scopes
        );
    }
    Roster::parse(Path::new("roster.toml"), &text).unwrap()
}

fn timing() -> Timing {
    Timing {
        redial_max: Duration::from_secs(2),
        ..Timing::default()
    }
}

async fn node(site: &Site, roster: &Roster, dir: &Path, fault: Fault) -> Mesh {
    let store = Store::open(&dir.join(site.id)).unwrap();
    let cfg = MeshConfig {
        key: site.key.clone(),
        site: site.id.into(),
        roster: roster.clone(),
        store,
        listen: SocketAddr::from(([127, 0, 0, 1], site.port)),
        sync: SyncConfig::default(),
        timing: timing(),
        mdns: false,
        relay: Default::default(),
        fault,
    };
    start(cfg).await.unwrap().0
}

async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_sites_converge_and_scenic_never_holds_correction_payloads() {
    let dir = tempfile::tempdir().unwrap();
    let sites = [
        Site {
            id: "hub",
            role: "hub",
            scopes: "[\"*\"]",
            key: Keypair::generate_ed25519(),
            port: free_port(),
        },
        Site {
            id: "office-1",
            role: "office",
            scopes: "[\"public\", \"correction/office-1\", \"audit/office-1\"]",
            key: Keypair::generate_ed25519(),
            port: free_port(),
        },
        Site {
            id: "scenic-1",
            role: "scenic",
            scopes: "[\"public\", \"audit/scenic-1\"]",
            key: Keypair::generate_ed25519(),
            port: free_port(),
        },
    ];
    let r = roster(&sites);
    let hub = node(&sites[0], &r, dir.path(), Fault::None).await;
    let office = node(&sites[1], &r, dir.path(), Fault::IgnoreScopes).await;
    let scenic = node(&sites[2], &r, dir.path(), Fault::None).await;

    for i in 0..20 {
        office.append("public", "case", &json!({"n": i})).unwrap();
        office
            .append(
                "correction/office-1",
                "checkin",
                &json!({"person": "x", "n": i}),
            )
            .unwrap();
        scenic.append("public", "call", &json!({"n": i})).unwrap();
    }
    assert!(
        scenic
            .append("correction/office-1", "checkin", &json!({}))
            .is_err()
    );

    let digest = |m: &Mesh| m.status().unwrap().digest;
    wait_for("convergence", || {
        let d = digest(&hub);
        d == digest(&office) && d == digest(&scenic) && hub.status().unwrap().entries == 60
    })
    .await;

    let o = office.peer_id();
    let held = scenic.records(&o, 0, 100).unwrap();
    assert_eq!(held.len(), 40);
    for rec in &held {
        if rec.scope.starts_with("correction/") {
            assert!(
                rec.withheld && rec.payload.is_null(),
                "scenic holds a correction payload"
            );
        }
    }
    let refused = scenic.status().unwrap().refused;
    assert!(
        refused.get("out_of_scope").copied().unwrap_or(0) > 0,
        "{refused:?}"
    );
    let at_hub = hub.records(&o, 0, 100).unwrap();
    assert!(at_hub.iter().all(|r| !r.withheld));
}

/// The mDNS path: two sites whose rosters name dead addresses for each other meet once one of
/// them "discovers" the other on the LAN; a discovered peer outside the roster is ignored.
/// (mDNS itself skips loopback, so the test hands the swarm what mDNS would have found.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lan_discovery_dials_roster_peers_and_ignores_strangers() {
    let dir = tempfile::tempdir().unwrap();
    let mk = |id: &'static str, role: &'static str| Site {
        id,
        role,
        scopes: "[\"*\"]",
        key: Keypair::generate_ed25519(),
        port: free_port(),
    };
    let (hub, office, bureau, stranger) = (
        mk("hub", "hub"),
        mk("office-1", "office"),
        mk("bureau", "bureau"),
        mk("bureau", "bureau"),
    );
    // Every roster names the other sites at ports where nothing listens (the hub never runs).
    let at = |s: &Site, port: u16| Site {
        id: s.id,
        role: s.role,
        scopes: s.scopes,
        key: s.key.clone(),
        port,
    };
    let (dead_office, dead_bureau) = (free_port(), free_port());
    let office_roster = roster(&[
        at(&hub, hub.port),
        at(&office, office.port),
        at(&bureau, dead_bureau),
    ]);
    let bureau_roster = roster(&[
        at(&hub, hub.port),
        at(&office, dead_office),
        at(&bureau, bureau.port),
    ]);
    let stranger_roster = roster(&[
        at(&hub, hub.port),
        at(&office, dead_office),
        at(&stranger, stranger.port),
    ]);

    let a = node(&office, &office_roster, dir.path(), Fault::None).await;
    let b = node(&bureau, &bureau_roster, dir.path(), Fault::None).await;
    let _s = node(
        &stranger,
        &stranger_roster,
        &dir.path().join("s"),
        Fault::None,
    )
    .await;
    a.append("public", "case", &json!({"n": 1})).unwrap();

    // Nothing meets while only the dead roster addresses are known.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let connected = |m: &Mesh, site: &str| {
        m.status()
            .unwrap()
            .peers
            .iter()
            .any(|p| p.site == site && p.connected)
    };
    assert!(!connected(&a, "bureau"));

    // "mDNS" finds the bureau and a stranger on the LAN.
    let addr = |port: u16| -> libp2p::Multiaddr {
        format!("/ip4/127.0.0.1/udp/{port}/quic-v1")
            .parse()
            .unwrap()
    };
    let found = vec![
        (b.peer_id(), addr(bureau.port)),
        (stranger.key.public().to_peer_id(), addr(stranger.port)),
    ];
    a.inject_discovery(found).await;

    wait_for("the discovered bureau to connect and sync", || {
        connected(&a, "bureau") && b.records(&a.peer_id(), 0, 10).unwrap().len() == 1
    })
    .await;
    let status = a.status().unwrap();
    let bureau_peer = status.peers.iter().find(|p| p.site == "bureau").unwrap();
    assert_eq!(bureau_peer.connection, Some("direct"));

    // The stranger was never dialled: counted as ignored.
    let mut registry = prometheus_client::registry::Registry::default();
    a.register_metrics(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(text.contains("mesh_mdns_ignored_total 1"), "{text}");
}
