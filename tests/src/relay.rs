//! Media relay scenarios: a [`TestMesh`] whose sites reach each other's relay ports only
//! through emulated links, one per ordered pair of sites, so that the link between two sites
//! can be thinned, made lossy or cut without touching the others.
//!
//! Every site gets its own copy of the roster in which each other site's `media` address is the
//! front of the link from this site to that one (the keys and everything else are the same).
//! A relay connection dialled by A to B therefore crosses the link A→B in both directions;
//! [`RelayMesh::set`] and [`RelayMesh::cut`] act on both links of a pair.

use std::collections::HashMap;
use std::fs;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use huiyan_mesh::netem::{Link, LinkParams};
use serde_json::Value;

use crate::{NodeProcess, TestMesh, client};

/// A mesh whose relay traffic crosses one emulated link per ordered pair of sites.
#[derive(Debug)]
pub struct RelayMesh {
    pub mesh: TestMesh,
    /// (from, to) → the link `from` dials to reach `to`.
    links: HashMap<(String, String), Link>,
}

impl RelayMesh {
    /// Builds the mesh, gives each site its `rooms` (`(site, id, kind)`), and puts a link with
    /// `params` between every pair of sites. Must run inside a tokio runtime (the links are its
    /// tasks).
    pub async fn new(
        sites: &[(&str, &str)],
        rooms: &[(&str, &str, &str)],
        params: LinkParams,
    ) -> RelayMesh {
        let mut mesh = TestMesh::new(sites);
        if std::env::var_os("HUIYAN_KEEP_DIR").is_some() {
            // For debugging: configs and node logs survive the test.
            mesh.dir.disable_cleanup(true);
            println!("test dir kept: {}", mesh.dir.path().display());
        }
        let taken: Vec<u16> = mesh
            .sites
            .iter()
            .flat_map(|s| [s.web, s.mesh, s.media, s.rtc].map(|a| a.port()))
            .collect();
        let roster = fs::read_to_string(&mesh.roster).expect("roster");
        let mut links = HashMap::new();
        for from in &mesh.sites {
            let mut own = roster.clone();
            for to in mesh.sites.iter().filter(|s| s.id != from.id) {
                let front: SocketAddr = ([127, 0, 0, 1], 0).into();
                let link = loop {
                    let link = Link::start(front, to.media, params.clone())
                        .await
                        .expect("start link");
                    if !taken.contains(&link.local_addr().port()) {
                        break link;
                    }
                };
                own = own.replace(
                    &format!("media = \"{}\"", to.media),
                    &format!("media = \"{}\"", link.local_addr()),
                );
                links.insert((from.id.clone(), to.id.clone()), link);
            }
            let name = format!("roster-{}.toml", from.id);
            fs::write(mesh.dir.path().join(&name), own).expect("write roster copy");
            let mut config = fs::read_to_string(&from.config).expect("site config");
            config = config.replace("roster = \"roster.toml\"", &format!("roster = \"{name}\""));
            for (site, id, kind) in rooms.iter().filter(|(s, ..)| *s == from.id) {
                config.push_str(&format!(
                    "\n[[rooms]]\nid = \"{id}\"\nkind = \"{kind}\"\nname_zh = \"{site}的房间\"\n\
                     name_en = \"Room of {site}\"\n"
                ));
            }
            fs::write(&from.config, config).expect("write site config");
        }
        RelayMesh { mesh, links }
    }

    /// Starts every node and waits until each is ready.
    pub fn start_all(&self) -> Vec<NodeProcess> {
        let mut nodes: Vec<NodeProcess> = self
            .mesh
            .sites
            .iter()
            .map(|s| {
                NodeProcess::start(
                    s,
                    &[(
                        "RUST_LOG",
                        std::env::var("RELAY_TEST_LOG")
                            .as_deref()
                            .unwrap_or("info,huiyan_media::relay=debug"),
                    )],
                )
            })
            .collect();
        tokio::task::block_in_place(|| {
            for node in &mut nodes {
                node.wait_ready(Duration::from_secs(60));
            }
        });
        nodes
    }

    fn pair(&self, a: &str, b: &str) -> [&Link; 2] {
        let get = |x: &str, y: &str| {
            self.links
                .get(&(x.to_owned(), y.to_owned()))
                .expect("both sites are in the mesh")
        };
        [get(a, b), get(b, a)]
    }

    /// Sets both links between `a` and `b`.
    pub fn set(&self, a: &str, b: &str, params: LinkParams) {
        for link in self.pair(a, b) {
            link.set(params.clone());
        }
    }

    /// Cuts (`true`) or restores the links between `a` and `b`.
    pub fn cut(&self, a: &str, b: &str, cut: bool) {
        for link in self.pair(a, b) {
            link.set_up(!cut);
        }
    }

    /// Cuts site `id` off from every other site (its whole uplink down), or restores it.
    pub fn isolate(&self, id: &str, cut: bool) {
        for other in self.mesh.sites.iter().filter(|s| s.id != id) {
            self.cut(id, &other.id, cut);
        }
    }

    /// Bytes offered to the links between `a` and `b` so far (both directions, both links).
    pub fn bytes(&self, a: &str, b: &str) -> u64 {
        self.pair(a, b)
            .iter()
            .map(|l| l.stats().bytes.load(Ordering::Relaxed))
            .sum()
    }

    /// The web address of site `id`.
    pub fn web(&self, id: &str) -> SocketAddr {
        self.mesh.site(id).web
    }
}

/// `GET /api/v1/media/links` of the node at `web` (blocking; call from a blocking context).
pub fn media_links(web: SocketAddr) -> anyhow::Result<Value> {
    Ok(client()
        .get(format!("http://{web}/api/v1/media/links"))
        .send()?
        .json()?)
}

/// The link to `peer` in a `/api/v1/media/links` answer.
pub fn link_to<'a>(links: &'a Value, peer: &str) -> Option<&'a Value> {
    links["links"]
        .as_array()?
        .iter()
        .find(|l| l["site"] == peer)
}
