//! The native baseline of the benchmarks (`/native/...`): it answers the
//! component's bytes, ETags and errors.

use super::host;
use support::on_both_stacks;
use support::served::Stack;

on_both_stacks!(the_native_baseline_answers_the_components_bytes);

/// The benchmarks compare the component with a native handler of its hit
/// path: that comparison is fair only if both answer the same bytes.
async fn the_native_baseline_answers_the_components_bytes(stack: Stack) {
    let Some(h) = host(stack).await else { return };
    for path in [
        "/api/marketplace",
        "/api/marketplace?query=a:b&limit=7&featured=true&sortBy=name",
        "/api/marketplace?category=coding&offset=3",
        "/api/marketplace/agents/agent-000005",
    ] {
        let native = format!("/native{path}");
        // A miss on the native path is the component's answer.
        let first = h.get(&native).await;
        assert_eq!(first.status, 200, "{native}");
        assert_eq!(first.x_cache(), "MISS", "{native}");
        let component = h.get(path).await;
        let hit = h.get(&native).await;
        assert_eq!(hit.x_cache(), "HIT", "{native}");
        assert_eq!(hit.body, component.body, "{native}");
        assert_eq!(hit.header("etag"), component.header("etag"), "{native}");
        assert_eq!(hit.header("content-type"), component.header("content-type"));
        // In the same order too.
        let order = |r: &support::served::Reply| {
            r.headers
                .keys()
                .map(|n| n.as_str())
                .filter(|n| ["content-type", "etag", "x-cache"].contains(n))
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        let component_hit = h.get(path).await;
        assert_eq!(component_hit.x_cache(), "HIT", "{path}");
        assert_eq!(order(&hit), order(&component_hit), "{path}");
        let etag = hit.header("etag").unwrap();
        assert_eq!(h.get_if_none_match(&native, etag).await.status, 304);
    }
    // Bad parameters get the component's own 400.
    let bad = h.get("/native/api/marketplace?limit=0").await;
    bad.expect_error(400, "invalid_parameter");
}
