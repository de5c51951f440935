//! Mesh scenarios over emulated links: puts a [`Link`] in front of each site's mesh port,
//! rewrites the roster so that every site dials its peers through those links, and gives the
//! record and sync API of a node in a few helpers.
//!
//! A node's own dials leave from its real mesh port (QUIC reuses the listening socket) and
//! enter the *peer's* link, so cutting a site off means both switching its own link down and
//! blocking its real address on every other link: [`LinkedMesh::isolate`] does both.

use std::fs;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use huiyan_mesh::netem::{Link, LinkParams};
use serde_json::Value;

use crate::{TestMesh, client};

/// A [`TestMesh`] whose sites reach each other only through emulated links.
#[derive(Debug)]
pub struct LinkedMesh {
    pub mesh: TestMesh,
    /// One link per site, in site order, in front of its real mesh port.
    pub links: Vec<Link>,
    /// Runs the links.
    pub runtime: tokio::runtime::Runtime,
}

impl LinkedMesh {
    /// Builds the mesh and its links (all with `params`) and rewrites the roster.
    pub fn new(sites: &[(&str, &str)], params: LinkParams) -> LinkedMesh {
        let mesh = TestMesh::new(sites);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let mut roster = fs::read_to_string(&mesh.roster).expect("roster");
        let mut links = Vec::new();
        // Site ports are only reserved, not bound, until the nodes start: a link must not take
        // one of them for its own front port.
        let taken: Vec<u16> = mesh
            .sites
            .iter()
            .flat_map(|s| [s.web, s.mesh, s.media, s.rtc].map(|a| a.port()))
            .collect();
        for site in &mesh.sites {
            let front: SocketAddr = ([127, 0, 0, 1], 0).into();
            let link = loop {
                let link = runtime
                    .block_on(Link::start(front, site.mesh, params.clone()))
                    .expect("start link");
                if !taken.contains(&link.local_addr().port()) {
                    break link;
                }
            };
            let from = format!("mesh = \"{}\"", site.mesh);
            let to = format!("mesh = \"{}\"", link.local_addr());
            roster = roster.replace(&from, &to);
            links.push(link);
        }
        fs::write(&mesh.roster, roster).expect("write roster");
        LinkedMesh {
            mesh,
            links,
            runtime,
        }
    }

    fn index(&self, id: &str) -> usize {
        self.mesh
            .sites
            .iter()
            .position(|s| s.id == id)
            .expect("site in the mesh")
    }

    /// Cuts site `id` off from every other site (`true`) or lets it back (`false`).
    pub fn isolate(&self, id: &str, cut: bool) {
        let i = self.index(id);
        let real = self.mesh.sites[i].mesh;
        for (j, link) in self.links.iter().enumerate() {
            if j == i {
                link.set_up(!cut);
            } else {
                link.block(real, cut);
            }
        }
    }

    /// Cuts (`true`) or restores the direct path between sites `a` and `b` only: each one's
    /// packets are dropped on the other's link, in both directions. Their paths to everyone
    /// else stay as they are.
    pub fn cut(&self, a: &str, b: &str, cut: bool) {
        let (i, j) = (self.index(a), self.index(b));
        self.links[i].block(self.mesh.sites[j].mesh, cut);
        self.links[j].block(self.mesh.sites[i].mesh, cut);
    }

    /// The link in front of site `id`.
    pub fn link(&self, id: &str) -> &Link {
        &self.links[self.index(id)]
    }
}

/// Appends a record through the node's API as the test admin; returns its seq.
pub fn append(web: SocketAddr, scope: &str, kind: &str, payload: Value) -> anyhow::Result<u64> {
    append_as(web, &crate::admin_token(web)?, scope, kind, payload)
}

/// Appends a record through the node's API with the session `token` of one of its admins.
pub fn append_as(
    web: SocketAddr,
    token: &str,
    scope: &str,
    kind: &str,
    payload: Value,
) -> anyhow::Result<u64> {
    let body = serde_json::json!({ "scope": scope, "kind": kind, "payload": payload });
    let resp = client()
        .post(format!("http://{web}/api/v1/records"))
        .bearer_auth(token)
        .json(&body)
        .send()?;
    let status = resp.status();
    let v: Value = resp.json()?;
    anyhow::ensure!(status.as_u16() == 201, "append answered {status}: {v}");
    v["seq"]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("no seq in {v}"))
}

