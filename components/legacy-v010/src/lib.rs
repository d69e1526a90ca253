//! Test-only: a handler built against the contract `marketplace:host@0.1.0`
//! (`wit/0.1.0`) on purpose, and kept there, to prove that the host still
//! serves components built before 0.2.0. It does not use the guest kit,
//! which follows the current contract. The last path segment chooses:
//!
//! - `read`: the category slugs from the database, through the cache
//!   (`x-cache: HIT` or `MISS`), stored with the tag `categories`;
//! - `write`: a one-statement transaction in the 0.1.0 shape (no
//!   `invalidates` argument) that changes nothing, then `invalidate-tags`
//!   on `categories`;
//! - `log`: one call of the log import, answered 204.

// Generated code: lifting a record of many fields takes many arguments.
#[allow(clippy::too_many_arguments)]
mod bindings {
    wit_bindgen::generate!({
        world: "handler",
        path: "../../wit/0.1.0",
    });
}

use bindings::marketplace::host::db::{self, DbError, Statement, Value};
use bindings::marketplace::host::types::{Header, Request, Response};
use bindings::marketplace::host::{cache, log};

const KEY: &str = "legacy:categories";
const TAG: &str = "categories";

struct Legacy;

impl bindings::Guest for Legacy {
    fn handle(req: Request) -> Response {
        match req.path.rsplit('/').next().unwrap_or_default() {
            "read" => read(),
            "write" => write(&req),
            "log" => {
                log::log(log::Level::Info, "legacy-v010: hello from 0.1.0");
                respond(204, None, Vec::new())
            }
            _ => json(404, None, &serde_json::json!({ "error": "unknown action" })),
        }
    }
}

/// Cache-aside over the category slugs.
fn read() -> Response {
    if let Some(body) = cache::get(KEY) {
        return respond(200, Some("HIT"), body);
    }
    let rows = match db::query("SELECT slug, name FROM categories ORDER BY slug", &[]) {
        Ok(rows) => rows,
        Err(e) => return db_error(e),
    };
    let slugs: Vec<String> = rows
        .rows
        .into_iter()
        .filter_map(|row| match row.values.into_iter().next() {
            Some(Value::Text(slug)) => Some(slug),
            _ => None,
        })
        .collect();
    let body = serde_json::to_vec(&serde_json::json!({ "categories": slugs }))
        .expect("a list of strings serializes");
    cache::set(KEY, &body, 60, &[TAG.into()]);
    respond(200, Some("MISS"), body)
}

/// A harmless write in a 0.1.0 transaction, then the tag invalidation.
fn write(req: &Request) -> Response {
    let slug = req
        .query
        .iter()
        .find(|(k, _)| k == "slug")
        .map_or("coding", |(_, v)| v.as_str());
    let statement = Statement {
        sql: "UPDATE categories SET description = description WHERE slug = $1".into(),
        params: vec![Value::Text(slug.into())],
    };
    // 0.1.0: `transaction(statements)`, one argument.
    if let Err(e) = db::transaction(&[statement]) {
        return db_error(e);
    }
    cache::invalidate_tags(&[TAG.into()]);
    json(200, None, &serde_json::json!({ "ok": true }))
}

fn db_error(e: DbError) -> Response {
    let (status, kind, message) = match e {
        DbError::Unavailable(m) => (503, "unavailable", m),
        DbError::ConstraintViolation(m) => (500, "constraint_violation", m),
        DbError::Timeout(m) => (503, "timeout", m),
        DbError::Other(m) => (500, "other", m),
    };
    json(
        status,
        None,
        &serde_json::json!({ "error": { "kind": kind, "message": message } }),
    )
}

fn json(status: u16, x_cache: Option<&str>, body: &serde_json::Value) -> Response {
    respond(status, x_cache, body.to_string().into_bytes())
}

fn respond(status: u16, x_cache: Option<&str>, body: Vec<u8>) -> Response {
    let mut headers = vec![Header {
        name: "content-type".into(),
        value: "application/json".into(),
    }];
    if let Some(value) = x_cache {
        headers.push(Header {
            name: "x-cache".into(),
            value: value.into(),
        });
    }
    Response {
        status,
        headers,
        body,
    }
}

bindings::export!(Legacy with_types_in bindings);
