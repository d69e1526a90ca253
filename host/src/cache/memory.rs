//! The in-process cache tier.
//!
//! Entries live in a moka cache bounded by total bytes. Each entry also
//! carries its expiry as a `tokio::time::Instant`, checked on every read, so
//! TTLs follow tokio's clock (and tests can pause and advance it); moka's
//! own per-entry expiry only reclaims the memory.
//!
//! Tag invalidation uses the invalidation clock described in `cache`: an
//! invalidation takes the next clock value and stamps its tags with it; an
//! entry stored under stamp `s` is valid while none of its tags has a value
//! above `s`. Invalidating is one map update however many entries carry the
//! tag, and no entry can be missed, because every read checks.
//!
//! An entry stays for its grace after its TTL (within the size bound, like
//! any other), served only by `get_stale`. `suspect` makes every entry
//! stored so far stale at once, keeping it for `get_stale`: for when
//! invalidations may be missed from now on, but were not until now.

use super::{Cache, Lifetime, Stale, Stamp};
use async_trait::async_trait;
use moka::Expiry;
use moka::future::Cache as Moka;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// One stored value and what decides whether it is still valid.
#[derive(Clone)]
struct Entry {
    /// The cached bytes, shared so a hit copies them once.
    value: Arc<[u8]>,
    /// How long after insertion moka may drop it: TTL and grace.
    lives: Duration,
    /// When it was stored (tokio's clock).
    stored_at: Instant,
    /// When it stops being served fresh.
    expires_at: Instant,
    /// When it stops being served stale.
    stale_until: Instant,
    /// The entry's tags.
    tags: Arc<[String]>,
    /// The clock value the request that stored it started under.
    stamp: u64,
}

/// Lets moka reclaim each entry after its own TTL.
struct PerEntryTtl;

impl Expiry<String, Entry> for PerEntryTtl {
    fn expire_after_create(
        &self,
        _key: &String,
        entry: &Entry,
        _now: std::time::Instant,
    ) -> Option<Duration> {
        Some(entry.lives)
    }

    fn expire_after_update(
        &self,
        _key: &String,
        entry: &Entry,
        _now: std::time::Instant,
        _current: Option<Duration>,
    ) -> Option<Duration> {
        Some(entry.lives)
    }
}

/// The clock and the last clock value of every invalidated tag.
#[derive(Default)]
struct Clock {
    /// The last value handed out.
    now: u64,
    /// Tag to the clock value of its last invalidation.
    tags: HashMap<String, u64>,
    /// Entries stamped before this value are invalid, whatever their tags
    /// (see `flush`).
    floor: u64,
    /// Entries stamped before this value are stale, whatever their TTL
    /// (see `suspect`).
    fresh_floor: u64,
}

/// The in-process cache tier: bounded in bytes, per-entry TTLs, tags by
/// invalidation clock.
pub struct MemoryCache {
    /// Key to entry; moka evicts by size.
    entries: Moka<String, Entry>,
    /// The invalidation clock.
    clock: Mutex<Clock>,
}

