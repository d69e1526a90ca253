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
        None,
        metrics.clone(),
    )
    .await;
    assert!(cache.using_redis());
    let set = |key: &'static str, tag: &'static str| {
        let cache = &cache;
        async move {
            let mut stamp = Stamp::default();
            cache.stamp(&mut stamp).await;
            cache
                .set(key, b"v".to_vec(), HOUR.into(), &tags(&[tag]), &stamp)
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

    // Back on Redis without a restart: new hits are counted on Redis, or on
    // the near cache in front of it (served only while Redis is healthy).
    let on_redis = || async {
        counter(&h.app, "marketplace:categories", "redis", "hit").await
            + counter(&h.app, "marketplace:categories", "near", "hit").await
    };
    let before = on_redis().await;
    let started = Instant::now();
    loop {
        get(&h.app, "/api/marketplace/categories").await;
        if on_redis().await > before {
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
        // On Redis, hits after the first may come from the near cache.
        let near = if tier == "redis" {
            counter(app, "marketplace:categories", "near", "hit").await
        } else {
            0
        };
        assert_eq!(
            counter(app, "marketplace:categories", tier, "hit").await + near,
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

/// Two hosts' caches on one Redis prefix: `a` reaches Redis through the
/// proxy, `b` directly.
async fn two_caches() -> Option<(Proxy, support::redis::RedisPrefix, TieredCache, TieredCache)> {
    let (proxy, prefix) = proxied_redis().await?;
    let a = TieredCache::with_redis(
        MemoryCache::new(1 << 20),
        RedisCache::new(prefix.settings.clone()).unwrap(),
        None,
        Arc::new(CacheMetrics::default()),
    )
    .await;
    let direct = host::cache::RedisSettings {
        url: support::redis::server_url()?,
        ..prefix.settings.clone()
    };
    let b = TieredCache::with_redis(
        MemoryCache::new(1 << 20),
        RedisCache::new(direct).unwrap(),
        None,
        Arc::new(CacheMetrics::default()),
    )
    .await;
    assert!(a.using_redis() && b.using_redis());
    Some((proxy, prefix, a, b))
}

/// Waits until `cache` reads Redis again after a cut.
async fn until_on_redis(cache: &TieredCache, metrics_key: &str) {
    let started = Instant::now();
    loop {
        let mut probe = Stamp::default();
        cache.get(metrics_key, &mut probe).await;
        if cache.using_redis() && probe.redis.is_some() {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "never back on Redis"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// A request reads the cache while Redis is unreachable (its stamp has no
// Redis clock), reads the database, another host invalidates, Redis comes
// back, and the request stores what it read. That value predates the
// invalidation: it must not be served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_read_while_redis_was_away_is_not_stored_in_redis_as_valid() {
    let Some((proxy, _prefix, a, b)) = two_caches().await else {
        return;
    };
    let key = "marketplace:agent:a1";
    proxy.cut().await;
    let mut stamp = Stamp::default();
    assert_eq!(a.get(key, &mut stamp).await, None, "a miss, from memory");
    // ... the request reads the old row here ...
    b.invalidate_tags(&tags(&["agent:a1"])).await;
    proxy.restore();
    until_on_redis(&a, "marketplace:agent:probe").await;
    a.set(
        key,
        b"old".to_vec(),
        HOUR.into(),
        &tags(&["agent:a1"]),
        &stamp,
    )
    .await;
    assert_eq!(a.get(key, &mut Stamp::default()).await, None, "on host a");
    assert_eq!(b.get(key, &mut Stamp::default()).await, None, "on host b");
}

// The opposite switch: the request reads Redis, Redis fails, the host
// invalidates (its memory tier hears it at once), and the request stores
// what it read: it falls to the memory tier, where it must not be valid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_read_from_redis_is_not_stored_in_memory_as_valid_after_a_cut() {
    let Some((proxy, _prefix, a, _b)) = two_caches().await else {
        return;
    };
    let key = "marketplace:agent:a1";
    let mut stamp = Stamp::default();
    assert_eq!(a.get(key, &mut stamp).await, None, "a miss, from Redis");
    assert!(stamp.redis.is_some());
    // ... the request reads the old row here ...
    proxy.cut().await;
    a.invalidate_tags(&tags(&["agent:a1"])).await;
    a.set(
        key,
        b"old".to_vec(),
        HOUR.into(),
        &tags(&["agent:a1"]),
        &stamp,
    )
    .await;
    assert_eq!(a.get(key, &mut Stamp::default()).await, None);
}

// Redis loses its data (a restart without persistence, a FLUSHALL; here
// only this test's keys are deleted, since other tests share the server)
// while a request is between its read and its write. The invalidation clock
// starts again from zero, so the request's old stamp must not outrank the
// invalidations made after the loss.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stamp_from_before_redis_lost_its_data_does_not_outrank_later_invalidations() {
    let Some((_proxy, prefix, a, b)) = two_caches().await else {
        return;
    };
    for _ in 0..5 {
        b.invalidate_tags(&tags(&["other"])).await;
    }
    let key = "marketplace:agent:a1";
    let mut stamp = Stamp::default();
    assert_eq!(a.get(key, &mut stamp).await, None);
    // ... the request reads the old row here; Redis loses everything ...
    let url = support::redis::server_url().unwrap();
    let mut conn = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*", prefix.settings.prefix))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!keys.is_empty());
    let _: i64 = redis::cmd("DEL")
        .arg(keys)
        .query_async(&mut conn)
        .await
        .unwrap();
    // ... and another host writes the row and invalidates.
    b.invalidate_tags(&tags(&["agent:a1"])).await;
    a.set(
        key,
        b"old".to_vec(),
        HOUR.into(),
        &tags(&["agent:a1"]),
        &stamp,
    )
    .await;
    assert_eq!(a.get(key, &mut Stamp::default()).await, None, "on host a");
    assert_eq!(b.get(key, &mut Stamp::default()).await, None, "on host b");
}

// Redis cannot hold a tag with a newline, so such entries live in memory;
// that is the component's doing, not Redis failing, and must not switch
// every other component off Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_redis_cannot_hold_do_not_open_the_breaker() {
    let Some((_proxy, _prefix, a, _b)) = two_caches().await else {
        return;
    };
    let mut stamp = Stamp::default();
    a.stamp(&mut stamp).await;
    for i in 0..5 {
        let key = format!("marketplace:agent:a{i}");
        a.set(
            &key,
            b"v".to_vec(),
            HOUR.into(),
            &tags(&["two\nlines"]),
            &stamp,
        )
        .await;
    }
    assert!(a.using_redis(), "still on Redis");
    assert_eq!(
        a.get("marketplace:agent:a0", &mut Stamp::default()).await,
        None,
        "not in Redis"
    );
}
