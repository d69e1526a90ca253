//! The embedded SQLite backend.

use super::{Database, DbError, Rows, Statement, Value};
use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow,
};
use sqlx::{Column, Row, Sqlite, SqlitePool, TypeInfo, ValueRef};
use std::str::FromStr;
use std::time::Duration;

/// SQLite through a sqlx pool, in WAL mode.
pub struct SqliteDatabase {
    /// The connection pool; SQLite serializes writers itself.
    pool: SqlitePool,
}

impl SqliteDatabase {
    /// Opens (creating if needed) the database at `url` and migrates it.
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        if let Some(dir) = options.get_filename().parent() {
            std::fs::create_dir_all(dir)?;
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Self { pool })
    }

    /// The pool, for seeding and tests.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
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

fn decode(rows: Vec<SqliteRow>) -> Result<Rows, DbError> {
    let columns = rows
        .first()
        .map(|r| r.columns().iter().map(|c| c.name().to_string()).collect())
        .unwrap_or_default();
    let rows = rows
        .iter()
        .map(|row| {
            (0..row.len())
                .map(|i| decode_cell(row, i))
                .collect::<Result<Vec<_>, _>>()
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Rows { columns, rows })
}

fn decode_cell(row: &SqliteRow, i: usize) -> Result<Value, DbError> {
    let raw = row.try_get_raw(i).map_err(classify)?;
    if raw.is_null() {
        return Ok(Value::Null);
    }
    let declared = row.column(i).type_info().name().to_ascii_uppercase();
    let storage = raw.type_info().name().to_ascii_uppercase();
    let value = match (declared.as_str(), storage.as_str()) {
        ("BOOLEAN", _) => Value::Bool(row.try_get(i).map_err(classify)?),
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
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            DbError::Unavailable(err.to_string())
        }
        _ => DbError::Other(err.to_string()),
    }
}

#[async_trait]
impl Database for SqliteDatabase {
    async fn query(&self, sql: &str, params: &[Value]) -> Result<Rows, DbError> {
        let rows = bind(sql, params)
            .fetch_all(&self.pool)
            .await
            .map_err(classify)?;
        decode(rows)
    }

    async fn execute(&self, sql: &str, params: &[Value]) -> Result<u64, DbError> {
        let done = bind(sql, params)
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        Ok(done.rows_affected())
    }

    async fn transaction(&self, statements: &[Statement]) -> Result<Vec<Rows>, DbError> {
        let mut tx = self.pool.begin().await.map_err(classify)?;
        let mut results = Vec::with_capacity(statements.len());
        for s in statements {
            let rows = bind(&s.sql, &s.params)
                .fetch_all(&mut *tx)
                .await
                .map_err(classify)?;
            results.push(decode(rows)?);
        }
        tx.commit().await.map_err(classify)?;
        Ok(results)
    }
}
