//! Stale serving through a host on PostgreSQL behind a cuttable proxy,
//! with a 1-second `--cache-max-ttl`, on the memory tier (no Redis) and on
//! the Redis tier: stale-if-error (without stale-while-revalidate, so that
//! only a failing database serves stale): a page past its TTL is served
//! stale while the database is cut or partitioned, and an invalidated page
//! never is; and stale-while-revalidate: requests just past the TTL get
//! the page at once while one background run refreshes it.

use axum::Router;
use host::http::HttpLimits;
use host::runtime::SandboxConfig;
use std::time::Duration;
use support::proxy::Proxy;
use support::{DEFAULT_ROUTES, TestHost, get, host_on, json};

/// A host on a fresh schema reached through a proxy, with Redis or not,
/// whose entries live 1 s; with stale-while-revalidate only if `revalidate`
/// (else a page past its TTL is stale only when the database fails), and
/// then entries live 2 s.
async fn host_with_db_behind_proxy(
    redis: bool,
    revalidate: bool,
) -> Option<(
    TestHost,
    Proxy,
    support::postgres::PgSchema,
    Option<support::redis::RedisPrefix>,
)> {
    let schema = support::postgres::fresh_schema().await?;
    let prefix = if redis {
        Some(support::redis::fresh_prefix(&support::redis::server_url()?))
    } else {
        None
    };
    let proxy = Proxy::start(schema.server(), true).await;
    let host = host_on(
        Some(schema.url_via(proxy.addr)),
        prefix.as_ref().map(|p| p.settings.clone()),
        SandboxConfig {
            max_cache_ttl: Some(Duration::from_secs(if revalidate { 2 } else { 1 })),
            revalidate_window: if revalidate {
                host::runtime::DEFAULT_REVALIDATE_WINDOW
            } else {
                Duration::ZERO
            },
            ..SandboxConfig::default()
        },
        HttpLimits::default(),
        DEFAULT_ROUTES,
    )
    .await;
    Some((host, proxy, schema, prefix))
}

/// Status, `X-Cache`, `Age` and the install count of agent `id`'s details.
async fn details(app: &Router, id: &str) -> (u16, String, Option<u64>, Option<i64>) {
    let (response, body) = get(app, &format!("/api/marketplace/agents/{id}")).await;
    // Every value of `name`, joined: a response labelled twice (STALE
    // beside the component's HIT, say) shows both.
    let header = |name: &str| {
        let values: Vec<&str> = response
            .headers()
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        (!values.is_empty()).then(|| values.join(", "))
    };
    let count = (response.status() == 200)
        .then(|| json(&body)["agent"]["installCount"].as_i64())
        .flatten();
    (
        response.status().as_u16(),
        header("x-cache").unwrap_or_default(),
        header("age").and_then(|a| a.parse().ok()),
        count,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_past_its_ttl_is_served_stale_while_the_database_is_cut() {
    for (tier, redis) in [("memory", false), ("redis", true)] {
        let Some((h, proxy, _schema, _prefix)) = host_with_db_behind_proxy(redis, false).await
        else {
            return;
        };
        let id = "agent-000021";
        let (status, _, _, count) = details(&h.app, id).await;
        assert_eq!(status, 200, "{tier}");
        assert_eq!(details(&h.app, id).await.1, "HIT", "{tier}");

        proxy.cut().await;
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let (status, x_cache, age, stale_count) = details(&h.app, id).await;
        assert_eq!(
            (status, x_cache.as_str()),
            (200, "STALE"),
            "{tier}: served stale"
        );
        assert_eq!(stale_count, count, "{tier}: the cached answer");
        assert!(age.is_some_and(|a| a >= 1), "{tier}: Age {age:?}");
        // A page never cached has nothing to serve.
        assert_eq!(details(&h.app, "agent-000022").await.0, 503, "{tier}");

        proxy.restore();
        let mut fresh = false;
        for _ in 0..100 {
            let (status, x_cache, _, _) = details(&h.app, id).await;
            if status == 200 && x_cache != "STALE" {
                fresh = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(fresh, "{tier}: fresh again once the database is back");
    }
}

// End to end: the page's entry is invalidated by the install, so the
// replay finds nothing to serve (`behaviour.rs` checks `get_stale` itself
// on an invalidated entry each tier still holds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidated_page_is_never_served_stale() {
    for (tier, redis) in [("memory", false), ("redis", true)] {
        let Some((h, proxy, _schema, _prefix)) = host_with_db_behind_proxy(redis, false).await
        else {
            return;
        };
        let id = "agent-000023";
        assert_eq!(details(&h.app, id).await.0, 200, "{tier}");
        assert_eq!(details(&h.app, id).await.1, "HIT", "{tier}");
        assert_eq!(install(&h.app, id).await, 201, "{tier}");

        proxy.cut().await;
        let (status, x_cache, _, _) = details(&h.app, id).await;
        assert_eq!((status, x_cache.as_str()), (503, ""), "{tier}: not stale");
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert_eq!(details(&h.app, id).await.0, 503, "{tier}: past its TTL");
    }
}

// A partition (nothing answers, nothing closes) rather than a cut: the
// database calls wait instead of failing at once, and the page is still
// served stale from Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_past_its_ttl_is_served_stale_while_the_database_is_partitioned() {
    let Some((h, proxy, _schema, _prefix)) = host_with_db_behind_proxy(true, false).await else {
        return;
    };
    let id = "agent-000024";
    let (_, _, _, count) = details(&h.app, id).await;
    assert_eq!(details(&h.app, id).await.1, "HIT");
    proxy.partition();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (status, x_cache, _, stale_count) = details(&h.app, id).await;
    assert_eq!((status, x_cache.as_str()), (200, "STALE"));
    assert_eq!(stale_count, count);
}

/// Installs agent `id` in the demo workspace: the status.
async fn install(app: &Router, id: &str) -> u16 {
    let request = axum::http::Request::post(format!("/api/marketplace/agents/{id}/install"))
        .header(
            "authorization",
            format!("Bearer {}", host::seed::DEMO_TOKEN),
        )
        .header("content-type", "application/json")
        .body(axum::body::Body::from(format!(
            r#"{{"workspaceId":"{}"}}"#,
            host::seed::DEMO_WORKSPACE
        )))
        .unwrap();
    support::send(app, request).await.0.status().as_u16()
}

/// Statements run against the database so far.
async fn statements(app: &Router) -> u64 {
    let (_, body) = get(app, "/metrics").await;
    String::from_utf8(body)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("marketplace_db_statements_total "))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0)
}

