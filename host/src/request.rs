//! The request types every layer shares: an HTTP request as a component
//! sees it, its authenticated principal, and a component's response. They
//! belong to no layer: `http` builds them, `auth` makes principals, and
//! `runtime` hands them to components (it re-exports them).

/// A principal resolved by the host from a bearer token.
#[derive(Debug, Clone, PartialEq)]
pub struct Principal {
    pub user_id: String,
    pub workspace_ids: Vec<String>,
}

/// An HTTP request as handed to a component.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub method: http::Method,
    /// The path, then `?` and the raw query string when there is a
    /// non-empty one, as sent (not percent-decoded): what a component gets
    /// as its request's `target`, moved there, not copied.
    pub target: String,
    /// Its headers, in the order received. The runtime never shows a
    /// component `authorization` (the host authenticates).
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
    pub principal: Option<Principal>,
}

impl Request {
    /// A request for `method` and `target` (path and query string, as a
    /// client writes it; a `?` with no query after it is dropped), with no
    /// headers, no body and no principal.
    pub fn new(method: http::Method, target: &str) -> Self {
        let target = match target.split_once('?') {
            Some((path, "")) => path,
            _ => target,
        };
        Request {
            method,
            target: target.to_string(),
            ..Request::default()
        }
    }

    /// The path, without the query string.
    pub fn path(&self) -> &str {
        split_target(&self.target).0
    }

    /// The raw query string, without the `?`; empty when there is none.
    pub fn query(&self) -> &str {
        split_target(&self.target).1
    }
}

/// The path and the query string of a request's `target` (the query empty
/// when it has none).
pub fn split_target(target: &str) -> (&str, &str) {
    target.split_once('?').unwrap_or((target, ""))
}

/// A component's response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// In the order the component gave them.
    pub headers: Vec<(String, String)>,
    /// The `ETag` header, when the component gave it apart from `headers`
    /// (contract 0.2.0); sent after them.
    pub etag: Option<String>,
    /// The `X-Cache` header, when the component gave it apart from
    /// `headers` (or the host labelled the response stale); sent after them.
    pub cache: Option<CacheStatus>,
    pub body: Vec<u8>,
}

impl Response {
    /// The `X-Cache` header it will be sent with, if any.
    pub fn x_cache(&self) -> Option<&str> {
        match self.cache {
            Some(cache) => Some(cache.as_str()),
            None => self
                .headers
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case("x-cache"))
                .map(|(_, value)| value.as_str()),
        }
    }
}

/// What a response's `X-Cache` header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Answered from a cache entry.
    Hit,
    /// Computed, and stored.
    Miss,
    /// Made from entries past their TTL (the host labels these).
    Stale,
}

impl CacheStatus {
    /// The header's value.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "HIT",
            CacheStatus::Miss => "MISS",
            CacheStatus::Stale => "STALE",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Request;

    #[test]
    fn a_request_keeps_its_target_but_a_question_mark_with_no_query() {
        let target = |t| Request::new(http::Method::GET, t).target;
        assert_eq!(target("/x"), "/x");
        assert_eq!(target("/x?"), "/x");
        assert_eq!(target("/x?a=1"), "/x?a=1");
        // Only a `?` that ends an empty query goes.
        assert_eq!(target("/x?q=what?"), "/x?q=what?");
        assert_eq!(target("/x??"), "/x??");
        let r = Request::new(http::Method::GET, "/x?q=what?");
        assert_eq!((r.path(), r.query()), ("/x", "q=what?"));
        let r = Request::new(http::Method::GET, "/x");
        assert_eq!((r.path(), r.query()), ("/x", ""));
    }
}
