//! The cache components use: Redis when configured and healthy, the memory
//! tier when it is not, never an error.
//!
//! - `REDIS_URL` unset: the memory tier only (logged once at start).
//! - Each Redis operation has a short timeout. A failed or slow operation
//!   falls to the memory tier for that operation. After
//!   `FAILURES_TO_OPEN` failures in a row the breaker opens: requests stop
//!   trying Redis at all, so a dead Redis adds no latency, and a background
//!   probe pings it every `PROBE_INTERVAL` and closes the breaker when it
//!   answers.
//! - Entries written to the memory tier while Redis is out live at most
//!   `DEGRADED_TTL`, because they miss invalidations made by other hosts.
//! - Tags invalidated while Redis is out are applied to the memory tier at
//!   once and remembered; Redis is not read again until they have been
//!   applied there too, so nothing invalidated during the outage is served
//!   after it. Other hosts' writes of that time may not have reached Redis
//!   either: the breaker closes only once the `Backlog` (the outbox) has
//!   been delivered to it, unless the backlog cannot be read (the database
//!   is down too; it is delivered when it can be).
//! - The near cache keeps Redis hits in process memory and serves them
//!   while this host's subscription to the invalidations channel is up
//!   (`subscribe`) and the breaker is closed; it is flushed when the
//!   subscription is lost and again when it is back.

use super::metrics::{CacheMetrics, Outcome, Tier, endpoint_of};
use super::redis::{RedisCache, RedisFailure, key_tag};
use super::{Cache, Lifetime, MemoryCache, Stale, Stamp};
use async_trait::async_trait;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// Consecutive Redis failures that open the breaker.
const FAILURES_TO_OPEN: u32 = 3;
/// How often the probe pings Redis while the breaker is open.
const PROBE_INTERVAL: Duration = Duration::from_millis(500);
/// How often the near cache's subscription is pinged, and how long an
/// answer may take (a busy host must not take its own slowness for a lost
/// subscription).
const SUBSCRIPTION_PING: Duration = Duration::from_millis(100);
const SUBSCRIPTION_TIMEOUT: Duration = Duration::from_millis(500);
/// Longest life of an entry written to the memory tier while Redis is out.
pub const DEGRADED_TTL: Duration = Duration::from_secs(30);

/// Invalidations recorded while Redis may not have been told of them (the
/// outbox): delivered to Redis before this host reads Redis again after
/// losing it, and before it reads Redis at all after starting.
#[async_trait]
pub trait Backlog: Send + Sync {
    /// Delivers every undelivered invalidation to `cache`'s Redis (see
    /// `TieredCache::deliver_to_redis`). `Ok(false)`: Redis did not take
    /// them all; `Err`: the backlog could not be read.
    async fn deliver(&self, cache: &TieredCache) -> Result<bool, String>;
}

/// Redis's health as seen by this host.
#[derive(Default)]
struct Breaker {
    /// Failures since the last success.
    failures: AtomicU32,
    /// Whether requests skip Redis.
    open: AtomicBool,
    /// Whether the probe is delivering the backlog before closing: Redis
    /// takes deliveries (only) then, though the breaker is open.
    catching_up: AtomicBool,
}

/// Redis hits kept in process memory, valid only while this host hears
/// every invalidation (its subscription to the invalidations channel).
struct Near {
    cache: MemoryCache,
    /// Whether the subscription is up; entries are served only then.
    subscribed: AtomicBool,
}

struct Inner {
    /// Always there; the only tier without Redis.
    memory: MemoryCache,
    /// Redis, when configured.
    redis: Option<RedisCache>,
    /// In front of Redis, when configured with it.
    near: Option<Near>,
    breaker: Breaker,
    /// Tags invalidated while Redis could not be told.
    pending: Mutex<BTreeSet<String>>,
    /// What other hosts may not have told Redis.
    backlog: Option<Arc<dyn Backlog>>,
    metrics: Arc<CacheMetrics>,
}

/// The tiered cache.
pub struct TieredCache {
    inner: Arc<Inner>,
}

impl TieredCache {
    /// Memory only.
    pub fn memory_only(memory: MemoryCache, metrics: Arc<CacheMetrics>) -> Self {
        tracing::info!("cache: REDIS_URL unset, using the in-process memory tier");
        Self::build(memory, None, None, metrics)
    }

