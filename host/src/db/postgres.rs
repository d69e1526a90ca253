//! The PostgreSQL backend.
//!
//! Parameters bind with their natural Postgres types (`int` → INT8,
//! `timestamp` → TIMESTAMPTZ, `json` → JSONB, …); `null` binds untyped so the
//! server infers its type from context. Results decode by column type; a
//! type with no faithful `Value` (NUMERIC, UUID, arrays, …) is an `other`
//! error naming the column, so that component SQL casts it explicitly.

use super::{Database, DbError, DbOptions, Invalidation, Leased, Rows, Statement, Value};
use async_trait::async_trait;
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{
    PgArgumentBuffer, PgArguments, PgConnectOptions, PgPoolOptions, PgRow, PgTypeInfo,
};
use sqlx::types::Json;
use sqlx::types::chrono::{DateTime, NaiveDateTime, Utc};
use sqlx::{Column, Encode, PgConnection, PgPool, Postgres, Row, Type, TypeInfo, ValueRef};
use std::str::FromStr;

/// The advisory lock `prepare_component_role` holds while it works (any
/// fixed number: the role is the whole server's).
const ROLE_LOCK: i64 = 0x6d6b_7470_726f_6c65;

/// The role component statements run under: created by `migrate`, with
/// grants on `COMPONENT_TABLES` only.
pub const COMPONENT_ROLE: &str = "marketplace_component";

/// Starts a component call: its own transaction, under the component role.
const BEGIN_AS_COMPONENT: &str = "BEGIN; SET LOCAL ROLE marketplace_component";

/// Before a component call commits: refuses it (42501, so `Refused`, and
/// nothing is kept) if its statements managed to leave the component role,
/// say through a function that runs SQL given as text. `guard` refuses such
/// functions first; this holds if it misses one.
const CHECK_ROLE: &str = "DO $$ BEGIN \
     IF current_user <> 'marketplace_component' THEN \
       RAISE EXCEPTION 'the call left its role; nothing it did was kept' \
         USING ERRCODE = 'insufficient_privilege'; \
     END IF; END $$";

/// Ends a component call and undoes anything it could have left on the
/// session, in the same round trip: settings (`RESET ALL` returns to the
/// connection's start-up options), role, cursors, `LISTEN`s, advisory locks
/// and temporary tables. `guard` refuses all of these first; this is the
/// defence for what a parser misses.
const END_COMPONENT_CALL: &str = "SET SESSION AUTHORIZATION DEFAULT; RESET ALL; CLOSE ALL; \
     UNLISTEN *; SELECT pg_advisory_unlock_all(); DISCARD TEMP";

/// Whose statements a view of the pool runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The host's own: migrations, demo data, authentication.
    Host,
    /// Components': each call in a transaction under `COMPONENT_ROLE`.
    Components,
}

/// How a component call runs its statements.
#[derive(Debug, Clone, Copy)]
enum Mode {
    /// For their rows.
    Fetch,
    /// For the count of rows they affect.
    Execute,
}

