//! The PostgreSQL backend.
//!
//! Parameters bind with their natural Postgres types (`int` → INT8,
//! `timestamp` → TIMESTAMPTZ, `json` → JSONB, …); `null` binds untyped so the
//! server infers its type from context. Results decode by column type; a
//! type with no faithful `Value` (NUMERIC, UUID, arrays, …) is an `other`
//! error naming the column, so that component SQL casts it explicitly.

use super::{Database, DbError, DbOptions, Rows, Statement, Value};
use async_trait::async_trait;
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{
    PgArgumentBuffer, PgArguments, PgConnectOptions, PgPoolOptions, PgRow, PgTypeInfo,
};
use sqlx::types::Json;
use sqlx::types::chrono::{DateTime, NaiveDateTime, Utc};
use sqlx::{Column, Encode, PgPool, Postgres, Row, Type, TypeInfo, ValueRef};
use std::str::FromStr;

/// PostgreSQL through a lazily connecting sqlx pool: the host starts even
/// when the server is down, and the pool reconnects when it returns.
pub struct PostgresDatabase {
    /// The connection pool.
    pool: PgPool,
}

impl PostgresDatabase {
    /// A pool for `url`; no connection is made until first use.
    pub fn connect_lazy(url: &str, options: &DbOptions) -> anyhow::Result<Self> {
        let timeout_ms = options.statement_timeout.as_millis().to_string();
        let connect =
            PgConnectOptions::from_str(url)?.options([("statement_timeout", timeout_ms.as_str())]);
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            .connect_lazy_with(connect);
        Ok(Self { pool })
    }
}

/// A NULL whose type the server infers from where it is used.
struct UntypedNull;

impl Type<Postgres> for UntypedNull {
    fn type_info() -> PgTypeInfo {
        // OID 0: "unspecified" in the extended query protocol.
        PgTypeInfo::with_oid(sqlx::postgres::types::Oid(0))
    }
}

impl Encode<'_, Postgres> for UntypedNull {
    fn encode_by_ref(&self, _buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        Ok(IsNull::Yes)
    }
}

type PgQuery<'q> = sqlx::query::Query<'q, Postgres, PgArguments>;

fn bind<'q>(sql: &'q str, params: &[Value]) -> Result<PgQuery<'q>, DbError> {
    let mut q = sqlx::query(sql);
    for (i, p) in params.iter().enumerate() {
        q = match p.clone() {
            Value::Null => q.bind(UntypedNull),
            Value::Bool(b) => q.bind(b),
            Value::Int(n) => q.bind(n),
            Value::Float(f) => q.bind(f),
            Value::Text(s) => q.bind(s),
            Value::Bytes(b) => q.bind(b),
            Value::Json(s) => {
                let parsed: serde_json::Value = serde_json::from_str(&s).map_err(|e| {
                    DbError::Other(format!("parameter ${} is not valid JSON: {e}", i + 1))
                })?;
                q.bind(Json(parsed))
            }
            Value::Timestamp(ms) => {
                let at = DateTime::<Utc>::from_timestamp_millis(ms).ok_or_else(|| {
                    DbError::Other(format!("parameter ${} is an out-of-range timestamp", i + 1))
                })?;
                q.bind(at)
            }
        };
    }
    Ok(q)
}

fn decode_cell(row: &PgRow, i: usize) -> Result<Value, DbError> {
    let raw = row.try_get_raw(i).map_err(classify)?;
    if raw.is_null() {
        return Ok(Value::Null);
    }
    let column = &row.columns()[i];
    let ty = column.type_info().name().to_ascii_uppercase();
    let get_err = classify;
    Ok(match ty.as_str() {
        "BOOL" => Value::Bool(row.try_get(i).map_err(get_err)?),
        "INT2" => Value::Int(i64::from(row.try_get::<i16, _>(i).map_err(get_err)?)),
        "INT4" => Value::Int(i64::from(row.try_get::<i32, _>(i).map_err(get_err)?)),
        "INT8" => Value::Int(row.try_get(i).map_err(get_err)?),
        "FLOAT4" => Value::Float(f64::from(row.try_get::<f32, _>(i).map_err(get_err)?)),
        "FLOAT8" => Value::Float(row.try_get(i).map_err(get_err)?),
        "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "CHAR" => {
            Value::Text(row.try_get(i).map_err(get_err)?)
        }
        "BYTEA" => Value::Bytes(row.try_get(i).map_err(get_err)?),
        "JSON" | "JSONB" => {
            let Json(v): Json<serde_json::Value> = row.try_get(i).map_err(get_err)?;
            Value::Json(v.to_string())
        }
        "TIMESTAMPTZ" => Value::Timestamp(
            row.try_get::<DateTime<Utc>, _>(i)
                .map_err(get_err)?
                .timestamp_millis(),
        ),
        "TIMESTAMP" => Value::Timestamp(
            row.try_get::<NaiveDateTime, _>(i)
                .map_err(get_err)?
                .and_utc()
                .timestamp_millis(),
        ),
        "VOID" => Value::Null,
        other => {
            return Err(DbError::Other(format!(
                "column {:?} has type {other}, which has no value type; cast it (for example to BIGINT, DOUBLE PRECISION or TEXT)",
                column.name()
            )));
        }
    })
}

/// SQLSTATE classes and codes that mean the server is (going) away.
fn is_unavailable_state(code: &str) -> bool {
    code.starts_with("08") // connection exception
        || code.starts_with("57P") // admin/crash shutdown, cannot connect now
        || code == "53300" // too many connections
}

/// Maps a sqlx error to the guest-visible kinds by error kind and SQLSTATE,
/// never by message text.
fn classify(err: sqlx::Error) -> DbError {
    match &err {
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            if code == "57014" {
                DbError::Timeout(db.message().to_string())
            } else if is_unavailable_state(&code) {
                DbError::Unavailable(db.message().to_string())
            } else if !matches!(db.kind(), sqlx::error::ErrorKind::Other) {
                DbError::Constraint(db.message().to_string())
            } else {
                DbError::Other(db.message().to_string())
            }
        }
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => DbError::Unavailable(err.to_string()),
        _ => DbError::Other(err.to_string()),
    }
}

#[async_trait]
impl Database for PostgresDatabase {
    async fn migrate(&self) -> Result<(), DbError> {
        super::MIGRATOR
            .run(&self.pool)
            .await
            .map_err(super::migrate_error)
    }

    async fn query(&self, sql: &str, params: &[Value]) -> Result<Rows, DbError> {
        let rows = bind(sql, params)?
            .fetch_all(&self.pool)
            .await
            .map_err(classify)?;
        super::decode_rows(rows, decode_cell)
    }

    async fn execute(&self, sql: &str, params: &[Value]) -> Result<u64, DbError> {
        let done = bind(sql, params)?
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        Ok(done.rows_affected())
    }

    async fn transaction(&self, statements: &[Statement]) -> Result<Vec<Rows>, DbError> {
        let mut tx = self.pool.begin().await.map_err(classify)?;
        let mut results = Vec::with_capacity(statements.len());
        for s in statements {
            let rows = bind(&s.sql, &s.params)?
                .fetch_all(&mut *tx)
                .await
                .map_err(classify)?;
            results.push(super::decode_rows(rows, decode_cell)?);
        }
        tx.commit().await.map_err(classify)?;
        Ok(results)
    }
}
