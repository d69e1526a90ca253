//! The database capability: the `Database` trait that the `db` import is
//! served from, its typed values and errors, and its backends.
//!
//! - `sqlite`: the embedded default (sqlx, a file under `./data`).
//! - `postgres`: PostgreSQL (sqlx, a lazily connecting pool).
//! - `Gate`: wraps either and answers `Unavailable` until the schema is
//!   migrated and the demo data seeded, so the host can start while the
//!   database is down and catch up when it returns.
//!
//! Migrations in `host/migrations` are written once in the SQL common to
//! PostgreSQL and SQLite, and run at start.
//!
//! **Invariant:** parameters are always bound, never interpolated into SQL.

mod postgres;
mod sqlite;

pub use postgres::PostgresDatabase;
pub use sqlite::SqliteDatabase;

use async_trait::async_trait;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The schema migrations, embedded in the binary.
pub(crate) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

fn migrate_error(err: sqlx::migrate::MigrateError) -> DbError {
    match err {
        sqlx::migrate::MigrateError::Execute(e) => match e {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                DbError::Unavailable(e.to_string())
            }
            other => DbError::Other(format!("migration failed: {other}")),
        },
        other => DbError::Other(format!("migration failed: {other}")),
    }
}

/// A sqlx result as `Rows`, each cell decoded by the engine's `cell`.
fn decode_rows<R: sqlx::Row>(
    rows: Vec<R>,
    cell: fn(&R, usize) -> Result<Value, DbError>,
) -> Result<Rows, DbError> {
    use sqlx::Column as _;
    let columns = rows
        .first()
        .map(|r| r.columns().iter().map(|c| c.name().to_string()).collect())
        .unwrap_or_default();
    let rows = rows
        .iter()
        .map(|row| {
            (0..row.len())
                .map(|i| cell(row, i))
                .collect::<Result<Vec<_>, _>>()
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Rows { columns, rows })
}

/// Connection settings common to both engines.
#[derive(Debug, Clone)]
pub struct DbOptions {
    /// How long one statement may run before it fails with `Timeout`.
    pub statement_timeout: Duration,
    /// Pool size.
    pub max_connections: u32,
    /// How long to wait for a pooled connection before `Unavailable`.
    pub acquire_timeout: Duration,
}

impl Default for DbOptions {
    fn default() -> Self {
        Self {
            statement_timeout: Duration::from_secs(5),
            max_connections: 16,
            acquire_timeout: Duration::from_secs(2),
        }
    }
}

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
    /// Brings the schema up to date; running it again changes nothing.
    async fn migrate(&self) -> Result<(), DbError>;

    /// Runs a statement that returns rows.
    async fn query(&self, sql: &str, params: &[Value]) -> Result<Rows, DbError>;

    /// Runs a statement for its effect; returns the rows affected.
    async fn execute(&self, sql: &str, params: &[Value]) -> Result<u64, DbError>;

    /// Runs `statements` in one transaction, all or nothing; returns each
    /// statement's rows.
    async fn transaction(&self, statements: &[Statement]) -> Result<Vec<Rows>, DbError>;
}

/// Opens the database named by `url` (`sqlite://…` or `postgres://…`).
/// Nothing is migrated yet, and a Postgres server need not be up.
pub async fn connect(url: &str, options: &DbOptions) -> anyhow::Result<Arc<dyn Database>> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteDatabase::open(url, options).await?))
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Ok(Arc::new(PostgresDatabase::connect_lazy(url, options)?))
    } else {
        anyhow::bail!("unsupported DATABASE_URL {url:?}: expected sqlite://… or postgres://…")
    }
}

/// A database that answers `Unavailable` until it is marked ready.
pub struct Gate {
    /// The real backend.
    inner: Arc<dyn Database>,
    /// Set once the schema is migrated and the demo data seeded.
    ready: AtomicBool,
}

impl Gate {
    pub fn new(inner: Arc<dyn Database>) -> Self {
        Self {
            inner,
            ready: AtomicBool::new(false),
        }
    }

    /// The backend behind the gate, for migrating and seeding.
    pub fn inner(&self) -> &dyn Database {
        self.inner.as_ref()
    }

    /// Opens the gate.
    pub fn mark_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    fn check(&self) -> Result<(), DbError> {
        if self.is_ready() {
            Ok(())
        } else {
            Err(DbError::Unavailable(
                "the database is not ready: migrations have not run yet".into(),
            ))
        }
    }
}

#[async_trait]
impl Database for Gate {
    async fn migrate(&self) -> Result<(), DbError> {
        self.inner.migrate().await
    }

    async fn query(&self, sql: &str, params: &[Value]) -> Result<Rows, DbError> {
        self.check()?;
        self.inner.query(sql, params).await
    }

    async fn execute(&self, sql: &str, params: &[Value]) -> Result<u64, DbError> {
        self.check()?;
        self.inner.execute(sql, params).await
    }

    async fn transaction(&self, statements: &[Statement]) -> Result<Vec<Rows>, DbError> {
        self.check()?;
        self.inner.transaction(statements).await
    }
}

/// A database that counts every statement reaching it (a transaction counts
/// its statements), for `/metrics` and the benchmarks.
pub struct Counted {
    inner: Arc<dyn Database>,
    statements: prometheus_client::metrics::counter::Counter,
}

impl Counted {
    pub fn new(
        inner: Arc<dyn Database>,
        statements: prometheus_client::metrics::counter::Counter,
    ) -> Self {
        Self { inner, statements }
    }
}

#[async_trait]
impl Database for Counted {
    async fn migrate(&self) -> Result<(), DbError> {
        self.inner.migrate().await
    }

    async fn query(&self, sql: &str, params: &[Value]) -> Result<Rows, DbError> {
        self.statements.inc();
        self.inner.query(sql, params).await
    }

    async fn execute(&self, sql: &str, params: &[Value]) -> Result<u64, DbError> {
        self.statements.inc();
        self.inner.execute(sql, params).await
    }

    async fn transaction(&self, statements: &[Statement]) -> Result<Vec<Rows>, DbError> {
        self.statements.inc_by(statements.len() as u64);
        self.inner.transaction(statements).await
    }
}
