//! Guest-side kit shared by every handler component, so that endpoint code
//! stays short.
//!
//! - [`bindings`]: the `handler` world, generated once here by wit-bindgen.
//!   Components export themselves with [`export_handler!`].
//! - [`Query`]: query parameters, split and decoded from the request's raw
//!   query string, with defaults, ranges and choices; a bad one is a 400
//!   naming it.
//! - [`headers`]: the request's headers, read on demand (the host lowers
//!   none into the component unasked).
//! - [`Key`]: cache keys whose parts are encoded so that different
//!   parameter sets never share one.
//! - [`json_body`]: request bodies parsed into a type; a bad one is a 400
//!   naming the field.
//! - [`json`], [`error`], [`db_error`]: responses in the API's JSON shapes.
//! - [`with_cache`]: cache-aside over the `cache` import, mirroring the
//!   original service's `withCache(key, ttl, tags, compute)`, with an ETag;
//!   a hit's body is sent from the host's copy of the entry, never read in;
//!   its typed ETag lets the host answer a matching `If-None-Match` with
//!   304 ([`conditional`] does it for an ETag in the header list).
//! - [`RowView`]: typed access to result rows by column name.
//! - [`Filter`]: a listing's `WHERE`, `COUNT` and paging, with numbered
//!   placeholders; [`page_json`] its JSON page.
//! - [`Ttl`]: the TTL constants of the spec.

#[cfg(any(target_arch = "wasm32", test))]
mod alloc;
mod body;
mod cached;
mod filter;
#[cfg(any(target_arch = "wasm32", test))]
mod memcmp;
mod params;

pub use body::{invalid_field, json_body, write_request};
pub use cache_entry::{Key, find_byte};
pub use cached::{cache_fill, cache_hit, conditional, etag_of, with_cache};
pub use filter::{Filter, or_db_error, page_json};
pub use params::{Param, Query};

// Generated code: lifting a record of many fields takes many arguments.
#[allow(clippy::too_many_arguments)]
pub mod bindings {
    //! Generated bindings of the `handler` world. Private to the guest kit in
    //! spirit: components use the names re-exported at the crate root.
    wit_bindgen::generate!({
        world: "handler",
        path: "../../wit",
        pub_export_macro: true,
        export_macro_name: "export_handler",
        default_bindings_module: "guest::bindings",
    });
}

/// The component's allocator (see `alloc.rs`).
#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: alloc::SmallBlocks = alloc::SmallBlocks::new();

pub use bindings::Guest as Handler;
pub use bindings::export_handler;
pub use bindings::marketplace::host::cache;
pub use bindings::marketplace::host::db::{self, DbError, Value};
pub use bindings::marketplace::host::headers;
pub use bindings::marketplace::host::log::{self, Level};
pub use bindings::marketplace::host::types::{
    Body, CacheStatus, EntrySlice, Header, Method, Principal, Request, Response,
};

/// The request's parts as handlers use them: the contract carries the path
/// and the query string as one target, and a method's name only when it
/// is not a common one.
impl Request {
    /// The method's name, as sent: `GET`, `POST`, ...
    pub fn method(&self) -> &str {
        match &self.method {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Patch => "PATCH",
            Method::Options => "OPTIONS",
            Method::Other(other) => other,
        }
    }

    /// The path, without the query string; percent-decoding not applied.
    pub fn path(&self) -> &str {
        &self.target[..self.query_mark()]
    }

    /// The raw query string, without the `?` and not percent-decoded
    /// (`a=1&b=x%20y`); empty when there is none. [`Query`] splits and
    /// decodes it.
    pub fn query(&self) -> &str {
        self.target.get(self.query_mark() + 1..).unwrap_or_default()
    }

    /// Where the `?` before the query string is in the target (its length
    /// when there is none).
    fn query_mark(&self) -> usize {
        let target = self.target.as_bytes();
        find_byte(target, b'?').unwrap_or(target.len())
    }

    /// The raw body; empty when the request has none.
    pub fn body(&self) -> &[u8] {
        self.body.as_deref().unwrap_or_default()
    }
}

use serde::Serialize;

/// Cache lifetimes of the spec, in seconds.
pub struct Ttl;

impl Ttl {
    pub const SHORT: u32 = 60;
    pub const MEDIUM: u32 = 300;
    pub const LONG: u32 = 1800;
    pub const VERY_LONG: u32 = 3600;
}

/// A JSON response with `status` and `body` serialized.
pub fn json<T: Serialize + ?Sized>(status: u16, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => raw_json(status, bytes),
        Err(e) => error(500, "internal", &format!("response not serializable: {e}")),
    }
}

/// A response whose body is already JSON bytes. It names no
/// `content-type`: the host's default, `application/json`, is sent (an
/// allocation and a string across the boundary less on every response).
pub fn raw_json(status: u16, body: Vec<u8>) -> Response {
    Response {
        status,
        headers: Vec::new(),
        etag: None,
        cache: None,
        body: Body::Bytes(body),
    }
}