    /// Redis in front of `memory`. Connects now if it can, and delivers
    /// `backlog` before reading Redis; otherwise starts degraded and lets
    /// the probe do both later.
    pub async fn with_redis(
        memory: MemoryCache,
        redis: RedisCache,
        backlog: Option<Arc<dyn Backlog>>,
        metrics: Arc<CacheMetrics>,
    ) -> Self {
        let reachable = redis.connect().await;
        let cache = Self::build(memory, Some(redis), backlog, metrics);
        cache.inner.breaker.open.store(true, Ordering::SeqCst);
        match reachable {
            Ok(()) => {
                if cache.inner.catch_up().await {
                    cache.inner.breaker.open.store(false, Ordering::SeqCst);
                    tracing::info!("cache: Redis");
                } else {
                    tracing::warn!(
                        "cache: Redis did not take the outbox's backlog at start; using the memory tier until it does"
                    );
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cache: Redis unreachable at start; using the memory tier until it answers");
            }
        }
        cache
    }

    fn build(
        memory: MemoryCache,
        redis: Option<RedisCache>,
        backlog: Option<Arc<dyn Backlog>>,
        metrics: Arc<CacheMetrics>,
    ) -> Self {
        let near = redis
            .as_ref()
            .map(RedisCache::near_cache_bytes)
            .filter(|&bytes| bytes > 0)
            .map(|bytes| Near {
                cache: MemoryCache::new(bytes),
                subscribed: AtomicBool::new(false),
            });
        let inner = Arc::new(Inner {
            memory,
            redis,
            near,
            breaker: Breaker::default(),
            pending: Mutex::new(BTreeSet::new()),
            backlog,
            metrics,
        });
        if inner.redis.is_some() {
            tokio::spawn(probe(Arc::downgrade(&inner)));
        }
        if inner.near.is_some() {
            tokio::spawn(subscribe(Arc::downgrade(&inner)));
        }
        Self { inner }
    }

    /// Invalidates `tags` in Redis, for the outbox relay, in calls of at
    /// most 500 tags. Returns whether Redis took them all; `false` without
    /// Redis, and while the breaker is open unless the probe is delivering
    /// the backlog. Unlike `invalidate_tags`, nothing is kept pending here:
    /// the outbox rows stay undelivered instead.
    pub async fn deliver_to_redis(&self, tags: &[String]) -> bool {
        let inner = &self.inner;
        if inner.redis.is_none() {
            return false;
        }
        let redis = if inner.breaker.catching_up.load(Ordering::SeqCst) {
            inner.redis.as_ref()
        } else {
            inner.redis_for("tags").await
        };
        let Some(redis) = redis else {
            return false;
        };
        for chunk in tags.chunks(500) {
            if let Err(e) = redis.invalidate_tags(chunk).await {
                inner.failed("tags", &e);
                return false;
            }
            inner.near_invalidate(chunk).await;
        }
        inner.succeeded();
        true
    }

    /// Invalidates `tags` in the memory tier only (the relay, when Redis
    /// cannot take them, and the listener).
    pub async fn deliver_to_memory(&self, tags: &[String]) {
        self.inner.memory.invalidate_tags(tags).await;
        // The near cache too: should Redis have missed the write, a near
        // entry must not outlive what this host already knows.
        self.inner.near_invalidate(tags).await;
    }

    /// Makes the memory tier's entries stale (kept for `get_stale`) and
    /// empties the near cache: for when invalidations may be missed from
    /// now on (see `MemoryCache::suspect`).
    pub fn suspect_memory(&self) {
        self.inner.memory.suspect();
        if let Some(near) = self.inner.near.as_ref() {
            near.cache.flush();
        }
    }

    /// Empties the memory tier, for when invalidations may have been missed
    /// (see `MemoryCache::flush`).
    pub fn flush_memory(&self) {
        self.inner.memory.flush();
        if let Some(near) = self.inner.near.as_ref() {
            near.cache.flush();
        }
    }

    /// Whether operations go to Redis now.
    pub fn using_redis(&self) -> bool {
        self.inner.redis_ready().is_some()
    }
}

/// Pings Redis while the breaker is open; closes it when Redis answers and
/// knows of every pending invalidation, this host's and the backlog's.
/// Ends when the cache is dropped.
async fn probe(inner: Weak<Inner>) {
    loop {
        tokio::time::sleep(PROBE_INTERVAL).await;
        let Some(inner) = inner.upgrade() else { return };
        if !inner.breaker.open.load(Ordering::SeqCst) {
            continue;
        }
        let Some(redis) = inner.redis.as_ref() else {
            return;
        };
        let healthy = async {
            redis.connect().await?;
            redis.ping().await?;
            inner.flush_pending(redis).await
        };
        if healthy.await.is_ok() && inner.catch_up().await {
            inner.breaker.failures.store(0, Ordering::SeqCst);
            inner.breaker.open.store(false, Ordering::SeqCst);
            tracing::info!("cache: Redis answers again; back on Redis");
        }
    }
}

/// Keeps the near cache's subscription: while it is up, applies every
/// invalidation announced on the channel; when it is lost, stops serving
/// the near cache and flushes it, and flushes it again once subscribed
/// anew (what was announced meanwhile is lost). Ends when the cache is
/// dropped.
async fn subscribe(inner: Weak<Inner>) {
    use futures_util::StreamExt as _;
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let (Some(redis), Some(near)) = (strong.redis.as_ref(), strong.near.as_ref()) else {
            return;
        };
        match redis.subscribe().await {
            Ok(pubsub) => {
                near.cache.flush();
                near.subscribed.store(true, Ordering::SeqCst);
                let op_timeout = redis.op_timeout();
                drop(strong);
                // A connection cut without a word (no FIN) would look
                // subscribed forever: a ping every `SUBSCRIPTION_PING`
                // proves it is not.
                let (mut sink, mut messages) = pubsub.split();
                let mut ping = tokio::time::interval(SUBSCRIPTION_PING);
                loop {
                    tokio::select! {
                        message = messages.next() => {
                            let Some(message) = message else { break };
                            let Some(strong) = inner.upgrade() else { return };
                            let Some(near) = strong.near.as_ref() else { return };
                            let Ok(payload) = message.get_payload::<String>() else {
                                near.cache.flush();
                                continue;
                            };
                            let tags: Vec<String> = payload
                                .split('\n')
                                .filter(|t| !t.is_empty())
                                .map(str::to_string)
                                .collect();
                            near.cache.invalidate_tags(&tags).await;
                        }
                        _ = ping.tick() => {
                            if inner.strong_count() == 0 {
                                return;
                            }
                            let answered = tokio::time::timeout(op_timeout.max(SUBSCRIPTION_TIMEOUT), sink.ping::<redis::Value>()).await;
                            if !matches!(answered, Ok(Ok(_))) {
                                break;
                            }
                        }
                    }
                }
                let Some(strong) = inner.upgrade() else {
                    return;
                };
                if let Some(near) = strong.near.as_ref() {
                    near.subscribed.store(false, Ordering::SeqCst);
                    near.cache.flush();
                }
                tracing::warn!(
                    "cache: lost the invalidation subscription; near cache off until it is back"
                );
            }
            Err(e) => tracing::debug!(error = %e, "cache: cannot subscribe to invalidations yet"),
        }
        tokio::time::sleep(PROBE_INTERVAL).await;
    }
}

