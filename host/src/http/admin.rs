//! The admin API under `/admin`, mounted only when an admin token is
//! configured, and requiring it as `Authorization: Bearer <token>` (checked
//! before any body byte is read, so an unauthenticated upload is refused at
//! once):
//!
//! - `GET /admin/components`: each component's routes, serving version
//!   (SHA-256 digest, size, load time) and the previous versions kept on
//!   this host, and `fleet`: the active version, the versions the database
//!   keeps, and what each live host serves since when;
//! - `PUT /admin/components/{name}[?note=…][&canary=N][&instance_reuse=N]` with the `.wasm`
//!   bytes as the body: compiled off the request path, checked against
//!   the `handler` world (400 or 422 with the reason if not; the running
//!   version keeps serving), recorded in the database with the note (503
//!   if it cannot be, 409 if it collided with another change of the
//!   component), then swapped in; every host of the fleet follows. With
//!   `canary=N` (1 to 99) it is the canary instead: served to N percent
//!   of requests beside the active version (409 if it is the active one).
//!   With `instance_reuse=N` (0 to 1,000,000) one instance of this version
//!   may serve N requests (instance reuse), on every host, whatever the
//!   manifest says;
//! - `POST /admin/components/{name}/promote`: the canary becomes the
//!   active version, fleet-wide (409 if none runs);
//! - `POST /admin/components/{name}/abort`: the canary ends, its share
//!   returns to the active version, fleet-wide (409 if none runs);
//! - `POST /admin/components/{name}/rollback`: the previous version serves
//!   again, fleet-wide;
//! - `POST /admin/components/{name}/activate/{digest}`: a kept version
//!   serves again, fleet-wide (404 if it is not kept).

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
        .route("/admin/components/{name}/promote", post(promote))
        .route("/admin/components/{name}/abort", post(abort))
        .route("/admin/components/{name}/activate/{digest}", post(activate))
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

/// Hosts whose heartbeat is older than this are not listed.
const LIVE_WITHIN_MS: i64 = 10_000;

/// Each component as this host serves it and, with the fleet's record,
/// `fleet`: the active digest, the canary (running, or how the last one
/// ended), the kept versions (oldest first, with their notes) and, per
/// live host, the digest it serves since when and its canary. When
/// the database cannot be read, each `fleet` is `null` and `fleetError`
/// says why.
async fn list(State(state): State<AppState>) -> Result<Json<serde_json::Value>, AppError> {
    let registry = &state.inner.registry;
    let local = registry.list();
    let Some(fleet) = registry.fleet() else {
        return Ok(Json(serde_json::json!({ "components": local })));
    };
    let read = async {
        let hosts = fleet.hosts(crate::now_ms() - LIVE_WITHIN_MS).await?;
        let mut canaries = fleet.canary_records().await?;
        let mut histories = Vec::new();
        for info in &local {
            histories.push((
                fleet.history(&info.name).await?,
                canaries.remove(&info.name),
            ));
        }
        Ok::<_, crate::db::DbError>((hosts, histories))
    };
    let (hosts, histories) = match read.await {
        Ok(read) => read,
        Err(e) => {
            let mut components = serde_json::to_value(&local).map_err(|_| AppError::Internal)?;
            for entry in components.as_array_mut().into_iter().flatten() {
                entry["fleet"] = serde_json::Value::Null;
            }
            return Ok(Json(serde_json::json!({
                "components": components,
                "fleetError": e.to_string(),
            })));
        }
    };
    let mut components = Vec::new();
    for (info, (history, canary)) in local.into_iter().zip(histories) {
        let serving: Vec<serde_json::Value> = hosts
            .iter()
            .filter_map(|h| {
                let at = h.serving.get(&info.name)?;
                Some(serde_json::json!({
                    "host": h.id,
                    "digest": at.get("digest")?,
                    "since": at.get("since")?,
                    "canary": at.get("canary").cloned().unwrap_or_default(),
                    "seenAt": h.seen_at,
                }))
            })
            .collect();
        let mut entry = serde_json::to_value(&info).map_err(|_| AppError::Internal)?;
        entry["fleet"] = serde_json::json!({
            "active": history.last().map(|v| v.digest.clone()),
            "canary": canary,
            "versions": history.iter().map(|v| serde_json::json!({
                "digest": v.digest,
                "size": v.size,
                "uploadedAt": v.uploaded_at,
                "note": v.note,
                "instanceReuse": v.instance_reuse,
            })).collect::<Vec<_>>(),
            "hosts": serving,
        });
        components.push(entry);
    }
    Ok(Json(serde_json::json!({ "components": components })))
}

