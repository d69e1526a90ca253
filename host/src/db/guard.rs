//! What SQL a component may run: the first of the database capability's
//! defences, and the one that gives the clearest error.
//!
//! Every statement a component sends is parsed with the engine's dialect
//! (`sqlparser`) and refused unless it is exactly one `SELECT`, `INSERT`,
//! `UPDATE`, `DELETE` or `WITH` (whose parts are the same kinds), calls only
//! functions of an allow list (`ALLOWED_FUNCTIONS`), names no system
//! catalog, and selects into no new table. Transaction control, `SET`/`RESET`, role changes, `COPY`,
//! `ATTACH`, `VACUUM`, `PRAGMA`, DDL, `LISTEN`, cursors and extension
//! loading are all outside that list.
//!
//! This check is not the only one: a parser can be wrong about what the
//! server will do, so the backends also run component SQL under a role
//! with grants on the product's tables only (PostgreSQL) or under an
//! authorizer (SQLite), and clean up the connection after every call. See
//! `COMPONENT_TABLES`.
//!
//! `Guarded` applies the check in front of any `Database`, and remembers
//! verdicts by SQL text: components send the same few statements again and
//! again, and parsing is the costly part.

use super::{Database, DbError, Invalidation, OUTBOX_TABLE, Rows, Statement, Value};
use async_trait::async_trait;
use sqlparser::ast::{self, Expr, ObjectName, SetExpr, Visit, Visitor};
use sqlparser::dialect::{Dialect, PostgreSqlDialect, SQLiteDialect};
use sqlparser::parser::Parser;
use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};

/// The SQL dialect statements are parsed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Postgres,
    Sqlite,
}

/// Most verdicts remembered; past it the memory starts again. Far above the
/// number of distinct statements the product's components send.
const VERDICTS_KEPT: usize = 4096;

/// SQL longer than this is refused unparsed: no handler needs it, and the
/// parser's work grows with it.
const MAX_SQL_BYTES: usize = 64 * 1024;

/// SQL longer than this is parsed every time rather than remembered, so that
/// the verdict memory stays small (at most `VERDICTS_KEPT` of these).
const REMEMBERED_SQL_BYTES: usize = 2 * 1024;

/// The functions a component may call, by plain (unqualified) name, compared
/// case-insensitively: pure functions on values, aggregates and window
/// functions, and a few table functions. Anything else is refused: some
/// functions change the session (`set_config`), reach the server's files
/// (`pg_read_file`, `lo_export`) or run SQL given as text (`ts_stat`,
/// `query_to_xml`), and an allow list does not depend on knowing them all.
/// Functions that build a long string from a short one (`repeat`, `lpad`,
/// `printf`) are left out: a result cell must stay small.
const ALLOWED_FUNCTIONS: &[&str] = &[
    // Aggregates and window functions.
    "count",
    "sum",
    "avg",
    "min",
    "max",
    "total",
    "bool_and",
    "bool_or",
    "every",
    "group_concat",
    "string_agg",
    "json_agg",
    "jsonb_agg",
    "json_group_array",
    "row_number",
    "rank",
    "dense_rank",
    "percent_rank",
    "cume_dist",
    "ntile",
    "lag",
    "lead",
    "first_value",
    "last_value",
    "nth_value",
    // Conditionals.
    "coalesce",
    "nullif",
    "ifnull",
    "iif",
    "greatest",
    "least",
    // Text.
    "lower",
    "upper",
    "length",
    "char_length",
    "character_length",
    "octet_length",
    "substr",
    "substring",
    "trim",
    "ltrim",
    "rtrim",
    "btrim",
    "replace",
    "concat",
    "concat_ws",
    "left",
    "right",
    "position",
    "strpos",
    "instr",
    "starts_with",
    "md5",
    // Numbers.
    "abs",
    "round",
    "floor",
    "ceil",
    "ceiling",
    "trunc",
    "mod",
    "power",
    "sqrt",
    "sign",
    "random",
    // JSON.
    "json_extract",
    "json_array_length",
    "jsonb_array_length",
    "json_build_object",
    "jsonb_build_object",
    "json_object",
    "json_array",
    "to_json",
    "to_jsonb",
    "json_each",
    "jsonb_each",
    "json_array_elements",
    "jsonb_array_elements",
    "json_array_elements_text",
    "jsonb_array_elements_text",
    // Time.
    "now",
    "date",
    "datetime",
    "strftime",
    "julianday",
    "unixepoch",
    "date_trunc",
    "to_timestamp",
    "to_char",
    // Table functions.
    "generate_series",
    "unnest",
];

