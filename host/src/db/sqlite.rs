//! The embedded SQLite backend.
//!
//! SQLite has no server-side statement timeout: each statement runs with a
//! progress handler that interrupts it once the timeout has passed, so a
//! runaway statement stops instead of holding a connection.
//!
//! SQLite has no JSON or timestamp storage class. A `timestamp` parameter is
//! stored as epoch milliseconds and reads back as `timestamp` from a column
//! declared `TIMESTAMP` or `DATETIME`; a `json` parameter is stored as text
//! and reads back as `text`.

use super::{Database, DbError, DbOptions, Rows, Statement, Value};
use async_trait::async_trait;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow,
};
use sqlx::{Column, Connection, Row, Sqlite, SqlitePool, TypeInfo, ValueRef};
use std::str::FromStr;
use std::time::{Duration, Instant};

/// SQLite virtual-machine steps between two checks of the deadline.
const PROGRESS_STEPS: i32 = 10_000;

/// SQLite through a sqlx pool, in WAL mode.
pub struct SqliteDatabase {
    /// The connection pool; SQLite serializes writers itself.
    pool: SqlitePool,
    /// How long one statement (or transaction) may run.
    statement_timeout: Duration,
}

impl SqliteDatabase {
    /// Opens (creating file and directory if needed) the database at `url`.
    pub async fn open(url: &str, options: &DbOptions) -> anyhow::Result<Self> {
        let connect = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        if let Some(dir) = connect.get_filename().parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)?;
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect)
            .await?;
        Ok(Self {
            pool,
            statement_timeout: options.statement_timeout,
        })
    }

    /// A connection whose statements are interrupted past the timeout.
    async fn connection(&self) -> Result<(PoolConnection<Sqlite>, Instant), DbError> {
        let mut conn = self.pool.acquire().await.map_err(classify)?;
        let deadline = Instant::now() + self.statement_timeout;
        conn.lock_handle()
            .await
            .map_err(classify)?
            .set_progress_handler(PROGRESS_STEPS, move || Instant::now() < deadline);
        Ok((conn, deadline))
    }

    /// Removes the progress handler before the connection returns to the
    /// pool, and turns a failure past the deadline into `Timeout`.
    async fn finish<T>(
        mut conn: PoolConnection<Sqlite>,
        deadline: Instant,
        result: Result<T, DbError>,
    ) -> Result<T, DbError> {
        if let Ok(mut handle) = conn.lock_handle().await {
            handle.remove_progress_handler();
        }
        match result {
            Err(DbError::Other(message)) if Instant::now() >= deadline => {
                Err(DbError::Timeout(message))
            }
            other => other,
        }
    }
}

fn bind<'q>(sql: &'q str, params: &[Value]) -> sqlx::query::Query<'q, Sqlite, SqliteArguments<'q>> {
    let mut q = sqlx::query(sql);
    for p in params {
        q = match p.clone() {
            Value::Null => q.bind(None::<i64>),
            Value::Bool(b) => q.bind(b),
            Value::Int(i) | Value::Timestamp(i) => q.bind(i),
            Value::Float(f) => q.bind(f),
            Value::Text(s) | Value::Json(s) => q.bind(s),
            Value::Bytes(b) => q.bind(b),
        };
    }
    q
}

fn decode_cell(row: &SqliteRow, i: usize) -> Result<Value, DbError> {
    let raw = row.try_get_raw(i).map_err(classify)?;
    if raw.is_null() {
        return Ok(Value::Null);
    }
    // The declared type says BOOLEAN and TIMESTAMP; the storage class says
    // everything else.
    let declared = row.column(i).type_info().name().to_ascii_uppercase();
    let storage = raw.type_info().name().to_ascii_uppercase();
    let value = match (declared.as_str(), storage.as_str()) {
        ("BOOLEAN", _) => Value::Bool(row.try_get(i).map_err(classify)?),
        ("DATETIME", "INTEGER") => Value::Timestamp(row.try_get(i).map_err(classify)?),
        (_, "INTEGER") => Value::Int(row.try_get(i).map_err(classify)?),
        (_, "REAL") => Value::Float(row.try_get(i).map_err(classify)?),
        (_, "BLOB") => Value::Bytes(row.try_get(i).map_err(classify)?),
        _ => Value::Text(row.try_get(i).map_err(classify)?),
    };
    Ok(value)
}

/// Maps a sqlx error to the guest-visible error kinds, by error kind, never
/// by message text.
fn classify(err: sqlx::Error) -> DbError {
    match &err {
        sqlx::Error::Database(db) if !matches!(db.kind(), sqlx::error::ErrorKind::Other) => {
            DbError::Constraint(db.message().to_string())
        }
        sqlx::Error::Database(db) => DbError::Other(db.message().to_string()),
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::WorkerCrashed => DbError::Unavailable(err.to_string()),
        _ => DbError::Other(err.to_string()),
    }
}

#[async_trait]
impl Database for SqliteDatabase {
    async fn migrate(&self) -> Result<(), DbError> {
        super::MIGRATOR
            .run(&self.pool)
            .await
            .map_err(super::migrate_error)
    }

    async fn query(&self, sql: &str, params: &[Value]) -> Result<Rows, DbError> {
        let (mut conn, deadline) = self.connection().await?;
        let result = match bind(sql, params).fetch_all(&mut *conn).await {
            Ok(rows) => super::decode_rows(rows, decode_cell),
            Err(e) => Err(classify(e)),
        };
        Self::finish(conn, deadline, result).await
    }

    async fn execute(&self, sql: &str, params: &[Value]) -> Result<u64, DbError> {
        let (mut conn, deadline) = self.connection().await?;
        let result = bind(sql, params)
            .execute(&mut *conn)
            .await
            .map(|done| done.rows_affected())
            .map_err(classify);
        Self::finish(conn, deadline, result).await
    }

    async fn transaction(&self, statements: &[Statement]) -> Result<Vec<Rows>, DbError> {
        let (mut conn, deadline) = self.connection().await?;
        let result = async {
            // Dropping an uncommitted transaction rolls it back.
            let mut tx = conn.begin().await.map_err(classify)?;
            let mut results = Vec::with_capacity(statements.len());
            for s in statements {
                let rows = bind(&s.sql, &s.params)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(classify)?;
                results.push(super::decode_rows(rows, decode_cell)?);
            }
            tx.commit().await.map_err(classify)?;
            Ok(results)
        }
        .await;
        Self::finish(conn, deadline, result).await
    }
}
