//! The `db` import as a sandbox boundary, on SQLite and a real PostgreSQL:
//! the fixture component sends every attack we know through it, and each
//! one must come back as a clear `db` error, leave nothing on the pooled
//! connections, reach no file of the host's, and lose no write of another
//! component's.
//!
//! The second half bypasses the parser check (`guard`) and sends the same
//! attacks to the engines' component views directly: the role grants
//! (PostgreSQL) and the authorizer (SQLite) must hold on their own.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use host::db::{Database, DbError, DbOptions, PostgresDatabase, SqliteDatabase, Value};
use host::runtime::SandboxConfig;
use std::path::Path;
use support::postgres::PgSchema;
use support::{DEFAULT_ROUTES, TestHost, host_on, json, send};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Engine {
    Sqlite,
    Postgres,
}

/// A host on each engine (PostgreSQL never skipped under CI), with what
/// keeps its database alive.
async fn hosts() -> Vec<(Engine, TestHost, Option<PgSchema>)> {
    let mut all = vec![(
        Engine::Sqlite,
        host_on(
            None,
            None,
            SandboxConfig::default(),
            Default::default(),
            DEFAULT_ROUTES,
        )
        .await,
        None,
    )];
    if let Some(schema) = support::postgres::fresh_schema().await {
        let h = host_on(
            Some(schema.url.clone()),
            None,
            SandboxConfig::default(),
            Default::default(),
            DEFAULT_ROUTES,
        )
        .await;
        all.push((Engine::Postgres, h, Some(schema)));
    }
    all
}

/// What the fixture's `sql` action answered: `Ok(json)` or the error's
/// kind and message.
async fn run_sql(
    h: &TestHost,
    mode: &str,
    sql: &str,
) -> Result<serde_json::Value, (String, String)> {
    let request = Request::post(format!("/fixture/sql?mode={mode}"))
        .body(Body::from(sql.to_string()))
        .unwrap();
    let (response, body) = send(&h.app, request).await;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&body)
    );
    let v = json(&body);
    match v.get("ok") {
        Some(ok) => Ok(ok.clone()),
        None => Err((
            v["error"]["kind"].as_str().unwrap_or_default().to_string(),
            v["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        )),
    }
}

/// Asserts that `sql` is refused with a clear message.
async fn assert_refused(engine: Engine, h: &TestHost, mode: &str, sql: &str) {
    match run_sql(h, mode, sql).await {
        Err((kind, message)) => {
            assert_eq!(kind, "other", "{engine:?} {sql:?}: {message}");
            assert!(
                message.starts_with("refused: "),
                "{engine:?} {sql:?}: the message should say it was refused: {message}"
            );
        }
        Ok(ok) => panic!("{engine:?} accepted {sql:?}: {ok}"),
    }
}

/// Creates a template as the demo user; returns its id.
async fn create_template(h: &TestHost, name: &str) -> String {
    let body = serde_json::json!({
        "name": name,
        "description": "Made while a component attacked the database.",
        "category": "data-analysis",
        "complexity": "beginner",
        "steps": [{"name": "One"}],
        "tags": ["attack-test"]
    });
    let request = Request::post("/api/templates")
        .header(
            "authorization",
            format!("Bearer {}", host::seed::DEMO_TOKEN),
        )
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let (response, body) = send(&h.app, request).await;
    assert_eq!(
        response.status(),
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&body)
    );
    json(&body)["template"]["id"].as_str().unwrap().to_string()
}

/// Templates tagged by `create_template`, as the templates component reads
/// them (a fresh query each time: the creation invalidated the listing).
async fn attack_test_templates(h: &TestHost) -> usize {
    let (response, body) = support::get(&h.app, "/api/templates?query=attacked&limit=100").await;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&body)
    );
    json(&body)["total"].as_u64().unwrap() as usize
}

