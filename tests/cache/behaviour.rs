//! The cache's behaviour, one suite run against the memory tier and against
//! a real Redis (`REDIS_URL`, a fresh key prefix per test; never skipped
//! under CI) through the tiered cache components use.

use host::cache::{Cache, CacheMetrics, Lifetime, MemoryCache, RedisCache, Stamp, TieredCache};
use std::sync::Arc;
use std::time::Duration;
use support::redis::RedisPrefix;

fn tags(t: &[&str]) -> Vec<String> {
    t.iter().map(|s| s.to_string()).collect()
}

const HOUR: Duration = Duration::from_secs(3600);

/// The caches to run a check against: memory, then Redis if available.
async fn caches() -> Vec<(&'static str, Arc<dyn Cache>, Option<RedisPrefix>)> {
    let mut all: Vec<(&'static str, Arc<dyn Cache>, Option<RedisPrefix>)> =
        vec![("memory", Arc::new(MemoryCache::new(64 << 20)), None)];
    if let Some(url) = support::redis::server_url() {
        let prefix = support::redis::fresh_prefix(&url);
        let redis = RedisCache::new(prefix.settings.clone()).unwrap();
        let tiered = TieredCache::with_redis(
            MemoryCache::new(1 << 20),
            redis,
            None,
            Arc::new(CacheMetrics::default()),
        )
        .await;
        assert!(tiered.using_redis(), "Redis at {url} is reachable");
        all.push(("redis", Arc::new(tiered), Some(prefix)));
    }
    all
}

async fn get(cache: &dyn Cache, key: &str) -> Option<Vec<u8>> {
    cache.get(key, &mut Stamp::default()).await
}

/// Stores as a request that read its data just now.
async fn set(cache: &dyn Cache, key: &str, value: &[u8], ttl: Duration, t: &[&str]) {
    set_for(cache, key, value, ttl.into(), t).await;
}

/// `set`, for `life`.
async fn set_for(cache: &dyn Cache, key: &str, value: &[u8], life: Lifetime, t: &[&str]) {
    let mut stamp = Stamp::default();
    cache.stamp(&mut stamp).await;
    cache.set(key, value.to_vec(), life, &tags(t), &stamp).await;
}

// Past its TTL an entry is a miss, but within its grace `get_stale` still
// has it, with its age; past its grace it is gone. Both tiers keep real
// time here (Redis keeps its own).
#[tokio::test]
async fn an_entry_is_kept_stale_for_its_grace_after_its_ttl() {
    let second = Duration::from_secs(1);
    for (name, cache, _guard) in caches().await {
        let c = cache.as_ref();
        let life = Lifetime {
            ttl: second,
            grace: second,
        };
        set_for(c, "k", b"v", life, &["t"]).await;
        let fresh = c
            .get_stale("k", None)
            .await
            .expect("fresh is stale-servable too");
        assert_eq!(fresh.value, b"v", "{name}");
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert_eq!(get(c, "k").await, None, "{name}: expired");
        let stale = c.get_stale("k", None).await.expect("within its grace");
        assert_eq!(stale.value, b"v", "{name}");
        assert!(
            stale.age >= Duration::from_millis(1100) && stale.age < Duration::from_secs(10),
            "{name}: age {:?}",
            stale.age
        );
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(c.get_stale("k", None).await, None, "{name}: past its grace");
    }
}

// Invalidation means wrong, expiry only old: an invalidated entry is
// never served stale, within its TTL or its grace.
#[tokio::test]
async fn an_invalidated_entry_is_never_stale() {
    for (name, cache, _guard) in caches().await {
        let c = cache.as_ref();
        let life = Lifetime {
            ttl: HOUR,
            grace: HOUR,
        };
        set_for(c, "k", b"v", life, &["t"]).await;
        set_for(c, "other", b"o", life, &["u"]).await;
        c.invalidate_tags(&tags(&["t"])).await;
        assert_eq!(c.get_stale("k", None).await, None, "{name}");
        assert_eq!(get(c, "k").await, None, "{name}");
        assert!(
            c.get_stale("other", None).await.is_some(),
            "{name}: untouched"
        );
    }
}

// After `suspect` (the listener lost its connection) nothing stored before
// is served fresh, but it stays stale-servable; a later invalidation still
// removes it, and `flush` removes everything.
#[tokio::test]
async fn a_suspected_memory_tier_serves_only_stale() {
    let cache = MemoryCache::new(1 << 20);
    let life = Lifetime {
        ttl: HOUR,
        grace: HOUR,
    };
    set_for(&cache, "a", b"1", life, &["t"]).await;
    set_for(&cache, "b", b"2", life, &["u"]).await;
    cache.suspect();
    assert_eq!(get(&cache, "a").await, None);
    assert!(cache.get_stale("a", None).await.is_some());
    cache.invalidate_tags(&tags(&["t"])).await;
    assert_eq!(cache.get_stale("a", None).await, None);
    set_for(&cache, "c", b"3", life, &[]).await;
    assert_eq!(get(&cache, "c").await, Some(b"3".to_vec()), "stored after");
    cache.flush();
    assert_eq!(cache.get_stale("b", None).await, None);
}

#[tokio::test]
async fn keys_of_any_shape_round_trip() {
    let keys = [
        "marketplace:agents:a%3Ab:coding:false:trending:50:0",
        "with spaces and : colons",
        "ünïcödé:キー:🔑",
        "",
        "trailing:",
    ];
    for (name, cache, _guard) in caches().await {
        for (i, key) in keys.iter().enumerate() {
            set(cache.as_ref(), key, &[i as u8, 0, 255], HOUR, &[]).await;
        }
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(
                get(cache.as_ref(), key).await,
                Some(vec![i as u8, 0, 255]),
                "{name}: {key:?}"
            );
        }
        assert_eq!(get(cache.as_ref(), "absent").await, None, "{name}");
        cache.delete(keys[0]).await;
        assert_eq!(get(cache.as_ref(), keys[0]).await, None, "{name}: deleted");
        assert!(
            get(cache.as_ref(), keys[1]).await.is_some(),
            "{name}: others stay"
        );
    }
}

