// components/templates/tests/readme_example.rs: the README's example.
use serde_json::json;
use testkit::{DbError, FakeDb, MockHost, TestRequest};

fn host() -> MockHost {
    // The built component, on the real schema in an in-memory SQLite
    // database holding the demo data (5 agents, 100 templates).
    MockHost::new(
        testkit::component_path("templates"),
        FakeDb::sqlite_with_demo(5),
    )
}

#[test]
fn a_second_identical_request_does_not_touch_the_database() {
    let host = host();
    assert_eq!(host.get("/api/templates").header("x-cache"), Some("MISS"));
    host.db().clear_calls();
    assert_eq!(host.get("/api/templates").header("x-cache"), Some("HIT"));
    assert!(host.db().calls().is_empty());
}

#[test]
fn creating_a_template_invalidates_the_templates_tag() {
    let host = host();
    let request = TestRequest::post("/api/templates")
        .principal("user-demo", &["ws-demo"])
        .json(&json!({
            "name": "Weekly digest",
            "description": "Summarize the week.",
            "category": "writing",
            "complexity": "beginner",
            "steps": [{ "name": "Gather" }, { "name": "Summarize" }]
        }));
    assert_eq!(host.send(request).status, 201);
    assert_eq!(host.cache().invalidated_tags(), ["templates"]);
}

#[test]
fn the_database_down_gives_503_with_retry_after() {
    let host = host();
    host.db()
        .set_down(Some(DbError::Unavailable("connection refused".into())));
    let response = host.get("/api/templates");
    assert_eq!(response.status, 503);
    assert_eq!(response.error_code(), "database_unavailable");
    assert!(response.header("retry-after").is_some());
}
