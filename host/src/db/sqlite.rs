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

use super::{
    Database, DbError, DbOptions, Invalidation, Leased, Rows, Statement, Value, sqlite_authorizer,
};
use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow,
};
use sqlx::{Column, Connection, Row, Sqlite, SqliteConnection, SqlitePool, TypeInfo, ValueRef};
use std::str::FromStr;
use std::time::{Duration, Instant};

/// SQLite virtual-machine steps between two checks of the deadline.
const PROGRESS_STEPS: i32 = 10_000;

/// Whose statements a pool runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The host's own: migrations, demo data, authentication.
    Host,
    /// Components', on connections of their own under the authorizer.
    Components,
}

/// SQLite through a sqlx pool, in WAL mode.
pub struct SqliteDatabase {
    /// The connection pool; SQLite serializes writers itself.
    pool: SqlitePool,
    /// How long one statement (or transaction) may run, and the result caps.
    options: DbOptions,
    /// Whose statements this pool runs.
    role: Role,
}

/// How long opening the database may keep trying past acquire timeouts.
const OPEN_BOUND: Duration = Duration::from_secs(20);

impl SqliteDatabase {
    /// Opens (creating file and directory if needed) the database at `url`
    /// for the host's own statements.
    pub async fn open(url: &str, options: &DbOptions) -> anyhow::Result<Self> {
        Self::open_as(url, options, Role::Host).await
    }

    /// Opens the database at `url` on connections of their own for
    /// component statements: each runs under the authorizer
    /// (`sqlite_authorizer`), and a connection left inside a transaction
    /// is closed rather than returned to the pool.
    pub async fn open_for_components(url: &str, options: &DbOptions) -> anyhow::Result<Self> {
        Self::open_as(url, options, Role::Components).await
    }

    async fn open_as(url: &str, options: &DbOptions, role: Role) -> anyhow::Result<Self> {
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
        let mut pool = SqlitePoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout);
        if role == Role::Components {
            // No string or blob a component makes may outgrow a result.
            let max_length = i32::try_from(options.max_result_bytes).unwrap_or(i32::MAX);
            pool = pool.after_connect(move |conn, _| {
                Box::pin(async move {
                    let mut handle = conn.lock_handle().await?;
                    // SAFETY: the locked handle is live and ours alone.
                    unsafe { sqlite_authorizer::install(handle.as_raw_handle(), max_length) };
                    Ok(())
                })
            });
        }
        // The first connection opens (and may create) the file: on a busy
        // machine that can outlast a short acquire timeout, which bounds
        // requests, not start-up; a timed-out attempt is made again for a
        // while.
        let started = std::time::Instant::now();
        let pool = loop {
            match pool.clone().connect_with(connect.clone()).await {
                Err(sqlx::Error::PoolTimedOut) if started.elapsed() < OPEN_BOUND => {
                    tracing::debug!("opening the SQLite database timed out; trying again");
                }
                other => break other?,
            }
        };
        Ok(Self {
            pool,
            options: options.clone(),
            role,
        })
    }

    /// A connection whose statements are interrupted past the timeout;
    /// closed rather than returned if the call is dropped halfway.
    async fn connection(&self) -> Result<(Leased<Sqlite>, Instant), DbError> {
        let mut conn = Leased::new(self.pool.acquire().await.map_err(classify)?);
        let deadline = Instant::now() + self.options.statement_timeout;
        conn.lock_handle()
            .await
            .map_err(classify)?
            .set_progress_handler(PROGRESS_STEPS, move || Instant::now() < deadline);
        Ok((conn, deadline))
    }

    /// Removes the progress handler before the connection returns to the
    /// pool, closes a component connection left inside a transaction or
    /// that failed past its cap, and turns a failure past the deadline into
    /// `Timeout`.
    async fn finish<T>(
        mut conn: Leased<Sqlite>,
        deadline: Instant,
        result: Result<T, DbError>,
    ) -> Result<T, DbError> {
        let left_open = match conn.lock_handle().await {
            Ok(mut handle) => {
                handle.remove_progress_handler();
                // SAFETY: the locked handle is live and ours alone.
                unsafe { sqlite_authorizer::in_transaction(handle.as_raw_handle()) }
            }
            Err(_) => true,
        };
        if left_open {
            tracing::warn!("a database connection was left inside a transaction; closing it");
            conn.discard();
        } else {
            conn.release();
        }
        match result {
            Err(DbError::Other(message)) if Instant::now() >= deadline => {
                Err(DbError::Timeout(message))
            }
            other => other,
        }
    }

    /// Runs one statement and gathers its rows within the caps.
    async fn fetch(
        &self,
        conn: &mut SqliteConnection,
        sql: &str,
        params: &[Value],
    ) -> Result<Rows, DbError> {
        let stream = bind(sql, params).fetch(conn);
        super::collect(stream, &self.options, decode_cell, classify).await
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
    /// SQLITE_AUTH: the authorizer denied the statement.
    const NOT_AUTHORIZED: &str = "23";
    match &err {
        sqlx::Error::Database(db) if db.code().as_deref() == Some(NOT_AUTHORIZED) => {
            DbError::Refused(format!(
                "{}: components may read and write only the product's tables, and change nothing else",
                db.message()
            ))
        }
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
        let result = self.fetch(&mut conn, sql, params).await;
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
        self.transaction_recording(statements, None).await
    }

    async fn transaction_invalidating(
        &self,
        statements: &[Statement],
        invalidation: &Invalidation,
    ) -> Result<Vec<Rows>, DbError> {
        self.transaction_recording(statements, Some(invalidation))
            .await
    }
}