#[tokio::test]
async fn invalidating_a_tag_removes_every_entry_carrying_it_and_no_other() {
    for (name, cache, _guard) in caches().await {
        let c = cache.as_ref();
        for i in 0..300 {
            let key = match i % 3 {
                0 => format!("marketplace:agents:q{i}:all:false:trending:50:0"),
                1 => format!("marketplace:agent:agent-{i:06}"),
                _ => format!("odd key {i} : ü"),
            };
            let entry_tags: &[&str] = if i % 2 == 0 {
                &["agents", "trending"]
            } else {
                &["agents"]
            };
            set(c, &key, b"v", HOUR, entry_tags).await;
        }
        set(c, "marketplace:categories", b"c", HOUR, &["categories"]).await;
        set(c, "untagged", b"u", HOUR, &[]).await;

        c.invalidate_tags(&tags(&["agents"])).await;

        for i in 0..300 {
            for key in [
                format!("marketplace:agents:q{i}:all:false:trending:50:0"),
                format!("marketplace:agent:agent-{i:06}"),
                format!("odd key {i} : ü"),
            ] {
                assert_eq!(get(c, &key).await, None, "{name}: {key} survived");
            }
        }
        assert_eq!(
            get(c, "marketplace:categories").await,
            Some(b"c".to_vec()),
            "{name}"
        );
        assert_eq!(get(c, "untagged").await, Some(b"u".to_vec()), "{name}");

        // Entries stored after the invalidation are served again.
        set(
            c,
            "marketplace:agent:agent-000001",
            b"new",
            HOUR,
            &["agents"],
        )
        .await;
        assert_eq!(
            get(c, "marketplace:agent:agent-000001").await,
            Some(b"new".to_vec()),
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_value_computed_before_an_invalidation_is_never_served_after_it() {
    for (name, cache, _guard) in caches().await {
        let c = cache.as_ref();
        // A request misses (taking its stamp), then reads the database ...
        let mut stamp = Stamp::default();
        assert_eq!(c.get("marketplace:featured", &mut stamp).await, None);
        // ... a write lands and invalidates ...
        c.invalidate_tags(&tags(&["featured"])).await;
        // ... and the request stores what it read before the write.
        c.set(
            "marketplace:featured",
            b"stale".to_vec(),
            HOUR.into(),
            &tags(&["featured"]),
            &stamp,
        )
        .await;
        assert_eq!(
            get(c, "marketplace:featured").await,
            None,
            "{name}: stale value served"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn memory_entries_expire_after_their_ttl() {
    let cache = MemoryCache::new(1 << 20);
    set(&cache, "short", b"s", Duration::from_secs(60), &[]).await;
    set(&cache, "long", b"l", Duration::from_secs(1800), &[]).await;
    tokio::time::advance(Duration::from_secs(59)).await;
    assert_eq!(get(&cache, "short").await, Some(b"s".to_vec()));
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(get(&cache, "short").await, None, "expired after 60 s");
    assert_eq!(get(&cache, "long").await, Some(b"l".to_vec()));
    tokio::time::advance(Duration::from_secs(1800)).await;
    assert_eq!(get(&cache, "long").await, None);
}

#[tokio::test]
async fn redis_entries_expire_after_their_ttl() {
    let Some(url) = support::redis::server_url() else {
        return;
    };
    let prefix = support::redis::fresh_prefix(&url);
    let cache = TieredCache::with_redis(
        MemoryCache::new(1 << 20),
        RedisCache::new(prefix.settings.clone()).unwrap(),
        None,
        Arc::new(CacheMetrics::default()),
    )
    .await;
    // Redis keeps time itself; a one-second TTL is the shortest the cache
    // import can ask for.
    set(&cache, "short", b"s", Duration::from_secs(1), &[]).await;
    set(&cache, "long", b"l", HOUR, &[]).await;
    assert_eq!(get(&cache, "short").await, Some(b"s".to_vec()));
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(get(&cache, "short").await, None);
    assert_eq!(get(&cache, "long").await, Some(b"l".to_vec()));
}
