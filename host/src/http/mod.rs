//! The HTTP front: `app` builds the axum `Router` that bounds the requests in
//! flight, limits bodies, serves `/healthz` and `/metrics`, authenticates
//! bearer tokens, and dispatches every other path to the component its route
//! names.
//!
//! **Invariant:** past `max_in_flight` requests, the host answers 503 with
//! `Retry-After` at once; it never queues without bound.

mod admin;
mod error;
mod native;

pub use error::AppError;

use crate::auth;
use crate::cache::CacheMetrics;
use crate::db::Database;
use crate::registry::Registry;
use crate::runtime::{Request, Response as ComponentResponse, Runtime};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request as HttpRequest, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use sha2::Digest as _;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// HTTP-level settings.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Largest accepted request body, in bytes; larger gets 413.
    pub max_body_bytes: usize,
    /// The admin API's bearer token; `None` disables `/admin`.
    pub admin_token: Option<String>,
    /// Mounts the benchmarks' native baseline under `/native` (see
    /// `native.rs`). Off in production.
    pub native_baseline: bool,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: 1 << 20,
            admin_token: None,
            native_baseline: false,
        }
    }
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    /// Runs components.
    runtime: Arc<Runtime>,
    /// Components and their routes.
    registry: Arc<Registry>,
    /// The database, for authentication.
    db: Arc<dyn Database>,
    /// Cache counters, for `/metrics`.
    metrics: Arc<CacheMetrics>,
    /// SHA-256 of the admin token; `None` leaves `/admin` unmounted.
    admin_token_hash: Option<Vec<u8>>,
    /// Request size limits.
    limits: HttpLimits,
    /// One permit per request in flight.
    in_flight: Arc<Semaphore>,
}

impl AppState {
    pub fn new(
        runtime: Arc<Runtime>,
        registry: Arc<Registry>,
        db: Arc<dyn Database>,
        metrics: Arc<CacheMetrics>,
        limits: HttpLimits,
    ) -> Self {
        let permits = runtime.sandbox().max_in_flight as usize;
        let admin_token_hash = limits
            .admin_token
            .as_ref()
            .map(|t| sha2::Sha256::digest(t.as_bytes()).to_vec());
        Self {
            inner: Arc::new(Inner {
                runtime,
                registry,
                db,
                metrics,
                admin_token_hash,
                limits,
                in_flight: Arc::new(Semaphore::new(permits)),
            }),
        }
    }
}

/// The whole HTTP application.
pub fn app(state: AppState) -> Router {
    let max_body = state.inner.limits.max_body_bytes;
    let admin = if state.inner.admin_token_hash.is_some() {
        admin::routes()
    } else {
        Router::new()
    };
    let native = if state.inner.limits.native_baseline {
        native::routes()
    } else {
        Router::new()
    };
    Router::new()
        .merge(admin)
        .merge(native)
        .route("/healthz", get(healthz))
        .route("/metrics", get(render_metrics))
        .route("/openapi.json", get(openapi))
        .fallback(dispatch)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            bound_in_flight,
        ))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// The OpenAPI document of the whole API (`openapi.json` at the
/// repository's root), compiled into the binary.
pub const OPENAPI: &str = include_str!("../../../openapi.json");

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// Cache counters in the Prometheus text format.
async fn render_metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.inner.metrics.render(),
    )
        .into_response()
}

/// Admits a request only while a permit is free; otherwise 503 at once.
async fn bound_in_flight(
    State(state): State<AppState>,
    request: HttpRequest,
    next: Next,
) -> Response {
    match state.inner.in_flight.clone().try_acquire_owned() {
        Ok(_permit) => next.run(request).await,
        Err(_) => AppError::Overloaded.into_response(),
    }
}

/// Hands the request to the component routed for its path, with the
/// principal of its bearer token if it has one. An unknown or malformed
/// token is refused here, before any component runs.
pub(super) async fn dispatch(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AppError> {
    let path = uri.path();
    let component = state
        .inner
        .registry
        .resolve(path)
        .ok_or_else(|| AppError::NotFound(path.to_string()))?;
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            AppError::PayloadTooLarge(state.inner.limits.max_body_bytes)
        } else {
            AppError::BadRequest(format!("could not read the request body: {rejection}"))
        }
    })?;
    let principal = match headers.get(header::AUTHORIZATION) {
        None => None,
        Some(value) => {
            let token = auth::bearer_token(value.as_bytes())?;
            Some(auth::principal(state.inner.db.as_ref(), token).await?)
        }
    };
    let request = Request {
        method: method.as_str().to_string(),
        path: path.to_string(),
        query: uri
            .query()
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default(),
        headers: headers
            .iter()
            .filter(|(name, _)| *name != header::AUTHORIZATION)
            .map(|(name, value)| {
                (
                    name.as_str().to_string(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect(),
        // Reuses the buffer when it is not shared: no copy on the way in.
        body: body.into(),
        principal,
    };
    let response = state.inner.runtime.invoke(&component, request).await?;
    into_http(response, &component.name)
}

/// Turns a component's response into an HTTP one, unchanged except that a
/// missing `content-type` becomes `application/json` (but for a 304).
fn into_http(response: ComponentResponse, component: &str) -> Result<Response, AppError> {
    let status = StatusCode::from_u16(response.status).map_err(|_| AppError::ComponentFailed)?;
    let mut out = (status, response.body).into_response();
    let out_headers = out.headers_mut();
    out_headers.remove(header::CONTENT_TYPE);
    for (name, value) in response.headers {
        match (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) {
            (Ok(n), Ok(v)) => {
                out_headers.append(n, v);
            }
            _ => {
                tracing::error!(component, header = %name, "component returned an invalid header");
                return Err(AppError::ComponentFailed);
            }
        }
    }
    // A 304 has no body to describe.
    if status != StatusCode::NOT_MODIFIED && !out_headers.contains_key(header::CONTENT_TYPE) {
        out_headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    Ok(out)
}