/// PostgreSQL through a lazily connecting sqlx pool: the host starts even
/// when the server is down, and the pool reconnects when it returns.
#[derive(Clone)]
pub struct PostgresDatabase {
    /// The connection pool, shared by the host's view and the components'.
    pool: PgPool,
    /// The result caps.
    options: DbOptions,
    /// Whose statements this view runs.
    role: Role,
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
        Ok(Self {
            pool,
            options: options.clone(),
            role: Role::Host,
        })
    }

    /// The same pool, for component statements: each call runs in a
    /// transaction under `COMPONENT_ROLE`, and the session is reset before
    /// the connection returns to the pool (closed if the reset fails).
    pub fn for_components(&self, options: &DbOptions) -> Self {
        Self {
            role: Role::Components,
            options: options.clone(),
            ..self.clone()
        }
    }

    /// Whether the host connects as a superuser: component SQL is then one
    /// parser miss away from the server's files, so the host says so.
    pub async fn connects_as_superuser(&self) -> Result<bool, DbError> {
        let row: (bool,) =
            sqlx::query_as("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
                .fetch_one(&self.pool)
                .await
                .map_err(classify)?;
        Ok(row.0)
    }

    /// Creates `COMPONENT_ROLE` if needed, lets the host's user switch to
    /// it, and grants it the product's tables in the current schema and
    /// nothing else. Idempotent; safe when several hosts start at once.
    async fn prepare_component_role(&self) -> Result<(), DbError> {
        let role = COMPONENT_ROLE;
        let create = format!(
            "DO $$ BEGIN \
               IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN \
                 CREATE ROLE {role} NOLOGIN; \
               END IF; \
             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; \
             END $$"
        );
        let join = format!(
            "DO $$ BEGIN \
               IF NOT pg_has_role(current_user, '{role}', 'MEMBER') THEN \
                 EXECUTE format('GRANT {role} TO %I', current_user); \
               END IF; \
             END $$"
        );
        let tables = super::COMPONENT_TABLES.join(", ");
        let host_tables = super::HOST_TABLES.join(", ");
        let grants = format!(
            "DO $$ BEGIN \
               EXECUTE format('GRANT USAGE ON SCHEMA %I TO {role}', current_schema()); \
             END $$; \
             REVOKE ALL ON {host_tables} FROM {role}; \
             GRANT SELECT, INSERT, UPDATE, DELETE ON {tables} TO {role}"
        );
        // One transaction (statements sent together run as one), under a
        // lock: hosts starting at once would otherwise update the same
        // catalog rows together ("tuple concurrently updated").
        let sql = format!("SELECT pg_advisory_xact_lock({ROLE_LOCK}); {create}; {join}; {grants}");
        sqlx::raw_sql(&sql)
            .execute(&self.pool)
            .await
            .map_err(|e| match classify(e) {
                DbError::Other(message) => DbError::Other(format!(
                    "preparing the role {role} that component SQL runs under: {message}; \
                     connect as a user with CREATEROLE, or create the role and grant it to this user"
                )),
                other => other,
            })?;
        if self.connects_as_superuser().await? {
            tracing::warn!(
                "the host connects to PostgreSQL as a superuser; component SQL runs as {role}, \
                 but connect as an ordinary user with CREATEROLE (or with {role} granted to it) \
                 so that a bug in the host cannot reach the server's files"
            );
        }
        Ok(())
    }

    /// Runs `statements` as one component call: `BEGIN` and the role switch,
    /// the statements (each streamed within the caps, or run for their
    /// affected count), `COMMIT` or `ROLLBACK`, then the session reset.
    /// Returns each statement's rows and the rows affected in all.
    ///
    /// With `records` (the host's record of an invalidation), once the
    /// statements have run: the role check, back to the host's role, then
    /// `records`, all in the same transaction.
    async fn component_call(
        &self,
        statements: &[(&str, &[Value])],
        mode: Mode,
        records: &[Statement],
    ) -> Result<(Vec<Rows>, u64), DbError> {
        // Closed, not returned, if this future is dropped before the end.
        let mut conn = Leased::new(self.pool.acquire().await.map_err(classify)?);
        let mut result = run_component_statements(&mut conn, statements, mode, &self.options).await;
        let checked = result.is_ok() && !records.is_empty();
        if checked && let Err(e) = record_as_host(&mut conn, records).await {
            result = Err(e);
        }
        // A result cut off at its cap leaves rows in flight on the wire:
        // close that connection rather than drain it.
        if matches!(result, Err(DbError::TooLarge(_))) {
            conn.discard();
            return result;
        }
        let end = match result {
            Ok(_) if checked => format!("COMMIT; {END_COMPONENT_CALL}"),
            Ok(_) => format!("{CHECK_ROLE}; COMMIT; {END_COMPONENT_CALL}"),
            Err(_) => format!("ROLLBACK; {END_COMPONENT_CALL}"),
        };
        match sqlx::Executor::execute(&mut *conn, end.as_str()).await {
            Ok(_) => {
                conn.release();
                result
            }
            Err(e) => {
                let e = classify(e);
                if !matches!(e, DbError::Refused(_)) {
                    tracing::warn!(error = %e, "could not end a component call cleanly; closing its connection");
                }
                // Closing rolls back whatever the commit did not keep.
                conn.discard();
                match result {
                    // The role check or the commit failed: nothing was kept.
                    Ok(_) => Err(e),
                    Err(first) => Err(first),
                }
            }
        }
    }
}

/// `BEGIN` as the component role, then `statements`; see `component_call`.
async fn run_component_statements(
    conn: &mut PgConnection,
    statements: &[(&str, &[Value])],
    mode: Mode,
    options: &DbOptions,
) -> Result<(Vec<Rows>, u64), DbError> {
    sqlx::Executor::execute(&mut *conn, BEGIN_AS_COMPONENT)
        .await
        .map_err(classify)?;
    let mut results = Vec::with_capacity(statements.len());
    let mut affected = 0;
    for (sql, params) in statements {
        match mode {
            Mode::Fetch => results.push(fetch_rows(&mut *conn, sql, params, options).await?),
            Mode::Execute => {
                let done = bind(sql, params)?
                    .execute(&mut *conn)
                    .await
                    .map_err(classify)?;
                affected += done.rows_affected();
            }
        }
    }
    Ok((results, affected))
}

