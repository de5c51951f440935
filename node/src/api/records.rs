//! `/api/v1/records` and `/api/v1/sync`: append records to this site's log, page through the
//! logs this node holds, and see how replication stands.
//!
//! The handlers only translate HTTP to the [`Mesh`] handle; what a
//! record is and how it travels belong to the mesh crate.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use huiyan_mesh::replica::Mesh;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::problem::{Body, Problem};
use crate::auth::SiteAdmin;
use crate::node::Node;

/// Most records one GET returns.
const MAX_PAGE: usize = 1000;
/// Records one GET returns when `limit` is not given.
const DEFAULT_PAGE: usize = 100;

pub fn routes() -> OpenApiRouter<Arc<Node>> {
    OpenApiRouter::new()
        .routes(routes!(post_record, get_records))
        .routes(routes!(get_sync))
}

/// A record to append to this site's log.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRecord {
    /// Scope, such as `mediation` or `correction/office-1`; this site must be allowed to hold it.
    scope: String,
    /// Kind, such as `case`, `call` or `checkin` (a-z, 0-9, `-`, `_`, `.`).
    kind: String,
    /// Any JSON value, at most 64 KiB once encoded.
    #[schema(value_type = Object)]
    payload: serde_json::Value,
}

/// Where an appended record sits: it is on disk when this answer is sent.
#[derive(Debug, Serialize, ToSchema)]
pub struct Appended {
    /// Site id of this node.
    origin: String,
    /// PeerId of this node (base58).
    origin_peer: String,
    /// Position of the record in this site's log.
    seq: u64,
}

/// A page of records.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecordPage {
    /// Records, oldest first (by origin, then seq).
    #[schema(value_type = Vec<Object>)]
    records: Vec<huiyan_mesh::replica::Record>,
    /// Pass as `after` (with the same `origin`) for the next page; absent on the last page.
    next_after: Option<u64>,
}

/// Paging through the logs held.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RecordQuery {
    /// Site id or PeerId whose log to read; every log when absent.
    origin: Option<String>,
    /// Only records with seq greater than this (default 0).
    after: Option<u64>,
    /// Page size, default 100, at most 1000.
    limit: Option<usize>,
}

fn mesh(node: &Node) -> Result<Mesh, Problem> {
    node.mesh.get().cloned().ok_or_else(Problem::starting)
}

/// Scopes only the accounts API writes: an account or an audit event written raw would bypass
/// the checks that API makes.
fn reserved(scope: &str) -> bool {
    scope == crate::accounts::SCOPE || scope.starts_with("audit/")
}

/// Appends a record to this site's log; answers once it is durable. Admins of this site only.
#[utoipa::path(post, path = "/api/v1/records", tag = "records", request_body = NewRecord,
    responses(
        (status = 201, description = "Stored durably", body = Appended),
        (status = 400, description = "Invalid scope, kind or payload, or a scope this site may \
            not hold"),
        (status = 401, description = "Not signed in"),
        (status = 403, description = "Not an admin of this site"),
    ))]
async fn post_record(
    State(node): State<Arc<Node>>,
    _: SiteAdmin,
    Body(rec): Body<NewRecord>,
) -> Result<Response, Problem> {
    if reserved(&rec.scope) {
        return Err(Problem::bad_request(
            "reserved_scope",
            format!(
                "scope `{}` is written only through /api/v1/users and the audit trail",
                rec.scope
            ),
        ));
    }
    let mesh = mesh(&node)?;
    match mesh.append_async(rec.scope, rec.kind, rec.payload).await {
        Ok((peer, seq)) => {
            let body = Appended {
                origin: node.config.site.clone(),
                origin_peer: peer.to_base58(),
                seq,
            };
            Ok((StatusCode::CREATED, Json(body)).into_response())
        }
        Err(e @ huiyan_mesh::Error::Record { .. }) => {
            Err(Problem::bad_request("invalid_record", e.to_string()))
        }
        Err(e) => Err(Problem::internal("cannot append the record", e)),
    }
}

/// Pages through the records this node holds. Admins of this site only.
#[utoipa::path(get, path = "/api/v1/records", tag = "records", params(RecordQuery),
    responses(
        (status = 200, description = "A page of records", body = RecordPage),
        (status = 400, description = "Unknown origin"),
        (status = 401, description = "Not signed in"),
        (status = 403, description = "Not an admin of this site"),
    ))]
async fn get_records(
    State(node): State<Arc<Node>>,
    _: SiteAdmin,
    Query(q): Query<RecordQuery>,
) -> Result<Json<RecordPage>, Problem> {
    let mesh = mesh(&node)?;
    let after = q.after.unwrap_or(0);
    let limit = q.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    let result = match &q.origin {
        Some(o) => match mesh.resolve_origin(o) {
            Some(peer) => mesh.records(&peer, after, limit),
            None => {
                let msg = format!("origin `{o}` is neither a roster site id nor a PeerId");
                return Err(Problem::bad_request("unknown_origin", msg));
            }
        },
        None => mesh.all_records(after, limit),
    };
    let records = result.map_err(|e| Problem::internal("cannot read the logs", e))?;
    let next_after = (q.origin.is_some() && records.len() == limit)
        .then(|| records.last().map(|r| r.seq))
        .flatten();
    Ok(Json(RecordPage {
        records,
        next_after,
    }))
}

/// Replication state: version vector, log digest, peers with their lag and last error. Open to
/// monitoring: it holds no record content.
#[utoipa::path(get, path = "/api/v1/sync", tag = "records",
    responses((status = 200, description = "Sync status", body = Object)))]
async fn get_sync(State(node): State<Arc<Node>>) -> Result<Response, Problem> {
    let mesh = mesh(&node)?;
    match tokio::task::spawn_blocking(move || mesh.status()).await {
        Ok(Ok(s)) => Ok(Json(s).into_response()),
        Ok(Err(e)) => Err(Problem::internal("cannot read the sync status", e)),
        Err(e) => Err(Problem::internal("cannot read the sync status", e)),
    }
}
