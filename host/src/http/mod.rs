//! The HTTP front: `app` builds the axum `Router` that serves `/healthz`,
//! `/metrics`, `/openapi.json` and `/admin` under a small bound of their own,
//! and dispatches every other path to the component its route names: the
//! body is read (within its size limit and its time allowance), then the
//! request is admitted (a permit of the in-flight bound and of the
//! component's share of it), the bearer token resolved, and the component
//! invoked.
//!
//! **Invariant:** past `max_in_flight` requests, or past a component's share
//! of it, the host answers 503 with `Retry-After` at once; it never queues
//! without bound. A request holds no permit while its body arrives, so slow
//! clients cannot take the bound from others.

mod admin;
mod error;
mod native;

pub use error::AppError;

use crate::auth;
use crate::db::Database;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::runtime::{LoadedComponent, Request, Response as ComponentResponse, Runtime};
use crate::warm::Warmer;
use axum::body::{Body, Bytes};
use axum::extract::{Request as HttpRequest, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use sha2::Digest as _;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Requests to `/healthz`, `/metrics`, `/openapi.json` and `/admin` handled
/// at once: their own bound, apart from the API's.
const OPS_IN_FLIGHT: usize = 8;

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
    /// Longest a client may take to send a request's headers.
    pub header_timeout: Duration,
    /// Time a request body may take on top of its transfer at
    /// `min_body_rate`; past the allowance the request is 408.
    pub body_timeout: Duration,
    /// Slowest accepted body transfer, in bytes per second: a body of N
    /// bytes may take `body_timeout + N / min_body_rate`.
    pub min_body_rate: u64,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: 1 << 20,
            admin_token: None,
            native_baseline: false,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            min_body_rate: 256 << 10,
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
    /// Every capability's metrics, for `/metrics`.
    metrics: Arc<Metrics>,
    /// Counts the anonymous GETs answered through the cache.
    warmer: Arc<Warmer>,
    /// SHA-256 of the admin token; `None` leaves `/admin` unmounted.
    admin_token_hash: Option<Vec<u8>>,
    /// Request size and time limits.
    limits: HttpLimits,
    /// One permit per API request in flight.
    in_flight: Arc<Semaphore>,
    /// Each component's share of `in_flight`, by name: no component may
    /// hold more, so a slow or looping one leaves room for the others.
    shares: HashMap<String, Arc<Semaphore>>,
    /// One permit per operations request (`/metrics`, `/openapi.json`,
    /// `/admin`) in flight.
    ops_in_flight: Arc<Semaphore>,
    /// Bytes of API request bodies being read or held now, one permit a
    /// byte: bodies are read before admission, so this bounds the memory
    /// they take (`max_in_flight` × `max_body_bytes`).
    body_budget: Arc<Semaphore>,
}

impl AppState {
    pub fn new(
        runtime: Arc<Runtime>,
        registry: Arc<Registry>,
        db: Arc<dyn Database>,
        metrics: Arc<Metrics>,
        warmer: Arc<Warmer>,
        limits: HttpLimits,
    ) -> Self {
        let permits = runtime.sandbox().max_in_flight as usize;
        let components = registry.list();
        let share = component_share(permits, components.len());
        let shares = components
            .into_iter()
            .map(|c| (c.name, Arc::new(Semaphore::new(share))))
            .collect();
        let limits_max_body = limits.max_body_bytes.max(1);
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
                warmer,
                admin_token_hash,
                limits,
                in_flight: Arc::new(Semaphore::new(permits)),
                shares,
                ops_in_flight: Arc::new(Semaphore::new(OPS_IN_FLIGHT)),
                body_budget: Arc::new(Semaphore::new(permits * limits_max_body)),
            }),
        }
    }

    /// Admits one request to `component`: a permit of its share and one of
    /// the in-flight bound, or 503 at once.
    pub(super) fn admit(&self, component: &str) -> Result<Admission, AppError> {
        let share = match self.inner.shares.get(component) {
            Some(share) => Some(
                share
                    .clone()
                    .try_acquire_owned()
                    .map_err(|_| AppError::Overloaded)?,
            ),
            None => None,
        };
        let global = self
            .inner
            .in_flight
            .clone()
            .try_acquire_owned()
            .map_err(|_| AppError::Overloaded)?;
        Ok(Admission {
            _share: share,
            _global: global,
        })
    }
}

