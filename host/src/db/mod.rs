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

mod guard;
mod postgres;
mod sqlite;
mod sqlite_authorizer;

pub use guard::{Engine, Guarded, check as check_component_sql};
pub use postgres::{COMPONENT_ROLE, INVALIDATIONS_CHANNEL, PostgresDatabase};
pub use sqlite::SqliteDatabase;

/// The product's tables: the only ones component SQL may read or write
/// (`SELECT`, `INSERT`, `UPDATE`, `DELETE`). Enforced by the PostgreSQL
/// role's grants and by the SQLite authorizer.
pub const COMPONENT_TABLES: &[&str] = &[
    "categories",
    "agents",
    "installations",
    "workflow_templates",
];

/// The host's own tables, which component SQL may never touch: who may
/// call the API and as whom. The PostgreSQL role's grants on them are
/// revoked at every start.
pub const HOST_TABLES: &[&str] = &[
    "users",
    "workspaces",
    "workspace_members",
    "api_tokens",
    OUTBOX_TABLE,
    "cache_warm",
    "component_versions",
    "component_history",
    "component_canary",
    "fleet_hosts",
];

/// The invalidation outbox (see `Invalidation`): the host writes it in a
/// component's transaction; component SQL may never name it.
pub const OUTBOX_TABLE: &str = "cache_outbox";

/// Most bytes one of the host's own statements may return: a few whole
/// component versions.
const HOST_MAX_RESULT_BYTES: usize = 256 << 20;

/// The longest notification payload PostgreSQL takes is just under 8,000
/// bytes.
const MAX_NOTICE_BYTES: usize = 7_900;

/// How the host records an `Invalidation`, in the transaction of its write.
const RECORD_INVALIDATION: &str =
    "INSERT INTO cache_outbox (id, tags, created_at) VALUES ($1, $2, $3)";

/// Cache tags a write makes stale, recorded in the outbox in the write's
/// own transaction: committed together with the write, or not at all.
#[derive(Debug, Clone, PartialEq)]
pub struct Invalidation {
    /// Unique per write.
    pub id: String,
    /// The tags, as the cache names them (namespaced).
    pub tags: Vec<String>,
    /// When it was recorded, in epoch milliseconds.
    pub at_ms: i64,
}

impl Invalidation {
    /// A new invalidation of `tags`, now.
    pub fn new(tags: Vec<String>) -> Self {
        // 128 random bits; without the OS's randomness (it does not fail on
        // supported systems), the time and a counter still tell writes apart.
        static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let at_ms = crate::now_ms();
        let random = |fallback: u64| getrandom::u64().unwrap_or(fallback);
        let id = format!(
            "{:016x}{:016x}",
            random(at_ms as u64),
            random(COUNT.fetch_add(1, Ordering::Relaxed))
        );
        Self { id, tags, at_ms }
    }

    /// What tells listening hosts of it (see `relay::listen`): the tags and
    /// the time as JSON, or, past what a PostgreSQL notification holds,
    /// `flush`, which empties the receivers' memory tiers.
    pub fn notice(&self) -> String {
        let notice =
            serde_json::json!({ "id": self.id, "tags": self.tags, "at": self.at_ms }).to_string();
        if notice.len() <= MAX_NOTICE_BYTES {
            notice
        } else {
            serde_json::json!({ "id": self.id, "flush": true, "at": self.at_ms }).to_string()
        }
    }

    /// The statement that records it.
    pub(crate) fn statement(&self) -> Statement {
        Statement {
            sql: RECORD_INVALIDATION.to_string(),
            params: vec![
                Value::Text(self.id.clone()),
                Value::Text(serde_json::to_string(&self.tags).unwrap_or_else(|_| "[]".into())),
                Value::Int(self.at_ms),
            ],
        }
    }
}

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

/// Gathers a result row by row as it streams from the server, and refuses
/// it once it passes the row or byte cap: nothing past the cap is decoded,
/// so host memory stays bounded whatever a statement selects.
pub(crate) struct Collector {
    /// What has been gathered so far.
    rows: Rows,
    /// Approximate bytes of the values gathered so far.
    bytes: usize,
    /// The caps.
    max_rows: usize,
    max_bytes: usize,
}

impl Collector {
    pub(crate) fn new(options: &DbOptions) -> Self {
        Self {
            rows: Rows::default(),
            bytes: 0,
            max_rows: options.max_rows,
            max_bytes: options.max_result_bytes,
        }
    }

