//! The invalidation relay: delivers the outbox.
//!
//! A component's transaction records the tags it invalidates in
//! `cache_outbox`, in the same database transaction as its writes (see
//! `db::Invalidation`). The request then invalidates them itself; the relay
//! is what makes that never lost. Every host runs one: every `INTERVAL` it
//! reads the undelivered rows (any host's), invalidates their tags in its
//! memory tier (once per row) and in Redis, and marks a row delivered once
//! Redis has it (or at once when there is no Redis). With Redis down for
//! every host, each host's relay so applies every undelivered row to its
//! own memory tier. So an invalidation whose request
//! died after the commit, or whose host could not reach Redis and then
//! died, is delivered by the next pass of any host; one that Redis cannot
//! take now stays undelivered until it can. Delivery is idempotent: bumping
//! a tag's clock again only invalidates more. Delivered rows are deleted
//! after `RETENTION`.

use crate::cache::TieredCache;
use crate::db::{Database, DbError, Value};
use prometheus_client::metrics::gauge::Gauge;
use std::collections::HashSet;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// How often each host reads the outbox.
pub const INTERVAL: Duration = Duration::from_millis(200);
/// Rows read per pass.
const BATCH: usize = 200;
/// How long a delivered row is kept.
const RETENTION: Duration = Duration::from_secs(600);
/// Delivered rows are deleted every this many passes.
const CLEAN_EVERY: u32 = 50;

/// One host's relay.
pub struct Relay {
    /// The host's view of the database.
    db: Arc<dyn Database>,
    /// Undelivered rows seen at the last pass (at most `BATCH`).
    backlog: Gauge,
    /// Rows of the last pass already applied to this host's memory tier,
    /// so that a row Redis cannot take yet is not applied again at every
    /// pass (each time would empty that tier of the row's tags).
    applied: Mutex<HashSet<String>>,
}

impl Relay {
    /// A relay over `db` (the host's view), reporting its backlog to
    /// `registry`.
    pub fn new(
        db: Arc<dyn Database>,
        registry: &mut prometheus_client::registry::Registry,
    ) -> Self {
        let backlog = Gauge::default();
        registry.register(
            "marketplace_outbox_backlog",
            "Invalidations in the outbox not yet delivered to every shared cache tier, as this host last saw them (at most 200)",
            backlog.clone(),
        );
        Self {
            db,
            backlog,
            applied: Mutex::default(),
        }
    }

    /// Runs passes every `INTERVAL` until `cache` is dropped.
    pub fn spawn(self, cache: &Arc<TieredCache>) {
        let cache = Arc::downgrade(cache);
        tokio::spawn(async move {
            let mut passes: u32 = 0;
            loop {
                tokio::time::sleep(INTERVAL).await;
                let Some(cache) = Weak::upgrade(&cache) else {
                    return;
                };
                passes = passes.wrapping_add(1);
                if let Err(e) = self.pass(&cache, passes.is_multiple_of(CLEAN_EVERY)).await {
                    tracing::debug!(error = %e, "outbox relay: pass failed; retrying");
                }
            }
        });
    }

    fn applied(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        // A poisoned set only means a pass panicked mid-way; applying a row
        // twice is harmless.
        self.applied.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Delivers what is undelivered now; deletes old delivered rows if
    /// `clean`. Returns how many rows it delivered.
    pub async fn pass(&self, cache: &TieredCache, clean: bool) -> Result<usize, DbError> {
        let rows = self
            .db
            .query(
                "SELECT id, tags FROM cache_outbox WHERE delivered_at IS NULL \
                 ORDER BY created_at LIMIT $1",
                &[Value::Int(BATCH as i64)],
            )
            .await?;
        let mut delivered = 0;
        let mut seen = HashSet::new();
        let mut redis_down = false;
        for row in &rows.rows {
            let (Some(Value::Text(id)), Some(Value::Text(tags))) = (row.first(), row.get(1)) else {
                continue;
            };
            seen.insert(id.clone());
            let tags: Vec<String> = serde_json::from_str(tags).unwrap_or_default();
            let fresh = self.applied().insert(id.clone());
            if redis_down {
                if fresh {
                    cache.deliver_to_memory(&tags).await;
                }
                continue;
            }
            if !cache.deliver(&tags, fresh).await {
                // Redis cannot take it now: the next pass tries again; the
                // rest of this batch goes to the memory tier only.
                redis_down = true;
                continue;
            }
            self.db
                .execute(
                    "UPDATE cache_outbox SET delivered_at = $1 WHERE id = $2",
                    &[Value::Int(crate::now_ms()), Value::Text(id.clone())],
                )
                .await?;
            delivered += 1;
        }
        self.applied().retain(|id| seen.contains(id));
        self.backlog.set((rows.rows.len() - delivered) as i64);
        if clean {
            let before = crate::now_ms() - RETENTION.as_millis() as i64;
            self.db
                .execute(
                    "DELETE FROM cache_outbox WHERE delivered_at < $1",
                    &[Value::Int(before)],
                )
                .await?;
        }
        Ok(delivered)
    }
}
