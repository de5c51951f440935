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
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

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

fn problem(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({ "error": msg.into() }))).into_response()
}

fn mesh(node: &Node) -> Option<Mesh> {
    node.mesh.get().cloned()
}

fn starting() -> Response {
    problem(
        StatusCode::SERVICE_UNAVAILABLE,
        "the mesh is starting; retry",
    )
}

/// Appends a record to this site's log; answers once it is durable.
#[utoipa::path(post, path = "/api/v1/records", tag = "records", request_body = NewRecord,
    responses(
        (status = 201, description = "Stored durably", body = Appended),
        (status = 400, description = "Invalid scope, kind or payload, or a scope this site may \
            not hold"),
    ))]
async fn post_record(State(node): State<Arc<Node>>, Json(rec): Json<NewRecord>) -> Response {
    let Some(mesh) = mesh(&node) else {
        return starting();
    };
    match mesh.append_async(rec.scope, rec.kind, rec.payload).await {
        Ok((peer, seq)) => {
            let body = Appended {
                origin: node.config.site.clone(),
                origin_peer: peer.to_base58(),
                seq,
            };
            (StatusCode::CREATED, Json(body)).into_response()
        }
        Err(e @ huiyan_mesh::Error::Record { .. }) => {
            problem(StatusCode::BAD_REQUEST, e.to_string())
        }
        Err(e) => {
            tracing::error!(error = %e, "append failed");
            problem(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
    }
}

/// Pages through the records this node holds.
#[utoipa::path(get, path = "/api/v1/records", tag = "records", params(RecordQuery),
    responses(
        (status = 200, description = "A page of records", body = RecordPage),
        (status = 400, description = "Unknown origin"),
    ))]
async fn get_records(State(node): State<Arc<Node>>, Query(q): Query<RecordQuery>) -> Response {
    let Some(mesh) = mesh(&node) else {
        return starting();
    };
    let after = q.after.unwrap_or(0);
    let limit = q.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    let result = match &q.origin {
        Some(o) => match mesh.resolve_origin(o) {
            Some(peer) => mesh.records(&peer, after, limit),
            None => {
                let msg = format!("origin `{o}` is neither a roster site id nor a PeerId");
                return problem(StatusCode::BAD_REQUEST, msg);
            }
        },
        None => mesh.all_records(after, limit),
    };
    match result {
        Ok(records) => {
            let next_after = (q.origin.is_some() && records.len() == limit)
                .then(|| records.last().map(|r| r.seq))
                .flatten();
            Json(RecordPage {
                records,
                next_after,
            })
            .into_response()
        }
        Err(e) => problem(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Replication state: version vector, log digest, peers with their lag and last error.
#[utoipa::path(get, path = "/api/v1/sync", tag = "records",
    responses((status = 200, description = "Sync status", body = Object)))]
async fn get_sync(State(node): State<Arc<Node>>) -> Response {
    let Some(mesh) = mesh(&node) else {
        return starting();
    };
    match tokio::task::spawn_blocking(move || mesh.status()).await {
        Ok(Ok(s)) => Json(s).into_response(),
        Ok(Err(e)) => problem(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => problem(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
