//! The running node's shared state: what the HTTP handlers, the supervisor loop and (later) the
//! mesh and media drivers all see.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use huiyan_mesh::identity::PeerId;
use huiyan_mesh::replica::Mesh;
use huiyan_mesh::roster::{Roster, Site};
use huiyan_mesh::store::Store;

use crate::accounts::OrgTree;
use crate::auth::{Sessions, SignInLimiter};
use crate::config::SiteConfig;
use crate::metrics::Metrics;
use crate::views::Views;

#[derive(Debug)]
pub struct Node {
    pub config: SiteConfig,
    pub roster: Roster,
    /// This node's own roster entry.
    pub me: Site,
    pub peer_id: PeerId,
    pub store: Store,
    pub metrics: Metrics,
    pub health: Health,
    pub started: Instant,
    /// The mesh handle, set once the swarm is listening.
    pub mesh: OnceLock<Mesh>,
    /// The media engine: WebRTC sessions and the SFU.
    pub media: huiyan_media::driver::MediaHandle,
    /// The org tree of the roster, for roles on units.
    pub org: OrgTree,
    /// State derived from the logs.
    pub views: Views,
    /// Staff sign-in sessions of this node.
    pub sessions: Sessions,
    pub signin_limit: SignInLimiter,
    /// Mediators at their consoles, calls placed per address.
    pub desk: crate::api::mediation::Desk,
    /// The cases whose sessions this node records now.
    pub recordings: crate::api::recording::Recordings,
    /// When this node last heard from its hotline callers and lawyers' consoles.
    pub hotline_live: crate::hotline::dispatch::Liveness,
    pub hotline_metrics: crate::hotline::HotlineMetrics,
}

/// Named readiness checks. The node is ready when every check passes.
#[derive(Debug, Default)]
pub struct Health {
    checks: Mutex<BTreeMap<&'static str, Result<(), String>>>,
}

impl Health {
    pub fn set(&self, check: &'static str, result: Result<(), String>) {
        self.lock().insert(check, result);
    }

    /// Whether every check passes, and each check's state (`"ok"` or the reason it fails).
    pub fn report(&self) -> (bool, BTreeMap<&'static str, String>) {
        let checks = self.lock();
        let ready = !checks.is_empty() && checks.values().all(Result::is_ok);
        let states = checks
            .iter()
            .map(|(name, r)| {
                (
                    *name,
                    r.as_ref().map_or_else(Clone::clone, |()| "ok".to_owned()),
                )
            })
            .collect();
        (ready, states)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, Result<(), String>>> {
        self.checks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
