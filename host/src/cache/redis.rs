//! The Redis tier. Its operations return errors (unlike the `Cache` trait):
//! `tiered` turns them into fallbacks.
//!
//! Layout, under the configured key prefix `P`:
//! - `P e:{key}`: a hash with the value (`v`), the tags joined by newlines
//!   (`t`), the stamp (`s`) and its epoch (`p`), when it was stored (`c`)
//!   and when its TTL ends (`x`), both in Redis's milliseconds (`TIME`),
//!   expiring after its TTL and its grace (served only by `get_stale` past
//!   `x`; an entry without `x`, from an older host, has no grace);
//! - `P clocks`: the invalidation clock (`n`) and its epoch (`e`), a hash
//!   with no TTL; when it is missing (first use, or Redis lost its data) a
//!   new one starts at zero in a new random epoch. Entries keep the epoch
//!   they were stamped in (`p`): one of another epoch reads as a miss;
//! - `P tag:{tag}`: the clock value of the tag's last invalidation (no TTL).
//!
//! Every operation is a Lua script, so each is one round trip and atomic.
//! `set`, `delete` and `invalidate_tags` also announce what they changed on
//! `P invalidations` (the near caches' channel): the tags, or for an entry
//! its `key_tag`. Clock and tag keys have no TTL; with a `maxmemory-policy` that
//! evicts keys without a TTL (`allkeys-*`), an evicted tag key could let
//! stale entries look valid: run Redis with `noeviction` or a `volatile-*`
//! policy.

use super::{Lifetime, RedisStamp, Stale, Stamp};
use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::sync::Arc;
use std::time::Duration;

/// How to reach Redis.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `redis://host:port/db`.
    pub url: String,
    /// Prefix of every key this host writes.
    pub prefix: String,
    /// Longest a single operation may take before it counts as failed.
    pub op_timeout: Duration,
    /// Bytes of the near cache kept in process memory in front of Redis;
    /// 0 turns it off.
    pub near_cache_bytes: u64,
}

/// Why a Redis operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RedisFailure {
    #[error("not connected")]
    NotConnected,
    #[error("timed out")]
    Timeout,
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
    #[error("a tag contains a newline")]
    BadTag,
}

// The clock is a hash: its value (`n`) and its epoch (`e`), so that losing
// one loses the other. Each script takes a fresh random epoch; one that
// finds no clock (first use, or Redis lost its data) starts a new one at
// zero in that epoch. Epochs travel as strings: Lua numbers cannot hold
// every u64.

// An entry past its TTL (`x`) is a miss here but stays for `STALE_SCRIPT`;
// what is left of its TTL is returned for the near cache.
const GET_SCRIPT: &str = r"
local epoch = redis.call('HGET', KEYS[2], 'e')
if not epoch then epoch = ARGV[3]; redis.call('HSET', KEYS[2], 'e', epoch, 'n', 0) end
local clock = -1
if ARGV[2] == '1' then clock = tonumber(redis.call('HGET', KEYS[2], 'n') or '0') end
local e = redis.call('HMGET', KEYS[1], 'v', 't', 's', 'p', 'x')
if not e[1] then return {0, '', clock, epoch} end
if e[4] ~= epoch then
  redis.call('DEL', KEYS[1])
  return {0, '', clock, epoch}
end
local stamp = tonumber(e[3])
for tag in string.gmatch(e[2], '[^\n]+') do
  local at = tonumber(redis.call('GET', ARGV[1] .. tag) or '0')
  if at > stamp then
    redis.call('DEL', KEYS[1])
    return {0, '', clock, epoch}
  end
