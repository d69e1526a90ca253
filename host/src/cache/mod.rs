//! The cache capability: the `Cache` trait that the `cache` import is served
//! from, and its backends.
//!
//! - `memory`: the in-process tier (moka): bounded, per-entry TTLs.
//! - `redis`: Redis through a `ConnectionManager`, with connect and
//!   response timeouts; its operations can fail.
//! - `tiered`: what components actually use: Redis when configured and
//!   healthy, the memory tier per operation when it is not (with a circuit
//!   breaker, so a dead Redis costs nothing per request), and nothing at
//!   all (a miss) when every tier fails; with Redis, a near cache in
//!   process memory in front of it, kept true by Redis pub/sub.
//! - `metrics`: hit, miss and error counters per endpoint and tier.
//!
//! ## Tags: the invalidation clock
//!
//! Every backend keeps a monotonic *invalidation clock*. Invalidating tags
//! takes the next clock value and records it for each tag. A request takes a
//! `Stamp` (each tier's clock) at its first cache call, and at the latest
//! before it reads the database; then the stamp is sealed. Every entry it
//! stores carries the stamp of the tier it is stored in. An entry is valid
//! while none of its tags was invalidated after its stamp. So:
//!
//! - invalidation is one write per tag, however many entries carry it, and
//!   no entry can be missed (every read checks);
//! - a value computed by a request that raced with a write (read the old
//!   rows, stored after the write's invalidation) is stored already
//!   invalid, because the invalidation is later than the request's stamp.
//!
//! **Invariant:** a stamp never lies. An entry is stored in a tier only
//! with that tier's clock as it was before the request read its data: a
//! tier whose clock the stamp lacks (it was unreachable then) is skipped,
//! never stamped with its clock of now (a value read while Redis was away
//! goes to the memory tier, whose clock every request reads first). Redis's clock also carries an
//! *epoch*, a random value drawn again whenever Redis has lost its clock (a
//! restart without persistence, a flush): a stamp of another epoch stores
//! nothing, so a clock that starts again from zero cannot make an older
//! read look valid.
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
pub use tiered::{Backlog, TieredCache};

use async_trait::async_trait;
use std::time::Duration;

/// `name` (a key or a tag) inside the cache namespace `namespace`:
/// `{namespace}/{name}`. Namespaces are letters, digits, `-` and `_`, so
/// the first `/` always ends one, and no component can name a key or tag
/// of another namespace. The runtime scopes every key and tag a component
/// names with it; the native baseline reads its entries through it.
pub fn scoped(namespace: &str, name: &str) -> String {
    // Joined by hand: this runs for every key of every request, and the
    // formatter costs more than the copy.
    let mut scoped = String::with_capacity(namespace.len() + 1 + name.len());
    scoped.push_str(namespace);
    scoped.push('/');
    scoped.push_str(name);
    scoped
}

/// The invalidation clocks as a request first saw them, one per tier the
/// request has touched. Start with `Stamp::default()` per request; `seal`
/// it before the request reads its data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stamp {
    /// Redis's clock, once read.
    pub redis: Option<RedisStamp>,
    /// The memory tier's clock, once read.
    pub memory: Option<u64>,
    /// Whether clocks may no longer be filled in: the request has read data
    /// since, so a clock read now would be later than that read.
    pub sealed: bool,
}

/// Redis's invalidation clock and the epoch it counts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedisStamp {
    /// Drawn at random whenever Redis has no clock (first use, data lost).
    pub epoch: u64,
    /// The clock's value.
    pub clock: u64,
}

/// How long an entry lives: served for `ttl`, then kept for `grace` more,
/// during which it is served only when its data cannot be read
/// (stale-if-error, `Cache::get_stale`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime {
    pub ttl: Duration,
    pub grace: Duration,
}

impl From<Duration> for Lifetime {
    /// `ttl` and no grace.
    fn from(ttl: Duration) -> Self {
        Self {
            ttl,
            grace: Duration::ZERO,
        }
    }
}

/// An entry past its TTL and within its grace, none of its tags
/// invalidated since it was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stale {
    pub value: Vec<u8>,
    /// Since it was stored.
    pub age: Duration,
    /// Since its TTL ended (zero while it is fresh).
    pub past_ttl: Duration,
}

impl Stale {
    /// Whether its TTL ended at most `bound` ago (any time, without one).
    pub fn within(&self, bound: Option<Duration>) -> bool {
        bound.is_none_or(|bound| self.past_ttl <= bound)
    }
}

impl Stamp {
    /// No clock is filled in from now on.
    pub fn seal(&mut self) {
        self.sealed = true;
    }
}

/// A shared cache with TTLs and tag-based invalidation.
#[async_trait]
pub trait Cache: Send + Sync + 'static {
    /// The bytes under `key`, unless absent, expired or invalidated. Fills
    /// in the clocks of the tiers it reads in `stamp`, unless sealed.
    async fn get(&self, key: &str, stamp: &mut Stamp) -> Option<Vec<u8>>;

    /// Fills in `stamp`, unless sealed, with the clock of every tier a `set`
    /// would write now.
    async fn stamp(&self, stamp: &mut Stamp);

    /// Stores `value` under `key` for `life`, labelled with `tags`, as of
    /// `stamp`; a tier whose clock `stamp` lacks stores nothing.
    async fn set(&self, key: &str, value: Vec<u8>, life: Lifetime, tags: &[String], stamp: &Stamp);

    /// The entry under `key` if it is within its grace (or still fresh),
    /// its TTL ended at most `past_ttl` ago (when given), and none of its
    /// tags was invalidated since it was stored: for when its data cannot
    /// be read, or is being refreshed. An invalidated entry is never stale.
    async fn get_stale(&self, key: &str, past_ttl: Option<Duration>) -> Option<Stale>;

    /// Removes `key`.
    async fn delete(&self, key: &str);

    /// Makes every entry carrying any of `tags` unreadable.
    async fn invalidate_tags(&self, tags: &[String]);
}
