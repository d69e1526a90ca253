//! One conformance suite for the `db` capability, run against SQLite and a
//! real PostgreSQL (`DATABASE_URL`; never skipped under CI). Every check
//! uses the same SQL on both engines, except the DDL of the value table,
//! where the engines' type names differ. It runs on the host's view of the
//! database, which may create that table; what components may and may not
//! do on theirs is `security/sql.rs`.

use host::db::{Database, DbError, DbOptions, Rows, Statement, Value};
use host::seed::{self, DemoSpec, SeedOutcome};
use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Engine {
    Sqlite,
    Postgres,
}

/// A migrated database of one engine, and what keeps it alive.
struct Backend {
    engine: Engine,
    db: Arc<dyn Database>,
    _guard: Box<dyn Any + Send>,
}

async fn backends(options: DbOptions) -> Vec<Backend> {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("conformance.db").display());
    let sqlite = host::db::connect(&url, &options)
        .await
        .expect("SQLite opens")
        .host;
    sqlite.migrate().await.expect("SQLite migrates");
    let mut all = vec![Backend {
        engine: Engine::Sqlite,
        db: sqlite,
        _guard: Box::new(dir),
    }];
    if let Some(schema) = support::postgres::fresh_schema().await {
        let pg = host::db::connect(&schema.url, &options)
            .await
            .expect("Postgres pool")
            .host;
        pg.migrate().await.expect("Postgres migrates");
        all.push(Backend {
            engine: Engine::Postgres,
            db: pg,
            _guard: Box::new(schema),
        });
    }
    all
}

fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}

fn single(rows: &Rows) -> &[Value] {
    assert_eq!(rows.rows.len(), 1, "expected one row, got {rows:?}");
    &rows.rows[0]
}

const VALUE_TABLE_SQLITE: &str = "CREATE TABLE vals (id BIGINT PRIMARY KEY, b BOOLEAN, i BIGINT, \
     f DOUBLE PRECISION, t TEXT, by BLOB, j TEXT, ts TIMESTAMP, n TEXT)";
const VALUE_TABLE_POSTGRES: &str = "CREATE TABLE vals (id BIGINT PRIMARY KEY, b BOOLEAN, i BIGINT, \
     f DOUBLE PRECISION, t TEXT, by BYTEA, j JSONB, ts TIMESTAMPTZ, n TEXT)";

async fn value_table(b: &Backend) {
    let ddl = match b.engine {
        Engine::Sqlite => VALUE_TABLE_SQLITE,
        Engine::Postgres => VALUE_TABLE_POSTGRES,
    };
    b.db.execute(ddl, &[]).await.expect("value table created");
}