impl Inner {
    /// Delivers the backlog to Redis, breaker open: whether Redis may be
    /// read now (it took the backlog, or there is none, or it cannot be
    /// read: the database is down too, and no write can add to it).
    async fn catch_up(self: &Arc<Self>) -> bool {
        let Some(backlog) = self.backlog.clone() else {
            return true;
        };
        self.breaker.catching_up.store(true, Ordering::SeqCst);
        let cache = TieredCache {
            inner: self.clone(),
        };
        let delivered = backlog.deliver(&cache).await;
        self.breaker.catching_up.store(false, Ordering::SeqCst);
        match delivered {
            Ok(all) => all,
            Err(e) => {
                tracing::warn!(error = %e, "cache: cannot read the outbox's backlog; back on Redis without it (the relay delivers it when it can)");
                true
            }
        }
    }

    /// Invalidates `tags` in the near cache, if there is one.
    async fn near_invalidate(&self, tags: &[String]) {
        if let Some(near) = self.near.as_ref() {
            near.cache.invalidate_tags(tags).await;
        }
    }

    /// The near cache, if it may be served now: subscribed, and Redis
    /// healthy (a Redis that stopped answering may have stopped announcing
    /// without the subscription noticing yet).
    fn near_ready(&self) -> Option<&MemoryCache> {
        self.near
            .as_ref()
            .filter(|near| near.subscribed.load(Ordering::SeqCst))
            .filter(|_| self.redis_ready().is_some())
            .map(|near| &near.cache)
    }