/// The permits one admitted API request holds until it is answered.
pub(super) struct Admission {
    _share: Option<OwnedSemaphorePermit>,
    _global: OwnedSemaphorePermit,
}

/// How many of `permits` one of `components` components may hold: all of
/// them when it is alone, else three quarters (at least one), so that a
/// quarter of the bound is always left to the others.
fn component_share(permits: usize, components: usize) -> usize {
    if components <= 1 {
        permits
    } else {
        (permits * 3 / 4).max(1)
    }
}

/// The whole HTTP application.
pub fn app(state: AppState) -> Router {
    let admin = if state.inner.admin_token_hash.is_some() {
        admin::routes(state.clone())
    } else {
        Router::new()
    };
    let native = if state.inner.limits.native_baseline {
        native::routes()
    } else {
        Router::new()
    };
    let ops = Router::new()
        .merge(admin)
        .route("/metrics", get(render_metrics))
        .route("/openapi.json", get(openapi))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            bound_ops_in_flight,
        ));
    // `/healthz` is under no bound: it does no work, and a load balancer
    // must see the host alive whatever else is going on.
    Router::new()
        .route("/healthz", get(healthz))
        .merge(ops)
        .merge(native)
        .fallback(dispatch)
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

/// Admits an operations request only while one of their permits is free;
/// otherwise 503 at once. The API's load never takes these permits.
async fn bound_ops_in_flight(
    State(state): State<AppState>,
    request: HttpRequest,
    next: Next,
) -> Response {
    match state.inner.ops_in_flight.clone().try_acquire_owned() {
        Ok(_permit) => next.run(request).await,
        Err(_) => AppError::Overloaded.into_response(),
    }
}

/// The `Content-Length` a request declares, if any.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// Reads `body` whole, refusing it past `max` bytes (413, at once when the
/// declared length says so) or when it does not arrive within its allowance
/// (408): `body_timeout` plus its length at `min_body_rate`.
pub(super) async fn read_body(
    limits: &HttpLimits,
    headers: &HeaderMap,
    body: Body,
    max: usize,
) -> Result<Bytes, AppError> {
    use http_body_util::BodyExt as _;
    let declared = declared_length(headers);
    if declared.is_some_and(|n| n > max as u64) {
        return Err(AppError::PayloadTooLarge(max));
    }
    // No body at all (a GET): nothing to wait for.
    if http_body::Body::size_hint(&body).exact() == Some(0) {
        return Ok(Bytes::new());
    }
    let expected = declared.unwrap_or(max as u64);
    let allowance =
        limits.body_timeout + Duration::from_secs(expected / limits.min_body_rate.max(1));
    let collected =
        tokio::time::timeout(allowance, http_body_util::Limited::new(body, max).collect());
    match collected.await {
        Err(_) => Err(AppError::BodyTimeout(allowance)),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            Err(AppError::PayloadTooLarge(max))
        }
        Ok(Err(e)) => Err(AppError::BadRequest(format!(
            "could not read the request body: {e}"
        ))),
    }
}

/// The header that tells a client without a token apart, for a stable
/// side of a canary. A `HeaderName`, not a `&str`: a lookup by a string
/// parses it first, on every request.
pub const CLIENT_ID: HeaderName = HeaderName::from_static("x-client-id");

