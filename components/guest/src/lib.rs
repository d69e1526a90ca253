//! Guest-side kit shared by every handler component.
//!
//! - [`bindings`]: the `handler` world, generated once here by wit-bindgen.
//!   Components export themselves with [`export_handler!`].
//! - [`json`], [`error`]: responses in the API's JSON shapes.
//! - [`with_cache`]: cache-aside over the `cache` import, mirroring the
//!   original service's `withCache(key, ttl, tags, compute)`.
//! - [`Ttl`]: the TTL constants of the spec.

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

pub use bindings::Guest as Handler;
pub use bindings::export_handler;
pub use bindings::marketplace::host::cache;
pub use bindings::marketplace::host::db::{self, DbError, Value};
pub use bindings::marketplace::host::log::{self, Level};
pub use bindings::marketplace::host::types::{Header, Principal, Request, Response};

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

/// A response whose body is already JSON bytes.
pub fn raw_json(status: u16, body: Vec<u8>) -> Response {
    Response {
        status,
        headers: vec![header("content-type", "application/json")],
        body,
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

/// Cache-aside: the bytes under `key` if cached (`X-Cache: HIT`); otherwise
/// `compute` runs, and a 200 result is stored under `key` for `ttl` seconds
/// with `tags` before being returned (`X-Cache: MISS`). Non-200 responses
/// are never cached.
pub fn with_cache(
    key: &str,
    ttl: u32,
    tags: &[&str],
    compute: impl FnOnce() -> Response,
) -> Response {
    if let Some(body) = cache::get(key) {
        let mut r = raw_json(200, body);
        r.headers.push(header("x-cache", "HIT"));
        return r;
    }
    let mut r = compute();
    if r.status == 200 {
        let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
        cache::set(key, &r.body, ttl, &tags);
        r.headers.push(header("x-cache", "MISS"));
    }
    r
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
