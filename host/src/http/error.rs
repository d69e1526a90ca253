//! The one HTTP error type. Every error response has the shape
//! `{"error": {"code": "snake_case", "message": "human readable"}}`; the
//! client gets a stable code and a clear message, the log gets the detail.

use crate::auth::AuthError;
use crate::db::DbError;
use crate::registry::RegistryError;
use crate::runtime::InvokeError;
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An error answered to the client.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// What was not found, as a sentence for the client.
    #[error("{0}")]
    NotFound(String),
    #[error("request body larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("the request body did not arrive within {} s; send it faster or in a smaller request", .0.as_secs())]
    BodyTimeout(std::time::Duration),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("too many requests in flight")]
    Overloaded,
    #[error("the database is unavailable; retry shortly")]
    DatabaseUnavailable,
    #[error("internal error")]
    Internal,
    #[error("{0}")]
    InvalidComponent(String),
    #[error("{0}")]
    WrongWorld(String),
    #[error("{0}")]
    Conflict(String),
    #[error("the request took too long")]
    DeadlineExceeded,
    #[error("the handler failed")]
    ComponentFailed,
}

impl AppError {
    /// The status it answers with.
    pub(crate) fn status(&self) -> StatusCode {
        self.parts().0
    }

    fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Self::BodyTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Self::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            Self::DatabaseUnavailable => (StatusCode::SERVICE_UNAVAILABLE, "database_unavailable"),
            Self::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            Self::InvalidComponent(_) => (StatusCode::BAD_REQUEST, "invalid_component"),
            Self::WrongWorld(_) => (StatusCode::UNPROCESSABLE_ENTITY, "wrong_world"),
            Self::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
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
        let headers = response.headers_mut();
        match self {
            Self::Overloaded => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            Self::DatabaseUnavailable => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            Self::Unauthorized(_) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
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
            InvokeError::MemoryLimit(_)
            | InvokeError::Trap(_)
            | InvokeError::InvalidStatus(_)
            | InvokeError::InvalidBody(_) => {
                tracing::error!(error = %err, "component failed");
                Self::ComponentFailed
            }
        }
    }
}

impl From<DbError> for AppError {
    fn from(err: DbError) -> Self {
        match err {
            DbError::Unavailable(_) | DbError::Timeout(_) => {
                tracing::warn!(error = %err, "database unavailable");
                Self::DatabaseUnavailable
            }
            DbError::Constraint(_)
            | DbError::Other(_)
            | DbError::Refused(_)
            | DbError::TooLarge(_) => {
                tracing::error!(error = %err, "database error in the host");
                Self::Internal
            }
        }
    }
}

impl From<AuthError> for AppError {
    fn from(err: AuthError) -> Self {
        match err {
            AuthError::Malformed | AuthError::UnknownToken => Self::Unauthorized(err.to_string()),
            AuthError::Database(db) => db.into(),
        }
    }
}

impl From<RegistryError> for AppError {
    fn from(err: RegistryError) -> Self {
        match err {
            RegistryError::UnknownComponent(_) | RegistryError::UnknownVersion(..) => {
                Self::NotFound(err.to_string())
            }
            RegistryError::NoPreviousVersion(_)
            | RegistryError::NoCanary(_)
            | RegistryError::CanaryIsActive(_) => Self::Conflict(err.to_string()),
            RegistryError::NoFleet => Self::BadRequest(err.to_string()),
            RegistryError::Persist(..) => {
                tracing::error!(error = %err, "deployment not recorded; nothing swapped");
                Self::Internal
            }
            RegistryError::Record(name, DbError::Constraint(_)) => Self::Conflict(format!(
                "another change of {name:?} was recorded at the same time; nothing swapped, try again"
            )),
            RegistryError::Record(_, db) => {
                tracing::error!(error = %db, "deployment not recorded; nothing swapped");
                db.into()
            }
        }
    }
}