/// Hands the request to the component routed for its path: reads the body,
/// then admits the request (so a slow body holds no permit), then serves it.
pub(super) async fn dispatch(
    State(state): State<AppState>,
    request: HttpRequest,
) -> Result<Response, AppError> {
    // Taken apart, not extracted piece by piece: the extractors of the
    // method, URI and headers clone them.
    let (parts, body) = request.into_parts();
    let (method, uri, headers) = (parts.method, parts.uri, parts.headers);
    // A client told apart by its token or client id goes to the same
    // side of a canary on every request.
    let authorization = headers.get(header::AUTHORIZATION);
    let anonymous_get = method == Method::GET && authorization.is_none();
    let client = || {
        authorization
            .or_else(|| headers.get(CLIENT_ID))
            .map(HeaderValue::as_bytes)
    };
    let routed = state
        .inner
        .registry
        .route(uri.path(), client)
        .ok_or_else(|| AppError::NotFound(format!("no component answers {}", uri.path())))?;
    let component = &routed.component;
    let started = std::time::Instant::now();
    // Handed down with the headers, so that it is looked up once.
    let authorization = authorization.cloned();
    let answer = admit_and_serve(
        &state,
        component,
        method,
        &uri,
        headers,
        authorization,
        body,
    )
    .await;
    let status = match &answer {
        Ok(response) => response.status(),
        Err(e) => e.status(),
    };
    // What warming may run again: anonymous GETs answered through the
    // cache.
    if let Ok(response) = &answer
        && anonymous_get
        && status == StatusCode::OK
        && response.headers().contains_key(X_CACHE)
        && let Some(target) = uri.path_and_query()
    {
        state.inner.warmer.record(&component.name, target.as_str());
    }
    state.inner.metrics.requests.record_in(
        &component.metrics,
        &component.name,
        &component.digest,
        status.as_u16(),
        started.elapsed(),
    );
    // A request refused for want of room never reached either version.
    if !matches!(answer, Err(AppError::Overloaded)) {
        state.inner.registry.observe(&routed, status.as_u16());
    }
    answer
}

/// `dispatch` once the component is known.
async fn admit_and_serve(
    state: &AppState,
    component: &Arc<LoadedComponent>,
    method: Method,
    uri: &Uri,
    headers: HeaderMap,
    authorization: Option<HeaderValue>,
    body: Body,
) -> Result<Response, AppError> {
    let max = state.inner.limits.max_body_bytes;
    // The body's room in the budget: its declared length, or the largest
    // it may be. None left: 503 at once, as for the in-flight bound.
    let room = match http_body::Body::size_hint(&body).exact() {
        // No body at all (a GET): nothing to hold.
        Some(0) => 0,
        _ => declared_length(&headers).map_or(max, |n| n.min(max as u64) as usize),
    };
    let _room = match u32::try_from(room) {
        Ok(0) => None,
        Ok(n) => Some(
            state
                .inner
                .body_budget
                .clone()
                .try_acquire_many_owned(n)
                .map_err(|_| AppError::Overloaded)?,
        ),
        Err(_) => return Err(AppError::PayloadTooLarge(max)),
    };
    let body = read_body(&state.inner.limits, &headers, body, max).await?;
    let _admission = state.admit(&component.name)?;
    serve_component(state, component, method, uri, headers, authorization, body).await
}

/// Runs an admitted request through `component`, with the principal of its
/// bearer token if it has one (`authorization`, the header of that name in
/// `headers`, which the caller has looked up already). An unknown or
/// malformed token is refused here, before the component runs.
pub(super) async fn serve_component(
    state: &AppState,
    component: &Arc<LoadedComponent>,
    method: Method,
    uri: &Uri,
    headers: HeaderMap,
    authorization: Option<HeaderValue>,
    body: Bytes,
) -> Result<Response, AppError> {
    let principal = match authorization {
        None => None,
        Some(value) => {
            let token = auth::bearer_token(value.as_bytes())?;
            // Boxed, so that a request without a token, which never
            // needs it, does not carry room for it (moved with the rest).
            Some(Box::pin(auth::principal(state.inner.db.as_ref(), token)).await?)
        }
    };
    let request = Request {
        method,
        target: target_of(uri),
        // Handed over as they are: a component reads those it needs, and
        // never `authorization` (the runtime keeps it from the component).
        headers,
        // Reuses the buffer when it is not shared: no copy on the way in.
        body: body.into(),
        principal,
    };
    let response = state.inner.runtime.serve(component, request).await?;
    into_http(response, &component.name)
}

