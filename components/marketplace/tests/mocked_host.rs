//! The marketplace component against the mocked host: no Redis, no
//! PostgreSQL, no HTTP server.

use serde_json::json;
use std::time::Duration;
use testkit::{CacheCall, DbError, FakeDb, MockHost, TestRequest, Value, rows};

fn host() -> MockHost {
    MockHost::new(
        testkit::component_path("marketplace"),
        FakeDb::sqlite_with_demo(30),
    )
}

fn install(agent: &str) -> TestRequest {
    TestRequest::post(&format!("/api/marketplace/agents/{agent}/install"))
        .principal("user-demo", &["ws-demo"])
        .json(&json!({ "workspaceId": "ws-demo" }))
}

#[test]
fn a_second_identical_request_does_not_touch_the_database() {
    let host = host();
    let first = host.get("/api/marketplace?category=coding&sortBy=popular");
    assert_eq!(first.status, 200);
    assert_eq!(first.header("x-cache"), Some("MISS"));
    assert!(!host.db().calls().is_empty());

    host.db().clear_calls();
    let second = host.get("/api/marketplace?sortBy=popular&category=coding&limit=50");
    assert_eq!(second.header("x-cache"), Some("HIT"));
    assert_eq!(second.body, first.body);
    assert_eq!(host.db().calls(), vec![]);
}

#[test]
fn a_matching_if_none_match_is_answered_304_on_a_miss_and_a_hit() {
    let host = host();
    let path = "/api/marketplace/agents/agent-000002";
    let first = host.get(path);
    assert_eq!(first.status, 200);
    let etag = first.header("etag").expect("an ETag").to_string();
    // Past its TTL (and grace): the miss that stores it again, then a
    // hit, give the same answer.
    host.cache().advance(Duration::from_secs(24 * 3600));
    for cache in ["MISS", "HIT"] {
        let r = host.send(TestRequest::get(path).header("if-none-match", &etag));
        assert_eq!(r.status, 304, "{cache}");
        assert!(r.body.is_empty());
        assert_eq!(r.header("etag"), Some(etag.as_str()));
        assert_eq!(r.header("x-cache"), Some(cache));
        assert_eq!(r.header("content-type"), None);
    }
    let other = host.send(TestRequest::get(path).header("if-none-match", "\"0000000000000000\""));
    assert_eq!(other.status, 200);
    assert_eq!(other.body, first.body);
}

#[test]
fn an_install_invalidates_exactly_the_tags_of_the_spec() {
    let host = host();
    let r = host.send(install("agent-000003"));
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        host.cache().invalidated_tags(),
        [
            "agents",
            "agent:agent-000003",
            "trending",
            "featured",
            "categories"
        ]
    );
    // Exactly one transaction of three statements, and nothing cached.
    let statements = host.db().calls();
    assert_eq!(statements.len(), 3, "{statements:#?}");
    assert_eq!(host.cache().set_keys(), Vec::<String>::new());
}

#[test]
fn a_failed_install_changes_nothing_and_invalidates_nothing() {
    let host = host();
    let before =
        host.get("/api/marketplace/agents/agent-000004").json()["agent"]["installCount"].clone();
    host.cache().clear_calls();
    host.db()
        .fail_next(DbError::Constraint("installations_pkey".into()));
    let r = host.send(install("agent-000004"));
    assert_eq!(r.status, 500);
    assert_eq!(r.error_code(), "internal");
    assert_eq!(host.cache().invalidated_tags(), Vec::<String>::new());
    let count = host
        .db()
        .read(
            "SELECT install_count FROM agents WHERE id = $1",
            &[Value::Text("agent-000004".into())],
        )
        .unwrap();
    let Value::Int(after) = count.rows[0][0] else {
        panic!("install_count is not an integer: {count:?}")
    };
    assert_eq!(json!(after), before);
}

#[test]
fn the_database_down_gives_503_with_retry_after_unless_the_cache_answers() {
    let host = host();
    assert_eq!(host.get("/api/marketplace/categories").status, 200);
    host.db()
        .set_down(Some(DbError::Unavailable("connection refused".into())));

    let cached = host.get("/api/marketplace/categories");
    assert_eq!(cached.status, 200);
    assert_eq!(cached.header("x-cache"), Some("HIT"));
    for target in [
        "/api/marketplace/agents/agent-000001",
        "/api/marketplace/trending",
    ] {
        let r = host.get(target);
        assert_eq!(r.status, 503, "{target}");
        assert_eq!(r.error_code(), "database_unavailable");
        assert!(r.header("retry-after").is_some(), "{target}");
    }
    let r = host.send(install("agent-000001"));
    assert_eq!(r.status, 503);

    host.db()
        .set_down(Some(DbError::Timeout("statement timeout".into())));
    assert_eq!(host.get("/api/marketplace/featured").status, 503);
    host.db().set_down(None);
    assert_eq!(host.get("/api/marketplace/featured").status, 200);
}

#[test]
fn a_cache_failure_is_invisible_to_the_client() {
    let host = host();
    let healthy = host.get("/api/marketplace/trending?limit=5");
    host.cache().set_failing(true);
    host.cache().advance(Duration::from_secs(301));
    let first = host.get("/api/marketplace/trending?limit=5");
    let second = host.get("/api/marketplace/trending?limit=5");
    for r in [&first, &second] {
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-cache"), Some("MISS"));
        assert_eq!(r.json(), healthy.json());
    }
}

#[test]
fn listings_expire_after_five_minutes_and_details_after_thirty() {
    let host = host();
    let list = "/api/marketplace/trending";
    let details = "/api/marketplace/agents/agent-000002";
    host.get(list);
    host.get(details);
    host.cache().advance(Duration::from_secs(299));
    assert_eq!(host.get(list).header("x-cache"), Some("HIT"));
    host.cache().advance(Duration::from_secs(2));
    assert_eq!(host.get(list).header("x-cache"), Some("MISS"));
    assert_eq!(host.get(details).header("x-cache"), Some("HIT"));
    host.cache().advance(Duration::from_secs(1800));
    assert_eq!(host.get(details).header("x-cache"), Some("MISS"));
    let ttls: Vec<Duration> = host
        .cache()
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            CacheCall::Set { ttl, .. } => Some(ttl),
            _ => None,
        })
        .collect();
    assert_eq!(ttls[0], Duration::from_secs(300));
    assert_eq!(ttls[1], Duration::from_secs(1800));
}

#[test]
fn categories_are_one_statement_whose_rows_become_the_body() {
    let db = FakeDb::scripted();
    db.expect("FROM categories c").times(1).returns(rows(
        &[
            "id",
            "slug",
            "name",
            "description",
            "agent_count",
            "install_count",
        ],
        vec![vec![
            Value::Text("cat-x".into()),
            Value::Text("x".into()),
            Value::Text("X".into()),
            Value::Text("Everything x.".into()),
            Value::Int(3),
            Value::Int(12),
        ]],
    ));
    let host = MockHost::new(testkit::component_path("marketplace"), db);
    let r = host.get("/api/marketplace/categories");
    assert_eq!(
        r.json(),
        json!({"categories": [{"id": "cat-x", "slug": "x", "name": "X",
            "description": "Everything x.", "agentCount": 3, "installCount": 12}]})
    );
    // Served from the cache afterwards: the expectation allowed one call.
    assert_eq!(
        host.get("/api/marketplace/categories").header("x-cache"),
        Some("HIT")
    );
}
