//! Cache keys and tags are namespaced per component: one component cannot
//! read, overwrite or invalidate another's entries, unless both declare the
//! same `cache_namespace` in the manifest. Run on the memory tier and on a
//! real Redis (never skipped under CI).

use axum::Router;
use host::http::HttpLimits;
use host::runtime::SandboxConfig;
use support::{components_dir, get, json};

/// A host with the marketplace, and the fixtures component three times:
/// `fixtures` and `neighbour` sharing the namespace `shared`, `loner` on
/// its own.
async fn host_in(dir: &std::path::Path, redis: Option<host::cache::RedisSettings>) -> Router {
    let manifest = format!(
        r#"dir = {dir:?}
[[component]]
name = "marketplace"
file = "marketplace.wasm"
routes = ["/api/marketplace"]

[[component]]
name = "fixtures"
file = "fixtures.wasm"
routes = ["/fixture"]
cache_namespace = "shared"

[[component]]
name = "neighbour"
file = "fixtures.wasm"
routes = ["/neighbour"]
cache_namespace = "shared"

[[component]]
name = "loner"
file = "fixtures.wasm"
routes = ["/loner"]
"#,
        dir = components_dir().display().to_string()
    );
    support::build_with(
        dir,
        &manifest,
        false,
        None,
        redis,
        SandboxConfig::default(),
        HttpLimits::default(),
    )
    .await
}

async fn value_at(app: &Router, prefix: &str, key: &str) -> Option<String> {
    let (response, body) = get(app, &format!("{prefix}/cache-get?key={key}")).await;
    assert_eq!(response.status(), 200);
    json(&body)["value"].as_str().map(str::to_string)
}

async fn check_namespaces(app: &Router) {
    let (first, categories) = get(app, "/api/marketplace/categories").await;
    assert_eq!(first.headers()["x-cache"], "MISS");

    // The marketplace's own key, seen from another component: absent.
    assert_eq!(
        value_at(app, "/loner", "marketplace:categories").await,
        None
    );
    // Overwriting it from there leaves the marketplace's entry alone...
    let (set, _) = get(
        app,
        "/loner/cache-set?key=marketplace:categories&value=poison&tag=categories",
    )
    .await;
    assert_eq!(set.status(), 200);
    let (hit, body) = get(app, "/api/marketplace/categories").await;
    assert_eq!(hit.headers()["x-cache"], "HIT");
    assert_eq!(body, categories, "another component poisoned the entry");
    // The loner sees its own write under that key.
    assert_eq!(
        value_at(app, "/loner", "marketplace:categories")
            .await
            .as_deref(),
        Some("poison")
    );
    // Invalidating the tag from there leaves the marketplace's entry alone
    // too, and reaches the loner's own.
    let (inv, _) = get(app, "/loner/cache-invalidate?tag=categories").await;
    assert_eq!(inv.status(), 200);
    let (still, _) = get(app, "/api/marketplace/categories").await;
    assert_eq!(
        still.headers()["x-cache"],
        "HIT",
        "another component invalidated the entry"
    );
    assert_eq!(
        value_at(app, "/loner", "marketplace:categories").await,
        None
    );

    // A declared shared namespace is shared, and only by its members.
    get(app, "/neighbour/cache-set?key=k&value=v1&tag=t").await;
    assert_eq!(value_at(app, "/fixture", "k").await.as_deref(), Some("v1"));
    assert_eq!(value_at(app, "/loner", "k").await, None);
    get(app, "/loner/cache-invalidate?tag=t").await;
    assert_eq!(value_at(app, "/fixture", "k").await.as_deref(), Some("v1"));
    get(app, "/fixture/cache-invalidate?tag=t").await;
    assert_eq!(value_at(app, "/neighbour", "k").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn components_cannot_reach_each_others_cache_entries_on_the_memory_tier() {
    let dir = tempfile::tempdir().unwrap();
    check_namespaces(&host_in(dir.path(), None).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn components_cannot_reach_each_others_cache_entries_on_redis() {
    let Some(url) = support::redis::server_url() else {
        return;
    };
    let prefix = support::redis::fresh_prefix(&url);
    let dir = tempfile::tempdir().unwrap();
    check_namespaces(&host_in(dir.path(), Some(prefix.settings.clone())).await).await;
}

#[tokio::test]
async fn a_cache_namespace_must_be_a_plain_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("components.toml");
    std::fs::write(
        &path,
        "[[component]]\nname = \"a\"\nfile = \"a.wasm\"\nroutes = [\"/a\"]\ncache_namespace = \"b/c\"\n",
    )
    .unwrap();
    let err = host::routes::Manifest::load(&path).unwrap_err();
    assert!(
        format!("{err:#}").contains("cache namespace \"b/c\""),
        "{err:#}"
    );
}