/// Checks that `sql` is one statement a component may run on `engine`.
pub fn check(engine: Engine, sql: &str) -> Result<(), DbError> {
    if sql.len() > MAX_SQL_BYTES {
        return Err(refused(format!(
            "the statement is {} bytes long; at most {MAX_SQL_BYTES} are accepted",
            sql.len()
        )));
    }
    let dialect: &dyn Dialect = match engine {
        Engine::Postgres => &PostgreSqlDialect {},
        Engine::Sqlite => &SQLiteDialect {},
    };
    let statements = Parser::parse_sql(dialect, sql)
        .map_err(|e| refused(format!("the statement could not be parsed ({e})")))?;
    let statement = match statements.as_slice() {
        [one] => one,
        [] => return Err(refused("the SQL holds no statement".into())),
        more => {
            return Err(refused(format!(
                "the SQL holds {} statements; send one per call (use `transaction` for several)",
                more.len()
            )));
        }
    };
    match statement.visit(&mut Policy) {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(reason) => Err(refused(reason)),
    }
}

fn refused(reason: String) -> DbError {
    DbError::Refused(reason)
}

/// Walks a parsed statement and breaks with the reason at the first thing a
/// component may not do.
struct Policy;

impl Visitor for Policy {
    type Break = String;

    fn pre_visit_statement(&mut self, statement: &ast::Statement) -> ControlFlow<String> {
        match statement {
            ast::Statement::Query(_)
            | ast::Statement::Insert(_)
            | ast::Statement::Update(_)
            | ast::Statement::Delete(_) => ControlFlow::Continue(()),
            other => ControlFlow::Break(format!(
                "only SELECT, INSERT, UPDATE, DELETE and WITH statements are allowed, not `{}`",
                leading_words(&other.to_string())
            )),
        }
    }

    fn pre_visit_query(&mut self, query: &ast::Query) -> ControlFlow<String> {
        match query.body.as_ref() {
            SetExpr::Merge(_) => ControlFlow::Break("MERGE is not allowed".into()),
            // `TABLE name` names a relation the relation visitor never sees.
            SetExpr::Table(table) => {
                let lower =
                    |i: &Option<ast::Ident>| i.as_ref().map(|i| i.value.to_ascii_lowercase());
                let name = lower(&table.table_name).unwrap_or_default();
                let schema = lower(&table.schema_name).unwrap_or_default();
                if system_name(&name) || system_schema(&schema) {
                    ControlFlow::Break(format!(
                        "`{table}` is a system catalog; components may use only the product's tables"
                    ))
                } else if name == OUTBOX_TABLE {
                    ControlFlow::Break(format!(
                        "`{table}` is the host's; components may use only the product's tables"
                    ))
                } else {
                    ControlFlow::Continue(())
                }
            }
            _ => ControlFlow::Continue(()),
        }
    }

