//! [`FakeDb`]: the database capability for component tests, in one of two
//! modes, with every call recorded and faults on demand.
//!
//! - [`FakeDb::sqlite`]: the real schema (the host's migrations) in an
//!   in-memory SQLite database, filled with the fixtures the test chooses
//!   ([`FakeDb::exec`], or the demo data with [`FakeDb::sqlite_with_demo`]).
//! - [`FakeDb::scripted`]: no database at all; each statement must match an
//!   expectation ([`FakeDb::expect`]) that gives rows, a count or an error.
//!   A statement that matches none fails the test, naming the statement and
//!   its parameters.
//!
//! In both modes a statement the host would refuse (anything but one
//! `SELECT`, `INSERT`, `UPDATE`, `DELETE` or `WITH`; see the host's
//! `db::guard`) fails with the host's `Refused` error.

use async_trait::async_trait;
use host::db::{
    Database, DbError, DbOptions, Invalidation, Rows, SqliteDatabase, Statement, Value,
};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

/// How a statement reached the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    Query,
    Execute,
    /// One statement of a `transaction`, with its position in it.
    Transaction(usize),
}

/// One statement a component ran.
#[derive(Debug, Clone, PartialEq)]
pub struct DbCall {
    pub kind: CallKind,
    pub sql: String,
    pub params: Vec<Value>,
}

/// What a matched expectation answers.
#[derive(Debug, Clone)]
enum Answer {
    Rows(Rows),
    Affected(u64),
    Error(DbError),
}

/// One scripted statement: SQL containing `pattern` (compared with runs of
/// whitespace collapsed) gets `answer`, at most `times` times if set.
#[derive(Debug, Clone)]
pub struct Expectation {
    pattern: String,
    answer: Answer,
    times: Option<usize>,
    used: usize,
}

/// Builds an expectation; see [`FakeDb::expect`].
pub struct ExpectationBuilder<'a> {
    db: &'a FakeDb,
    pattern: String,
    times: Option<usize>,
}

impl ExpectationBuilder<'_> {
    /// Matches at most `n` statements; later ones fall through to other
    /// expectations (or are unexpected).
    pub fn times(mut self, n: usize) -> Self {
        self.times = Some(n);
        self
    }

    /// The statement returns `rows` (for `query`; `execute` gets their count).
    pub fn returns(self, rows: Rows) {
        self.push(Answer::Rows(rows))
    }

    /// The statement affects `n` rows (for `execute`; `query` gets no rows).
    pub fn affects(self, n: u64) {
        self.push(Answer::Affected(n))
    }

    /// The statement fails with `error`.
    pub fn fails(self, error: DbError) {
        self.push(Answer::Error(error))
    }

    fn push(self, answer: Answer) {
        self.db.state().expectations.push(Expectation {
            pattern: normalize(&self.pattern),
            answer,
            times: self.times,
            used: 0,
        });
    }
}

/// A result set for [`ExpectationBuilder::returns`]: `columns` and rows of
/// values in the same order.
pub fn rows(columns: &[&str], values: Vec<Vec<Value>>) -> Rows {
    Rows {
        columns: columns.iter().map(|c| c.to_string()).collect(),
        rows: values,
    }
}

#[derive(Default)]
struct State {
    calls: Vec<DbCall>,
    expectations: Vec<Expectation>,
    /// Statements that matched no expectation, described for the failure.
    unexpected: Vec<String>,
    /// Errors the next calls fail with, in order.
    next_errors: VecDeque<DbError>,
    /// Every call fails with this while set.
    down: Option<DbError>,
}

enum Mode {
    Sqlite(SqliteDatabase),
    Scripted,
}

/// The database capability for component tests. Clones share one fake.
#[derive(Clone)]
pub struct FakeDb {
    mode: Arc<Mode>,
    state: Arc<Mutex<State>>,
}

impl FakeDb {
    /// The real schema in a fresh in-memory SQLite database, with no rows.
    pub fn sqlite() -> Self {
        let options = DbOptions {
            // One connection: an in-memory database lives in it.
            max_connections: 1,
            ..DbOptions::default()
        };
        let db = crate::block_on(async {
            let db = SqliteDatabase::open("sqlite::memory:", &options)
                .await
                .expect("an in-memory SQLite database opens");
            db.migrate().await.expect("the host's migrations apply");
            db
        });
        Self {
            mode: Arc::new(Mode::Sqlite(db)),
            state: Arc::default(),
        }
    }

