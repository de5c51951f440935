//! The node's HTTP surface: probes, metrics, the API and its OpenAPI document, and the web apps.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::metrics::HttpLabels;
use crate::node::Node;

pub fn router(node: Arc<Node>) -> Router {
    let (api, openapi) = crate::api::router().split_for_parts();
    let openapi = Arc::new(openapi);
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route(
            "/api/openapi.json",
            get(move || async move { Json(openapi.as_ref().clone()) }),
        )
        .merge(api)
        .fallback(crate::web::serve)
        .layer(middleware::from_fn_with_state(node.clone(), count_requests))
        .with_state(node)
}

/// Liveness: the process answers.
async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: 200 when every check passes, else 503 with the reasons.
async fn readyz(State(node): State<Arc<Node>>) -> Response {
    let (ready, checks) = node.health.report();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({ "ready": ready, "checks": checks }))).into_response()
}

async fn metrics(State(node): State<Arc<Node>>) -> Response {
    let m = &node.metrics;
    m.uptime_seconds.set(node.started.elapsed().as_secs_f64());
    m.accounts
        .set(i64::try_from(node.views.accounts().len()).unwrap_or(i64::MAX));
    m.store_size_bytes
        .set(i64::try_from(node.store.size_on_disk()).unwrap_or(i64::MAX));
    node.hotline_metrics
        .update(&node.views.hotline(), huiyan_mesh::replica::wall_ms());
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    ([(header::CONTENT_TYPE, content_type)], m.encode()).into_response()
}

async fn count_requests(State(node): State<Arc<Node>>, request: Request, next: Next) -> Response {
    let route = match request.extensions().get::<MatchedPath>() {
        Some(path) => path.as_str().to_owned(),
        // Unmatched paths are the web apps' files or 404s: one label, so it stays bounded.
        None => "/*static".to_owned(),
    };
    let response = next.run(request).await;
    let labels = HttpLabels {
        route,
        status: response.status().as_u16(),
    };
    node.metrics.http_requests.get_or_create(&labels).inc();
    response
}
