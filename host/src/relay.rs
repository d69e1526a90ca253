//! The invalidation relay: delivers the outbox.
//!
//! A component's transaction records the tags it invalidates in
//! `cache_outbox`, in the same database transaction as its writes (see
//! `db::Invalidation`). The request then invalidates them itself; the relay
//! is what makes that never lost. Every host runs one: every `INTERVAL` it
//! reads the undelivered rows (any host's, newest first, in batches until
//! none is left), invalidates their tags in its memory tier (once per row)
//! and in Redis (all of a batch in one call), and marks the batch delivered
//! once Redis has it. A host without Redis marks nothing: it has no shared
//! tier, and a host with Redis on the same database may still need to
//! deliver. With Redis down for every host, each host's relay so applies
//! every undelivered row to its own memory tier. So an invalidation whose request
//! died after the commit, or whose host could not reach Redis and then
//! died, is delivered by the next pass of any host; one that Redis cannot
//! take now stays undelivered until it can. Delivery is idempotent: bumping
//! a tag's clock again only invalidates more. Delivered rows are deleted
//! after `RETENTION`, undelivered ones after `MAX_AGE`.
//!
//! On PostgreSQL the write's transaction also announces the tags
//! (`pg_notify`, sent on commit), and every host `listen`s: its memory tier
//! hears every write at once, whether or not its Redis is up. A lost
//! listening connection flushes the memory tier when it is back.

use crate::cache::TieredCache;
use crate::db::{Database, DbError, Value};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// How often each host reads the outbox.
pub const INTERVAL: Duration = Duration::from_millis(200);
/// Rows read per pass.
const BATCH: usize = 200;
/// How long a delivered row is kept.
const RETENTION: Duration = Duration::from_secs(600);
/// How long an undelivered row is kept: a fleet without Redis never marks
/// its rows delivered (it has no shared tier to deliver to).
const MAX_AGE: Duration = Duration::from_secs(86_400);
/// Delivered rows are deleted every this many passes.
const CLEAN_EVERY: u32 = 50;

/// How long after a failed connection the listener tries again.
const LISTEN_RETRY: Duration = Duration::from_secs(1);
/// How often the listening connection is proven alive, and how long that
/// (and connecting) may take: a connection cut without a word (a
/// partition, a middlebox dropping an idle flow) would otherwise look like
/// a quiet one for ever, and its notices would be lost unseen.
const LISTEN_PING: Duration = Duration::from_millis(500);
const LISTEN_TIMEOUT: Duration = Duration::from_millis(1500);
/// How long a row applied to the memory tier is remembered as applied
/// after the relay last read it undelivered (or the listener heard it).
const APPLIED_MEMORY: Duration = Duration::from_secs(5);
/// Longest a relay pass may take before it is given up (a connection that
/// stopped answering mid-statement must not stop the relay for good).
const PASS_TIMEOUT: Duration = Duration::from_secs(10);

/// Commit to applied, per host: observed once per invalidation and host, by
/// whichever of the relay and the listener applies it first.
#[derive(Clone)]
pub struct Lag(Histogram);

impl Lag {
    /// A histogram reported to `registry`.
    pub fn new(registry: &mut prometheus_client::registry::Registry) -> Self {
        // 1 ms to about 16 s.
        let histogram = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        registry.register(
            "marketplace_invalidation_lag_seconds",
            "From a write's invalidation being recorded to this host applying it (by notification or by the relay)",
            histogram.clone(),
        );
        Self(histogram)
    }

    /// Records an invalidation recorded at `at_ms` and applied now.
    fn observe(&self, at_ms: i64) {
        let lag_ms = (crate::now_ms() - at_ms).max(0);
        self.0.observe(lag_ms as f64 / 1000.0);
    }
}

/// Listens for invalidation notices on PostgreSQL (`database_url`) and
/// applies each to `cache`'s memory tier, until the cache is dropped. A
/// host whose Redis is down so still hears every other host's writes at
/// once; with Redis up it costs nothing but the notices and a ping every
/// `LISTEN_PING`. When the listening connection is lost (closed, or a
/// ping unanswered within `LISTEN_TIMEOUT`), notices sent meanwhile are
/// lost with it. A connection that closed makes the memory tier's entries
/// stale (served only when the database cannot answer: every notice
/// before the close was heard); one that went silent (noticed by an
/// unanswered ping, seconds late) flushes it, since notices of those
/// seconds may be lost already. Either way the tier is flushed once it
/// listens anew (the outbox covers Redis).
pub fn listen(database_url: String, cache: &Arc<TieredCache>, relay: &Relay) {
    let cache = Arc::downgrade(cache);
    let heard = Heard {
        lag: relay.lag.clone(),
        applied: relay.applied.clone(),
    };
    tokio::spawn(async move {
        // Until the first connection listens, notices are missed too.
        let mut missed = true;
        loop {
            match listen_once(&database_url, &cache, &heard, &mut missed).await {
                Ok(()) => return,
                Err(e) => {
                    let Some(live) = cache.upgrade() else {
                        return;
                    };
                    let silent = matches!(&e, sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut);
                    if !std::mem::replace(&mut missed, true) {
                        if silent {
                            // Noticed only by an unanswered ping: notices
                            // of the last seconds may be lost already.
                            tracing::warn!(error = %e, "invalidation listener: connection went silent; memory tier flushed");
                            live.flush_memory();
                        } else {
                            // Closed: notices may be missed from now on,
                            // not until now, so what it holds may still
                            // be served stale.
                            tracing::warn!(error = %e, "invalidation listener: connection closed; memory tier stale");
                            live.suspect_memory();
                        }
                    } else {
                        tracing::debug!(error = %e, "invalidation listener: no connection; retrying");
                    }
                    drop(live);
                    tokio::time::sleep(LISTEN_RETRY).await;
                }
            }
        }
    });
}

