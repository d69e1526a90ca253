//! The in-process cache tier.
//!
//! Entries live in a moka cache bounded by total bytes, each with its own
//! TTL. Tag invalidation is by **generation**: every tag has a counter, each
//! entry records the generations of its tags when it was stored, and an
//! entry whose recorded generation of any tag is older than the tag's current
//! one is treated as absent (and evicted on read). Invalidating a tag is one
//! counter increment however many entries carry it, and no entry can be
//! missed, because the check happens on every read.

use super::Cache;
use async_trait::async_trait;
use moka::Expiry;
use moka::future::Cache as Moka;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One stored value and what is needed to decide whether it is still valid.
#[derive(Clone)]
struct Entry {
    /// The cached bytes, shared so a hit does not copy them twice.
    value: Arc<[u8]>,
    /// How long after insertion the entry expires.
    ttl: Duration,
    /// Each tag of the entry with that tag's generation at store time.
    tags: Arc<[(String, u64)]>,
}

/// Expires each entry after its own TTL.
struct PerEntryTtl;

impl Expiry<String, Entry> for PerEntryTtl {
    fn expire_after_create(&self, _key: &String, entry: &Entry, _now: Instant) -> Option<Duration> {
        Some(entry.ttl)
    }

    fn expire_after_update(
        &self,
        _key: &String,
        entry: &Entry,
        _now: Instant,
        _current: Option<Duration>,
    ) -> Option<Duration> {
        Some(entry.ttl)
    }
}

/// The in-process cache tier: bounded in bytes, per-entry TTLs, tags by
/// generation.
pub struct MemoryCache {
    /// Key to entry; moka evicts by size and TTL.
    entries: Moka<String, Entry>,
    /// Current generation of every tag ever invalidated or stored; a tag
    /// absent here is at generation 0.
    generations: Mutex<HashMap<String, u64>>,
}

impl MemoryCache {
    /// A cache holding at most about `max_bytes` of values and keys.
    pub fn new(max_bytes: u64) -> Self {
        let entries = Moka::builder()
            .max_capacity(max_bytes)
            .weigher(|k: &String, e: &Entry| {
                u32::try_from(k.len() + e.value.len() + 64).unwrap_or(u32::MAX)
            })
            .expire_after(PerEntryTtl)
            .build();
        Self {
            entries,
            generations: Mutex::new(HashMap::new()),
        }
    }

    fn generations(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        // A poisoned lock only means another thread panicked mid-update of
        // a counter map whose every state is valid; keep using it.
        self.generations.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn is_current(&self, entry: &Entry) -> bool {
        let generations = self.generations();
        entry
            .tags
            .iter()
            .all(|(tag, seen)| generations.get(tag).copied().unwrap_or(0) == *seen)
    }
}

#[async_trait]
impl Cache for MemoryCache {
    async fn get(&self, key: &str) -> Option<Vec<u8>> {
        let entry = self.entries.get(key).await?;
        if self.is_current(&entry) {
            Some(entry.value.to_vec())
        } else {
            self.entries.invalidate(key).await;
            None
        }
    }

    async fn set(&self, key: &str, value: Vec<u8>, ttl: Duration, tags: &[String]) {
        let tags: Arc<[(String, u64)]> = {
            let generations = self.generations();
            tags.iter()
                .map(|t| (t.clone(), generations.get(t).copied().unwrap_or(0)))
                .collect()
        };
        let entry = Entry {
            value: value.into(),
            ttl,
            tags,
        };
        self.entries.insert(key.to_string(), entry).await;
    }

    async fn delete(&self, key: &str) {
        self.entries.invalidate(key).await;
    }

    async fn invalidate_tags(&self, tags: &[String]) {
        let mut generations = self.generations();
        for tag in tags {
            *generations.entry(tag.clone()).or_insert(0) += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(t: &[&str]) -> Vec<String> {
        t.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn a_stored_value_is_read_back() {
        let cache = MemoryCache::new(1 << 20);
        cache
            .set("k:é: x", b"v".to_vec(), Duration::from_secs(60), &[])
            .await;
        assert_eq!(cache.get("k:é: x").await.as_deref(), Some(&b"v"[..]));
        assert_eq!(cache.get("other").await, None);
    }

    #[tokio::test]
    async fn invalidating_a_tag_hides_every_entry_carrying_it_and_no_other() {
        let cache = MemoryCache::new(1 << 20);
        let ttl = Duration::from_secs(60);
        for i in 0..300 {
            cache
                .set(&format!("a:{i}"), vec![1], ttl, &tags(&["agents", "x"]))
                .await;
        }
        cache.set("c", vec![2], ttl, &tags(&["categories"])).await;
        cache.invalidate_tags(&tags(&["agents"])).await;
        for i in 0..300 {
            assert_eq!(cache.get(&format!("a:{i}")).await, None, "a:{i} survived");
        }
        assert_eq!(cache.get("c").await, Some(vec![2]));
        // Entries stored after the invalidation are visible again.
        cache.set("a:0", vec![3], ttl, &tags(&["agents"])).await;
        assert_eq!(cache.get("a:0").await, Some(vec![3]));
    }

    #[tokio::test]
    async fn delete_removes_one_key() {
        let cache = MemoryCache::new(1 << 20);
        let ttl = Duration::from_secs(60);
        cache.set("a", vec![1], ttl, &[]).await;
        cache.set("b", vec![2], ttl, &[]).await;
        cache.delete("a").await;
        assert_eq!(cache.get("a").await, None);
        assert_eq!(cache.get("b").await, Some(vec![2]));
    }
}
