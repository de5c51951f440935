//! The JSON API under `/api/v1`, described by the OpenAPI document at `/api/openapi.json`.
//!
//! Each area of the API has its own module returning an [`OpenApiRouter`]; the document is
//! generated from the handlers' annotations, so it cannot drift from the code.

mod accounts;
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
}
