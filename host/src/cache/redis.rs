//! The Redis tier. Its operations return errors (unlike the `Cache` trait):
//! `tiered` turns them into fallbacks.
//!
//! Layout, under the configured key prefix `P`:
//! - `P e:{key}`: a hash with the value (`v`), the tags joined by newlines
//!   (`t`) and the stamp (`s`), expiring after the entry's TTL;
//! - `P clock`: the invalidation clock (no TTL);
//! - `P tag:{tag}`: the clock value of the tag's last invalidation (no TTL).
//!
//! `get` and `invalidate_tags` are Lua scripts, so each is one round trip
//! and atomic. Clock and tag keys have no TTL; with a `maxmemory-policy` that
//! evicts keys without a TTL (`allkeys-*`), an evicted clock could let stale
//! entries look valid: run Redis with `noeviction` or a `volatile-*` policy.

use super::Stamp;
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

const GET_SCRIPT: &str = r"
local clock = -1
if ARGV[2] == '1' then clock = tonumber(redis.call('GET', KEYS[2]) or '0') end
local e = redis.call('HMGET', KEYS[1], 'v', 't', 's')
if not e[1] then return {0, '', clock} end
local stamp = tonumber(e[3])
for tag in string.gmatch(e[2], '[^\n]+') do
  local at = tonumber(redis.call('GET', ARGV[1] .. tag) or '0')
  if at > stamp then
    redis.call('DEL', KEYS[1])
    return {0, '', clock}
  end
end
return {1, e[1], clock}
";

const SET_SCRIPT: &str = r"
local stamp = ARGV[4]
if stamp == '' then stamp = redis.call('GET', KEYS[2]) or '0' end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'v', ARGV[2], 't', ARGV[3], 's', stamp)
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
";

const INVALIDATE_SCRIPT: &str = r"
local now = redis.call('INCR', KEYS[1])
for i = 2, #ARGV do redis.call('SET', ARGV[1] .. ARGV[i], now) end
return now
";

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
    set: redis::Script,
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
            set: redis::Script::new(SET_SCRIPT),
            invalidate: redis::Script::new(INVALIDATE_SCRIPT),
        })
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

    /// The value under `key` if valid; fills in `stamp.redis` if unset.
    pub async fn get(&self, key: &str, stamp: &mut Stamp) -> Result<Option<Vec<u8>>, RedisFailure> {
        let mut conn = self.connection()?;
        let mut invocation = self.get.prepare_invoke();
        invocation
            .key(self.key("e", key))
            .key(format!("{}clock", self.settings.prefix))
            .arg(self.key("tag", ""))
            .arg(if stamp.redis.is_none() { "1" } else { "0" });
        let (found, value, clock): (i64, Vec<u8>, i64) =
            self.timed(invocation.invoke_async(&mut conn)).await?;
        if stamp.redis.is_none() {
            stamp.redis = Some(u64::try_from(clock).unwrap_or(0));
        }
        Ok((found == 1).then_some(value))
    }

    /// Stores `value` under `key` for `ttl` with `tags`, as of `stamp`.
    pub async fn set(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
        tags: &[String],
        stamp: &Stamp,
    ) -> Result<(), RedisFailure> {
        if tags.iter().any(|t| t.contains('\n')) {
            return Err(RedisFailure::BadTag);
        }
        let mut conn = self.connection()?;
        let mut invocation = self.set.prepare_invoke();
        invocation
            .key(self.key("e", key))
            .key(format!("{}clock", self.settings.prefix))
            .arg(ttl.as_millis().max(1) as u64)
            .arg(value)
            .arg(tags.join("\n"))
            .arg(stamp.redis.map(|s| s.to_string()).unwrap_or_default());
        self.timed(invocation.invoke_async::<i64>(&mut conn))
            .await?;
        Ok(())
    }

    /// Removes `key`.
    pub async fn delete(&self, key: &str) -> Result<(), RedisFailure> {
        let mut conn = self.connection()?;
        self.timed(
            redis::cmd("DEL")
                .arg(self.key("e", key))
                .query_async::<i64>(&mut conn),
        )
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
            .key(format!("{}clock", self.settings.prefix))
            .arg(self.key("tag", ""));
        for tag in tags {
            invocation.arg(tag);
        }
        self.timed(invocation.invoke_async::<i64>(&mut conn))
            .await?;
        Ok(())
    }
}