/// Within a component call whose statements have run: checks the role
/// (as the commit would), returns to the host's role for the rest of the
/// transaction, and runs `records`.
async fn record_as_host(conn: &mut PgConnection, records: &[Statement]) -> Result<(), DbError> {
    let leave = format!("{CHECK_ROLE}; SET LOCAL ROLE NONE");
    sqlx::Executor::execute(&mut *conn, leave.as_str())
        .await
        .map_err(classify)?;
    run_records(conn, records).await
}

/// Runs the host's `records` for their effect.
async fn run_records(conn: &mut PgConnection, records: &[Statement]) -> Result<(), DbError> {
    for record in records {
        bind(&record.sql, &record.params)?
            .execute(&mut *conn)
            .await
            .map_err(classify)?;
    }
    Ok(())
}

/// What records an invalidation: its outbox row, and a notification to
/// every host listening on this schema's channel (see `relay::listen`),
/// which PostgreSQL sends when the transaction commits.
fn invalidation_records(invalidation: &Invalidation) -> Vec<Statement> {
    vec![
        invalidation.statement(),
        Statement {
            sql: format!("SELECT pg_notify({INVALIDATIONS_CHANNEL}, $1)"),
            params: vec![Value::Text(invalidation.notice())],
        },
    ]
}

/// The name of the channel invalidations are announced on: one per
/// schema, since notifications go to the whole database.
pub const INVALIDATIONS_CHANNEL: &str = "'marketplace_invalidations:' || current_schema()";

/// Streams one statement's rows within the caps.
async fn fetch_rows(
    conn: &mut PgConnection,
    sql: &str,
    params: &[Value],
    options: &DbOptions,
) -> Result<Rows, DbError> {
    let stream = bind(sql, params)?.fetch(conn);
    super::collect(stream, options, decode_cell, classify).await
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
            } else if code == "42501" {
                // insufficient_privilege: a component reached past its grants.
                DbError::Refused(format!(
                    "{}: components may read and write only the product's tables",
                    db.message()
                ))
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
            .map_err(super::migrate_error)?;
        self.prepare_component_role().await
    }

    async fn query(&self, sql: &str, params: &[Value]) -> Result<Rows, DbError> {
        match self.role {
            Role::Host => {
                let stream = bind(sql, params)?.fetch(&self.pool);
                super::collect(stream, &self.options, decode_cell, classify).await
            }
            Role::Components => {
                let (mut results, _) = self
                    .component_call(&[(sql, params)], Mode::Fetch, &[])
                    .await?;
                Ok(results.pop().unwrap_or_default())
            }
        }
    }

    async fn execute(&self, sql: &str, params: &[Value]) -> Result<u64, DbError> {
        match self.role {
            Role::Host => {
                let done = bind(sql, params)?
                    .execute(&self.pool)
                    .await
                    .map_err(classify)?;
                Ok(done.rows_affected())
            }
            Role::Components => Ok(self
                .component_call(&[(sql, params)], Mode::Execute, &[])
                .await?
                .1),
        }
    }

    async fn transaction(&self, statements: &[Statement]) -> Result<Vec<Rows>, DbError> {
        self.transaction_recording(statements, &[]).await
    }

    async fn transaction_invalidating(
        &self,
        statements: &[Statement],
        invalidation: &Invalidation,
    ) -> Result<Vec<Rows>, DbError> {
        self.transaction_recording(statements, &invalidation_records(invalidation))
            .await
    }
}

impl PostgresDatabase {
    /// A transaction of `statements`, then of the host's `records`.
    async fn transaction_recording(
        &self,
        statements: &[Statement],
        records: &[Statement],
    ) -> Result<Vec<Rows>, DbError> {
        match self.role {
            Role::Host => {
                let mut tx = self.pool.begin().await.map_err(classify)?;
                let mut results = Vec::with_capacity(statements.len());
                for s in statements {
                    results.push(fetch_rows(&mut tx, &s.sql, &s.params, &self.options).await?);
                }
                run_records(&mut tx, records).await?;
                tx.commit().await.map_err(classify)?;
                Ok(results)
            }
            Role::Components => {
                let calls: Vec<(&str, &[Value])> = statements
                    .iter()
                    .map(|s| (s.sql.as_str(), s.params.as_slice()))
                    .collect();
                Ok(self.component_call(&calls, Mode::Fetch, records).await?.0)
            }
        }
    }
}
