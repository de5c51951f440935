//! The rooms of every site, as every node knows them.
//!
//! A site's rooms are in its own site config; other sites learn them from a `site.rooms` record
//! (scope `public`) that each node writes at start when its rooms changed. The public apps use
//! this to show a room of another site (a tourist entering through the hub) and to offer the
//! bureau's mediation centre when a scenic room is closed.

use std::collections::BTreeMap;

use huiyan_mesh::replica::{Mesh, Record};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::config::SiteConfig;

/// The record kind of a site's room list.
pub const KIND: &str = "site.rooms";
/// Its scope: every site holds it.
pub const SCOPE: &str = "public";

/// A room as every site knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RoomInfo {
    pub id: String,
    /// `mediation`, `hotline`, `correction`, `command` or `conference`.
    pub kind: String,
    /// The site whose node hosts the room.
    pub site: String,
    pub name_zh: String,
    pub name_en: String,
    /// Korean name, when the site config gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_ko: Option<String>,
}

/// The payload of a `site.rooms` record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct SiteRooms {
    site: String,
    rooms: Vec<RoomInfo>,
}

/// Every site's rooms (newest list per site).
#[derive(Debug, Default)]
pub struct Directory {
    by_site: BTreeMap<String, (u64, Vec<RoomInfo>)>,
}

impl Directory {
    pub fn apply(&mut self, r: &Record) {
        if r.kind != KIND || r.scope != SCOPE || r.withheld {
            return;
        }
        let Ok(list) = serde_json::from_value::<SiteRooms>(r.payload.clone()) else {
            tracing::warn!(origin = %r.origin, seq = r.seq, "unreadable room list ignored");
            return;
        };
        // Only a site speaks for its own rooms.
        if list.site != r.origin || list.rooms.iter().any(|room| room.site != r.origin) {
            tracing::warn!(origin = %r.origin, "room list for another site ignored");
            return;
        }
        let newer = self
            .by_site
            .get(&list.site)
            .is_none_or(|(hlc, _)| r.hlc > *hlc);
        if newer {
            self.by_site.insert(list.site, (r.hlc, list.rooms));
        }
    }

    pub fn room(&self, id: &str) -> Option<&RoomInfo> {
        self.by_site
            .values()
            .flat_map(|(_, rooms)| rooms)
            .find(|r| r.id == id)
    }

    /// The rooms of one site.
    pub fn of_site(&self, site: &str) -> &[RoomInfo] {
        self.by_site.get(site).map_or(&[], |(_, rooms)| rooms)
    }
}

/// This site's rooms, from its config.
pub fn own_rooms(config: &SiteConfig) -> Vec<RoomInfo> {
    config
        .rooms
        .iter()
        .map(|r| RoomInfo {
            id: r.id.clone(),
            kind: r.kind.clone(),
            site: config.site.clone(),
            name_zh: r.name_zh.clone(),
            name_en: r.name_en.clone(),
            name_ko: r.name_ko.clone(),
        })
        .collect()
}

/// Writes this site's room list when the logs do not already hold it. Called at start, after
/// the views caught up.
pub async fn announce(
    mesh: &Mesh,
    config: &SiteConfig,
    known: &[RoomInfo],
) -> Result<bool, huiyan_mesh::Error> {
    let rooms = own_rooms(config);
    if rooms == known {
        return Ok(false);
    }
    let payload = serde_json::to_value(SiteRooms {
        site: config.site.clone(),
        rooms,
    })
    .unwrap_or_default();
    mesh.append_async(SCOPE.into(), KIND.into(), payload)
        .await?;
    Ok(true)
}
