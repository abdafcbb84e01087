//! The API's errors: one type, one `IntoResponse`, the documented body
//! `{"error": {"code", "message"}}` for every error answer, including
//! those axum gives itself.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::MAX_BATCH_BYTES;
use crate::journal::{JournalError, MAX_PAYLOAD_BYTES};
use crate::runner::RequestError;
use crate::scheduler;

/// An API error.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub(super) fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
    ) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub(super) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}

impl From<scheduler::Error> for ApiError {
    fn from(e: scheduler::Error) -> ApiError {
        use scheduler::Error as E;
        match e {
            E::UnknownWorkflow(_) | E::UnknownInstance(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", e.to_string())
            }
            E::Conflict(_) => ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string()),
            E::Invalid(_) => ApiError::bad_request(e.to_string()),
            E::Journal(j) => j.into(),
            other => internal(other),
        }
    }
}

impl From<JournalError> for ApiError {
    fn from(e: JournalError) -> ApiError {
        match e {
            JournalError::UnknownInstance(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", e.to_string())
            }
            JournalError::Finished { .. } => {
                ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string())
            }
            other => internal(other),
        }
    }
}

impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> ApiError {
        scheduler::Error::from(e).into()
    }
}

/// weft's own failure: a 500, logged in full.
fn internal(e: impl std::fmt::Display) -> ApiError {
    tracing::error!("API request failed: {e}");
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
}

pub(super) fn too_large(n: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("the payload is {n} bytes; the limit is {MAX_PAYLOAD_BYTES} bytes (1 MiB)"),
    )
}

/// Gives every error answer the API's JSON body: those of axum's own
/// (405 for an unknown method, a query string or path that does not parse,
/// a body over the limit) come as plain text or empty.
pub(super) async fn json_errors(res: Response) -> Response {
    let json = res
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    let status = res.status();
    if json || !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    let (parts, body) = res.into_parts();
    let text = axum::body::to_bytes(body, 64 << 10)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let code = match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::CONFLICT => "conflict",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::URI_TOO_LONG => "uri_too_long",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "unprocessable",
        s if s.is_server_error() => "internal",
        _ => "error",
    };
    let message = match (status, text.is_empty()) {
        (StatusCode::METHOD_NOT_ALLOWED, _) => {
            "this route does not take that method (its `Allow` header lists those it takes)"
                .to_owned()
        }
        (StatusCode::PAYLOAD_TOO_LARGE, _) => format!(
            "the body is over the limit ({MAX_PAYLOAD_BYTES} bytes per payload; {MAX_BATCH_BYTES} for a batch)"
        ),
        (_, false) => text,
        (_, true) => status
            .canonical_reason()
            .unwrap_or("error")
            .to_ascii_lowercase(),
    };
    let mut res = ApiError::new(status, code, message).into_response();
    if let Some(allow) = parts.headers.get(axum::http::header::ALLOW) {
        res.headers_mut()
            .insert(axum::http::header::ALLOW, allow.clone());
    }
    res
}