impl SqliteDatabase {
    /// A transaction of `statements`, then of the record of `invalidation`.
    async fn transaction_recording(
        &self,
        statements: &[Statement],
        invalidation: Option<&Invalidation>,
    ) -> Result<Vec<Rows>, DbError> {
        let (mut conn, deadline) = self.connection().await?;
        let record = invalidation.map(Invalidation::statement);
        let result = match self.role {
            Role::Host => {
                let all: Vec<Statement> = statements.iter().cloned().chain(record).collect();
                self.host_transaction(&mut conn, &all)
                    .await
                    .map(|mut rows| {
                        rows.truncate(statements.len());
                        rows
                    })
            }
            Role::Components => {
                self.component_transaction(&mut conn, statements, record.as_ref())
                    .await
            }
        };
        Self::finish(conn, deadline, result).await
    }
}

impl SqliteDatabase {
    /// The host's own transaction.
    async fn host_transaction(
        &self,
        conn: &mut SqliteConnection,
        statements: &[Statement],
    ) -> Result<Vec<Rows>, DbError> {
        // Dropping an uncommitted transaction rolls it back.
        let mut tx = conn.begin().await.map_err(classify)?;
        let mut results = Vec::with_capacity(statements.len());
        for s in statements {
            results.push(self.fetch(&mut tx, &s.sql, &s.params).await?);
        }
        tx.commit().await.map_err(classify)?;
        Ok(results)
    }

    /// A component's transaction: inside the host's secret savepoint, the
    /// only transaction control the authorizer allows. A failure rolls the
    /// savepoint back; `finish` closes the connection if even that failed.
    /// `record`, the host's own statement (the authorizer lets component
    /// connections insert into the outbox; `guard` refuses component SQL
    /// that names it), runs last, inside the same savepoint.
    async fn component_transaction(
        &self,
        conn: &mut SqliteConnection,
        statements: &[Statement],
        record: Option<&Statement>,
    ) -> Result<Vec<Rows>, DbError> {
        let name = sqlite_authorizer::savepoint();
        let begin = format!("SAVEPOINT {name}");
        sqlx::Executor::execute(&mut *conn, begin.as_str())
            .await
            .map_err(classify)?;
        let mut results = Vec::with_capacity(statements.len());
        let mut outcome = Ok(());
        for s in statements {
            match self.fetch(conn, &s.sql, &s.params).await {
                Ok(rows) => results.push(rows),
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            }
        }
        if let (Ok(()), Some(record)) = (&outcome, record) {
            outcome = self
                .fetch(conn, &record.sql, &record.params)
                .await
                .map(drop);
        }
        let end = match outcome {
            Ok(()) => format!("RELEASE {name}"),
            Err(_) => format!("ROLLBACK TO {name}; RELEASE {name}"),
        };
        let ended = sqlx::Executor::execute(&mut *conn, end.as_str())
            .await
            .map_err(classify);
        outcome?;
        ended?;
        Ok(results)
    }
}