/// One listening connection: `Ok` when the cache is gone, `Err` when the
/// connection is (or could not be made). Once it listens, it flushes the
/// memory tier if notices were `missed` since the last connection, and
/// clears `missed`.
async fn listen_once(
    database_url: &str,
    cache: &Weak<TieredCache>,
    heard: &Heard,
    missed: &mut bool,
) -> Result<(), sqlx::Error> {
    let timed_out = || sqlx::Error::Io(std::io::ErrorKind::TimedOut.into());
    let connect = async {
        let mut listener = sqlx::postgres::PgListener::connect(database_url).await?;
        let channel: String =
            sqlx::query_scalar(&format!("SELECT {}", crate::db::INVALIDATIONS_CHANNEL))
                .fetch_one(&mut listener)
                .await?;
        listener.listen(&channel).await?;
        Ok::<_, sqlx::Error>(listener)
    };
    let mut listener = tokio::time::timeout(LISTEN_TIMEOUT, connect)
        .await
        .map_err(|_| timed_out())??;
    let Some(live) = cache.upgrade() else {
        return Ok(());
    };
    if std::mem::take(missed) {
        // Whatever was announced while nobody listened is lost.
        live.flush_memory();
    }
    drop(live);
    let mut ping = tokio::time::interval(LISTEN_PING);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // `try_recv` is cancel-safe: a ping between two notices loses none.
        let notice = tokio::select! {
            notice = listener.try_recv() => notice?,
            _ = ping.tick() => {
                if cache.strong_count() == 0 {
                    return Ok(());
                }
                let answer = sqlx::query("SELECT 1").execute(&mut listener);
                tokio::time::timeout(LISTEN_TIMEOUT, answer)
                    .await
                    .map_err(|_| timed_out())??;
                continue;
            }
        };
        // `None`: the connection was lost.
        let Some(notice) = notice else {
            return Err(sqlx::Error::PoolClosed);
        };
        let Some(cache) = cache.upgrade() else {
            return Ok(());
        };
        let notice: serde_json::Value = serde_json::from_str(notice.payload()).unwrap_or_default();
        // Applied once per host, by whichever of the relay and the listener
        // has it first (a notice without an id is from an older host).
        if let Some(id) = notice["id"].as_str()
            && !heard.applied.first(id)
        {
            continue;
        }
        if let Some(at) = notice["at"].as_i64() {
            heard.lag.observe(at);
        }
        match notice["tags"].as_array() {
            Some(tags) => {
                let tags: Vec<String> = tags
                    .iter()
                    .filter_map(|t| t.as_str().map(str::to_string))
                    .collect();
                cache.deliver_to_memory(&tags).await;
            }
            None => cache.flush_memory(),
        }
    }
}

/// What the listener needs of its host's relay.
struct Heard {
    lag: Lag,
    applied: Arc<Applied>,
}

/// The invalidations already applied to this host's memory tier, by the
/// relay or the listener, so that each is applied (and its lag observed)
/// once per host, and a row Redis cannot take yet is not applied again at
/// every pass (each time would empty that tier of the row's tags).
#[derive(Default)]
struct Applied(Mutex<HashMap<String, Instant>>);

impl Applied {
    fn ids(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        // A poisoned map only means a pass panicked mid-way; applying a row
        // twice is harmless.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records `id` as applied now; whether it was not yet.
    fn first(&self, id: &str) -> bool {
        let mut ids = self.ids();
        if let Some(at) = ids.get_mut(id) {
            *at = Instant::now();
            return false;
        }
        ids.insert(id.to_string(), Instant::now());
        true
    }

    /// Forgets the ids not seen for `APPLIED_MEMORY`.
    fn forget_old(&self) {
        self.ids().retain(|_, at| at.elapsed() < APPLIED_MEMORY);
    }
}

/// One host's relay.
pub struct Relay {
    /// The host's view of the database.
    db: Arc<dyn Database>,
    /// Undelivered rows seen at the last pass (at most `BATCH`).
    backlog: Gauge,
    /// Commit to applied.
    lag: Lag,

