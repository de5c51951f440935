//! The audit trail: who did what, when and from where, for every sign-in, every read of a case,
//! every recording playback and every export.
//!
//! An audit event is a record of kind `audit` in this site's scope `audit/<site>`: signed and
//! durable in the site's own log like any record, and carried to the sites that hold every
//! scope (the bureau and the hub), never to peers. `GET /api/v1/audit` shows admins the events
//! of their units that this node holds; the view keeps the newest [`KEPT`] in memory, the logs
//! keep all of them.
//!
//! Events name staff by username and public callers by their call id, never by their name or
//! phone number.

use std::collections::VecDeque;
use std::net::IpAddr;

use huiyan_mesh::replica::{Mesh, Record};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The record kind of an audit event.
pub const KIND: &str = "audit";
/// Events the view keeps for the API (the newest); about 200 bytes each.
pub const KEPT: usize = 100_000;

/// The audit scope of a site.
pub fn scope(site: &str) -> String {
    format!("audit/{site}")
}

/// The payload of an `audit` record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Event {
    /// Username, `caller:<call id>` for a public caller, or `cli`.
    pub who: String,
    /// What was done: `signin`, `signin_failed`, `signout`, `case.read`, `recording.play`,
    /// `export`, `user.create`, `user.update`, ...
    pub action: String,
    /// What it was done to (a case id, a username), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The client address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub from: Option<IpAddr>,
}

/// An event as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Entry {
    /// The site where it happened.
    pub site: String,
    /// When, ms since the Unix epoch.
    pub time_ms: u64,
    #[serde(flatten)]
    pub event: Event,
}

/// Writes an event to this site's log; returns once it is durable. The action it records is
/// done only after this returns (an unaudited read does not happen).
pub async fn record(mesh: &Mesh, site: &str, event: Event) -> Result<(), huiyan_mesh::Error> {
    let payload = serde_json::to_value(&event).unwrap_or_default();
    mesh.append_async(scope(site), KIND.to_owned(), payload)
        .await
        .map(drop)
}

/// The newest audit events held, oldest first.
#[derive(Debug, Default)]
pub struct Trail {
    events: VecDeque<Entry>,
}

impl Trail {
    pub fn apply(&mut self, r: &Record) {
        if r.kind != KIND || !r.scope.starts_with("audit/") || r.withheld {
            return;
        }
        let Ok(event) = serde_json::from_value::<Event>(r.payload.clone()) else {
            tracing::warn!(origin = %r.origin, seq = r.seq, "unreadable audit record ignored");
            return;
        };
        if self.events.len() == KEPT {
            self.events.pop_front();
        }
        self.events.push_back(Entry {
            site: r.origin.clone(),
            time_ms: r.time_ms,
            event,
        });
    }

    /// Events newest first that `keep` accepts, at most `limit`, older than `before_ms`.
    pub fn page(&self, before_ms: u64, limit: usize, keep: impl Fn(&Entry) -> bool) -> Vec<Entry> {
        let mut page: Vec<Entry> = self
            .events
            .iter()
            .filter(|e| e.time_ms < before_ms && keep(e))
            .cloned()
            .collect();
        page.sort_by_key(|e| std::cmp::Reverse(e.time_ms));
        page.truncate(limit);
        page
    }
}
