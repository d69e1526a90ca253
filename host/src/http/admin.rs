//! The admin API under `/admin`, mounted only when an admin token is
//! configured, and requiring it as `Authorization: Bearer <token>` (checked
//! before any body byte is read, so an unauthenticated upload is refused at
//! once):
//!
//! - `GET /admin/components`: each component's routes, serving version
//!   (SHA-256 digest, size, load time) and the previous versions kept;
//! - `PUT /admin/components/{name}` with the `.wasm` bytes as the body:
//!   compiled off the request path, checked against the `handler` world,
//!   and swapped in only if it passes (400 or 422 with the reason if not;
//!   the running version keeps serving);
//! - `POST /admin/components/{name}/rollback`: the previous version serves
//!   again.

use super::{AppError, AppState};
use crate::runtime::LoadError;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::HeaderMap;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use sha2::{Digest, Sha256};

/// Largest component upload, in bytes.
const MAX_UPLOAD_BYTES: usize = 64 << 20;

/// The admin routes, every one behind the admin token, checked before any
/// byte of a body is read.
pub(super) fn routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/admin/components", get(list))
        .route("/admin/components/{name}", put(upload))
        .route("/admin/components/{name}/rollback", post(rollback))
        .route_layer(middleware::from_fn_with_state(state, require_token))
}

/// Refuses a request without the admin token before its handler (and so
/// its body extractor) runs.
async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match authorize(&state, request.headers()) {
        Ok(()) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

/// Checks the admin bearer token (comparing digests, so the comparison's
/// time says nothing about the token).
fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), AppError> {
    let expected = state.inner.admin_token_hash.as_ref().ok_or_else(|| {
        AppError::NotFound("the admin API is off: start the host with an admin token".into())
    })?;
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| crate::auth::bearer_token(v.as_bytes()).ok())
        .ok_or_else(|| {
            AppError::Unauthorized(
                "the admin API needs `Authorization: Bearer <admin token>`".into(),
            )
        })?;
    if Sha256::digest(given.as_bytes()).as_slice() != expected.as_slice() {
        return Err(AppError::Unauthorized("wrong admin token".into()));
    }
    Ok(())
}

async fn list(State(state): State<AppState>) -> Result<Json<serde_json::Value>, AppError> {
    Ok(Json(
        serde_json::json!({ "components": state.inner.registry.list() }),
    ))
}

async fn upload(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<crate::registry::ComponentInfo>, AppError> {
    if !state.inner.registry.contains(&name) {
        return Err(AppError::NotFound(format!(
            "no component named {name:?} in the manifest"
        )));
    }
    let body = super::read_body(&state.inner.limits, &headers, body, MAX_UPLOAD_BYTES).await?;
    let runtime = state.inner.runtime.clone();
    let compile_name = name.clone();
    // Compiling takes CPU for a while: keep it off the async workers.
    let loaded = tokio::task::spawn_blocking(move || runtime.load(&compile_name, &body))
        .await
        .map_err(|_| AppError::Internal)?
        .map_err(|e| {
            tracing::warn!(component = %name, error = %e, "upload rejected");
            match e {
                LoadError::Invalid(_) => AppError::InvalidComponent(e.to_string()),
                LoadError::WrongWorld(_) => AppError::WrongWorld(e.to_string()),
            }
        })?;
    Ok(Json(state.inner.registry.deploy(&name, loaded)?))
}

async fn rollback(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<crate::registry::ComponentInfo>, AppError> {
    Ok(Json(state.inner.registry.rollback(&name)?))
}