/// The target a component gets for `uri`: its path, then `?` and the
/// query when there is a non-empty one, as sent; one copy of them.
fn target_of(uri: &Uri) -> String {
    match (uri.query(), uri.path_and_query()) {
        (None | Some(""), _) => uri.path().to_string(),
        // An absolute-form URI with no path (`http://h?q=1`) has `?q=1`
        // here; its path is `/`.
        (Some(_), Some(target)) if target.as_str().starts_with('/') => target.as_str().to_string(),
        (Some(query), _) => format!("{}?{query}", uri.path()),
    }
}

/// The header a cached answer says HIT, MISS or STALE in.
const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// Turns a component's response into an HTTP one, unchanged except that a
/// missing `content-type` becomes `application/json` (but for a 304).
fn into_http(response: ComponentResponse, component: &str) -> Result<Response, AppError> {
    let status = StatusCode::from_u16(response.status).map_err(|_| AppError::ComponentFailed)?;
    let mut out = Response::new(Body::from(response.body));
    *out.status_mut() = status;
    let out_headers = out.headers_mut();
    // Room for them all at once, if the map can hold that many (else it
    // grows as they come, and refuses what it cannot hold): the list, the
    // ETag, X-Cache, content-type and the content-length axum adds. A map
    // that grows reallocates twice; on a cache hit that cost more than all
    // of this function (callgrind, BENCHMARKS.md "an eighth run").
    let _ = out_headers.try_reserve(response.headers.len() + 4);
    // Nothing to look up in a map the list left empty (a cache hit's).
    let no_list = response.headers.is_empty();
    for (name, value) in response.headers {
        // The value's buffer is kept, not copied.
        // `x-cache`, on every cached answer, is not a standard name:
        // parsing it would allocate it anew each time.
        let name_parsed = if name == X_CACHE.as_str() {
            Ok(X_CACHE)
        } else {
            HeaderName::try_from(name.as_str())
        };
        match (name_parsed, HeaderValue::try_from(value)) {
            (Ok(n), Ok(v)) => {
                out_headers.append(n, v);
            }
            _ => {
                tracing::error!(component, header = %name, "component returned an invalid header");
                return Err(AppError::ComponentFailed);
            }
        }
    }
    // A 304 has no body to describe. Before the typed headers, so that a
    // cache hit's headers come in the order the native baseline sends
    // them (content-type, etag, x-cache).
    if status != StatusCode::NOT_MODIFIED
        && (no_list || !out_headers.contains_key(header::CONTENT_TYPE))
    {
        out_headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    if let Some(etag) = response.etag {
        // Its buffer is kept, not copied.
        let Ok(value) = HeaderValue::from_maybe_shared(Bytes::from(etag)) else {
            tracing::error!(component, "component returned an invalid ETag");
            return Err(AppError::ComponentFailed);
        };
        out_headers.append(header::ETAG, value);
    }
    if let Some(cache) = response.cache {
        out_headers.append(X_CACHE, HeaderValue::from_static(cache.as_str()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::target_of;
    use http::Uri;

    #[test]
    fn a_component_gets_the_path_and_a_non_empty_query_as_sent() {
        let target = |uri: &str| target_of(&uri.parse::<Uri>().unwrap());
        assert_eq!(target("/api/x"), "/api/x");
        assert_eq!(target("/api/x?"), "/api/x");
        assert_eq!(target("/api/x?a=1&b=%20"), "/api/x?a=1&b=%20");
        assert_eq!(target("/api/x?q=what?"), "/api/x?q=what?");
        assert_eq!(target("http://h/api/x?a=1"), "/api/x?a=1");
        assert_eq!(target("http://h?a=1"), "/?a=1");
        assert_eq!(target("http://h"), "/");
        assert_eq!(target("*"), "*");
    }
}