    /// Adds `row`, each cell decoded by the engine's `cell`.
    pub(crate) fn push<R: sqlx::Row>(
        &mut self,
        row: &R,
        cell: fn(&R, usize) -> Result<Value, DbError>,
    ) -> Result<(), DbError> {
        use sqlx::Column as _;
        if self.rows.rows.len() >= self.max_rows {
            return Err(DbError::TooLarge(format!(
                "the result has more than {} rows; page it with LIMIT and OFFSET",
                self.max_rows
            )));
        }
        if self.rows.columns.is_empty() {
            self.rows.columns = row.columns().iter().map(|c| c.name().to_string()).collect();
        }
        let values = (0..row.len())
            .map(|i| cell(row, i))
            .collect::<Result<Vec<_>, _>>()?;
        self.bytes += values.iter().map(Value::size).sum::<usize>();
        if self.bytes > self.max_bytes {
            return Err(DbError::TooLarge(format!(
                "the result is larger than {} bytes; select fewer columns or page it",
                self.max_bytes
            )));
        }
        self.rows.rows.push(values);
        Ok(())
    }

    pub(crate) fn finish(self) -> Rows {
        self.rows
    }
}

/// Streams `stream`'s rows into a `Collector`.
pub(crate) async fn collect<'s, R: sqlx::Row>(
    mut stream: futures_util::stream::BoxStream<'s, Result<R, sqlx::Error>>,
    options: &DbOptions,
    cell: fn(&R, usize) -> Result<Value, DbError>,
    classify: fn(sqlx::Error) -> DbError,
) -> Result<Rows, DbError> {
    use futures_util::TryStreamExt as _;
    let mut collector = Collector::new(options);
    while let Some(row) = stream.try_next().await.map_err(classify)? {
        collector.push(&row, cell)?;
    }
    Ok(collector.finish())
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
    /// Most rows one component statement may return; past it the call fails
    /// with `Refused` and the rest of the result is never read.
    pub max_rows: usize,
    /// Most bytes of values one component statement may return (counted
    /// as the decoded values' sizes), likewise.
    pub max_result_bytes: usize,
}

