//! [`MockCache`]: an in-memory cache that records every call, counts hits
//! and misses, runs on a virtual clock, and fails or slows down on demand.

use async_trait::async_trait;
use host::cache::{Cache, Lifetime, Stale, Stamp};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// One call a component made to the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheCall {
    /// `get(key)`; `hit` tells whether it found a value.
    Get {
        key: String,
        hit: bool,
    },
    /// `set(key, value, ttl, tags)`.
    Set {
        key: String,
        value: Vec<u8>,
        ttl: Duration,
        tags: Vec<String>,
    },
    Delete {
        key: String,
    },
    InvalidateTags {
        tags: Vec<String>,
    },
}

struct Entry {
    value: Vec<u8>,
    stored_at: Duration,
    expires_at: Duration,
    /// The end of its grace (see `get_stale`).
    stale_until: Duration,
    tags: Vec<String>,
    /// The invalidation clock when the storing request first used the cache.
    stamp: u64,
}

#[derive(Default)]
struct State {
    entries: HashMap<String, Entry>,
    /// When each tag was last invalidated, on the invalidation clock.
    tag_times: HashMap<String, u64>,
    invalidation_clock: u64,
    /// Virtual time since the cache was made.
    now: Duration,
    calls: Vec<CacheCall>,
    hits: u64,
    misses: u64,
    failing: bool,
    latency: Duration,
}

/// An in-memory cache with the host's semantics: TTLs, and tags invalidated
/// by an invalidation clock (an entry stored by a request that began before
/// an invalidation of one of its tags is never served).
///
/// Time is virtual: entries expire when the test calls [`advance`]
/// (`MockCache::advance`), never by themselves. Clones share one cache.
///
/// Faults: [`set_failing`](MockCache::set_failing) makes every operation
/// fail as the host's cache does when every tier is down (a `get` is a miss,
/// writes are dropped; the component cannot tell); [`set_latency`]
/// (MockCache::set_latency) delays every operation by real time.
#[derive(Clone, Default)]
pub struct MockCache {
    state: Arc<Mutex<State>>,
}

impl MockCache {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Moves the virtual clock forward: entries whose TTL has run out are
    /// gone.
    pub fn advance(&self, by: Duration) {
        self.state().now += by;
    }

    /// Every call since the start or the last [`clear_calls`](Self::clear_calls), in order.
    pub fn calls(&self) -> Vec<CacheCall> {
        self.state().calls.clone()
    }

    /// Forgets the recorded calls and the hit and miss counts, but not the
    /// entries.
    pub fn clear_calls(&self) {
        let mut s = self.state();
        s.calls.clear();
        s.hits = 0;
        s.misses = 0;
    }

    /// `get` calls that found a value.
    pub fn hits(&self) -> u64 {
        self.state().hits
    }

    /// `get` calls that found nothing (including every `get` while failing).
    pub fn misses(&self) -> u64 {
        self.state().misses
    }