/// The API's error shape: `{"error": {"code": …, "message": …}}`.
pub fn error(status: u16, code: &str, message: &str) -> Response {
    let body = serde_json::json!({ "error": { "code": code, "message": message } });
    raw_json(status, body.to_string().into_bytes())
}

/// A response for a database error: 503 with `Retry-After` when the
/// database is unavailable or timed out, 500 otherwise. The detail goes to
/// the host's log, not to the client.
pub fn db_error(err: &DbError) -> Response {
    match err {
        DbError::Unavailable(m) | DbError::Timeout(m) => {
            log::log(Level::Warn, &format!("database unavailable: {m}"));
            let mut r = error(
                503,
                "database_unavailable",
                "the database is unavailable; retry shortly",
            );
            r.headers.push(header("retry-after", "5"));
            r
        }
        DbError::ConstraintViolation(m) | DbError::Other(m) => {
            log::log(Level::Error, &format!("database error: {m}"));
            error(500, "internal", "internal error")
        }
    }
}

/// A header with a lower-case name.
pub fn header(name: &str, value: &str) -> Header {
    Header {
        name: name.to_string(),
        value: value.to_string(),
    }
}

/// Typed access to a result row by column name.
pub struct RowView<'a> {
    columns: &'a [String],
    values: &'a [Value],
}

impl<'a> RowView<'a> {
    /// Views of every row of `rows`.
    pub fn all(rows: &'a db::Rows) -> impl Iterator<Item = RowView<'a>> {
        rows.rows.iter().map(move |r| RowView {
            columns: &rows.columns,
            values: &r.values,
        })
    }

    /// The value of `column`, or `Value::Null` when there is no such column.
    pub fn get(&self, column: &str) -> &Value {
        self.columns
            .iter()
            .position(|c| c == column)
            .and_then(|i| self.values.get(i))
            .unwrap_or(&Value::Null)
    }

    /// `column` as text; empty when null or not text.
    pub fn text(&self, column: &str) -> String {
        match self.get(column) {
            Value::Text(s) | Value::Json(s) => s.clone(),
            _ => String::new(),
        }
    }

    /// `column` as a boolean: SQLite gives booleans back as integers.
    pub fn boolean(&self, column: &str) -> bool {
        match self.get(column) {
            Value::Boolean(b) => *b,
            Value::Int(i) => *i != 0,
            _ => false,
        }
    }

    /// `column` as a float; 0 when null or not numeric.
    pub fn float(&self, column: &str) -> f64 {
        match self.get(column) {
            Value::Float(f) => *f,
            Value::Int(i) => *i as f64,
            _ => 0.0,
        }
    }

    /// `column`, JSON stored as text, parsed; `null` when it does not parse.
    pub fn json(&self, column: &str) -> serde_json::Value {
        serde_json::from_str(&self.text(column)).unwrap_or(serde_json::Value::Null)
    }

    /// `column`, milliseconds since the epoch, as an RFC 3339 UTC time.
    pub fn time(&self, column: &str) -> String {
        rfc3339(self.int(column))
    }

    /// `column` as an integer; 0 when null or not numeric.
    pub fn int(&self, column: &str) -> i64 {
        match self.get(column) {
            Value::Int(i) => *i,
            Value::Float(f) => *f as i64,
            Value::Boolean(b) => *b as i64,
            _ => 0,
        }
    }
}

/// `ms` milliseconds since the Unix epoch as an RFC 3339 UTC time with
/// millisecond precision, such as `2026-11-23T09:30:00.000Z`.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The host's wall clock, in milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A new random identifier: `prefix`, a dash and 32 hex digits.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// 404 `not_found`.
pub fn not_found(message: &str) -> Response {
    error(404, "not_found", message)
}

/// 405 `method_not_allowed` with the `Allow` header.
pub fn method_not_allowed(allowed: &[&str]) -> Response {
    let mut r = error(
        405,
        "method_not_allowed",
        &format!("this resource allows {}", allowed.join(", ")),
    );
    r.headers.push(header("allow", &allowed.join(", ")));
    r
}

/// The caller, or 401 `unauthorized` when the request carried no token.
pub fn require_principal(req: &Request) -> Result<&Principal, Response> {
    req.principal.as_ref().ok_or_else(|| {
        let mut r = error(
            401,
            "unauthorized",
            "this endpoint needs an `Authorization: Bearer <token>` header",
        );
        r.headers.push(header("www-authenticate", "Bearer"));
        r
    })
}

/// One path segment, percent-decoded (borrowed when there was nothing to
/// decode); none when it does not decode to UTF-8.
pub fn path_segment(segment: &str) -> Option<std::borrow::Cow<'_, str>> {
    // Most have nothing to decode, and are UTF-8 already.
    if find_byte(segment.as_bytes(), b'%').is_none() {
        return Some(std::borrow::Cow::Borrowed(segment));
    }
    percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .ok()
}

/// A `LIKE` pattern (for `ESCAPE '\'`) matching `text` anywhere, with
/// LIKE's wildcards in `text` taken literally. `text` is lower-cased: compare
/// it with `LOWER(column)` for a case-insensitive search.
pub fn contains_pattern(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for c in text.to_lowercase().chars() {
        if matches!(c, '\\' | '%' | '_') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}