    fn redis_ready(&self) -> Option<&RedisCache> {
        self.redis
            .as_ref()
            .filter(|_| !self.breaker.open.load(Ordering::SeqCst))
    }

    fn succeeded(&self) {
        self.breaker.failures.store(0, Ordering::SeqCst);
    }

    fn failed(&self, endpoint: &str, error: &RedisFailure) {
        self.metrics.record(endpoint, Tier::redis, Outcome::error);
        let failures = self.breaker.failures.fetch_add(1, Ordering::SeqCst) + 1;
        if failures >= FAILURES_TO_OPEN && !self.breaker.open.swap(true, Ordering::SeqCst) {
            tracing::warn!(%error, failures, "cache: Redis failing; using the memory tier until it answers");
        } else {
            tracing::debug!(%error, "cache: Redis operation failed; memory tier for this one");
        }
    }

    /// Tells Redis of the invalidations it missed; they stay pending if it
    /// cannot be told.
    async fn flush_pending(&self, redis: &RedisCache) -> Result<(), RedisFailure> {
        let tags: Vec<String> = {
            let pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            if pending.is_empty() {
                return Ok(());
            }
            pending.iter().cloned().collect()
        };
        redis.invalidate_tags(&tags).await?;
        self.near_invalidate(&tags).await;
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        for tag in &tags {
            pending.remove(tag);
        }
        Ok(())
    }

    /// Redis, ready for an operation: healthy and aware of every pending
    /// invalidation.
    async fn redis_for(&self, endpoint: &str) -> Option<&RedisCache> {
        let redis = self.redis_ready()?;
        match self.flush_pending(redis).await {
            Ok(()) => Some(redis),
            Err(e) => {
                self.failed(endpoint, &e);
                None
            }
        }
    }
}

#[async_trait]
impl Cache for TieredCache {
    async fn get(&self, key: &str, stamp: &mut Stamp) -> Option<Vec<u8>> {
        let inner = &self.inner;
        let endpoint = endpoint_of(key);
        // The memory tier's clock too, whichever tier answers: a `set` that
        // falls to the memory tier needs it from before the data was read.
        inner.memory.stamp(stamp).await;
        if let Some(redis) = inner.redis_for(endpoint).await {
            let near = inner.near_ready();
            if let Some(near) = near
                && let Some(value) = near.lookup(key).await
            {
                inner.metrics.record(endpoint, Tier::near, Outcome::hit);
                return Some(value);
            }
            // Taken before the read: an invalidation announced from here
            // on makes what we keep of it invalid.
            let near_clock = near.map(MemoryCache::now);
            match redis.get_entry(key, stamp).await {
                Ok(hit) => {
                    inner.succeeded();
                    let outcome = if hit.is_some() {
                        Outcome::hit
                    } else {
                        Outcome::miss
                    };
                    inner.metrics.record(endpoint, Tier::redis, outcome);
                    let hit = hit?;
                    if let (Some(near), Some(clock)) = (near, near_clock)
                        && !key.contains('\n')
                    {
                        let mut tags = hit.tags.clone();
                        tags.push(key_tag(key));
                        near.insert(key, hit.value.clone(), hit.ttl.into(), &tags, clock)
                            .await;
                    }
                    return Some(hit.value);
                }
                Err(e) => inner.failed(endpoint, &e),
            }
        }
        let value = inner.memory.get(key, stamp).await;
        let outcome = if value.is_some() {
            Outcome::hit
        } else {
            Outcome::miss
        };
        inner.metrics.record(endpoint, Tier::memory, outcome);
        value
    }