impl MemoryCache {
    /// A cache holding at most about `max_bytes` of keys and values.
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
            clock: Mutex::new(Clock::default()),
        }
    }

    fn clock(&self) -> std::sync::MutexGuard<'_, Clock> {
        // A poisoned lock only means a thread panicked between two updates
        // of plain counters, every state of which is valid; keep using it.
        self.clock.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `entry` may be served fresh.
    fn is_valid(&self, entry: &Entry) -> bool {
        if Instant::now() >= entry.expires_at {
            return false;
        }
        let clock = self.clock();
        entry.stamp >= clock.fresh_floor && Self::is_current(&clock, entry)
    }

    /// Whether none of `entry`'s tags was invalidated since it was stored.
    fn is_current(clock: &Clock, entry: &Entry) -> bool {
        entry.stamp >= clock.floor
            && entry
                .tags
                .iter()
                .all(|tag| clock.tags.get(tag).is_none_or(|&at| at <= entry.stamp))
    }

    /// The clock now: a stamp for an entry about to be read elsewhere and
    /// then `insert`ed here (the near cache).
    pub fn now(&self) -> u64 {
        self.clock().now
    }

    /// The bytes under `key` if valid, without touching any stamp.
    pub async fn lookup(&self, key: &str) -> Option<Vec<u8>> {
        let entry = self.entries.get(key).await?;
        if self.is_valid(&entry) {
            Some(entry.value.to_vec())
        } else {
            if !self.is_stale(&entry) {
                self.entries.invalidate(key).await;
            }
            None
        }
    }

    /// Whether `entry` may still be served stale.
    fn is_stale(&self, entry: &Entry) -> bool {
        Instant::now() < entry.stale_until && Self::is_current(&self.clock(), entry)
    }

    /// The entry under `key` if it may be served stale.
    pub async fn lookup_stale(&self, key: &str) -> Option<Stale> {
        let entry = self.entries.get(key).await?;
        if self.is_stale(&entry) {
            Some(Stale {
                value: entry.value.to_vec(),
                age: entry.stored_at.elapsed(),
                past_ttl: Instant::now().saturating_duration_since(entry.expires_at),
            })
        } else {
            self.entries.invalidate(key).await;
            None
        }
    }

    /// Stores `value` under `key` as of clock value `stamp`.
    pub async fn insert(
        &self,
        key: &str,
        value: Vec<u8>,
        life: Lifetime,
        tags: &[String],
        stamp: u64,
    ) {
        let now = Instant::now();
        let entry = Entry {
            value: value.into(),
            lives: life.ttl + life.grace,
            stored_at: now,
            expires_at: now + life.ttl,
            stale_until: now + life.ttl + life.grace,
            tags: tags.iter().cloned().collect(),
            stamp,
        };
        self.entries.insert(key.to_string(), entry).await;
    }

    /// Makes every entry stored so far, and every entry stored later under
    /// a stamp taken before now, stale (kept for `get_stale` while within
    /// its grace): for when invalidations may be missed from now on (the
    /// listener lost its connection) but were not until now.
    pub fn suspect(&self) {
        let mut clock = self.clock();
        clock.now += 1;
        clock.fresh_floor = clock.now;
    }

    /// Makes every entry stored so far invalid, and every entry stored
    /// later under a stamp taken before now: for when invalidations may
    /// have been missed.
    pub fn flush(&self) {
        let mut clock = self.clock();
        clock.now += 1;
        clock.floor = clock.now;
        clock.fresh_floor = clock.now;
        clock.tags.clear();
        drop(clock);
        self.entries.invalidate_all();
    }
}

#[async_trait]
impl Cache for MemoryCache {
    async fn get(&self, key: &str, stamp: &mut Stamp) -> Option<Vec<u8>> {
        self.stamp(stamp).await;
        self.lookup(key).await
    }

    async fn stamp(&self, stamp: &mut Stamp) {
        if stamp.memory.is_none() && !stamp.sealed {
            stamp.memory = Some(self.clock().now);
        }
    }

    async fn set(&self, key: &str, value: Vec<u8>, life: Lifetime, tags: &[String], stamp: &Stamp) {
        let Some(stamp) = stamp.memory else {
            return;
        };
        self.insert(key, value, life, tags, stamp).await;
    }

    async fn get_stale(&self, key: &str, past_ttl: Option<Duration>) -> Option<Stale> {
        self.lookup_stale(key).await.filter(|s| s.within(past_ttl))
    }

    async fn delete(&self, key: &str) {
        self.entries.invalidate(key).await;
    }

    async fn invalidate_tags(&self, tags: &[String]) {
        let mut clock = self.clock();
        clock.now += 1;
        let now = clock.now;
        for tag in tags {
            clock.tags.insert(tag.clone(), now);
        }
    }
}
