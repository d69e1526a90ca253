//! The cache when Redis fails: a proxy the test controls stands between the
//! host and the machine's Redis (`REDIS_URL`), and is cut and restored.

use axum::http::StatusCode;
use host::cache::{Cache, CacheMetrics, MemoryCache, RedisCache, Stamp, TieredCache};
use host::http::HttpLimits;
use host::runtime::SandboxConfig;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::proxy::Proxy;
use support::{DEFAULT_ROUTES, counter, get, host, host_on};

const HOUR: Duration = Duration::from_secs(3600);

fn tags(t: &[&str]) -> Vec<String> {
    t.iter().map(|s| s.to_string()).collect()
}

/// A proxy to the machine's Redis, or `None` when the test should skip.
async fn proxied_redis() -> Option<(Proxy, support::redis::RedisPrefix)> {
    let url = support::redis::server_url()?;
    let target: SocketAddr = url
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .parse()
        .expect("REDIS_URL of the form redis://127.0.0.1:6379");
    let proxy = Proxy::start(target, true).await;
    let prefix = support::redis::fresh_prefix(&format!("redis://{}", proxy.addr));
    Some((proxy, prefix))
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{what}: not within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_invalidated_while_redis_was_down_is_not_served_after_recovery() {
    let Some((proxy, prefix)) = proxied_redis().await else {
        return;
    };
    let metrics = Arc::new(CacheMetrics::default());
    let cache = TieredCache::with_redis(
        MemoryCache::new(1 << 20),
        RedisCache::new(prefix.settings.clone()).unwrap(),
        metrics.clone(),
    )
    .await;
    assert!(cache.using_redis());
    let set = |key: &'static str, tag: &'static str| {
        let cache = &cache;
        async move {
            cache
                .set(key, b"v".to_vec(), HOUR, &tags(&[tag]), &Stamp::default())
                .await
        }
    };
    set("marketplace:agent:a1", "agent:a1").await;
    set("marketplace:agent:a2", "agent:a2").await;

    proxy.cut().await;
    // Operations keep answering (from the memory tier) while Redis is away,
    // and the breaker opens after a few failures.
    for _ in 0..5 {
        assert_eq!(
            cache
                .get("marketplace:agent:a1", &mut Stamp::default())
                .await,
            None
        );
    }
    assert!(!cache.using_redis(), "the breaker opened");
    let errors = metrics.count(
        "marketplace:agent",
        host::cache::metrics::Tier::redis,
        host::cache::metrics::Outcome::error,
    );
    for _ in 0..20 {
        cache
            .get("marketplace:agent:a1", &mut Stamp::default())
            .await;
    }
    assert_eq!(
        metrics.count(
            "marketplace:agent",
            host::cache::metrics::Tier::redis,
            host::cache::metrics::Outcome::error
        ),
        errors,
        "with the breaker open, requests do not try Redis"
    );
    cache.invalidate_tags(&tags(&["agent:a1"])).await;

    proxy.restore();
    wait_until("back on Redis", || cache.using_redis()).await;
    assert_eq!(
        cache
            .get("marketplace:agent:a1", &mut Stamp::default())
            .await,
        None,
        "invalidated during the outage"
    );
    assert_eq!(
        cache
            .get("marketplace:agent:a2", &mut Stamp::default())
            .await,
        Some(b"v".to_vec()),
        "untouched entries survive in Redis"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_keep_succeeding_while_redis_is_killed_and_go_back_to_it_after() {
    let Some((proxy, prefix)) = proxied_redis().await else {
        return;
    };
    let h = host_on(
        None,
        Some(prefix.settings.clone()),
        SandboxConfig::default(),
        HttpLimits::default(),
        DEFAULT_ROUTES,
    )
    .await;
    let app = h.app.clone();
    let load = tokio::spawn(async move {
        let mut statuses = Vec::new();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(4) {
            let (response, _) = get(&app, "/api/marketplace/categories").await;
            statuses.push(response.status());
        }
        statuses
    });
    tokio::time::sleep(Duration::from_millis(800)).await;
    proxy.cut().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    proxy.restore();
    let statuses = load.await.unwrap();
    let failed = statuses.iter().filter(|s| **s != StatusCode::OK).count();
    assert!(statuses.len() > 20, "only {} requests ran", statuses.len());
    assert_eq!(failed, 0, "{failed} of {} requests failed", statuses.len());
    assert!(
        counter(&h.app, "marketplace:categories", "memory", "hit").await > 0
            || counter(&h.app, "marketplace:categories", "memory", "miss").await > 0,
        "the memory tier answered during the cut"
    );

    // Back on Redis without a restart: new hits are counted on Redis.
    let before = counter(&h.app, "marketplace:categories", "redis", "hit").await;
    let started = Instant::now();
    loop {
        get(&h.app, "/api/marketplace/categories").await;
        if counter(&h.app, "marketplace:categories", "redis", "hit").await > before {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "never went back to Redis"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_identical_requests_count_one_miss_and_nine_hits() {
    let memory = host(SandboxConfig::default()).await;
    let redis = match support::redis::server_url() {
        Some(url) => {
            let prefix = support::redis::fresh_prefix(&url);
            let h = host_on(
                None,
                Some(prefix.settings.clone()),
                SandboxConfig::default(),
                HttpLimits::default(),
                DEFAULT_ROUTES,
            )
            .await;
            Some((h, prefix))
        }
        None => None,
    };
    let mut hosts = vec![("memory", &memory.app)];
    if let Some((h, _)) = &redis {
        hosts.push(("redis", &h.app));
    }
    for (tier, app) in hosts {
        for _ in 0..10 {
            let (response, _) = get(app, "/api/marketplace/categories").await;
            assert_eq!(response.status(), StatusCode::OK);
        }
        assert_eq!(
            counter(app, "marketplace:categories", tier, "miss").await,
            1,
            "{tier}"
        );
        assert_eq!(
            counter(app, "marketplace:categories", tier, "hit").await,
            9,
            "{tier}"
        );
        assert_eq!(
            counter(app, "marketplace:categories", tier, "error").await,
            0,
            "{tier}"
        );
    }
}
