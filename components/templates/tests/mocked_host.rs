//! The templates component against the mocked host (see also
//! `readme_example.rs`, the README's example).

use serde_json::json;
use testkit::{DbError, FakeDb, MockHost, TestRequest};

fn host() -> MockHost {
    MockHost::new(
        testkit::component_path("templates"),
        FakeDb::sqlite_with_demo(5),
    )
}

fn new_template() -> serde_json::Value {
    json!({
        "name": "Weekly digest",
        "description": "Summarize the week.",
        "category": "writing",
        "complexity": "beginner",
        "steps": [{"name": "Gather"}, {"name": "Summarize", "action": "write five bullets"}],
        "tags": ["digest"]
    })
}

fn create(body: &serde_json::Value) -> TestRequest {
    TestRequest::post("/api/templates")
        .principal("user-demo", &["ws-demo"])
        .json(body)
}

#[test]
fn creating_a_template_invalidates_exactly_the_templates_tag() {
    let host = host();
    host.get("/api/templates");
    let r = host.send(create(&new_template()));
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(host.cache().invalidated_tags(), ["templates"]);
    let listed = host.get("/api/templates");
    assert_eq!(listed.header("x-cache"), Some("MISS"));
    assert_eq!(listed.json()["total"], json!(101));
}

#[test]
fn a_rejected_template_reaches_neither_the_database_nor_the_cache() {
    let host = host();
    let mut body = new_template();
    body["complexity"] = json!("expert");
    let r = host.send(create(&body));
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("complexity")
    );
    assert!(host.db().calls().is_empty());
    assert!(host.cache().calls().is_empty());

    let r = host.send(TestRequest::post("/api/templates").json(&new_template()));
    assert_eq!(r.status, 401);
    assert!(host.db().calls().is_empty());
}

#[test]
fn a_create_while_the_database_is_down_is_503_and_invalidates_nothing() {
    let host = host();
    host.db()
        .set_down(Some(DbError::Unavailable("gone".into())));
    let r = host.send(create(&new_template()));
    assert_eq!(r.status, 503);
    assert_eq!(r.error_code(), "database_unavailable");
    assert!(r.header("retry-after").is_some());
    assert!(host.cache().invalidated_tags().is_empty());
}

#[test]
fn a_cache_failure_is_invisible_to_the_client() {
    let host = host();
    host.cache().set_failing(true);
    let first = host.get("/api/templates?limit=3");
    assert_eq!(first.status, 200);
    let created = host.send(create(&new_template()));
    assert_eq!(created.status, 201);
    let second = host.get("/api/templates?limit=3");
    assert_eq!(second.status, 200);
    assert_eq!(second.json()["total"], json!(101));
}