    /// Every tag named by an `invalidate-tags` call, in call order.
    pub fn invalidated_tags(&self) -> Vec<String> {
        self.state()
            .calls
            .iter()
            .filter_map(|c| match c {
                CacheCall::InvalidateTags { tags } => Some(tags.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    /// The keys `set` was called with, in call order.
    pub fn set_keys(&self) -> Vec<String> {
        self.state()
            .calls
            .iter()
            .filter_map(|c| match c {
                CacheCall::Set { key, .. } => Some(key.clone()),
                _ => None,
            })
            .collect()
    }

    /// Whether `key` holds a readable value now (not expired, not
    /// invalidated). Not recorded as a call.
    pub fn contains(&self, key: &str) -> bool {
        let s = self.state();
        s.entries.get(key).is_some_and(|e| s.readable(e))
    }

    /// Puts a value in the cache directly, as if a request stored it now.
    /// Not recorded as a call.
    pub fn insert(&self, key: &str, value: &[u8], ttl: Duration, tags: &[&str]) {
        let mut s = self.state();
        let entry = Entry {
            value: value.to_vec(),
            stored_at: s.now,
            expires_at: s.now + ttl,
            stale_until: s.now + ttl,
            tags: tags.iter().map(|t| t.to_string()).collect(),
            stamp: s.invalidation_clock,
        };
        s.entries.insert(key.to_string(), entry);
    }

    /// While `failing`, every operation fails as the host's cache does with
    /// every tier down: reads miss and writes are dropped. Invalidations
    /// still take effect, as the host replays those made during an outage.
    pub fn set_failing(&self, failing: bool) {
        self.state().failing = failing;
    }

    /// Delays every operation by `latency` of real time.
    pub fn set_latency(&self, latency: Duration) {
        self.state().latency = latency;
    }

    async fn delay(&self) {
        let latency = self.state().latency;
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
    }
}

impl State {
    fn readable(&self, e: &Entry) -> bool {
        e.expires_at > self.now && self.current(e)
    }

    /// Whether none of `e`'s tags was invalidated since it was stored.
    fn current(&self, e: &Entry) -> bool {
        e.tags
            .iter()
            .all(|t| self.tag_times.get(t).is_none_or(|at| *at <= e.stamp))
    }
}

#[async_trait]
impl Cache for MockCache {
    async fn get(&self, key: &str, stamp: &mut Stamp) -> Option<Vec<u8>> {
        self.delay().await;
        let mut s = self.state();
        if stamp.memory.is_none() && !stamp.sealed {
            stamp.memory = Some(s.invalidation_clock);
        }
        let value = if s.failing {
            None
        } else {
            s.entries
                .get(key)
                .filter(|e| s.readable(e))
                .map(|e| e.value.clone())
        };
        if value.is_some() {
            s.hits += 1;
        } else {
            s.misses += 1;
        }
        s.calls.push(CacheCall::Get {
            key: key.to_string(),
            hit: value.is_some(),
        });
        value
    }

    async fn stamp(&self, stamp: &mut Stamp) {
        let s = self.state();
        if stamp.memory.is_none() && !stamp.sealed {
            stamp.memory = Some(s.invalidation_clock);
        }
    }

    async fn set(&self, key: &str, value: Vec<u8>, life: Lifetime, tags: &[String], stamp: &Stamp) {
        self.delay().await;
        let mut s = self.state();
        s.calls.push(CacheCall::Set {
            key: key.to_string(),
            value: value.clone(),
            ttl: life.ttl,
            tags: tags.to_vec(),
        });
        // Like the host's tiers: a value without the clock from before it
        // was read is not stored.
        let (false, Some(stamp)) = (s.failing, stamp.memory) else {
            return;
        };
        let entry = Entry {
            value,
            stored_at: s.now,
            expires_at: s.now + life.ttl,
            stale_until: s.now + life.ttl + life.grace,
            tags: tags.to_vec(),
            stamp,
        };
        s.entries.insert(key.to_string(), entry);
    }

    /// Not recorded as a call: the host asks for stale entries, never a
    /// component.
    async fn get_stale(&self, key: &str, past_ttl: Option<Duration>) -> Option<Stale> {
        self.delay().await;
        let s = self.state();
        if s.failing {
            return None;
        }
        s.entries
            .get(key)
            .filter(|e| e.stale_until > s.now && s.current(e))
            .map(|e| Stale {
                value: e.value.clone(),
                age: s.now.saturating_sub(e.stored_at),
                past_ttl: s.now.saturating_sub(e.expires_at),
            })
            .filter(|stale| stale.within(past_ttl))
    }

    async fn delete(&self, key: &str) {
        self.delay().await;
        let mut s = self.state();
        s.calls.push(CacheCall::Delete {
            key: key.to_string(),
        });
        if !s.failing {
            s.entries.remove(key);
        }
    }

    async fn invalidate_tags(&self, tags: &[String]) {
        self.delay().await;
        let mut s = self.state();
        s.calls.push(CacheCall::InvalidateTags {
            tags: tags.to_vec(),
        });
        // Even while failing: the host never loses an invalidation (it
        // replays those made during an outage before reading again).
        s.invalidation_clock += 1;
        let at = s.invalidation_clock;
        for tag in tags {
            s.tag_times.insert(tag.clone(), at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block_on;

    const MIN: Duration = Duration::from_secs(60);

    fn tags(t: &[&str]) -> Vec<String> {
        t.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn values_are_served_until_their_ttl_runs_out_on_the_virtual_clock() {
        let cache = MockCache::new();
        block_on(async {
            let mut stamp = Stamp::default();
            cache.stamp(&mut stamp).await;
            cache.set("k", b"v".to_vec(), MIN.into(), &[], &stamp).await;
            assert_eq!(cache.get("k", &mut stamp).await, Some(b"v".to_vec()));
            cache.advance(MIN - Duration::from_secs(1));
            assert!(cache.get("k", &mut stamp).await.is_some());
            cache.advance(Duration::from_secs(1));
            assert_eq!(cache.get("k", &mut stamp).await, None);
        });
        assert_eq!((cache.hits(), cache.misses()), (2, 1));
    }

    #[test]
    fn invalidating_a_tag_hides_every_entry_carrying_it_and_no_other() {
        let cache = MockCache::new();
        cache.insert("a", b"1", MIN, &["agents", "trending"]);
        cache.insert("b", b"2", MIN, &["templates"]);
        block_on(cache.invalidate_tags(&tags(&["trending"])));
        assert!(!cache.contains("a"));
        assert!(cache.contains("b"));
        assert_eq!(cache.invalidated_tags(), ["trending"]);
        // Stored after the invalidation: served.
        cache.insert("a", b"3", MIN, &["agents", "trending"]);
        assert!(cache.contains("a"));
    }

    #[test]
    fn a_value_read_before_an_invalidation_and_stored_after_it_is_never_served() {
        let cache = MockCache::new();
        block_on(async {
            let mut slow_request = Stamp::default();
            assert_eq!(cache.get("k", &mut slow_request).await, None);
            cache.invalidate_tags(&tags(&["agents"])).await;
            cache
                .set(
                    "k",
                    b"stale".to_vec(),
                    MIN.into(),
                    &tags(&["agents"]),
                    &slow_request,
                )
                .await;
            assert_eq!(cache.get("k", &mut Stamp::default()).await, None);
        });
    }

    #[test]
    fn every_call_is_recorded_in_order() {
        let cache = MockCache::new();
        block_on(async {
            let mut stamp = Stamp::default();
            cache.get("k", &mut stamp).await;
            cache
                .set("k", b"v".to_vec(), MIN.into(), &tags(&["t"]), &stamp)
                .await;
            cache.get("k", &mut stamp).await;
            cache.delete("k").await;
            cache.invalidate_tags(&tags(&["t", "u"])).await;
        });
        assert_eq!(
            cache.calls(),
            vec![
                CacheCall::Get {
                    key: "k".into(),
                    hit: false
                },
                CacheCall::Set {
                    key: "k".into(),
                    value: b"v".to_vec(),
                    ttl: MIN,
                    tags: tags(&["t"])
                },
                CacheCall::Get {
                    key: "k".into(),
                    hit: true
                },
                CacheCall::Delete { key: "k".into() },
                CacheCall::InvalidateTags {
                    tags: tags(&["t", "u"])
                },
            ]
        );
        assert_eq!(cache.set_keys(), ["k"]);
        cache.clear_calls();
        assert!(cache.calls().is_empty());
        assert_eq!((cache.hits(), cache.misses()), (0, 0));
    }

    #[test]
    fn a_failing_cache_misses_and_drops_writes_but_keeps_invalidations() {
        let cache = MockCache::new();
        cache.insert("old", b"1", MIN, &["t"]);
        cache.set_failing(true);
        block_on(async {
            let mut stamp = Stamp::default();
            assert_eq!(cache.get("old", &mut stamp).await, None);
            cache
                .set("new", b"2".to_vec(), MIN.into(), &[], &stamp)
                .await;
            cache.invalidate_tags(&tags(&["t"])).await;
        });
        cache.set_failing(false);
        assert!(!cache.contains("new"), "a write while failing was kept");
        assert!(
            !cache.contains("old"),
            "an invalidation while failing was lost"
        );
        assert_eq!(cache.misses(), 1);
    }

    #[test]
    fn latency_delays_every_operation() {
        let cache = MockCache::new();
        cache.set_latency(Duration::from_millis(30));
        let started = std::time::Instant::now();
        block_on(cache.get("k", &mut Stamp::default()));
        // Ordering, not timing: at least the latency has passed.
        assert!(started.elapsed() >= Duration::from_millis(30));
    }
}