// Stale-while-revalidate: requests that miss a page whose TTL ended a
// moment ago all get it at once, marked stale (none computes it: none says
// MISS), and one background run refreshes it, at the cost of one
// computation of the page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_just_past_the_ttl_get_the_page_at_once_and_one_refresh_runs() {
    for (tier, redis) in [("memory", false), ("redis", true)] {
        let Some((h, _proxy, _schema, _prefix)) = host_with_db_behind_proxy(redis, true).await
        else {
            return;
        };
        let id = "agent-000025";
        let before = statements(&h.app).await;
        assert_eq!(details(&h.app, id).await.1, "MISS", "{tier}");
        let one = statements(&h.app).await - before;
        assert!(one > 0, "{tier}");
        assert_eq!(details(&h.app, id).await.1, "HIT", "{tier}");

        tokio::time::sleep(Duration::from_millis(2200)).await;
        let before = statements(&h.app).await;
        let answers = futures::future::join_all((0..8).map(|_| details(&h.app, id))).await;
        for (status, x_cache, age, _) in &answers {
            assert_eq!(*status, 200, "{tier}");
            assert!(x_cache == "STALE" || x_cache == "HIT", "{tier}: {x_cache}");
            if x_cache == "STALE" {
                assert!(age.is_some_and(|a| a >= 2), "{tier}: Age {age:?}");
            }
        }
        assert!(
            answers.iter().any(|a| a.1 == "STALE"),
            "{tier}: {answers:?}"
        );
        let mut refreshed = false;
        for _ in 0..250 {
            if details(&h.app, id).await.1 == "HIT" {
                refreshed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(refreshed, "{tier}: refreshed in the background");
        assert_eq!(
            statements(&h.app).await - before,
            one,
            "{tier}: one refresh"
        );
    }
}

// Stale-while-revalidate never answers with an invalidated entry: past its
// TTL, a page whose agent was installed meanwhile is computed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidated_page_is_never_revalidated_stale() {
    for (tier, redis) in [("memory", false), ("redis", true)] {
        let Some((h, _proxy, _schema, _prefix)) = host_with_db_behind_proxy(redis, true).await
        else {
            return;
        };
        let id = "agent-000026";
        let (_, _, _, before) = details(&h.app, id).await;
        assert_eq!(details(&h.app, id).await.1, "HIT", "{tier}");
        assert_eq!(install(&h.app, id).await, 201, "{tier}");
        tokio::time::sleep(Duration::from_millis(2200)).await;
        let (status, x_cache, _, count) = details(&h.app, id).await;
        assert_eq!((status, x_cache.as_str()), (200, "MISS"), "{tier}");
        assert_eq!(count, before.map(|c| c + 1), "{tier}");
    }
}