#[tokio::test]
async fn every_value_type_round_trips() {
    let cases: Vec<[Value; 8]> = vec![
        [
            Value::Bool(true),
            Value::Int(i64::MAX),
            Value::Float(1.5),
            text("héllo wörld 🌍 \u{1F469}\u{200D}\u{1F4BB} 'single' \"double\" \\ back"),
            Value::Bytes(vec![0, 1, 2, 0x7f, 0x80, 0xfe, 0xff]),
            Value::Json(r#"{"a":[1,2,{"b":null}],"c":"ü"}"#.into()),
            Value::Timestamp(1_700_000_000_123),
            Value::Null,
        ],
        [
            Value::Bool(false),
            Value::Int(i64::MIN),
            Value::Float(-1.0e300),
            text(""),
            Value::Bytes(vec![]),
            Value::Json("[]".into()),
            Value::Timestamp(-86_400_000),
            Value::Null,
        ],
    ];
    for b in backends(DbOptions::default()).await {
        value_table(&b).await;
        for (id, case) in cases.iter().enumerate() {
            let mut params = vec![Value::Int(id as i64)];
            params.extend(case.iter().cloned());
            let inserted = b
                .db
                .execute("INSERT INTO vals (id, b, i, f, t, by, j, ts, n) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)", &params)
                .await
                .unwrap_or_else(|e| panic!("{:?}: insert failed: {e}", b.engine));
            assert_eq!(inserted, 1);
            let rows =
                b.db.query(
                    "SELECT b, i, f, t, by, j, ts, n FROM vals WHERE id = $1",
                    &[Value::Int(id as i64)],
                )
                .await
                .unwrap();
            assert_eq!(
                rows.columns,
                ["b", "i", "f", "t", "by", "j", "ts", "n"],
                "{:?}",
                b.engine
            );
            let got = single(&rows);
            for (k, (want, got)) in case.iter().zip(got).enumerate() {
                match (want, got) {
                    // JSON compares as JSON: Postgres normalizes JSONB text.
                    // SQLite has no JSON type and gives the text back.
                    (Value::Json(w), Value::Json(g)) if b.engine == Engine::Postgres => assert_eq!(
                        serde_json::from_str::<serde_json::Value>(w).unwrap(),
                        serde_json::from_str::<serde_json::Value>(g).unwrap()
                    ),
                    (Value::Json(w), Value::Text(g)) if b.engine == Engine::Sqlite => {
                        assert_eq!(w, g)
                    }
                    _ => assert_eq!(want, got, "{:?}: column {k} of case {id}", b.engine),
                }
            }
        }
    }
}

#[tokio::test]
async fn placeholders_bind_in_any_order_and_repeat() {
    for b in backends(DbOptions::default()).await {
        let rows =
            b.db.query(
                "SELECT $2 AS a, $1 AS b, $2 AS c",
                &[Value::Int(7), text("two")],
            )
            .await
            .unwrap();
        assert_eq!(
            single(&rows),
            [text("two"), Value::Int(7), text("two")],
            "{:?}",
            b.engine
        );

        value_table(&b).await;
        for id in 1..=3 {
            b.db.execute(
                "INSERT INTO vals (id, t) VALUES ($1, $2)",
                &[Value::Int(id), text(&format!("row {id}"))],
            )
            .await
            .unwrap();
        }
        let rows =
            b.db.query(
                "SELECT id FROM vals WHERE t = $2 OR id = $1 OR id = $1 + 0 ORDER BY id",
                &[Value::Int(3), text("row 1")],
            )
            .await
            .unwrap();
        assert_eq!(
            rows.rows,
            vec![vec![Value::Int(1)], vec![Value::Int(3)]],
            "{:?}",
            b.engine
        );
    }
}

#[tokio::test]
async fn a_failing_statement_inside_a_transaction_leaves_nothing_behind() {
    for b in backends(DbOptions::default()).await {
        value_table(&b).await;
        let insert = |id: i64| Statement {
            sql: "INSERT INTO vals (id, t) VALUES ($1, $2)".into(),
            params: vec![Value::Int(id), text("in tx")],
        };
        let result =
            b.db.transaction(&[insert(10), insert(11), insert(10)])
                .await;
        assert!(
            matches!(result, Err(DbError::Constraint(_))),
            "{:?}: {result:?}",
            b.engine
        );
        let rows =
            b.db.query("SELECT COUNT(*) AS n FROM vals", &[])
                .await
                .unwrap();
        assert_eq!(
            single(&rows),
            [Value::Int(0)],
            "{:?}: a partial transaction survived",
            b.engine
        );

        let ok = b.db.transaction(&[insert(10), insert(11)]).await.unwrap();
        assert_eq!(ok.len(), 2);
        let rows =
            b.db.query("SELECT COUNT(*) AS n FROM vals", &[])
                .await
                .unwrap();
        assert_eq!(single(&rows), [Value::Int(2)]);
    }
}

#[tokio::test]
async fn constraint_violations_come_back_as_constraint_errors() {
    for b in backends(DbOptions::default()).await {
        let category = [text("cat-x"), text("x"), text("X"), text("d")];
        let sql = "INSERT INTO categories (id, slug, name, description) VALUES ($1, $2, $3, $4)";
        b.db.execute(sql, &category).await.unwrap();
        let unique = b.db.execute(sql, &category).await;
        assert!(
            matches!(unique, Err(DbError::Constraint(_))),
            "{:?}: {unique:?}",
            b.engine
        );

        let foreign =
            b.db.execute(
                "INSERT INTO workspace_members (workspace_id, user_id, role) VALUES ($1, $2, $3)",
                &[text("no-such-ws"), text("no-such-user"), text("owner")],
            )
            .await;
        assert!(
            matches!(foreign, Err(DbError::Constraint(_))),
            "{:?}: {foreign:?}",
            b.engine
        );

        let syntax =
            b.db.execute("INSERT INTO nowhere VALUES ($1)", &[Value::Int(1)])
                .await;
        assert!(
            matches!(syntax, Err(DbError::Other(_))),
            "{:?}: {syntax:?}",
            b.engine
        );
    }
}

#[tokio::test]
async fn a_too_slow_statement_comes_back_as_timeout_and_the_pool_recovers() {
    let options = DbOptions {
        statement_timeout: Duration::from_millis(300),
        ..DbOptions::default()
    };
    for b in backends(options).await {
        let endless = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT COUNT(*) AS n FROM c";
        let result = b.db.query(endless, &[]).await;
        assert!(
            matches!(result, Err(DbError::Timeout(_))),
            "{:?}: {result:?}",
            b.engine
        );
        let after = b.db.query("SELECT 1 AS one", &[]).await.unwrap();
        assert_eq!(single(&after), [Value::Int(1)], "{:?}", b.engine);
    }
}

#[tokio::test]
async fn text_that_looks_like_sql_is_stored_as_text() {
    for b in backends(DbOptions::default()).await {
        value_table(&b).await;
        let evil = "Robert'); DROP TABLE vals; -- $1 ' OR '1'='1";
        b.db.execute(
            "INSERT INTO vals (id, t) VALUES ($1, $2)",
            &[Value::Int(1), text(evil)],
        )
        .await
        .unwrap();
        let rows =
            b.db.query("SELECT t FROM vals WHERE t = $1", &[text(evil)])
                .await
                .unwrap();
        assert_eq!(single(&rows), [text(evil)], "{:?}", b.engine);
        let rows =
            b.db.query("SELECT COUNT(*) AS n FROM vals", &[])
                .await
                .unwrap();
        assert_eq!(
            single(&rows),
            [Value::Int(1)],
            "{:?}: the table is intact",
            b.engine
        );
    }
}

#[tokio::test]
async fn migrations_are_idempotent() {
    for b in backends(DbOptions::default()).await {
        let applied = "SELECT version FROM _sqlx_migrations ORDER BY version";
        let before = b.db.query(applied, &[]).await.unwrap();
        assert!(
            !before.rows.is_empty(),
            "{:?}: no migration recorded",
            b.engine
        );
        b.db.execute(
            "INSERT INTO categories (id, slug, name, description) VALUES ($1, $2, $3, $4)",
            &[
                text("cat-keep"),
                text("keep"),
                text("Keep"),
                text("kept across a second start"),
            ],
        )
        .await
        .unwrap();
        b.db.migrate()
            .await
            .expect("a second migration run succeeds");
        assert_eq!(
            b.db.query(applied, &[]).await.unwrap(),
            before,
            "{:?}",
            b.engine
        );
        let kept =
            b.db.query("SELECT COUNT(*) AS n FROM categories", &[])
                .await
                .unwrap();
        assert_eq!(
            single(&kept),
            [Value::Int(1)],
            "{:?}: data survives",
            b.engine
        );
    }
}

/// Every table of the dataset, rows in primary-key order.
async fn dump(db: &dyn Database) -> Vec<Rows> {
    let mut out = Vec::new();
    for (table, order) in [
        ("categories", "id"),
        ("users", "id"),
        ("workspaces", "id"),
        ("workspace_members", "workspace_id, user_id"),
        ("agents", "id"),
        ("installations", "id"),
        ("workflow_templates", "id"),
        ("api_tokens", "token_hash"),
    ] {
        out.push(
            db.query(&format!("SELECT * FROM {table} ORDER BY {order}"), &[])
                .await
                .unwrap(),
        );
    }
    out
}

#[tokio::test]
async fn the_demo_data_is_identical_across_generations_with_the_same_seed() {
    let spec = DemoSpec {
        seed: 7,
        agents: 250,
        now_ms: 1_767_225_600_000,
    };
    let first = backends(DbOptions::default()).await;
    let second = backends(DbOptions::default()).await;
    for (a, b) in first.iter().zip(&second) {
        assert_eq!(
            seed::seed_if_empty(a.db.as_ref(), &spec).await.unwrap(),
            SeedOutcome::Generated
        );
        assert_eq!(
            seed::seed_if_empty(b.db.as_ref(), &spec).await.unwrap(),
            SeedOutcome::Generated
        );
        let dump_a = dump(a.db.as_ref()).await;
        assert_eq!(dump_a[4].rows.len(), 250, "{:?}: agents", a.engine);
        assert_eq!(dump_a[6].rows.len(), 100, "{:?}: templates", a.engine);
        assert!(
            dump_a[5].rows.len() > 100,
            "{:?}: install history",
            a.engine
        );
        assert_eq!(dump_a, dump(b.db.as_ref()).await, "{:?}", a.engine);

        // Seeding again changes nothing.
        assert_eq!(
            seed::seed_if_empty(a.db.as_ref(), &spec).await.unwrap(),
            SeedOutcome::Present
        );
        assert_eq!(dump(a.db.as_ref()).await, dump_a, "{:?}", a.engine);
    }

    let other = backends(DbOptions::default()).await;
    let other_spec = DemoSpec { seed: 8, ..spec };
    seed::seed_if_empty(other[0].db.as_ref(), &other_spec)
        .await
        .unwrap();
    assert_ne!(
        dump(other[0].db.as_ref()).await[4],
        dump(first[0].db.as_ref()).await[4],
        "the seed matters"
    );
}

#[tokio::test]
async fn an_unreachable_postgres_is_unavailable() {
    let Some(_) = support::postgres::server_url() else {
        return;
    };
    let options = DbOptions {
        acquire_timeout: Duration::from_millis(300),
        ..DbOptions::default()
    };
    // Port 1 on loopback: nothing listens there.
    let db = host::db::connect("postgres://postgres@127.0.0.1:1/test", &options)
        .await
        .unwrap();
    let result = db.components.query("SELECT 1 AS one", &[]).await;
    assert!(matches!(result, Err(DbError::Unavailable(_))), "{result:?}");
}

/// Both views of a migrated database of each engine: (engine, host view,
/// components' view, what keeps it alive).
async fn both_views() -> Vec<(Engine, host::db::Databases, Box<dyn Any + Send>)> {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("views.db").display());
    let sqlite = host::db::connect(&url, &DbOptions::default())
        .await
        .expect("SQLite opens");
    sqlite.host.migrate().await.expect("SQLite migrates");
    let mut all: Vec<(Engine, host::db::Databases, Box<dyn Any + Send>)> =
        vec![(Engine::Sqlite, sqlite, Box::new(dir))];
    if let Some(schema) = support::postgres::fresh_schema().await {
        let pg = host::db::connect(&schema.url, &DbOptions::default())
            .await
            .expect("Postgres pool");
        pg.host.migrate().await.expect("Postgres migrates");
        all.push((Engine::Postgres, pg, Box::new(schema)));
    }
    all
}

