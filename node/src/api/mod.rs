//! The JSON API under `/api/v1`, described by the OpenAPI document at `/api/openapi.json`.
//!
//! Each area of the API has its own module returning an [`OpenApiRouter`]; the document is
//! generated from the handlers' annotations, so it cannot drift from the code.

mod accounts;
mod hotline;
mod media;
pub mod mediation;
pub mod problem;
pub mod recording;
mod records;
mod relay;
mod site;

use std::sync::Arc;

use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::node::Node;

pub use media::start as start_media;

#[derive(OpenApi)]
#[openapi(info(
    title = "huiyan node API",
    description = "The API of one huiyan node (one site of the Judicial Smart Eye pilot)."
))]
struct ApiDoc;

/// Every `/api/v1` route, with the OpenAPI document describing them.
pub fn router() -> OpenApiRouter<Arc<Node>> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(site::routes())
        .merge(accounts::routes())
        .merge(records::routes())
        .merge(media::routes())
        .merge(relay::routes())
        .merge(mediation::routes())
        .merge(recording::routes())
        .merge(hotline::routes())
}

/// A fresh random id (16 URL-safe characters) for calls, cases, offers and questions.
pub(crate) fn new_id() -> String {
    use base64::Engine;
    let mut raw = [0u8; 12];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut raw);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}
