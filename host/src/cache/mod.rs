//! The cache capability: the `Cache` trait that the `cache` import is served
//! from, and its backends.
//!
//! - `memory`: the in-process tier (moka), bounded and honouring each
//!   entry's TTL, with tag invalidation by per-tag generations.
//!
//! **Invariant:** a cache method never returns an error to its caller. A
//! backend that fails reports a miss (on `get`) or drops the write, and logs;
//! components never see a cache problem.

mod memory;

pub use memory::MemoryCache;

use async_trait::async_trait;
use std::time::Duration;

/// A shared cache with TTLs and tag-based invalidation.
#[async_trait]
pub trait Cache: Send + Sync + 'static {
    /// The bytes under `key`, unless absent, expired or invalidated by tag.
    async fn get(&self, key: &str) -> Option<Vec<u8>>;

    /// Stores `value` under `key` for `ttl`, labelled with `tags`.
    async fn set(&self, key: &str, value: Vec<u8>, ttl: Duration, tags: &[String]);

    /// Removes `key`.
    async fn delete(&self, key: &str);

    /// Makes every entry carrying any of `tags` unreadable.
    async fn invalidate_tags(&self, tags: &[String]);
}
