//! The cache capability: the `Cache` trait that the `cache` import is served
//! from, and its backends.
//!
//! - `memory`: the in-process tier (moka): bounded, per-entry TTLs.
//! - `redis`: Redis through a `ConnectionManager`, with connect and
//!   response timeouts; its operations can fail.
//! - `tiered`: what components actually use: Redis when configured and
//!   healthy, the memory tier per operation when it is not (with a circuit
//!   breaker, so a dead Redis costs nothing per request), and nothing at
//!   all (a miss) when every tier fails.
//! - `metrics`: hit, miss and error counters per endpoint and tier.
//!
//! ## Tags: the invalidation clock
//!
//! Every backend keeps a monotonic *invalidation clock*. Invalidating tags
//! takes the next clock value and records it for each tag. A request takes a
//! `Stamp` (the clock's value) at its first cache call, before it reads the
//! database, and every entry it stores carries that stamp. An entry is valid
//! while none of its tags was invalidated after its stamp. So:
//!
//! - invalidation is one write per tag, however many entries carry it, and
//!   no entry can be missed (every read checks);
//! - a value computed by a request that raced with a write (read the old
//!   rows, stored after the write's invalidation) is stored already
//!   invalid, because the invalidation is later than the request's stamp.
//!
//! **Invariant:** a cache method never returns an error to its caller. A
//! tier that fails is skipped; when all fail, `get` is a miss and writes are
//! dropped. Components never see a cache problem.

mod memory;
pub mod metrics;
mod redis;
mod tiered;

pub use memory::MemoryCache;
pub use metrics::CacheMetrics;
pub use redis::{RedisCache, RedisSettings};
pub use tiered::TieredCache;

use async_trait::async_trait;
use std::time::Duration;

/// The invalidation clocks as a request first saw them, one per tier the
/// request has touched. Start with `Stamp::default()` per request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stamp {
    /// Redis's clock, once read.
    pub redis: Option<u64>,
    /// The memory tier's clock, once read.
    pub memory: Option<u64>,
}

/// A shared cache with TTLs and tag-based invalidation.
#[async_trait]
pub trait Cache: Send + Sync + 'static {
    /// The bytes under `key`, unless absent, expired or invalidated. Fills
    /// in the tier's clock in `stamp` if it is not there yet.
    async fn get(&self, key: &str, stamp: &mut Stamp) -> Option<Vec<u8>>;

    /// Stores `value` under `key` for `ttl`, labelled with `tags`, as of
    /// `stamp` (a tier missing from it uses its clock now).
    async fn set(&self, key: &str, value: Vec<u8>, ttl: Duration, tags: &[String], stamp: &Stamp);

    /// Removes `key`.
    async fn delete(&self, key: &str);

    /// Makes every entry carrying any of `tags` unreadable.
    async fn invalidate_tags(&self, tags: &[String]);
}
