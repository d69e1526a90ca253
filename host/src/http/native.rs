//! The benchmarks' baseline: the cache-hit path of two endpoints written as
//! native Rust handlers in the host, mounted under `/native` only with
//! `--native-baseline`.
//!
//! `GET /native/api/marketplace` and `GET /native/api/marketplace/agents/{id}`
//! do what the `marketplace` component does on a hit, with the same cache
//! and the same bytes: validate the parameters, build the same key and
//! split the entry with the same code (the `cache-entry` crate, which the
//! guest kit uses too), read the entry in the component's cache namespace,
//! answer 304 to a matching `If-None-Match`, else 200
//! with `ETag` and `X-Cache: HIT`. Anything else (a miss, a bad parameter)
//! is handed to the component itself, so that responses are byte for byte
//! the component's. Comparing the two paths under load measures what the
//! sandbox costs per request.

use super::{AppError, AppState, X_CACHE, serve_component};
use crate::cache::{Stamp, scoped};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use cache_entry::{Key, has_control, if_none_match_names, longer_than, query_pairs, split_entry};
use std::borrow::Cow;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/native/api/marketplace", get(browse))
        .route("/native/api/marketplace/agents/{id}", get(details))
}

const SORTS: &[&str] = &["trending", "popular", "newest", "rating", "name"];

/// The browse key for `pairs`, or `None` when a parameter is not valid
/// (the component then answers, with its 400).
fn browse_key(pairs: &[(Cow<'_, str>, Cow<'_, str>)]) -> Option<String> {
    const KNOWN: &[&str] = &["query", "category", "featured", "sortBy", "limit", "offset"];
    let mut values: [Option<&str>; 6] = [None; 6];
    for (k, v) in pairs {
        let i = KNOWN.iter().position(|n| n == k)?;
        if values[i].is_some() {
            return None;
        }
        values[i] = Some(v);
    }
    // Empty free text counts as absent; an empty typed value is the
    // component's 400.
    let text = |i: usize| match values[i].filter(|v| !v.is_empty()) {
        Some(v) if longer_than(v, 200) || has_control(v) => Err(()),
        other => Ok(other),
    };
    let (query, category) = (text(0).ok()?, text(1).ok()?);
    let featured = match values[2] {
        None => None,
        Some(v @ ("true" | "false")) => Some(v),
        Some(_) => return None,
    };
    let sort = match values[3] {
        None => "trending",
        Some(v) => SORTS.iter().find(|s| **s == v)?,
    };
    let int = |i: usize, default: i64, min: i64, max: i64| match values[i] {
        None => Some(default),
        Some(v) => v.parse().ok().filter(|n| (min..=max).contains(n)),
    };
    let limit = int(4, 50, 1, 100)?;
    let offset = int(5, 0, 0, 1_000_000)?;
    Some(
        Key::new("marketplace:agents")
            .text(query)
            .text(category)
            .text(featured)
            .text(Some(sort))
            .int(limit)
            .int(offset)
            .build(),
    )
}

async fn browse(State(state): State<AppState>, request: Request) -> Result<Response, AppError> {
    // As `dispatch` does: the extractors of the URI and headers clone them.
    let (parts, _) = request.into_parts();
    let (uri, headers) = (parts.uri, parts.headers);
    // Split and decoded as the guest kit's `Query` does it.
    let pairs = query_pairs(uri.query().unwrap_or_default());
    let key = browse_key(&pairs);
    hit_or_component(state, key, uri, headers).await
}

async fn details(State(state): State<AppState>, request: Request) -> Result<Response, AppError> {
    // As `dispatch` does: the extractors of the URI and headers clone them.
    let (parts, _) = request.into_parts();
    let (uri, headers) = (parts.uri, parts.headers);
    let id = uri
        .path()
        .rsplit('/')
        .next()
        .and_then(|s| percent_encoding::percent_decode_str(s).decode_utf8().ok())
        .filter(|id| !id.is_empty() && id.len() <= 200 && uri.query().is_none());
    let key = id.map(|id| Key::new("marketplace:agent").text(Some(&id)).build());
    hit_or_component(state, key, uri, headers).await
}

/// Answers from the cache entry under `key`, or hands the request to the
/// component at the same path without `/native`.
async fn hit_or_component(
    state: AppState,
    key: Option<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let path_and_query = uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/")
        .trim_start_matches("/native");
    let path = uri.path().trim_start_matches("/native");
    let component = state
        .inner
        .registry
        .resolve(path)
        .ok_or_else(|| AppError::NotFound(format!("no component answers {path}")))?;
    // Admitted as the component's own requests are.
    let _admission = state.admit(&component.name)?;
    if let Some(key) = key {
        // The component's entries live in its cache namespace, as the
        // runtime scopes them.
        let key = scoped(&component.cache_namespace, &key);
        let cache = &state.inner.runtime.capabilities().cache;
        if let Some(entry) = cache.get(&key, &mut Stamp::default()).await
            && let Some(newline) = split_entry(&entry)
        {
            let etag = std::str::from_utf8(&entry[newline + 1..])
                .map_err(|_| AppError::ComponentFailed)?;
            // Every line, as the host reads it for a component's typed
            // ETag (`runtime::not_modified`).
            let not_modified = headers
                .get_all(header::IF_NONE_MATCH)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .any(|v| if_none_match_names(v, etag));
            let etag = HeaderValue::from_str(etag).map_err(|_| AppError::ComponentFailed)?;
            let hit = HeaderValue::from_static("HIT");
            if not_modified {
                return Ok((
                    StatusCode::NOT_MODIFIED,
                    [(header::ETAG, etag), (X_CACHE, hit)],
                )
                    .into_response());
            }
            let json = HeaderValue::from_static("application/json");
            return Ok((
                [
                    (header::CONTENT_TYPE, json),
                    (header::ETAG, etag),
                    (X_CACHE, hit),
                ],
                Bytes::copy_from_slice(&entry[..newline]),
            )
                .into_response());
        }
    }
    let uri: Uri = path_and_query
        .parse()
        .map_err(|_| AppError::BadRequest("unparsable path".into()))?;
    let authorization = headers.get(header::AUTHORIZATION).cloned();
    let body = Bytes::new();
    serve_component(
        &state,
        &component,
        Method::GET,
        &uri,
        headers,
        authorization,
        body,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::browse_key;

    fn pairs(q: &str) -> Vec<(std::borrow::Cow<'_, str>, std::borrow::Cow<'_, str>)> {
        cache_entry::query_pairs(q)
    }

    #[test]
    fn browse_keys_are_the_components() {
        assert_eq!(
            browse_key(&pairs("")).unwrap(),
            "marketplace:agents:-:-:-:trending:50:0"
        );
        assert_eq!(
            browse_key(&pairs("query=a:b&featured=true&limit=7&sortBy=name")).unwrap(),
            "marketplace:agents:a%3Ab:-:true:name:7:0"
        );
        assert_eq!(browse_key(&pairs("limit=0")), None);
        assert_eq!(browse_key(&pairs("limit=")), None);
        assert_eq!(
            browse_key(&pairs("query=&category=")).unwrap(),
            "marketplace:agents:-:-:-:trending:50:0"
        );
        assert_eq!(browse_key(&pairs("x=1")), None);
    }
}
