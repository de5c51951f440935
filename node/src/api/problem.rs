//! API errors: a status, a stable machine-readable `code` that the web apps translate into the
//! user's language, and an English message that says what was wrong and what to do.

use axum::Json;
use axum::extract::FromRequest;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An error answer of the API: `{"error": message, "code": code}`.
#[derive(Debug)]
pub struct Problem {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl Problem {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Problem {
        Problem {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unauthenticated() -> Problem {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "sign in first: POST /api/v1/session with your username and password",
        )
    }

    pub fn forbidden(what: impl Into<String>) -> Problem {
        Problem::new(StatusCode::FORBIDDEN, "forbidden", what)
    }

    pub fn not_found(what: impl Into<String>) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, "not_found", what)
    }

    pub fn starting() -> Problem {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "starting",
            "the node is starting; retry in a moment",
        )
    }

    /// Our own fault: logged in full, answered without internals.
    pub fn internal(context: &str, e: impl std::fmt::Display) -> Problem {
        tracing::error!(error = %e, "{context}");
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("{context}; the node logged the cause, tell IT"),
        )
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = Json(json!({ "error": self.message, "code": self.code }));
        (self.status, body).into_response()
    }
}

/// A JSON body whose rejections (wrong content type, syntax, unknown or missing fields) are
/// answered as a [`Problem`] that names what was wrong.
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(Problem))]
pub struct Body<T>(pub T);

impl From<JsonRejection> for Problem {
    fn from(r: JsonRejection) -> Problem {
        Problem::new(r.status(), "bad_json", r.body_text())
    }
}
