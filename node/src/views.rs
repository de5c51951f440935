//! Views: the state the applications read (accounts, the audit trail, and the applications'
//! own), derived from the logs. They are rebuilt from the logs at every start and follow them
//! as they grow, by local appends or by sync.
//!
//! Each origin's log is read in order from a cursor; a view sees every record once. Views that
//! merge records of several origins decide by the records' hybrid logical clocks, so every node
//! that holds the same records derives the same state.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

use huiyan_mesh::identity::PeerId;
use huiyan_mesh::replica::Mesh;

use crate::accounts::Accounts;
use crate::audit::Trail;
use crate::hotline::Hotline;
use crate::mediation::Mediation;
use crate::node::Node;
use crate::rooms::Directory;

/// Records read per origin and per step.
const STEP: usize = 500;

/// Every view of the node.
#[derive(Debug, Default)]
pub struct Views {
    accounts: RwLock<Accounts>,
    audit: RwLock<Trail>,
    rooms: RwLock<Directory>,
    mediation: RwLock<Mediation>,
    hotline: RwLock<Hotline>,
    /// Per origin, the last seq applied. One reader at a time.
    cursors: Mutex<BTreeMap<PeerId, u64>>,
}

impl Views {
    pub fn accounts(&self) -> RwLockReadGuard<'_, Accounts> {
        self.accounts.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn audit(&self) -> RwLockReadGuard<'_, Trail> {
        self.audit.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn rooms(&self) -> RwLockReadGuard<'_, Directory> {
        self.rooms.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn mediation(&self) -> RwLockReadGuard<'_, Mediation> {
        self.mediation.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn hotline(&self) -> RwLockReadGuard<'_, Hotline> {
        self.hotline.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies every durable record not applied yet; returns how many were read. Blocking (it
    /// reads the store).
    pub fn catch_up(&self, mesh: &Mesh) -> Result<usize, huiyan_mesh::Error> {
        let mut cursors = self.cursors.lock().unwrap_or_else(|p| p.into_inner());
        let mut read = 0;
        for (origin, top) in mesh.version_vector().iter() {
            let cursor = cursors.entry(*origin).or_insert(0);
            while *cursor < top {
                let records = mesh.records(origin, *cursor, STEP)?;
                let Some(last) = records.last().map(|r| r.seq) else {
                    break;
                };
                {
                    let mut accounts = self.accounts.write().unwrap_or_else(|p| p.into_inner());
                    let mut audit = self.audit.write().unwrap_or_else(|p| p.into_inner());
                    let mut rooms = self.rooms.write().unwrap_or_else(|p| p.into_inner());
                    let mut mediation = self.mediation.write().unwrap_or_else(|p| p.into_inner());
                    let mut hotline = self.hotline.write().unwrap_or_else(|p| p.into_inner());
                    for r in &records {
                        accounts.apply(r);
                        audit.apply(r);
                        rooms.apply(r);
                        mediation.apply(r);
                        hotline.apply(r);
                    }
                }
                read += records.len();
                *cursor = last;
            }
        }
        Ok(read)
    }
}

/// Follows the logs into the views until the mesh stops.
pub async fn follow(node: Arc<Node>, mesh: Mesh) {
    let mut changes = mesh.watch();
    loop {
        let (n, m) = (node.clone(), mesh.clone());
        match tokio::task::spawn_blocking(move || n.views.catch_up(&m)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "views: cannot read the logs"),
            Err(e) => tracing::error!(error = %e, "views: the reader failed"),
        }
        if changes.changed().await.is_err() {
            return;
        }
    }
}
