//! Installing an agent: authorization, workspace membership, unknown
//! agents, idempotence, and concurrent installs making one installation.

use super::{host, install_count, install_path, int};
use serde_json::json;
use support::on_both_stacks;
use support::served::{Stack, TOKEN};

on_both_stacks!(
    install_authorizes_validates_and_is_idempotent,
    concurrent_installs_make_one_installation,
);

async fn install_authorizes_validates_and_is_idempotent(stack: Stack) {
    let Some(h) = host(stack).await else { return };
    let id = "agent-000010";
    let path = install_path(id);
    let before = install_count(&h, id).await;
    let body = r#"{"workspaceId":"ws-demo"}"#;

    let r = h.post(&path, None, body).await;
    r.expect_error(401, "unauthorized");
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    h.post(&path, Some("not-a-real-token-000000000"), body)
        .await
        .expect_error(401, "unauthorized");
    // A valid token, but for a workspace its user is not a member of.
    let message = h
        .post(&path, Some(TOKEN), r#"{"workspaceId":"ws-001"}"#)
        .await
        .expect_error(403, "forbidden");
    assert!(message.contains("ws-001"), "{message}");
    h.post(&install_path("agent-999999"), Some(TOKEN), body)
        .await
        .expect_error(404, "not_found");
    assert_eq!(install_count(&h, id).await, before);

    let first = h.post(&path, Some(TOKEN), body).await;
    assert_eq!(
        first.status,
        201,
        "{}",
        String::from_utf8_lossy(&first.body)
    );
    let first = first.json();
    assert_eq!(first["created"], json!(true));
    assert_eq!(first["installation"]["agentId"], json!(id));
    assert_eq!(first["installation"]["workspaceId"], json!("ws-demo"));
    assert_eq!(
        first["installation"]["installedBy"],
        json!(host::seed::DEMO_USER)
    );
    assert_eq!(int(&first["agent"]["installCount"]), before + 1);
    assert_eq!(install_count(&h, id).await, before + 1);

    let again = h.post(&path, Some(TOKEN), body).await;
    assert_eq!(again.status, 200);
    let again = again.json();
    assert_eq!(again["created"], json!(false));
    assert_eq!(again["installation"], first["installation"]);
    assert_eq!(int(&again["agent"]["installCount"]), before + 1);
    assert_eq!(install_count(&h, id).await, before + 1);
}

async fn concurrent_installs_make_one_installation(stack: Stack) {
    let Some(h) = host(stack).await else { return };
    let id = "agent-000011";
    let before = install_count(&h, id).await;
    let path = install_path(id);
    let replies = futures::future::join_all(
        (0..8).map(|_| h.post(&path, Some(TOKEN), r#"{"workspaceId":"ws-demo"}"#)),
    )
    .await;
    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        7,
        "{statuses:?}"
    );
    let installation = replies[0].json()["installation"]["id"].clone();
    assert!(
        replies
            .iter()
            .all(|r| r.json()["installation"]["id"] == installation)
    );
    assert_eq!(install_count(&h, id).await, before + 1);
}
