//! Template creation validating every field (a rejected one invalidating
//! nothing), and malformed or hostile bodies on either write endpoint
//! (install and template creation) changing no data.

use super::{host, install_count, install_path, int};
use serde_json::{Value, json};
use support::on_both_stacks;
use support::served::{Stack, TOKEN};

on_both_stacks!(
    template_creation_validates_every_field,
    bad_bodies_never_change_data,
);

async fn template_creation_validates_every_field(stack: Stack) {
    let Some(h) = host(stack).await else { return };
    let valid = json!({
        "name": "Nightly report",
        "description": "Collects the day's numbers and mails them.",
        "category": "data-analysis",
        "complexity": "intermediate",
        "steps": [
            {"name": "Collect", "action": "query the warehouse", "agentId": "agent-000001"},
            {"name": "Send", "config": {"to": "team@example.com"}}
        ],
        "tags": ["reports", "nightly"]
    });
    let warm = h.get("/api/templates?query=nightly%20report").await;
    assert_eq!(int(&warm.json()["total"]), 0);
    assert_eq!(
        h.get("/api/templates?query=nightly%20report")
            .await
            .x_cache(),
        "HIT"
    );

    h.post("/api/templates", None, valid.to_string())
        .await
        .expect_error(401, "unauthorized");

    let with = |field: &str, value: Value| {
        let mut body = valid.clone();
        body[field] = value;
        body.to_string()
    };
    let without = |field: &str| {
        let mut body = valid.clone();
        body.as_object_mut().unwrap().remove(field);
        body.to_string()
    };
    let cases: Vec<(String, &str)> = vec![
        (without("name"), "name"),
        (with("name", json!("")), "name"),
        (with("name", json!("   ")), "name"),
        (with("name", json!("x".repeat(121))), "name"),
        (with("name", json!(42)), "name"),
        (with("name", json!("tab\there")), "name"),
        (without("description"), "description"),
        (with("description", json!(null)), "description"),
        (with("description", json!("d".repeat(2001))), "description"),
        (without("category"), "category"),
        (with("category", json!("no-such-category")), "category"),
        (with("category", json!(["data-analysis"])), "category"),
        (without("complexity"), "complexity"),
        (with("complexity", json!("expert")), "complexity"),
        (without("steps"), "steps"),
        (with("steps", json!([])), "steps"),
        (with("steps", json!("collect, send")), "steps"),
        (with("steps", json!([{"action": "no name"}])), "steps[0]"),
        (
            with("steps", json!([{"name": "a"}, {"name": "b", "extra": 1}])),
            "steps[1]",
        ),
        (
            with("steps", json!(vec![json!({"name": "s"}); 51])),
            "steps",
        ),
        (with("tags", json!("reports")), "tags"),
        (with("tags", json!([1, 2])), "tags[0]"),
        (with("tags", json!([""])), "tags[0]"),
        (with("tags", json!(vec!["t"; 21])), "tags"),
        (with("featured", json!(true)), "featured"),
    ];
    for (body, field) in cases {
        let r = h.post("/api/templates", Some(TOKEN), body.clone()).await;
        let message = r.expect_error(400, "invalid_body");
        assert!(message.contains(field), "{body}: {message}");
    }
    assert_eq!(
        h.get("/api/templates?query=nightly%20report")
            .await
            .x_cache(),
        "HIT",
        "a rejected template invalidated the cache"
    );

    let created = h
        .post("/api/templates", Some(TOKEN), valid.to_string())
        .await;
    assert_eq!(
        created.status,
        201,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    let template = created.json()["template"].clone();
    assert!(template["id"].as_str().unwrap().starts_with("tpl-"));
    assert_eq!(template["name"], valid["name"]);
    assert_eq!(template["steps"], valid["steps"]);
    assert_eq!(template["tags"], valid["tags"]);
    assert_eq!(template["featured"], json!(false));
    assert_eq!(template["createdBy"], json!(host::seed::DEMO_USER));

    let listed = h.get("/api/templates?query=nightly%20report").await;
    assert_eq!(listed.x_cache(), "MISS");
    assert_eq!(listed.json()["templates"][0], template);
    let all = h.get("/api/templates").await;
    assert_eq!(int(&all.json()["total"]), 101);
}

async fn bad_bodies_never_change_data(stack: Stack) {
    let Some(h) = host(stack).await else { return };
    let id = "agent-000012";
    let path = install_path(id);
    let before = install_count(&h, id).await;
    let categories_before = h.get("/api/marketplace/categories").await.body;
    let templates_before = int(&h.get("/api/templates").await.json()["total"]);

    let install_bodies: Vec<(Vec<u8>, u16, &str)> = vec![
        (b"".to_vec(), 400, "invalid_body"),
        (b"{".to_vec(), 400, "invalid_body"),
        (b"not json".to_vec(), 400, "invalid_body"),
        (b"[]".to_vec(), 400, "invalid_body"),
        (b"null".to_vec(), 400, "invalid_body"),
        (b"{}".to_vec(), 400, "invalid_body"),
        (br#"{"workspaceId": 7}"#.to_vec(), 400, "invalid_body"),
        (
            br#"{"workspaceId": ["ws-demo"]}"#.to_vec(),
            400,
            "invalid_body",
        ),
        (br#"{"workspaceId": ""}"#.to_vec(), 400, "invalid_body"),
        (
            br#"{"workspaceId": "ws-demo", "x": 1}"#.to_vec(),
            400,
            "invalid_body",
        ),
        (
            br#"{"workspaceId": "ws-demo"} {}"#.to_vec(),
            400,
            "invalid_body",
        ),
        (vec![0xff, 0xfe, 0x00], 400, "invalid_body"),
        (
            br#"{"workspaceId": "ws-demo' OR '1'='1"}"#.to_vec(),
            403,
            "forbidden",
        ),
        (
            br#"{"workspaceId": "'; DROP TABLE installations; --"}"#.to_vec(),
            403,
            "forbidden",
        ),
        (
            format!(r#"{{"workspaceId": "{}"}}"#, "w".repeat(20_000)).into_bytes(),
            413,
            "payload_too_large",
        ),
    ];
    for (body, status, code) in install_bodies {
        let r = h.post(&path, Some(TOKEN), body.clone()).await;
        let message = r.expect_error(status, code);
        if status == 400 && body.starts_with(b"{\"workspaceId\"") {
            assert!(
                message.contains("workspaceId") || message.contains("body"),
                "{message}"
            );
        }
    }
    // An id that looks like SQL is just an unknown id.
    h.post(
        &install_path("agent-000012'%20OR%20'1'='1"),
        Some(TOKEN),
        r#"{"workspaceId":"ws-demo"}"#,
    )
    .await
    .expect_error(404, "not_found");
    let r = h
        .get("/api/marketplace?query=%27%3B%20DROP%20TABLE%20agents%3B%20--")
        .await;
    assert_eq!(int(&r.json()["total"]), 0);

    let template_bodies: Vec<Vec<u8>> = vec![
        b"{".to_vec(),
        b"[]".to_vec(),
        br#"{"name": "x"}"#.to_vec(),
        br#"{"name": "x'); DROP TABLE workflow_templates; --", "description": "d", "category": "x' OR '1'='1", "complexity": "beginner", "steps": [{"name": "s"}]}"#.to_vec(),
        format!(r#"{{"name": "{}"}}"#, "n".repeat(20_000)).into_bytes(),
    ];
    for body in template_bodies {
        let r = h.post("/api/templates", Some(TOKEN), body).await;
        assert!(
            matches!(r.status, 400 | 413),
            "{}",
            String::from_utf8_lossy(&r.body)
        );
    }

    assert_eq!(install_count(&h, id).await, before);
    assert_eq!(
        h.get("/api/marketplace/categories").await.body,
        categories_before
    );
    assert_eq!(
        int(&h.get("/api/templates").await.json()["total"]),
        templates_before
    );
    // The tables the SQL-looking strings name are still there.
    assert_eq!(
        int(&h.get("/api/marketplace").await.json()["total"]),
        host::DEMO_AGENTS as i64
    );
}