    /// The real schema with the host's deterministic demo data: 12
    /// categories, `agents` agents with their install history, 100
    /// templates, and the demo user, workspace and token
    /// ([`host::seed::DEMO_USER`], [`host::seed::DEMO_WORKSPACE`]).
    pub fn sqlite_with_demo(agents: usize) -> Self {
        let db = Self::sqlite();
        let Mode::Sqlite(inner) = db.mode.as_ref() else {
            unreachable!("sqlite() makes a SQLite fake")
        };
        let spec = host::seed::DemoSpec {
            seed: host::DEMO_SEED,
            agents,
            now_ms: host::today_ms(),
        };
        crate::block_on(host::seed::generate(inner, &spec)).expect("the demo data is generated");
        db
    }

    /// A database that answers only what [`expect`](Self::expect) scripts.
    pub fn scripted() -> Self {
        Self {
            mode: Arc::new(Mode::Scripted),
            state: Arc::default(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Scripts the answer to statements whose SQL contains `pattern`
    /// (whitespace runs compared as one space). Expectations are tried in
    /// the order they were added.
    ///
    /// ```
    /// # use testkit::{FakeDb, rows};
    /// # use host::db::{DbError, Value};
    /// let db = FakeDb::scripted();
    /// db.expect("FROM categories")
    ///     .returns(rows(&["id", "name"], vec![vec![Value::Text("cat-a".into()), Value::Text("A".into())]]));
    /// db.expect("INSERT INTO installations").times(1).fails(DbError::Constraint("unique".into()));
    /// ```
    pub fn expect(&self, pattern: &str) -> ExpectationBuilder<'_> {
        ExpectationBuilder {
            db: self,
            pattern: pattern.to_string(),
            times: None,
        }
    }

    /// Runs fixture SQL directly (SQLite mode), unrecorded and unaffected by
    /// faults.
    pub fn exec(&self, sql: &str, params: &[Value]) -> Result<u64, DbError> {
        match self.mode.as_ref() {
            Mode::Sqlite(db) => crate::block_on(db.execute(sql, params)),
            Mode::Scripted => panic!("exec() needs a SQLite fake: a scripted one has no tables"),
        }
    }

    /// Queries the database directly (SQLite mode), unrecorded and
    /// unaffected by faults: for assertions on what a component wrote.
    pub fn read(&self, sql: &str, params: &[Value]) -> Result<Rows, DbError> {
        match self.mode.as_ref() {
            Mode::Sqlite(db) => crate::block_on(db.query(sql, params)),
            Mode::Scripted => panic!("read() needs a SQLite fake: a scripted one has no tables"),
        }
    }

    /// Every statement run since the start or the last
    /// [`clear_calls`](Self::clear_calls), in order (failed ones included).
    pub fn calls(&self) -> Vec<DbCall> {
        self.state().calls.clone()
    }

    pub fn clear_calls(&self) {
        self.state().calls.clear();
    }

    /// While set, every call fails with `error`: `DbError::Unavailable` for
    /// a database that is down, `DbError::Timeout` for one too slow.
    pub fn set_down(&self, error: Option<DbError>) {
        self.state().down = error;
    }

    /// The next call (or the next statement of a transaction, failing the
    /// whole transaction) fails with `error`; calls after it run normally.
    /// Queue several to fail several calls.
    pub fn fail_next(&self, error: DbError) {
        self.state().next_errors.push_back(error);
    }

    /// The statements that matched no expectation, described; empty in
    /// SQLite mode. [`crate::MockHost`] fails the test when one appears.
    pub fn unexpected(&self) -> Vec<String> {
        self.state().unexpected.clone()
    }

    /// Takes the unexpected statements, so that each fails one test step.
    pub(crate) fn take_unexpected(&self) -> Vec<String> {
        std::mem::take(&mut self.state().unexpected)
    }

    /// Records a call and applies the faults; `Some` is the answer when a
    /// fault or a script decides it.
    fn before(&self, kind: CallKind, sql: &str, params: &[Value]) -> Option<Answer> {
        let mut s = self.state();
        s.calls.push(DbCall {
            kind,
            sql: sql.to_string(),
            params: params.to_vec(),
        });
        // The host refuses what a component may not run before any database
        // sees it; so does the fake, with the same check and message.
        if let Err(refused) = host::db::check_component_sql(host::db::Engine::Sqlite, sql) {
            return Some(Answer::Error(refused));
        }
        if let Some(error) = s.down.clone() {
            return Some(Answer::Error(error));
        }
        if let Some(error) = s.next_errors.pop_front() {
            return Some(Answer::Error(error));
        }
        if matches!(self.mode.as_ref(), Mode::Sqlite(_)) {
            return None;
        }
        let normalized = normalize(sql);
        let found = s
            .expectations
            .iter_mut()
            .find(|e| normalized.contains(&e.pattern) && e.times.is_none_or(|n| e.used < n));
        match found {
            Some(e) => {
                e.used += 1;
                Some(e.answer.clone())
            }
            None => {
                let patterns: Vec<String> = s
                    .expectations
                    .iter()
                    .map(|e| format!("{:?}", e.pattern))
                    .collect();
                s.unexpected.push(format!(
                    "unexpected statement ({kind:?}): `{normalized}` with parameters {params:?}; \
                     expected statements containing one of [{}]",
                    patterns.join(", ")
                ));
                Some(Answer::Error(DbError::Other(
                    "unexpected statement (testkit)".into(),
                )))
            }
        }
    }
}

fn normalize(sql: &str) -> String {
    sql.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[async_trait]
impl Database for FakeDb {
    async fn migrate(&self) -> Result<(), DbError> {
        Ok(())
    }

    async fn query(&self, sql: &str, params: &[Value]) -> Result<Rows, DbError> {
        match self.before(CallKind::Query, sql, params) {
            Some(Answer::Rows(rows)) => Ok(rows),
            Some(Answer::Affected(_)) => Ok(Rows::default()),
            Some(Answer::Error(e)) => Err(e),
            None => match self.mode.as_ref() {
                Mode::Sqlite(db) => db.query(sql, params).await,
                Mode::Scripted => unreachable!("a scripted call always has an answer"),
            },
        }
    }

    async fn execute(&self, sql: &str, params: &[Value]) -> Result<u64, DbError> {
        match self.before(CallKind::Execute, sql, params) {
            Some(Answer::Rows(rows)) => Ok(rows.rows.len() as u64),
            Some(Answer::Affected(n)) => Ok(n),
            Some(Answer::Error(e)) => Err(e),
            None => match self.mode.as_ref() {
                Mode::Sqlite(db) => db.execute(sql, params).await,
                Mode::Scripted => unreachable!("a scripted call always has an answer"),
            },
        }
    }

    async fn transaction(&self, statements: &[Statement]) -> Result<Vec<Rows>, DbError> {
        self.transaction_with(statements, None).await
    }

    /// The invalidation is the host's business, not the component's: it is
    /// not recorded as a call, and only the in-memory database keeps it.
    async fn transaction_invalidating(
        &self,
        statements: &[Statement],
        invalidation: &Invalidation,
    ) -> Result<Vec<Rows>, DbError> {
        self.transaction_with(statements, Some(invalidation)).await
    }
}

impl FakeDb {
    async fn transaction_with(
        &self,
        statements: &[Statement],
        invalidation: Option<&Invalidation>,
    ) -> Result<Vec<Rows>, DbError> {
        let mut scripted = Vec::with_capacity(statements.len());
        let mut failure = None;
        for (i, s) in statements.iter().enumerate() {
            match self.before(CallKind::Transaction(i), &s.sql, &s.params) {
                Some(Answer::Error(e)) => {
                    failure = Some(e);
                    break;
                }
                Some(Answer::Rows(rows)) => scripted.push(rows),
                Some(Answer::Affected(_)) => scripted.push(Rows::default()),
                None => {}
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        match (self.mode.as_ref(), invalidation) {
            (Mode::Sqlite(db), None) => db.transaction(statements).await,
            (Mode::Sqlite(db), Some(invalidation)) => {
                db.transaction_invalidating(statements, invalidation).await
            }
            (Mode::Scripted, _) => Ok(scripted),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block_on;

    fn text(s: &str) -> Value {
        Value::Text(s.into())
    }

    #[test]
    fn the_sqlite_fake_has_the_real_schema_and_records_what_runs() {
        let db = FakeDb::sqlite();
        db.exec(
            "INSERT INTO categories (id, slug, name, description) VALUES ($1, $2, $3, $4)",
            &[text("cat-a"), text("a"), text("A"), text("all a")],
        )
        .unwrap();
        assert!(db.calls().is_empty(), "fixtures are not recorded");
        let rows = block_on(db.query(
            "SELECT slug FROM categories WHERE id = $1",
            &[text("cat-a")],
        ))
        .unwrap();
        assert_eq!(rows.rows, vec![vec![text("a")]]);
        assert_eq!(
            db.calls(),
            vec![DbCall {
                kind: CallKind::Query,
                sql: "SELECT slug FROM categories WHERE id = $1".into(),
                params: vec![text("cat-a")],
            }]
        );
    }

    #[test]
    fn the_demo_fixture_holds_the_demo_data() {
        let db = FakeDb::sqlite_with_demo(7);
        let agents = db.read("SELECT COUNT(*) AS n FROM agents", &[]).unwrap();
        assert_eq!(agents.rows[0][0], Value::Int(7));
        let token = db.read("SELECT user_id FROM api_tokens", &[]).unwrap();
        assert_eq!(token.rows[0][0], text(host::seed::DEMO_USER));
    }

    #[test]
    fn faults_fail_calls_as_asked_and_run_nothing() {
        let db = FakeDb::sqlite_with_demo(3);
        db.fail_next(DbError::Timeout("slow".into()));
        db.fail_next(DbError::Constraint("unique".into()));
        let insert = Statement {
            sql: "INSERT INTO categories (id, slug, name, description) VALUES ('c', 'c', 'C', 'c')"
                .into(),
            params: vec![],
        };
        let count = "SELECT COUNT(*) AS n FROM categories";
        block_on(async {
            assert_eq!(
                db.query(count, &[]).await,
                Err(DbError::Timeout("slow".into()))
            );
            assert_eq!(
                db.transaction(std::slice::from_ref(&insert)).await,
                Err(DbError::Constraint("unique".into()))
            );
            assert_eq!(
                db.query(count, &[]).await.unwrap().rows[0][0],
                Value::Int(12)
            );
            db.set_down(Some(DbError::Unavailable("down".into())));
            assert!(matches!(
                db.execute(&insert.sql, &[]).await,
                Err(DbError::Unavailable(_))
            ));
            db.set_down(None);
            assert_eq!(db.execute(&insert.sql, &[]).await, Ok(1));
        });
        assert_eq!(db.calls().len(), 5, "failed calls are recorded too");
    }

    #[test]
    fn scripted_statements_get_their_answers_in_order_of_expectation() {
        let db = FakeDb::scripted();
        db.expect("FROM agents WHERE id = $1")
            .times(1)
            .returns(rows(&["id"], vec![vec![text("agent-1")]]));
        db.expect("FROM agents").returns(rows(&["id"], vec![]));
        db.expect("UPDATE agents").affects(1);
        db.expect("INSERT INTO installations")
            .fails(DbError::Constraint("unique".into()));
        block_on(async {
            let sql = "SELECT id\n   FROM agents   WHERE id = $1";
            let first = db.query(sql, &[text("agent-1")]).await.unwrap();
            assert_eq!(first.rows.len(), 1);
            let second = db.query(sql, &[text("agent-1")]).await.unwrap();
            assert!(second.rows.is_empty(), "the first expectation was used up");
            assert_eq!(db.execute("UPDATE agents SET x = 1", &[]).await, Ok(1));
            let tx = [
                Statement {
                    sql: "UPDATE agents SET x = 2".into(),
                    params: vec![],
                },
                Statement {
                    sql: "INSERT INTO installations VALUES ($1)".into(),
                    params: vec![],
                },
            ];
            assert_eq!(
                db.transaction(&tx).await,
                Err(DbError::Constraint("unique".into()))
            );
        });
        assert!(db.unexpected().is_empty());
    }

    #[test]
    fn an_unexpected_statement_is_described_with_its_parameters() {
        let db = FakeDb::scripted();
        db.expect("FROM categories").returns(Rows::default());
        let result = block_on(db.query("DELETE FROM agents WHERE id = $1", &[text("agent-9")]));
        assert!(matches!(result, Err(DbError::Other(_))));
        let unexpected = db.unexpected();
        assert_eq!(unexpected.len(), 1);
        let message = &unexpected[0];
        assert!(
            message.contains("`DELETE FROM agents WHERE id = $1`"),
            "{message}"
        );
        assert!(message.contains("agent-9"), "{message}");
        assert!(message.contains("\"FROM categories\""), "{message}");
    }
}
