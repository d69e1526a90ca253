//! The database capability: the `Database` trait that the `db` import is
//! served from, its typed values and errors, and its backends.
//!
//! - `sqlite`: the embedded default (sqlx, a file under `./data`).
//!
//! Migrations in `host/migrations` are written once in the SQL common to
//! PostgreSQL and SQLite, and run at start.
//!
//! **Invariant:** parameters are always bound, never interpolated into SQL.

mod sqlite;

pub use sqlite::SqliteDatabase;

use async_trait::async_trait;
use std::sync::Arc;

/// A typed SQL value: a parameter or a result cell.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    Bytes(Vec<u8>),
    /// JSON, as its text.
    Json(String),
    /// Milliseconds since the Unix epoch, UTC.
    Timestamp(i64),
}

/// A query's result: column names and rows of values in column order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rows {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
}

/// One statement of a transaction.
#[derive(Debug, Clone)]
pub struct Statement {
    pub sql: String,
    pub params: Vec<Value>,
}

/// Why a database call failed. Messages are for logs: they never contain
/// parameter values.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DbError {
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("constraint violation: {0}")]
    Constraint(String),
    #[error("statement timed out: {0}")]
    Timeout(String),
    #[error("database error: {0}")]
    Other(String),
}

/// SQL access with positional `$N` parameters on every engine.
#[async_trait]
pub trait Database: Send + Sync + 'static {
    /// Runs a statement that returns rows.
    async fn query(&self, sql: &str, params: &[Value]) -> Result<Rows, DbError>;

    /// Runs a statement for its effect; returns the rows affected.
    async fn execute(&self, sql: &str, params: &[Value]) -> Result<u64, DbError>;

    /// Runs `statements` in one transaction, all or nothing; returns each
    /// statement's rows.
    async fn transaction(&self, statements: &[Statement]) -> Result<Vec<Rows>, DbError>;
}

/// Opens the database named by `url` (`sqlite://…`) and runs migrations.
pub async fn connect(url: &str) -> anyhow::Result<Arc<dyn Database>> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteDatabase::open(url).await?))
    } else {
        anyhow::bail!("unsupported DATABASE_URL scheme in {url:?}: expected sqlite://…")
    }
}
