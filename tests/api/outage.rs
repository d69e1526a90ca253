//! The database going down under the real stack: the cache still answers
//! what it holds, the rest is 503 with `Retry-After`, and service resumes.

use super::install_path;
use support::served::{Stack, TOKEN, serve};

/// The database going down: what is cached is still served; what is not is
/// 503 with `Retry-After`; nothing is corrupted, and service resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_is_503_for_what_the_cache_cannot_answer() {
    let Some(h) = serve(Stack::Real, true).await else {
        return;
    };
    let proxy = h.db_proxy.as_ref().expect("a database proxy");
    let cached = h.get("/api/marketplace/categories").await;
    assert_eq!(cached.status, 200);

    proxy.cut().await;
    let still = h.get("/api/marketplace/categories").await;
    assert_eq!(still.status, 200);
    assert_eq!(still.x_cache(), "HIT");
    for path in [
        "/api/marketplace/agents/agent-000003",
        "/api/templates?limit=3",
    ] {
        let r = h.get(path).await;
        r.expect_error(503, "database_unavailable");
        assert!(r.header("retry-after").is_some(), "{path}: no Retry-After");
    }
    let r = h
        .post(
            &install_path("agent-000003"),
            Some(TOKEN),
            r#"{"workspaceId":"ws-demo"}"#,
        )
        .await;
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.header("retry-after").is_some());

    proxy.restore();
    let mut details = h.get("/api/marketplace/agents/agent-000003").await;
    for _ in 0..50 {
        if details.status == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        details = h.get("/api/marketplace/agents/agent-000003").await;
    }
    assert_eq!(details.status, 200, "service did not resume");
}