end
local left = redis.call('PTTL', KEYS[1])
if e[5] then
  local t = redis.call('TIME')
  left = tonumber(e[5]) - (tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
  if left <= 0 then return {0, '', clock, epoch} end
end
return {1, e[1], clock, epoch, e[2], left}
";

// The entry under the key if none of its tags was invalidated since it was
// stored, fresh or not, with its age and how long ago its TTL ended (0
// while fresh), in milliseconds.
const STALE_SCRIPT: &str = r"
local epoch = redis.call('HGET', KEYS[2], 'e')
local e = redis.call('HMGET', KEYS[1], 'v', 't', 's', 'p', 'c', 'x')
if not e[1] or not e[5] then return {0} end
if e[4] ~= epoch then
  redis.call('DEL', KEYS[1])
  return {0}
end
local stamp = tonumber(e[3])
for tag in string.gmatch(e[2], '[^\n]+') do
  if tonumber(redis.call('GET', ARGV[1] .. tag) or '0') > stamp then
    redis.call('DEL', KEYS[1])
    return {0}
  end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local past = 0
if e[6] then past = math.max(now - tonumber(e[6]), 0) end
return {1, e[1], math.max(now - tonumber(e[5]), 0), past}
";

const CLOCK_SCRIPT: &str = r"
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then epoch = ARGV[1]; redis.call('HSET', KEYS[1], 'e', epoch, 'n', 0) end
return {tonumber(redis.call('HGET', KEYS[1], 'n') or '0'), epoch}
";

// Stores nothing (and keeps what is there) when the stamp is of another
// epoch, or older than an invalidation of one of the tags: such an entry
// could never be read.
const SET_SCRIPT: &str = r"
if redis.call('HGET', KEYS[2], 'e') ~= ARGV[5] then return 0 end
local stamp = tonumber(ARGV[4])
for tag in string.gmatch(ARGV[3], '[^\n]+') do
  if tonumber(redis.call('GET', ARGV[6] .. tag) or '0') > stamp then return 0 end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'v', ARGV[2], 't', ARGV[3], 's', ARGV[4], 'p', ARGV[5], 'c', string.format('%d', now), 'x', string.format('%d', now + tonumber(ARGV[8])))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('PUBLISH', KEYS[3], ARGV[7])
return 1
";

// Removes an entry and announces it, as `SET_SCRIPT` does.
const DELETE_SCRIPT: &str = r"
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', KEYS[2], ARGV[1])
return 1
";

