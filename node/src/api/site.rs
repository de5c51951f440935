//! `/api/v1/site`: who this node is and which peers its roster names.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::node::Node;

/// This node and the sites of its roster.
#[derive(Debug, Serialize, ToSchema)]
pub struct SiteInfo {
    /// Site id, such as `scenic-2`.
    site: String,
    name_zh: String,
    name_en: String,
    /// `hub`, `bureau`, `office` or `scenic`.
    role: String,
    /// The huiyan version this node runs.
    version: String,
    /// This node's PeerId (base58).
    peer_id: String,
    uptime_seconds: u64,
    /// Every other site of the roster.
    peers: Vec<Peer>,
}

/// A site of the roster, as seen from this node.
#[derive(Debug, Serialize, ToSchema)]
pub struct Peer {
    site: String,
    name_zh: String,
    name_en: String,
    role: String,
    /// Absent while the site is not enrolled (no key yet).
    peer_id: Option<String>,
    /// The site's web address, `host:port`.
    web: String,
}

pub fn routes() -> OpenApiRouter<Arc<Node>> {
    OpenApiRouter::new().routes(routes!(get_site))
}

/// Who this node is, and the other sites of its roster.
#[utoipa::path(get, path = "/api/v1/site", tag = "site",
    responses((status = 200, description = "This node and its roster peers", body = SiteInfo)))]
async fn get_site(State(node): State<Arc<Node>>) -> Json<SiteInfo> {
    let me = &node.me;
    let peers = node
        .roster
        .sites
        .iter()
        .filter(|s| s.id != me.id)
        .map(|s| Peer {
            site: s.id.clone(),
            name_zh: s.name_zh.clone(),
            name_en: s.name_en.clone(),
            role: s.role.to_string(),
            peer_id: s.peer_id.map(|p| p.to_base58()),
            web: s.web.to_string(),
        })
        .collect();
    Json(SiteInfo {
        site: me.id.clone(),
        name_zh: me.name_zh.clone(),
        name_en: me.name_en.clone(),
        role: me.role.to_string(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        peer_id: node.peer_id.to_base58(),
        uptime_seconds: node.started.elapsed().as_secs(),
        peers,
    })
}