async fn outbox(db: &dyn Database) -> Vec<(String, String)> {
    let rows = db
        .query("SELECT id, tags FROM cache_outbox ORDER BY created_at", &[])
        .await
        .unwrap();
    rows.rows
        .into_iter()
        .map(|r| match (&r[0], &r[1]) {
            (Value::Text(id), Value::Text(tags)) => (id.clone(), tags.clone()),
            other => panic!("an outbox row of text: {other:?}"),
        })
        .collect()
}

// A component's transaction that names tags records them in the outbox in
// that same transaction: with its writes, or not at all. The component
// itself can neither read nor write the outbox.
#[tokio::test]
async fn an_invalidation_is_recorded_with_its_transaction_or_not_at_all() {
    for (engine, views, _guard) in both_views().await {
        views
            .host
            .execute(
                "INSERT INTO categories (id, slug, name, description) VALUES ('c1', 'one', 'One', '')",
                &[],
            )
            .await
            .unwrap();
        let rename = |name: &str| Statement {
            sql: "UPDATE categories SET name = $1 WHERE id = 'c1'".into(),
            params: vec![text(name)],
        };
        let invalidation = host::db::Invalidation::new(vec!["ns/categories".into()]);
        views
            .components
            .transaction_invalidating(&[rename("Two")], &invalidation)
            .await
            .unwrap_or_else(|e| panic!("{engine:?}: {e}"));
        assert_eq!(
            outbox(views.host.as_ref()).await,
            vec![(invalidation.id.clone(), r#"["ns/categories"]"#.to_string())],
            "{engine:?}"
        );

        // A failing statement: neither the rename nor the record is kept.
        let failing = Statement {
            sql:
                "INSERT INTO categories (id, slug, name, description) VALUES ('c1', 'dup', 'x', '')"
                    .into(),
            params: vec![],
        };
        let lost = host::db::Invalidation::new(vec!["ns/categories".into()]);
        let result = views
            .components
            .transaction_invalidating(&[rename("Three"), failing], &lost)
            .await;
        assert!(
            matches!(result, Err(DbError::Constraint(_))),
            "{engine:?}: {result:?}"
        );
        assert_eq!(outbox(views.host.as_ref()).await.len(), 1, "{engine:?}");
        let name = views
            .host
            .query("SELECT name FROM categories WHERE id = 'c1'", &[])
            .await
            .unwrap();
        assert_eq!(single(&name), &[text("Two")], "{engine:?}");

        for sql in [
            "SELECT id FROM cache_outbox",
            "INSERT INTO cache_outbox (id, tags, created_at) VALUES ('x', '[]', 0)",
            "DELETE FROM cache_outbox",
        ] {
            let result = views.components.query(sql, &[]).await;
            assert!(
                matches!(result, Err(DbError::Refused(_))),
                "{engine:?}: {sql}: {result:?}"
            );
        }
    }
}