async fn activate(
    State(state): State<AppState>,
    Path((name, digest)): Path<(String, String)>,
) -> Result<Json<crate::registry::ComponentInfo>, AppError> {
    Ok(Json(state.inner.registry.activate(&name, &digest).await?))
}

/// Longest uploader's note kept with a version, in characters.
const MAX_NOTE_CHARS: usize = 1024;

/// What the query of `PUT /admin/components/{name}` asks.
struct UploadQuery {
    /// The uploader's note (empty if none).
    note: String,
    /// The canary share (`None`: a deploy).
    canary: Option<u8>,
    /// Requests one instance may serve (`None`: as the manifest says).
    instance_reuse: Option<u32>,
}

/// The query of `PUT /admin/components/{name}?note=…&canary=N&instance_reuse=N`.
/// Anything else in it is refused, so that a misspelt `canary` never
/// deploys to every request.
fn upload_query(query: Option<&str>) -> Result<UploadQuery, AppError> {
    let (mut note, mut canary, mut reuse) = (None, None, None);
    for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        let seen = match key.as_ref() {
            "note" => note.replace(value.into_owned()).is_some(),
            "canary" => canary.replace(value.into_owned()).is_some(),
            "instance_reuse" => reuse.replace(value.into_owned()).is_some(),
            other => {
                return Err(AppError::BadRequest(format!(
                    "unknown query parameter {other:?}: an upload takes `note`, `canary` and `instance_reuse`"
                )));
            }
        };
        if seen {
            return Err(AppError::BadRequest(format!("`{key}` given twice")));
        }
    }
    let note = note.unwrap_or_default();
    if note.chars().count() > MAX_NOTE_CHARS {
        return Err(AppError::BadRequest(format!(
            "the note is longer than {MAX_NOTE_CHARS} characters"
        )));
    }
    let canary = canary
        .map(|share| match share.parse::<u8>() {
            Ok(share @ 1..=99) => Ok(share),
            _ => Err(AppError::BadRequest(format!(
                "canary={share:?}: the canary's share is a whole percentage from 1 to 99"
            ))),
        })
        .transpose()?;
    let max = crate::runtime::MAX_INSTANCE_REUSE;
    let instance_reuse = reuse
        .map(|n| match n.parse::<u32>() {
            Ok(n) if n <= max => Ok(n),
            _ => Err(AppError::BadRequest(format!(
                "instance_reuse={n:?}: the requests one instance may serve are a whole number from 0 to {max}"
            ))),
        })
        .transpose()?;
    Ok(UploadQuery {
        note,
        canary,
        instance_reuse,
    })
}

async fn upload(
    State(state): State<AppState>,
    Path(name): Path<String>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<crate::registry::ComponentInfo>, AppError> {
    if !state.inner.registry.contains(&name) {
        return Err(AppError::NotFound(format!(
            "no component named {name:?} in the manifest"
        )));
    }
    let UploadQuery {
        note,
        canary,
        instance_reuse,
    } = upload_query(query.as_deref())?;
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
    let registry = &state.inner.registry;
    Ok(Json(match canary {
        Some(share) => {
            registry
                .deploy_canary(&name, loaded, &note, share, instance_reuse)
                .await?
        }
        None => {
            registry
                .deploy(&name, loaded, &note, instance_reuse)
                .await?
        }
    }))
}

async fn promote(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<crate::registry::ComponentInfo>, AppError> {
    Ok(Json(state.inner.registry.promote(&name).await?))
}

async fn abort(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<crate::registry::ComponentInfo>, AppError> {
    Ok(Json(state.inner.registry.abort(&name).await?))
}

async fn rollback(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<crate::registry::ComponentInfo>, AppError> {
    Ok(Json(state.inner.registry.rollback(&name).await?))
}