/// `GET /api/v1/sync`.
pub fn sync_status(web: SocketAddr) -> anyhow::Result<Value> {
    Ok(client()
        .get(format!("http://{web}/api/v1/sync"))
        .send()?
        .json()?)
}

/// Every application record the node holds of `origin` (site id), paging through the API: the
/// accounts and audit records the harness itself causes (the test admin, its sign-ins), the
/// room list each node announces at start and the hotline schedule the bureau publishes at
/// start left out.
pub fn records(web: SocketAddr, origin: &str) -> anyhow::Result<Vec<Value>> {
    records_as(web, &crate::admin_token(web)?, origin)
}

/// [`records`] with the session `token` of one of the node's admins.
pub fn records_as(web: SocketAddr, token: &str, origin: &str) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let url = format!("http://{web}/api/v1/records?origin={origin}&after={after}&limit=1000");
        let page: Value = client().get(url).bearer_auth(token).send()?.json()?;
        let recs = page["records"].as_array().cloned().unwrap_or_default();
        out.extend(recs.into_iter().filter(|r| {
            let scope = r["scope"].as_str().unwrap_or_default();
            let kind = r["kind"].as_str().unwrap_or_default();
            let at_start = (scope == "public" && kind == "site.rooms")
                || (scope == "hotline" && kind == "hotline.schedule");
            scope != "accounts" && !scope.starts_with("audit/") && !at_start
        }));
        match page["next_after"].as_u64() {
            Some(n) => after = n,
            None => return Ok(out),
        }
    }
}

/// True when every log the node holds is complete: the version vector's seqs add up to the
/// entries held, so no log has a gap.
pub fn logs_have_no_gaps(status: &Value) -> bool {
    let held: u64 = status["version_vector"]
        .as_array()
        .map(|vv| vv.iter().filter_map(|v| v["seq"].as_u64()).sum())
        .unwrap_or(0);
    status["entries"].as_u64() == Some(held)
}

/// The value of a Prometheus sample line starting with `prefix` (name and labels), summed.
pub fn metric(web: SocketAddr, prefix: &str) -> f64 {
    let text = client()
        .get(format!("http://{web}/metrics"))
        .send()
        .and_then(|r| r.text())
        .unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Polls `f` every 200 ms until it returns true or `within` passes.
pub fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

/// A mesh node run inside the test process (for peers that must misbehave on purpose), with
/// its own store in `data_dir`. Keep the runtime alive as long as the node should run.
pub fn in_process_node(
    site: &str,
    roster: &std::path::Path,
    key: huiyan_mesh::identity::Keypair,
    data_dir: &std::path::Path,
    listen: SocketAddr,
    fault: huiyan_mesh::swarm::Fault,
) -> (tokio::runtime::Runtime, huiyan_mesh::replica::Mesh) {
    use huiyan_mesh::swarm::{MeshConfig, Timing, start};
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let roster = huiyan_mesh::roster::Roster::load(roster).expect("roster");
    let store = huiyan_mesh::store::Store::open(data_dir).expect("store");
    let cfg = MeshConfig {
        key,
        site: site.to_owned(),
        roster,
        store,
        listen,
        sync: Default::default(),
        timing: Timing {
            redial_max: Duration::from_secs(2),
            ..Timing::default()
        },
        mdns: false,
        relay: Default::default(),
        fault,
    };
    let (mesh, _task) = runtime.block_on(start(cfg)).expect("start mesh");
    (runtime, mesh)
}

/// True when any file under `dir` contains `needle`.
pub fn dir_contains(dir: &std::path::Path, needle: &[u8]) -> bool {
    let Ok(entries) = fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let p = e.path();
        if p.is_dir() {
            dir_contains(&p, needle)
        } else {
            fs::read(&p).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle))
        }
    })
}