    fn pre_visit_select(&mut self, select: &ast::Select) -> ControlFlow<String> {
        if select.into.is_some() {
            return ControlFlow::Break("SELECT … INTO creates a table and is not allowed".into());
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<String> {
        let schema_qualified_system =
            relation.0.len() > 1 && relation.0.first().is_some_and(|p| system_schema(&part(p)));
        if system_name(&last_part(relation)) || schema_qualified_system {
            return ControlFlow::Break(format!(
                "`{relation}` is a system catalog or function; components may use only the product's tables"
            ));
        }
        if last_part(relation) == OUTBOX_TABLE {
            return ControlFlow::Break(format!(
                "`{relation}` is the host's; components may use only the product's tables"
            ));
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &ast::TableFactor) -> ControlFlow<String> {
        // A function in FROM (`generate_series(1, 10)`) is held to the same
        // list as any other call.
        match factor {
            ast::TableFactor::Table { name, args, .. } => match args {
                Some(_) => allowed_call(name),
                None => ControlFlow::Continue(()),
            },
            ast::TableFactor::Function { name, .. } => allowed_call(name),
            ast::TableFactor::Derived { .. } | ast::TableFactor::NestedJoin { .. } => {
                ControlFlow::Continue(())
            }
            other => ControlFlow::Break(format!(
                "`{}` in FROM is not allowed; use tables, subqueries and joins",
                leading_words(&other.to_string())
            )),
        }
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<String> {
        match expr {
            Expr::Function(f) => allowed_call(&f.name),
            _ => ControlFlow::Continue(()),
        }
    }
}

/// Continues for a call of an allowed function by its plain name.
fn allowed_call(name: &ObjectName) -> ControlFlow<String> {
    let plain = name.0.len() == 1;
    let known = ALLOWED_FUNCTIONS.contains(&last_part(name).as_str());
    if plain && known {
        ControlFlow::Continue(())
    } else {
        ControlFlow::Break(format!(
            "the function `{name}` is not available to components (call functions by their plain name; see ALLOWED_FUNCTIONS in the host's db::guard)"
        ))
    }
}

/// Names of the engines' own catalogs and functions.
fn system_name(name: &str) -> bool {
    name.starts_with("pg_") || name.starts_with("sqlite_")
}

fn system_schema(schema: &str) -> bool {
    schema == "pg_catalog" || schema == "information_schema" || schema.starts_with("pg_")
}

fn part(p: &ast::ObjectNamePart) -> String {
    match p {
        ast::ObjectNamePart::Identifier(ident) => ident.value.to_ascii_lowercase(),
        ast::ObjectNamePart::Function(f) => f.name.value.to_ascii_lowercase(),
    }
}

fn last_part(name: &ObjectName) -> String {
    name.0.last().map(part).unwrap_or_default()
}

/// The statement's first two words, for an error message that names what
/// was refused without echoing the whole statement.
fn leading_words(sql: &str) -> String {
    sql.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
}

/// A `Database` that checks every statement with `check` before its inner
/// database sees it.
pub struct Guarded {
    /// The database component SQL runs on once accepted.
    inner: Arc<dyn Database>,
    /// The dialect statements are parsed in.
    engine: Engine,
    /// Verdicts by SQL text: `None` for accepted, the reason otherwise.
    verdicts: Mutex<HashMap<String, Option<String>>>,
}

impl Guarded {
    pub fn new(inner: Arc<dyn Database>, engine: Engine) -> Self {
        Self {
            inner,
            engine,
            verdicts: Mutex::new(HashMap::new()),
        }
    }

    fn admit(&self, sql: &str) -> Result<(), DbError> {
        let remembered = self
            .verdicts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(sql)
            .cloned();
        let verdict = match remembered {
            Some(verdict) => verdict,
            None => {
                let verdict = match check(self.engine, sql) {
                    Ok(()) => None,
                    Err(DbError::Refused(reason)) => Some(reason),
                    Err(other) => Some(other.to_string()),
                };
                if sql.len() > REMEMBERED_SQL_BYTES {
                    return verdict.map_or(Ok(()), |reason| Err(DbError::Refused(reason)));
                }
                let mut verdicts = self
                    .verdicts
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                if verdicts.len() >= VERDICTS_KEPT {
                    verdicts.clear();
                }
                verdicts.insert(sql.to_string(), verdict.clone());
                verdict
            }
        };
        match verdict {
            None => Ok(()),
            Some(reason) => Err(DbError::Refused(reason)),
        }
    }
}

impl Guarded {
    /// `admit` for each statement of a transaction, naming the one refused.
    fn admit_all(&self, statements: &[Statement]) -> Result<(), DbError> {
        for (i, s) in statements.iter().enumerate() {
            self.admit(&s.sql).map_err(|e| match e {
                DbError::Refused(reason) => {
                    DbError::Refused(format!("statement {}: {reason}", i + 1))
                }
                other => other,
            })?;
        }
        Ok(())
    }
}

#[async_trait]
impl Database for Guarded {
    async fn migrate(&self) -> Result<(), DbError> {
        self.inner.migrate().await
    }

    async fn query(&self, sql: &str, params: &[Value]) -> Result<Rows, DbError> {
        self.admit(sql)?;
        self.inner.query(sql, params).await
    }

    async fn execute(&self, sql: &str, params: &[Value]) -> Result<u64, DbError> {
        self.admit(sql)?;
        self.inner.execute(sql, params).await
    }

    async fn transaction(&self, statements: &[Statement]) -> Result<Vec<Rows>, DbError> {
        self.admit_all(statements)?;
        self.inner.transaction(statements).await
    }

    async fn transaction_invalidating(
        &self,
        statements: &[Statement],
        invalidation: &Invalidation,
    ) -> Result<Vec<Rows>, DbError> {
        self.admit_all(statements)?;
        self.inner
            .transaction_invalidating(statements, invalidation)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database that answers every call with nothing.
    struct Nothing;

    #[async_trait]
    impl Database for Nothing {
        async fn migrate(&self) -> Result<(), DbError> {
            Ok(())
        }
        async fn query(&self, _: &str, _: &[Value]) -> Result<Rows, DbError> {
            Ok(Rows::default())
        }
        async fn execute(&self, _: &str, _: &[Value]) -> Result<u64, DbError> {
            Ok(0)
        }
        async fn transaction(&self, _: &[Statement]) -> Result<Vec<Rows>, DbError> {
            Ok(Vec::new())
        }
        async fn transaction_invalidating(
            &self,
            _: &[Statement],
            _: &Invalidation,
        ) -> Result<Vec<Rows>, DbError> {
            Ok(Vec::new())
        }
    }

    const BOTH: [Engine; 2] = [Engine::Postgres, Engine::Sqlite];

    fn refused_on(engine: Engine, sql: &str) -> String {
        match check(engine, sql) {
            Err(DbError::Refused(reason)) => reason,
            other => panic!("{engine:?} accepted {sql:?}: {other:?}"),
        }
    }

    #[test]
    fn the_statements_a_handler_needs_are_accepted_on_both_engines() {
        for engine in BOTH {
            for sql in [
                "SELECT a.id, c.name FROM agents a JOIN categories c ON c.id = a.category_id WHERE a.id = $1",
                "SELECT COUNT(*) FROM agents WHERE LOWER(name) LIKE $1 LIMIT $2 OFFSET $3",
                "WITH recent AS (SELECT agent_id, COUNT(*) AS n FROM installations WHERE created_at > $1 GROUP BY agent_id) SELECT * FROM recent ORDER BY n DESC",
                "INSERT INTO installations (id, agent_id) VALUES ($1, $2) ON CONFLICT (agent_id, workspace_id) DO NOTHING RETURNING id",
                "UPDATE agents SET install_count = install_count + 1 WHERE id = $1",
                "DELETE FROM workflow_templates WHERE id = $1",
                "SELECT COALESCE(MAX(rating), 0) FROM agents",
                "SELECT CAST(COUNT(*) AS BIGINT) AS n, SUM(install_count) FROM agents",
                "SELECT g FROM generate_series(1, 10) AS g",
                "SELECT * FROM (SELECT id FROM agents) AS a JOIN categories c ON TRUE",
            ] {
                check(engine, sql).unwrap_or_else(|e| panic!("{engine:?} refused {sql:?}: {e}"));
            }
        }
    }

    #[test]
    fn session_transaction_and_server_statements_are_refused() {
        for engine in BOTH {
            for sql in [
                "BEGIN",
                "COMMIT",
                "ROLLBACK",
                "SAVEPOINT x",
                "SET search_path = nowhere",
                "SET statement_timeout = 1",
                "RESET ALL",
                "SET ROLE postgres",
                "RESET ROLE",
                "SET SESSION AUTHORIZATION postgres",
                "CREATE TABLE t (a INT)",
                "DROP TABLE agents",
                "ALTER TABLE agents ADD COLUMN x INT",
                "CREATE TEMP TABLE t (a INT)",
                "GRANT SELECT ON api_tokens TO PUBLIC",
                "TRUNCATE agents",
                "EXPLAIN SELECT 1",
            ] {
                let reason = refused_on(engine, sql);
                assert!(!reason.is_empty(), "{sql}");
            }
        }
        for sql in [
            "COPY agents TO '/tmp/x'",
            "COPY agents TO PROGRAM 'id'",
            "LISTEN x",
            "CREATE EXTENSION dblink",
            "DO $$ BEGIN END $$",
            "PREPARE p AS SELECT 1",
            "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
        ] {
            refused_on(Engine::Postgres, sql);
        }
        for sql in [
            "ATTACH DATABASE '/tmp/x.db' AS x",
            "VACUUM INTO '/tmp/copy.db'",
            "VACUUM",
            "PRAGMA query_only = 1",
            "DETACH DATABASE x",
        ] {
            refused_on(Engine::Sqlite, sql);
        }
    }

    #[test]
    fn several_statements_in_one_call_are_refused() {
        for engine in BOTH {
            let reason = refused_on(engine, "SELECT 1; DELETE FROM agents");
            assert!(reason.contains("2 statements"), "{reason}");
        }
    }

    #[test]
    fn administrative_functions_catalogs_and_select_into_are_refused() {
        for engine in BOTH {
            for sql in [
                "SELECT set_config('search_path', 'x', false)",
                "SELECT pg_catalog.set_config('statement_timeout', '1', false)",
                "SELECT pg_read_file('/etc/passwd')",
                "SELECT pg_advisory_lock(1)",
                "SELECT lo_export(1, '/tmp/x')",
                "SELECT * FROM pg_authid",
                "SELECT * FROM pg_catalog.pg_roles",
                "SELECT * FROM information_schema.tables",
                "SELECT name FROM sqlite_master",
                "INSERT INTO cache_outbox (id, tags, created_at) VALUES ('x', '[]', 0)",
                "DELETE FROM CACHE_OUTBOX",
                "SELECT * FROM (TABLE cache_outbox) AS t",
                "SELECT * FROM agents WHERE id IN (SELECT id FROM public.cache_outbox)",
                "SELECT load_extension('/tmp/evil.so')",
                "SELECT * FROM agents WHERE id IN (SELECT pg_sleep(10)::text)",
                "SELECT * FROM ts_stat('SELECT set_config(''role'', ''none'', true)::tsvector')",
                "SELECT ts_rewrite('a'::tsquery, 'SELECT 1')",
                "SELECT query_to_xml('SELECT 1', true, true, '')",
                "SELECT repeat('x', 1000000000)",
                "SELECT printf('%.*c', 1000000000, 'x')",
                "SELECT pg_catalog.lower('A')",
                "SELECT * FROM (TABLE pg_settings) AS t",
                "SELECT * FROM (TABLE pg_catalog.pg_authid) AS t",
                "SELECT * FROM xmltable('/a' PASSING '<a/>' COLUMNS b int)",
            ] {
                refused_on(engine, sql);
            }
        }
        refused_on(Engine::Postgres, "SELECT * INTO stolen FROM agents");
        refused_on(
            Engine::Postgres,
            "WITH x AS (SELECT 1) SELECT * FROM dblink('host=evil', 'SELECT 1') AS t(a int)",
        );
    }

    #[test]
    fn a_verdict_is_remembered_and_still_applies() {
        let guarded = Guarded::new(Arc::new(Nothing), Engine::Sqlite);
        for _ in 0..3 {
            assert!(matches!(
                guarded.admit("PRAGMA query_only = 1"),
                Err(DbError::Refused(_))
            ));
            assert!(guarded.admit("SELECT 1").is_ok());
        }
        assert_eq!(guarded.verdicts.lock().unwrap().len(), 2);
    }
}