fn attacks(engine: Engine, dir: &Path) -> Vec<(&'static str, String)> {
    let file = |name: &str| dir.join(name).display().to_string();
    let mut all = vec![
        ("query", "BEGIN".to_string()),
        ("execute", "BEGIN".to_string()),
        ("execute", "COMMIT".to_string()),
        ("execute", "SET statement_timeout = 1".to_string()),
        ("query", "SELECT set_config('search_path', 'nowhere', false)".to_string()),
        ("query", "SELECT token_hash, user_id FROM api_tokens".to_string()),
        ("query", "SELECT user_id FROM workspace_members".to_string()),
        ("execute", "DELETE FROM cache_warm".to_string()),
        // Which component version serves is the host's record alone.
        (
            "execute",
            "INSERT INTO component_history (component, seq, digest) VALUES ('marketplace', 99, 'x')"
                .to_string(),
        ),
        ("query", "SELECT bytes FROM component_versions".to_string()),
        ("execute", "DELETE FROM fleet_hosts".to_string()),
        (
            "execute",
            "UPDATE component_canary SET share = 99".to_string(),
        ),
        (
            "execute",
            "INSERT INTO api_tokens (token_hash, user_id, name, created_at) VALUES ('00', 'user-demo', 'stolen', 0)"
                .to_string(),
        ),
        ("execute", "UPDATE workflow_templates SET name = 'x'; DELETE FROM agents".to_string()),
        ("query", "SELECT 1 AS a; SELECT 2 AS b".to_string()),
        ("execute", "CREATE TABLE loot (a TEXT)".to_string()),
        ("execute", "DROP TABLE workflow_templates".to_string()),
        (
            "query",
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000000) SELECT i FROM n"
                .to_string(),
        ),
        ("transaction", "SELECT 1 AS one\nBEGIN".to_string()),
    ];
    match engine {
        Engine::Sqlite => all.extend([
            ("execute", "PRAGMA query_only = 1".to_string()),
            (
                "execute",
                format!("ATTACH DATABASE '{}' AS loot", file("attached.db")),
            ),
            ("execute", format!("VACUUM INTO '{}'", file("copy.db"))),
            ("query", "SELECT name FROM sqlite_master".to_string()),
            (
                "query",
                "SELECT load_extension('/nonexistent/evil')".to_string(),
            ),
        ]),
        Engine::Postgres => all.extend([
            ("execute", "SET search_path = nowhere".to_string()),
            ("execute", "SET ROLE postgres".to_string()),
            ("execute", "RESET ROLE".to_string()),
            ("execute", "SET SESSION AUTHORIZATION postgres".to_string()),
            (
                "execute",
                format!("COPY agents TO '{}'", file("agents.csv")),
            ),
            (
                "execute",
                format!("COPY (SELECT 1) TO PROGRAM 'touch {}'", file("pwned")),
            ),
            ("query", "SELECT pg_read_file('/etc/hostname')".to_string()),
            ("query", "SELECT pg_advisory_lock(42)".to_string()),
            (
                "transaction",
                "SELECT * FROM ts_stat('SELECT set_config(''role'', ''none'', true)::tsvector')\nSELECT token_hash FROM api_tokens"
                    .to_string(),
            ),
            ("query", "SELECT rolname FROM pg_roles".to_string()),
            (
                "query",
                "SELECT generate_series(1, 5000000) AS n".to_string(),
            ),
        ]),
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_known_attack_through_the_db_import_is_refused_and_harms_no_one() {
    let files = tempfile::tempdir().unwrap();
    for (engine, h, _schema) in hosts().await {
        let before = attack_test_templates(&h).await;
        let mut written = 0;
        for (mode, sql) in attacks(engine, files.path()) {
            assert_refused(engine, &h, mode, &sql).await;
            // Another component, on the same pool, right after: its write
            // answers 201 and is there to read.
            create_template(&h, &format!("attacked {written}")).await;
            written += 1;
            assert_eq!(
                attack_test_templates(&h).await,
                before + written,
                "{engine:?}: a write was lost after {sql:?}"
            );
        }
        // What a handler needs still works, on both kinds of call.
        let ok = run_sql(&h, "query", "SELECT COUNT(*) AS n FROM agents")
            .await
            .unwrap_or_else(|e| panic!("{engine:?}: {e:?}"));
        assert_eq!(ok["rows"][0][0], host::DEMO_AGENTS as u64, "{engine:?}");
        run_sql(
            &h,
            "transaction",
            "UPDATE agents SET rating = rating WHERE id = 'agent-000001'\nSELECT id FROM agents WHERE id = 'agent-000001'",
        )
        .await
        .unwrap_or_else(|e| panic!("{engine:?}: {e:?}"));
        // The demo token still authenticates (the host's own lookup was
        // never disturbed) and no stolen token works.
        let stolen = Request::post("/api/templates")
            .header("authorization", "Bearer 00")
            .body(Body::from("{}"))
            .unwrap();
        assert_eq!(
            send(&h.app, stolen).await.0.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let left: Vec<_> = std::fs::read_dir(files.path()).unwrap().collect();
    assert!(
        left.is_empty(),
        "an attack wrote a file on the host: {left:?}"
    );
}

// The second defence on its own: the engines' component views without the
// parser in front.

async fn migrated_sqlite(dir: &Path) -> (SqliteDatabase, SqliteDatabase) {
    let url = format!("sqlite://{}", dir.join("db.sqlite").display());
    let options = DbOptions::default();
    let host = SqliteDatabase::open(&url, &options).await.unwrap();
    host.migrate().await.unwrap();
    seed_small(&host).await;
    let components = SqliteDatabase::open_for_components(&url, &options)
        .await
        .unwrap();
    (host, components)
}

async fn seed_small(host: &dyn Database) {
    let spec = host::seed::DemoSpec {
        seed: 1,
        agents: 10,
        now_ms: host::today_ms(),
    };
    host::seed::seed_if_empty(host, &spec).await.unwrap();
}

fn is_refused<T: std::fmt::Debug>(result: &Result<T, DbError>) -> bool {
    matches!(result, Err(DbError::Refused(_)))
}

#[tokio::test]
async fn the_sqlite_authorizer_alone_keeps_components_to_the_product_tables() {
    let dir = tempfile::tempdir().unwrap();
    let (_host, db) = migrated_sqlite(dir.path()).await;
    let attached = dir.path().join("attached.db");
    let copy = dir.path().join("copy.db");
    for sql in [
        "SELECT token_hash FROM api_tokens".to_string(),
        "SELECT user_id FROM workspace_members".to_string(),
        "SELECT email FROM users".to_string(),
        "INSERT INTO cache_warm (component, target, bucket, hits) VALUES ('m', '/', 1, 0)"
            .to_string(),
        "UPDATE component_versions SET bytes = x'00'".to_string(),
        "DELETE FROM component_history".to_string(),
        "UPDATE component_canary SET state = 'running'".to_string(),
        "SELECT sql FROM sqlite_master".to_string(),
        "INSERT INTO api_tokens (token_hash, user_id, name, created_at) VALUES ('00', 'u', 'n', 0)"
            .to_string(),
        "BEGIN".to_string(),
        "PRAGMA query_only = 1".to_string(),
        format!("ATTACH DATABASE '{}' AS loot", attached.display()),
        format!("VACUUM INTO '{}'", copy.display()),
        "CREATE TABLE loot (a TEXT)".to_string(),
        "CREATE TEMP TABLE loot (a TEXT)".to_string(),
        "DROP TABLE agents".to_string(),
        "SAVEPOINT mine".to_string(),
    ] {
        let result = db.execute(&sql, &[]).await;
        assert!(is_refused(&result), "{sql}: {result:?}");
    }
    assert!(!attached.exists() && !copy.exists());
    // Ordinary work, including a write into a table with foreign keys to
    // the host's tables and a transaction, still runs.
    let n = db
        .query("SELECT COUNT(*) AS n FROM agents", &[])
        .await
        .unwrap();
    assert_eq!(n.rows[0][0], Value::Int(10));
    db.transaction(&[host::db::Statement {
        sql: "INSERT INTO installations (id, agent_id, workspace_id, installed_by, created_at) \
              SELECT 'i-test', id, 'ws-demo', 'user-demo', 0 FROM agents LIMIT 1"
            .into(),
        params: vec![],
    }])
    .await
    .unwrap();
    let got = db
        .query(
            "SELECT COUNT(*) AS n FROM installations WHERE id = 'i-test'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(got.rows[0][0], Value::Int(1));
}

#[tokio::test]
async fn a_result_past_the_caps_is_refused_on_both_engines() {
    let dir = tempfile::tempdir().unwrap();
    let options = DbOptions {
        max_rows: 100,
        max_result_bytes: 64 << 10,
        ..DbOptions::default()
    };
    let url = format!("sqlite://{}", dir.path().join("db.sqlite").display());
    let mut views: Vec<(Engine, Box<dyn Database>, Option<PgSchema>)> = vec![(
        Engine::Sqlite,
        Box::new(
            SqliteDatabase::open_for_components(&url, &options)
                .await
                .unwrap(),
        ),
        None,
    )];
    if let Some(schema) = support::postgres::fresh_schema().await {
        let pg = PostgresDatabase::connect_lazy(&schema.url, &options).unwrap();
        pg.migrate().await.unwrap();
        views.push((
            Engine::Postgres,
            Box::new(pg.for_components(&options)),
            Some(schema),
        ));
    }
    let many = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000000) SELECT i FROM n";
    let wide = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 90) \
                SELECT i, printf('%.2000c', 'x') AS pad FROM n";
    let wide_pg = "SELECT i, repeat('x', 2000) AS pad FROM generate_series(1, 90) AS i";
    for (engine, db, _schema) in views {
        let rows = db.query(many, &[]).await;
        assert!(
            matches!(rows, Err(DbError::TooLarge(_))),
            "{engine:?}: {rows:?}"
        );
        let wide = if engine == Engine::Postgres {
            wide_pg
        } else {
            wide
        };
        let bytes = db.query(wide, &[]).await;
        assert!(
            matches!(bytes, Err(DbError::TooLarge(_))),
            "{engine:?}: {bytes:?}"
        );
        // Under the caps, the same shapes pass, on the same pool.
        let fine = db
            .query(&many.replace("1000000", "100"), &[])
            .await
            .unwrap_or_else(|e| panic!("{engine:?}: {e}"));
        assert_eq!(fine.rows.len(), 100);
    }
}

#[tokio::test]
async fn the_postgres_role_alone_keeps_components_to_the_product_tables_and_leaves_no_state() {
    let Some(schema) = support::postgres::fresh_schema().await else {
        return;
    };
    let options = DbOptions {
        max_connections: 1, // every call below shares one connection
        ..DbOptions::default()
    };
    let host = PostgresDatabase::connect_lazy(&schema.url, &options).unwrap();
    host.migrate().await.unwrap();
    seed_small(&host).await;
    let db = host.for_components(&options);
    for sql in [
        "SELECT token_hash FROM api_tokens",
        "SELECT user_id FROM workspace_members",
        "INSERT INTO api_tokens (token_hash, user_id, name, created_at) VALUES ('00', 'user-demo', 'n', 0)",
        "COPY agents TO '/tmp/marketplace-agents.csv'",
        "COPY (SELECT 1) TO PROGRAM 'true'",
        "SELECT pg_read_file('/etc/hostname')",
        "CREATE TABLE loot (a TEXT)",
    ] {
        let result = db.execute(sql, &[]).await;
        assert!(is_refused(&result), "{sql}: {result:?}");
    }
    // Session changes a parser might miss do not outlive their call.
    for sql in [
        "SET search_path = nowhere",
        "SELECT set_config('statement_timeout', '1', false)",
        "SELECT pg_advisory_lock(42)",
        "BEGIN",
        "RESET ROLE",
    ] {
        let _ = db.execute(sql, &[]).await;
        let n = db
            .query("SELECT COUNT(*)::BIGINT AS n FROM agents", &[])
            .await
            .unwrap_or_else(|e| panic!("after {sql}: {e}"));
        assert_eq!(n.rows[0][0], Value::Int(10), "after {sql}");
        let stolen = db.query("SELECT token_hash FROM api_tokens", &[]).await;
        assert!(is_refused(&stolen), "after {sql}: {stolen:?}");
    }
    let locks = host
        .query(
            "SELECT COUNT(*)::BIGINT AS n FROM pg_locks \
             WHERE locktype = 'advisory' AND pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        locks.rows[0][0],
        Value::Int(0),
        "an advisory lock outlived its call"
    );
    let setting = host
        .query("SELECT current_setting('statement_timeout') AS t", &[])
        .await
        .unwrap();
    assert_eq!(setting.rows[0][0], Value::Text("5s".into()));
}

fn statement(sql: &str) -> host::db::Statement {
    host::db::Statement {
        sql: sql.into(),
        params: vec![],
    }
}

#[tokio::test]
async fn a_postgres_call_that_leaves_its_role_is_refused_whole_and_keeps_nothing() {
    let Some(schema) = support::postgres::fresh_schema().await else {
        return;
    };
    let host = PostgresDatabase::connect_lazy(&schema.url, &DbOptions::default()).unwrap();
    host.migrate().await.unwrap();
    seed_small(&host).await;
    // Without the parser in front: ts_stat runs SQL given as text, which
    // resets the role for the rest of the transaction.
    let db = host.for_components(&DbOptions::default());
    let attack = db
        .transaction(&[
            statement(
                "SELECT * FROM ts_stat('SELECT set_config(''role'', ''none'', true)::tsvector')",
            ),
            statement(
                "INSERT INTO api_tokens (token_hash, user_id, name, created_at) \
                 VALUES ('01', 'user-demo', 'stolen', 0)",
            ),
            statement("SELECT token_hash FROM api_tokens"),
        ])
        .await;
    assert!(is_refused(&attack), "{attack:?}");
    let kept = host
        .query(
            "SELECT COUNT(*)::BIGINT AS n FROM api_tokens WHERE token_hash = '01'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(kept.rows[0][0], Value::Int(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_call_cancelled_halfway_leaves_no_transaction_on_the_pool() {
    let Some(schema) = support::postgres::fresh_schema().await else {
        return;
    };
    let options = DbOptions {
        max_connections: 1, // the next call gets the same connection, if kept
        ..DbOptions::default()
    };
    let host = PostgresDatabase::connect_lazy(&schema.url, &options).unwrap();
    host.migrate().await.unwrap();
    seed_small(&host).await;
    let db = host.for_components(&options);
    // A deadline (or a client gone) drops the call inside its transaction.
    let cancelled = tokio::time::timeout(
        std::time::Duration::from_millis(300),
        db.transaction(&[
            statement(
                "INSERT INTO categories (id, slug, name, description) \
                 VALUES ('cat-x', 'x', 'X', 'half done')",
            ),
            statement("SELECT pg_sleep(3)::TEXT AS slept"),
        ]),
    )
    .await;
    assert!(cancelled.is_err(), "the call should still be running");
    let who = host
        .query("SELECT current_user::TEXT AS u", &[])
        .await
        .unwrap();
    assert_ne!(
        who.rows[0][0],
        Value::Text(host::db::COMPONENT_ROLE.into()),
        "the host's next statement ran as the component"
    );
    let half = host
        .query(
            "SELECT COUNT(*)::BIGINT AS n FROM categories WHERE id = 'cat-x'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        half.rows[0][0],
        Value::Int(0),
        "half a transaction was kept"
    );
}

// The tags a transaction invalidates travel in one outbox row, one
// notification and one Redis call: past 64 tags, or a tag past 256 bytes,
// the call is refused and nothing of it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_naming_too_many_tags_is_refused_and_runs_nothing() {
    let rename = "UPDATE categories SET name = 'Renamed' WHERE slug = 'coding'";
    for (engine, h, _schema) in hosts().await {
        let too_many: String = (0..65).map(|i| format!("&tag=t{i}")).collect();
        assert_refused(engine, &h, &format!("transaction{too_many}"), rename).await;
        let too_long = format!("&tag={}", "x".repeat(257));
        assert_refused(engine, &h, &format!("transaction{too_long}"), rename).await;
        let names = run_sql(&h, "query", "SELECT name FROM categories")
            .await
            .unwrap();
        assert!(
            !names.to_string().contains("Renamed"),
            "{engine:?}: {names}"
        );

        let at_the_limit: String = (0..64)
            .map(|i| format!("&tag={}{i:02}", "y".repeat(254)))
            .collect();
        run_sql(&h, &format!("transaction{at_the_limit}"), rename)
            .await
            .unwrap_or_else(|e| panic!("{engine:?}: {e:?}"));
    }
}
