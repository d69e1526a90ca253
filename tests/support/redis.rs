//! A fresh Redis key prefix per test, on the server named by `REDIS_URL`.
//! Without it the test is skipped with a printed reason, except under CI
//! (`CI` set), where it fails.

use host::cache::RedisSettings;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Settings with a prefix of this test's own; its keys are deleted on drop.
pub struct RedisPrefix {
    pub settings: RedisSettings,
}

pub fn server_url() -> Option<String> {
    match std::env::var("REDIS_URL") {
        Ok(url) if url.starts_with("redis") => Some(url),
        _ if std::env::var_os("CI").is_some() => {
            panic!("REDIS_URL must name a Redis server when CI is set; refusing to skip")
        }
        _ => {
            eprintln!("skipped: set REDIS_URL=redis://… to run the Redis half of this test");
            None
        }
    }
}

/// A fresh prefix on the server at `url` (the real one, or a proxy to it).
pub fn fresh_prefix(url: &str) -> RedisPrefix {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    RedisPrefix {
        settings: RedisSettings {
            url: url.to_string(),
            prefix: format!(
                "test:{}:{}:{nanos}:",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ),
            op_timeout: Duration::from_millis(200),
            near_cache_bytes: 4 << 20,
        },
    }
}

impl RedisPrefix {
    /// Deletes every key under the prefix: Redis lost its data.
    pub fn clear(&self) {
        let Some(url) = std::env::var("REDIS_URL").ok() else {
            return;
        };
        let pattern = format!("{}*", self.settings.prefix);
        let _ = std::thread::spawn(move || -> redis::RedisResult<()> {
            let client = redis::Client::open(url.as_str())?;
            let mut conn = client.get_connection()?;
            let keys: Vec<String> = redis::cmd("KEYS").arg(&pattern).query(&mut conn)?;
            if !keys.is_empty() {
                redis::cmd("DEL").arg(keys).query::<i64>(&mut conn)?;
            }
            Ok(())
        })
        .join();
    }
}

impl Drop for RedisPrefix {
    fn drop(&mut self) {
        self.clear();
    }
}