    async fn stamp(&self, stamp: &mut Stamp) {
        let inner = &self.inner;
        inner.memory.stamp(stamp).await;
        if stamp.redis.is_some() || stamp.sealed {
            return;
        }
        if let Some(redis) = inner.redis_for("stamp").await {
            match redis.stamp().await {
                Ok(clock) => {
                    inner.succeeded();
                    stamp.redis = Some(clock);
                }
                Err(e) => inner.failed("stamp", &e),
            }
        }
    }

    /// Stores in Redis if `stamp` has Redis's clock and Redis takes it;
    /// else in the memory tier, as while Redis is out. A value read while
    /// Redis was away never goes to Redis: nothing proves it newer than
    /// Redis's invalidations of that time.
    async fn set(&self, key: &str, value: Vec<u8>, life: Lifetime, tags: &[String], stamp: &Stamp) {
        let inner = &self.inner;
        let endpoint = endpoint_of(key);
        // Redis cannot hold a tag with a newline: such an entry lives in the
        // memory tier, as while Redis is out, without counting as a Redis
        // failure (one component's tags must not open the breaker for all).
        let redis_can_hold = !tags.iter().any(|t| t.contains('\n'));
        if redis_can_hold
            && let Some(clock) = stamp.redis
            && let Some(redis) = inner.redis_for(endpoint).await
        {
            match redis.set(key, &value, life, tags, clock).await {
                Ok(_stored) => {
                    inner.succeeded();
                    // After Redis changed: a racing read that got the old
                    // value keeps nothing (other hosts hear it announced).
                    inner.near_invalidate(&[key_tag(key)]).await;
                    return;
                }
                Err(e) => inner.failed(endpoint, &e),
            }
        }
        // With Redis configured, what the memory tier holds is never served
        // stale (see `get_stale`): no grace.
        let life = if inner.redis.is_some() {
            Lifetime {
                ttl: life.ttl.min(DEGRADED_TTL),
                grace: Duration::ZERO,
            }
        } else {
            life
        };
        inner.memory.set(key, value, life, tags, stamp).await;
    }

    /// With Redis configured, Redis's entry if Redis answers (it knows
    /// every host's invalidations), and nothing otherwise: the memory tier
    /// then holds only what was stored while Redis was out, which may have
    /// missed other hosts' invalidations. Without Redis, the memory tier's
    /// (it heard every invalidation until its listener was lost).
    /// Counts what it returns as `stale` (the miss before it was counted).
    async fn get_stale(&self, key: &str, past_ttl: Option<Duration>) -> Option<Stale> {
        let inner = &self.inner;
        let endpoint = endpoint_of(key);
        let (found, tier) = if inner.redis.is_some() {
            let redis = inner.redis_for(endpoint).await?;
            match redis.get_stale(key).await {
                Ok(found) => {
                    inner.succeeded();
                    (found, Tier::redis)
                }
                Err(e) => {
                    inner.failed(endpoint, &e);
                    return None;
                }
            }
        } else {
            (inner.memory.lookup_stale(key).await, Tier::memory)
        };
        let found = found.filter(|s| s.within(past_ttl))?;
        inner.metrics.record(endpoint, tier, Outcome::stale);
        Some(found)
    }

    async fn delete(&self, key: &str) {
        let inner = &self.inner;
        inner.memory.delete(key).await;
        inner.near_invalidate(&[key_tag(key)]).await;
        if let Some(redis) = inner.redis_for(endpoint_of(key)).await {
            match redis.delete(key).await {
                Ok(()) => {
                    inner.succeeded();
                    inner.near_invalidate(&[key_tag(key)]).await;
                }
                Err(e) => inner.failed(endpoint_of(key), &e),
            }
        }
    }

    async fn invalidate_tags(&self, tags: &[String]) {
        let inner = &self.inner;
        inner.memory.invalidate_tags(tags).await;
        // At once here, and again once Redis has it (a read racing with
        // this one may have kept what Redis held until then); other hosts
        // hear it on the channel.
        inner.near_invalidate(tags).await;
        if inner.redis.is_none() {
            return;
        }
        if let Some(redis) = inner.redis_for("tags").await {
            match redis.invalidate_tags(tags).await {
                Ok(()) => {
                    inner.succeeded();
                    inner.near_invalidate(tags).await;
                    return;
                }
                Err(e) => inner.failed("tags", &e),
            }
        }
        inner
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(tags.iter().cloned());
    }
}