    /// Rows already applied to this host's memory tier.
    applied: Arc<Applied>,
}

impl Relay {
    /// A relay over `db` (the host's view), reporting its backlog to
    /// `registry`.
    pub fn new(
        db: Arc<dyn Database>,
        lag: Lag,
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
            lag,
            applied: Arc::default(),
        }
    }

    /// Runs passes every `INTERVAL` until `cache` is dropped.
    pub fn spawn(self: Arc<Self>, cache: &Arc<TieredCache>) {
        let cache = Arc::downgrade(cache);
        tokio::spawn(async move {
            let mut passes: u32 = 0;
            loop {
                tokio::time::sleep(INTERVAL).await;
                let Some(cache) = Weak::upgrade(&cache) else {
                    return;
                };
                passes = passes.wrapping_add(1);
                let mut clean = passes.is_multiple_of(CLEAN_EVERY);
                // A full batch delivered: there may be more; go on at once.
                loop {
                    match tokio::time::timeout(PASS_TIMEOUT, self.pass(&cache, clean)).await {
                        Ok(Ok(pass)) if pass.delivered == BATCH => clean = false,
                        Ok(Ok(_)) => break,
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, "outbox relay: pass failed; retrying");
                            break;
                        }
                        Err(_) => {
                            tracing::warn!(
                                "outbox relay: a pass took over {PASS_TIMEOUT:?}; given up, retrying"
                            );
                            break;
                        }
                    }
                }
            }
        });
    }

    /// Delivers what is undelivered now (the newest `BATCH` rows, so that a
    /// backlog Redis cannot take never hides new writes from the memory
    /// tier): each row to the memory tier once, then all their tags to
    /// Redis at once, then marks them delivered in one statement. Deletes
    /// old rows if `clean`.
    pub async fn pass(&self, cache: &TieredCache, clean: bool) -> Result<Pass, DbError> {
        let rows = self
            .db
            .query(
                "SELECT id, tags, created_at FROM cache_outbox WHERE delivered_at IS NULL \
                 ORDER BY created_at DESC LIMIT $1",
                &[Value::Int(BATCH as i64)],
            )
            .await?;
        let mut ids = Vec::with_capacity(rows.rows.len());
        let mut all_tags = BTreeSet::new();
        for row in &rows.rows {
            let (Some(Value::Text(id)), Some(Value::Text(tags))) = (row.first(), row.get(1)) else {
                continue;
            };
            let tags: Vec<String> = serde_json::from_str(tags).unwrap_or_default();
            if self.applied.first(id) {
                if let Some(Value::Int(at)) = row.get(2) {
                    self.lag.observe(*at);
                }
                cache.deliver_to_memory(&tags).await;
            }
            all_tags.extend(tags);
            ids.push(Value::Text(id.clone()));
        }
        // Rows read in this pass were just marked as seen now.
        self.applied.forget_old();
        let all_tags: Vec<String> = all_tags.into_iter().collect();
        let delivered = if !ids.is_empty() && cache.deliver_to_redis(&all_tags).await {
            let placeholders: Vec<String> = (2..ids.len() + 2).map(|i| format!("${i}")).collect();
            let mut params = vec![Value::Int(crate::now_ms())];
            params.extend(ids.iter().cloned());
            self.db
                .execute(
                    &format!(
                        "UPDATE cache_outbox SET delivered_at = $1 \
                         WHERE delivered_at IS NULL AND id IN ({})",
                        placeholders.join(", ")
                    ),
                    &params,
                )
                .await?;
            ids.len()
        } else {
            0
        };
        self.backlog.set((ids.len() - delivered) as i64);
        if clean {
            let now = crate::now_ms();
            self.db
                .execute(
                    "DELETE FROM cache_outbox WHERE delivered_at < $1 OR created_at < $2",
                    &[
                        Value::Int(now - RETENTION.as_millis() as i64),
                        Value::Int(now - MAX_AGE.as_millis() as i64),
                    ],
                )
                .await?;
        }
        Ok(Pass {
            read: ids.len(),
            delivered,
        })
    }
}

/// What one pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    /// Undelivered rows it read.
    pub read: usize,
    /// Of those, the rows it delivered to Redis and marked.
    pub delivered: usize,
}

#[async_trait::async_trait]
impl crate::cache::Backlog for Relay {
    /// Passes until none is full: every row undelivered when it started is
    /// then delivered, unless Redis refused one.
    async fn deliver(&self, cache: &TieredCache) -> Result<bool, String> {
        loop {
            let pass = self.pass(cache, false).await.map_err(|e| e.to_string())?;
            if pass.delivered < pass.read {
                return Ok(false);
            }
            if pass.read < BATCH {
                return Ok(true);
            }
        }
    }
}
