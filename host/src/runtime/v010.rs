//! Contract 0.1.0's imports, served through the current contract's: a
//! component built against 0.1.0 loads and runs unchanged. Its `cache` and
//! `log` are the current ones; its `db.transaction` is the current one with
//! no tags to invalidate (a 0.1.0 component invalidates with
//! `cache.invalidate-tags` after the commit, as it always did).

use super::bindings::marketplace::host as now;
use super::bindings::v010::marketplace::host::{cache, db, log, types};
use super::invocation::Invocation;

impl types::Host for Invocation {}

impl cache::Host for Invocation {
    async fn get(&mut self, key: String) -> Option<Vec<u8>> {
        now::cache::Host::get(self, key).await
    }

    async fn set(&mut self, key: String, value: Vec<u8>, ttl_seconds: u32, tags: Vec<String>) {
        now::cache::Host::set(self, key, value, ttl_seconds, tags).await
    }

    async fn delete(&mut self, key: String) {
        now::cache::Host::delete(self, key).await
    }

    async fn invalidate_tags(&mut self, tags: Vec<String>) {
        now::cache::Host::invalidate_tags(self, tags).await
    }
}

impl log::Host for Invocation {
    async fn log(&mut self, level: log::Level, message: String) {
        let level = match level {
            log::Level::Trace => now::log::Level::Trace,
            log::Level::Debug => now::log::Level::Debug,
            log::Level::Info => now::log::Level::Info,
            log::Level::Warn => now::log::Level::Warn,
            log::Level::Error => now::log::Level::Error,
        };
        now::log::Host::log(self, level, message).await
    }
}

impl db::Host for Invocation {
    async fn query(
        &mut self,
        sql: String,
        params: Vec<db::Value>,
    ) -> Result<db::Rows, db::DbError> {
        let params = params.into_iter().map(value).collect();
        now::db::Host::query(self, sql, params)
            .await
            .map(rows)
            .map_err(error)
    }

    async fn execute(&mut self, sql: String, params: Vec<db::Value>) -> Result<u64, db::DbError> {
        let params = params.into_iter().map(value).collect();
        now::db::Host::execute(self, sql, params)
            .await
            .map_err(error)
    }

    async fn transaction(
        &mut self,
        statements: Vec<db::Statement>,
    ) -> Result<Vec<db::Rows>, db::DbError> {
        let statements = statements
            .into_iter()
            .map(|s| now::db::Statement {
                sql: s.sql,
                params: s.params.into_iter().map(value).collect(),
            })
            .collect();
        now::db::Host::transaction(self, statements, Vec::new())
            .await
            .map(|all| all.into_iter().map(rows).collect())
            .map_err(error)
    }
}

fn value(v: db::Value) -> now::db::Value {
    match v {
        db::Value::Null => now::db::Value::Null,
        db::Value::Boolean(b) => now::db::Value::Boolean(b),
        db::Value::Int(i) => now::db::Value::Int(i),
        db::Value::Float(f) => now::db::Value::Float(f),
        db::Value::Text(s) => now::db::Value::Text(s),
        db::Value::Bytes(b) => now::db::Value::Bytes(b),
        db::Value::Json(s) => now::db::Value::Json(s),
        db::Value::Timestamp(t) => now::db::Value::Timestamp(t),
    }
}

fn value_back(v: now::db::Value) -> db::Value {
    match v {
        now::db::Value::Null => db::Value::Null,
        now::db::Value::Boolean(b) => db::Value::Boolean(b),
        now::db::Value::Int(i) => db::Value::Int(i),
        now::db::Value::Float(f) => db::Value::Float(f),
        now::db::Value::Text(s) => db::Value::Text(s),
        now::db::Value::Bytes(b) => db::Value::Bytes(b),
        now::db::Value::Json(s) => db::Value::Json(s),
        now::db::Value::Timestamp(t) => db::Value::Timestamp(t),
    }
}

fn rows(r: now::db::Rows) -> db::Rows {
    db::Rows {
        columns: r.columns,
        rows: r
            .rows
            .into_iter()
            .map(|row| db::Row {
                values: row.values.into_iter().map(value_back).collect(),
            })
            .collect(),
    }
}

fn error(e: now::db::DbError) -> db::DbError {
    match e {
        now::db::DbError::Unavailable(m) => db::DbError::Unavailable(m),
        now::db::DbError::ConstraintViolation(m) => db::DbError::ConstraintViolation(m),
        now::db::DbError::Timeout(m) => db::DbError::Timeout(m),
        now::db::DbError::Other(m) => db::DbError::Other(m),
    }
}