// Also announces the tags (joined by newlines) on the invalidations
// channel, which every host's near cache listens to.
const INVALIDATE_SCRIPT: &str = r"
if not redis.call('HGET', KEYS[1], 'e') then redis.call('HSET', KEYS[1], 'e', ARGV[2], 'n', 0) end
local now = redis.call('HINCRBY', KEYS[1], 'n', 1)
local tags = {}
for i = 3, #ARGV do
  redis.call('SET', ARGV[1] .. ARGV[i], now)
  tags[#tags + 1] = ARGV[i]
end
redis.call('PUBLISH', KEYS[2], table.concat(tags, '\n'))
return now
";

/// A fresh epoch, in case the script finds none.
fn fresh_epoch() -> String {
    // Without the OS's randomness (it does not fail on supported systems),
    // the time still differs from every earlier epoch of this prefix.
    getrandom::u64()
        .unwrap_or_else(|_| crate::now_ms() as u64)
        .to_string()
}

fn parse_epoch(epoch: &str) -> u64 {
    epoch.parse().unwrap_or(0)
}

/// The tag every near-cache entry of `key` carries besides its own, which
/// `set` and `delete` announce: no component tag can be it (it starts with
/// a control character, and component tags start with their namespace).
pub fn key_tag(key: &str) -> String {
    format!("\u{1}key:{key}")
}

/// A valid entry as `get_entry` read it.
pub struct Hit {
    pub value: Vec<u8>,
    pub tags: Vec<String>,
    /// What is left of its TTL.
    pub ttl: Duration,
}

/// Redis through a `ConnectionManager` (which reconnects by itself once it
/// has connected); until the first connection succeeds, `connect` must be
/// retried.
pub struct RedisCache {
    /// Where to connect.
    client: redis::Client,
    /// Key prefix, timeouts.
    settings: RedisSettings,
    /// The connection, once made.
    manager: ArcSwapOption<ConnectionManager>,
    get: redis::Script,
    clock: redis::Script,
    set: redis::Script,
    stale: redis::Script,
    delete: redis::Script,
    invalidate: redis::Script,
}

impl RedisCache {
    /// A cache for `settings`; no connection is made yet.
    pub fn new(settings: RedisSettings) -> anyhow::Result<Self> {
        Ok(Self {
            client: redis::Client::open(settings.url.as_str())?,
            settings,
            manager: ArcSwapOption::empty(),
            get: redis::Script::new(GET_SCRIPT),
            clock: redis::Script::new(CLOCK_SCRIPT),
            delete: redis::Script::new(DELETE_SCRIPT),
            set: redis::Script::new(SET_SCRIPT),
            stale: redis::Script::new(STALE_SCRIPT),
            invalidate: redis::Script::new(INVALIDATE_SCRIPT),
        })
    }

    /// The longest one operation may take.
    pub fn op_timeout(&self) -> Duration {
        self.settings.op_timeout
    }

    /// The near cache's size in bytes (0: none).
    pub fn near_cache_bytes(&self) -> u64 {
        self.settings.near_cache_bytes
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.settings.prefix
    }

    /// Connects if not connected yet.
    pub async fn connect(&self) -> Result<(), RedisFailure> {
        if self.manager.load().is_some() {
            return Ok(());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.settings.op_timeout))
            .set_response_timeout(Some(self.settings.op_timeout))
            .set_number_of_retries(1);
        let manager = self
            .timed(ConnectionManager::new_with_config(
                self.client.clone(),
                config,
            ))
            .await?;
        self.manager.store(Some(Arc::new(manager)));
        Ok(())
    }

    fn connection(&self) -> Result<ConnectionManager, RedisFailure> {
        self.manager
            .load()
            .as_deref()
            .cloned()
            .ok_or(RedisFailure::NotConnected)
    }

    async fn timed<T>(
        &self,
        op: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, RedisFailure> {
        match tokio::time::timeout(self.settings.op_timeout, op).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(RedisFailure::Timeout),
        }
    }

    fn key(&self, kind: &str, name: &str) -> String {
        format!("{}{kind}:{name}", self.settings.prefix)
    }

    /// Round trip to check the server answers.
    pub async fn ping(&self) -> Result<(), RedisFailure> {
        let mut conn = self.connection()?;
        self.timed(redis::cmd("PING").query_async::<String>(&mut conn))
            .await?;
        Ok(())
    }

    fn clock_key(&self) -> String {
        format!("{}clocks", self.settings.prefix)
    }

    /// The channel invalidated tags are announced on.
    pub fn channel(&self) -> String {
        format!("{}invalidations", self.settings.prefix)
    }

    /// A connection subscribed to `channel`, for the near cache.
    pub async fn subscribe(&self) -> Result<redis::aio::PubSub, RedisFailure> {
        let mut pubsub = self.timed(self.client.get_async_pubsub()).await?;
        self.timed(pubsub.subscribe(self.channel())).await?;
        Ok(pubsub)
    }

    /// The value under `key` if valid; fills in `stamp.redis` if unset and
    /// `stamp` is not sealed.
    pub async fn get(&self, key: &str, stamp: &mut Stamp) -> Result<Option<Vec<u8>>, RedisFailure> {
        Ok(self.get_entry(key, stamp).await?.map(|hit| hit.value))
    }

    /// `get`, with the entry's tags and what is left of its TTL.
    pub async fn get_entry(
        &self,
        key: &str,
        stamp: &mut Stamp,
    ) -> Result<Option<Hit>, RedisFailure> {
        let mut conn = self.connection()?;
        let wants_clock = stamp.redis.is_none() && !stamp.sealed;
        let mut invocation = self.get.prepare_invoke();
        invocation
            .key(self.key("e", key))
            .key(self.clock_key())
            .arg(self.key("tag", ""))
            .arg(if wants_clock { "1" } else { "0" })
            .arg(fresh_epoch());
        let reply: Vec<redis::Value> = self.timed(invocation.invoke_async(&mut conn)).await?;
        let int = |i: usize| match reply.get(i) {
            Some(redis::Value::Int(n)) => *n,
            _ => 0,
        };
        let bytes = |i: usize| match reply.get(i) {
            Some(redis::Value::BulkString(b)) => b.clone(),
            Some(redis::Value::SimpleString(s)) => s.clone().into_bytes(),
            _ => Vec::new(),
        };
        let (found, value, clock) = (int(0), bytes(1), int(2));
        let epoch = String::from_utf8(bytes(3)).unwrap_or_default();
        if wants_clock {
            stamp.redis = Some(RedisStamp {
                epoch: parse_epoch(&epoch),
                clock: u64::try_from(clock).unwrap_or(0),
            });
        }
        Ok((found == 1).then(|| Hit {
            value,
            tags: String::from_utf8(bytes(4))
                .unwrap_or_default()
                .split('\n')
                .filter(|t| !t.is_empty())
                .map(str::to_string)
                .collect(),
            ttl: Duration::from_millis(u64::try_from(int(5)).unwrap_or(0)),
        }))
    }

    /// The clock and its epoch now.
    pub async fn stamp(&self) -> Result<RedisStamp, RedisFailure> {
        let mut conn = self.connection()?;
        let mut invocation = self.clock.prepare_invoke();
        invocation.key(self.clock_key()).arg(fresh_epoch());
        let (clock, epoch): (i64, String) = self.timed(invocation.invoke_async(&mut conn)).await?;
        Ok(RedisStamp {
            epoch: parse_epoch(&epoch),
            clock: u64::try_from(clock).unwrap_or(0),
        })
    }

    /// The entry under `key` if none of its tags was invalidated since it
    /// was stored, within its TTL or its grace.
    pub async fn get_stale(&self, key: &str) -> Result<Option<Stale>, RedisFailure> {
        let mut conn = self.connection()?;
        let mut invocation = self.stale.prepare_invoke();
        invocation
            .key(self.key("e", key))
            .key(self.clock_key())
            .arg(self.key("tag", ""));
        let reply: Vec<redis::Value> = self.timed(invocation.invoke_async(&mut conn)).await?;
        let (Some(redis::Value::Int(1)), Some(redis::Value::BulkString(value))) =
            (reply.first(), reply.get(1))
        else {
            return Ok(None);
        };
        let ms = |i: usize| match reply.get(i) {
            Some(redis::Value::Int(ms)) => Duration::from_millis(u64::try_from(*ms).unwrap_or(0)),
            _ => Duration::ZERO,
        };
        Ok(Some(Stale {
            value: value.clone(),
            age: ms(2),
            past_ttl: ms(3),
        }))
    }

    /// Stores `value` under `key` for `life` with `tags`, as of `stamp`.
    /// Returns whether it was stored: not when `stamp` is of an earlier
    /// epoch or one of the tags was invalidated after it.
    pub async fn set(
        &self,
        key: &str,
        value: &[u8],
        life: Lifetime,
        tags: &[String],
        stamp: RedisStamp,
    ) -> Result<bool, RedisFailure> {
        if tags.iter().any(|t| t.contains('\n')) {
            return Err(RedisFailure::BadTag);
        }
        let mut conn = self.connection()?;
        let mut invocation = self.set.prepare_invoke();
        invocation
            .key(self.key("e", key))
            .key(self.clock_key())
            .key(self.channel())
            .arg((life.ttl + life.grace).as_millis().max(1) as u64)
            .arg(value)
            .arg(tags.join("\n"))
            .arg(stamp.clock)
            .arg(stamp.epoch.to_string())
            .arg(self.key("tag", ""))
            .arg(key_tag(key))
            .arg(life.ttl.as_millis().max(1) as u64);
        let stored = self
            .timed(invocation.invoke_async::<i64>(&mut conn))
            .await?;
        Ok(stored == 1)
    }

    /// Removes `key`.
    pub async fn delete(&self, key: &str) -> Result<(), RedisFailure> {
        let mut conn = self.connection()?;
        let mut invocation = self.delete.prepare_invoke();
        invocation
            .key(self.key("e", key))
            .key(self.channel())
            .arg(key_tag(key));
        self.timed(invocation.invoke_async::<i64>(&mut conn))
            .await?;
        Ok(())
    }

    /// Records an invalidation of `tags` at the next clock value.
    pub async fn invalidate_tags(&self, tags: &[String]) -> Result<(), RedisFailure> {
        if tags.is_empty() {
            return Ok(());
        }
        let mut conn = self.connection()?;
        let mut invocation = self.invalidate.prepare_invoke();
        invocation
            .key(self.clock_key())
            .key(self.channel())
            .arg(self.key("tag", ""))
            .arg(fresh_epoch());
        for tag in tags {
            invocation.arg(tag);
        }
        self.timed(invocation.invoke_async::<i64>(&mut conn))
            .await?;
        Ok(())
    }
}