impl Default for DbOptions {
    fn default() -> Self {
        Self {
            statement_timeout: Duration::from_secs(5),
            max_connections: 16,
            acquire_timeout: Duration::from_secs(2),
            max_rows: 10_000,
            max_result_bytes: 8 << 20,
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

impl Value {
    /// Roughly the bytes this value holds, for the result cap.
    fn size(&self) -> usize {
        const CELL: usize = std::mem::size_of::<Value>();
        CELL + match self {
            Value::Text(s) | Value::Json(s) => s.len(),
            Value::Bytes(b) => b.len(),
            _ => 0,
        }
    }
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
    /// The statement or its result is outside what a component may do:
    /// refused by `guard`, by the engine's grants or authorizer, or past
    /// the result caps. Components see it as `other`, with this message.
    #[error("refused: {0}")]
    Refused(String),
    /// A result past the row or byte cap (`Collector`); the rest of it was
    /// never read. Components see it as `other`, like `Refused`.
    #[error("refused: {0}")]
    TooLarge(String),
}

/// A pooled connection that goes back to the pool only through `release`:
/// dropped any other way (a call cancelled halfway by a deadline or a
/// client gone, or `discard`), it is closed, since it may still hold a
/// transaction, a savepoint or a role.
pub(crate) struct Leased<DB: sqlx::Database>(Option<sqlx::pool::PoolConnection<DB>>);

impl<DB: sqlx::Database> Leased<DB> {
    pub(crate) fn new(conn: sqlx::pool::PoolConnection<DB>) -> Self {
        Self(Some(conn))
    }

    /// Returns the connection to the pool: it is clean.
    pub(crate) fn release(mut self) {
        drop(self.0.take());
    }

    /// Closes the connection instead of returning it.
    pub(crate) fn discard(self) {
        drop(self);
    }
}

impl<DB: sqlx::Database> Drop for Leased<DB> {
    fn drop(&mut self) {
        if let Some(mut conn) = self.0.take() {
            conn.close_on_drop();
        }
    }
}

impl<DB: sqlx::Database> std::ops::Deref for Leased<DB> {
    type Target = DB::Connection;
    fn deref(&self) -> &DB::Connection {
        // Some until `release` or drop, both of which consume the lease.
        self.0.as_ref().expect("a leased connection")
    }
}

impl<DB: sqlx::Database> std::ops::DerefMut for Leased<DB> {
    fn deref_mut(&mut self) -> &mut DB::Connection {
        // Some until `release` or drop, both of which consume the lease.
        self.0.as_mut().expect("a leased connection")
    }
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

    /// `transaction`, recording `invalidation` in the outbox in that same
    /// transaction (as the host, whichever view runs the statements).
    async fn transaction_invalidating(
        &self,
        statements: &[Statement],
        invalidation: &Invalidation,
    ) -> Result<Vec<Rows>, DbError>;
}

/// The database as the host sees it and as components see it.
pub struct Databases {
    /// The host's own statements: migrations, demo data, authentication.
    pub host: Arc<dyn Database>,
    /// Component statements: checked by `guard`, then run under the
    /// engine's second defence (a role with narrow grants, or an
    /// authorizer on connections of their own).
    pub components: Arc<dyn Database>,
}

/// Opens the database named by `url` (`sqlite://…` or `postgres://…`) for
/// the host and for components. Nothing is migrated yet, and a Postgres
/// server need not be up.
pub async fn connect(url: &str, options: &DbOptions) -> anyhow::Result<Databases> {
    // The host's own statements read whole component versions (uploads of
    // up to 64 MiB); the caps are for component statements.
    let host_options = DbOptions {
        max_result_bytes: options.max_result_bytes.max(HOST_MAX_RESULT_BYTES),
        ..options.clone()
    };
    if url.starts_with("sqlite:") {
        if url.contains(":memory:") || url.contains("mode=memory") {
            anyhow::bail!(
                "DATABASE_URL {url:?} is an in-memory SQLite database, which the host and its components could not share; name a file (sqlite://data/marketplace.db)"
            );
        }
        let host = SqliteDatabase::open(url, &host_options).await?;
        let components = SqliteDatabase::open_for_components(url, options).await?;
        Ok(Databases {
            host: Arc::new(host),
            components: Arc::new(Guarded::new(Arc::new(components), Engine::Sqlite)),
        })
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        let host = PostgresDatabase::connect_lazy(url, &host_options)?;
        let components = host.for_components(options);
        Ok(Databases {
            host: Arc::new(host),
            components: Arc::new(Guarded::new(Arc::new(components), Engine::Postgres)),
        })
    } else {
        anyhow::bail!("unsupported DATABASE_URL {url:?}: expected sqlite://… or postgres://…")
    }
}

/// A database that answers `Unavailable` until it is marked ready.
pub struct Gate {
    /// The real backend.
    inner: Arc<dyn Database>,
    /// Set once the schema is migrated and the demo data seeded; shared by
    /// the gates of one database's views (`sibling`).
    ready: Arc<AtomicBool>,
}

impl Gate {
    pub fn new(inner: Arc<dyn Database>) -> Self {
        Self {
            inner,
            ready: Arc::new(AtomicBool::new(false)),
        }
    }

    /// A gate in front of `inner` that opens when this one does: for the
    /// components' view of the same database.
    pub fn sibling(&self, inner: Arc<dyn Database>) -> Self {
        Self {
            inner,
            ready: self.ready.clone(),
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

    async fn transaction_invalidating(
        &self,
        statements: &[Statement],
        invalidation: &Invalidation,
    ) -> Result<Vec<Rows>, DbError> {
        self.check()?;
        self.inner
            .transaction_invalidating(statements, invalidation)
            .await
    }
}

/// A database that counts every statement reaching it (a transaction counts
/// its statements), for `/metrics` and the benchmarks.
pub struct Counted {
    inner: Arc<dyn Database>,
    statements: prometheus_client::metrics::counter::Counter,
}

impl Counted {
    /// The statement counter, reported to `registry`; hand it to each
    /// `Counted` whose statements should count.
    pub fn counter(
        registry: &mut prometheus_client::registry::Registry,
    ) -> prometheus_client::metrics::counter::Counter {
        let statements = prometheus_client::metrics::counter::Counter::default();
        registry.register(
            "marketplace_db_statements",
            "Statements run against the database, by components and by the host",
            statements.clone(),
        );
        statements
    }

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

    async fn transaction_invalidating(
        &self,
        statements: &[Statement],
        invalidation: &Invalidation,
    ) -> Result<Vec<Rows>, DbError> {
        self.statements.inc_by(statements.len() as u64 + 1);
        self.inner
            .transaction_invalidating(statements, invalidation)
            .await
    }
}
