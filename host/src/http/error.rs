//! The one HTTP error type. Every error response has the shape
//! `{"error": {"code": "snake_case", "message": "human readable"}}`; the
//! client gets a stable code and a clear message, the log gets the detail.

use crate::runtime::InvokeError;
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An error answered to the client.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("no route for {0}")]
    NotFound(String),
    #[error("request body larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("{0}")]
    BadRequest(String),
    #[error("too many requests in flight")]
    Overloaded,
    #[error("the request took too long")]
    DeadlineExceeded,
    #[error("the handler failed")]
    ComponentFailed,
}

impl AppError {
    fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Self::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            Self::DeadlineExceeded => (StatusCode::GATEWAY_TIMEOUT, "deadline_exceeded"),
            Self::ComponentFailed => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, code) = self.parts();
        let body = json!({ "error": { "code": code, "message": self.to_string() } });
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

impl From<InvokeError> for AppError {
    fn from(err: InvokeError) -> Self {
        // The detail goes to the log once, here; the client gets the code.
        match err {
            InvokeError::DeadlineExceeded(_) => {
                tracing::warn!(error = %err, "component stopped");
                Self::DeadlineExceeded
            }
            InvokeError::Exhausted(_) => {
                tracing::warn!(error = %err, "instance pool exhausted");
                Self::Overloaded
            }
            InvokeError::MemoryLimit(_) | InvokeError::Trap(_) | InvokeError::InvalidStatus(_) => {
                tracing::error!(error = %err, "component failed");
                Self::ComponentFailed
            }
        }
    }
}
