//! Cache warming: the host counts the anonymous GETs its components answer
//! with 200 and an `X-Cache` header (the product's components label every
//! answer they serve from or into the cache so), adds the counts to the
//! database's `cache_warm` table every `record_every`, per hour, and, on
//! start and after each swap of a component's version, runs the most
//! requested of the last 24 hours again in the background, so that their
//! entries are in the cache before clients ask.
//!
//! - The table is shared by the fleet: a host that starts warms what the
//!   fleet's clients ask for most, and every host's counts add up.
//! - Warming runs one request at a time on the runtime's background
//!   instance slots (`Runtime::warm`): it never takes a client's slot, and
//!   each host sends the database at most one request's statements at a
//!   time for it. It stops at the first run whose database call fails.
//! - Start waits for it at most `wait` before taking traffic (and not at
//!   all when the database is down then: it warms once it is back).
//! - Only GETs without a bearer token are counted and run again: a
//!   client's token is never kept, and what a principal sees is theirs.
//!
//! **Invariant:** warming only ever runs a GET the way an anonymous client
//! could; it writes nothing such a request could not.

use crate::db::{Database, Value};
use crate::registry::Registry;
use crate::runtime::{InvokeError, Request, Runtime};
use crossbeam_utils::CachePadded;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use thread_local::ThreadLocal;

/// Entries refilled on start and after a deploy, by default.
pub const DEFAULT_WARM_TOP: usize = 64;
/// Longest start waits for warming, by default.
pub const DEFAULT_WARM_WAIT: Duration = Duration::from_secs(2);
/// How often counts are added to the table, by default.
pub const DEFAULT_RECORD_EVERY: Duration = Duration::from_secs(10);
/// Distinct targets one worker thread counts between two flushes; past
/// it, new ones are not counted until the next (a crawler cannot grow the
/// maps without bound).
const TRACKED: usize = 4096;
/// Longest path and query counted.
const MAX_TARGET_BYTES: usize = 512;
/// The most `--cache-warm` may ask for.
pub const MAX_WARM_TOP: usize = 1000;
/// Counts are kept per hour: a target's rank is its requests over the last
/// `WINDOW_BUCKETS` hours, so what was popular once fades, and older hours
/// are deleted whole.
const BUCKET_MS: i64 = 3_600_000;
const WINDOW_BUCKETS: i64 = 24;
/// Rows one flush statement adds at most.
const ROWS_PER_STATEMENT: usize = 100;
/// How often a warming that waits for the database checks it again.
const READY_POLL: Duration = Duration::from_millis(200);

const ADD_HEAD: &str = "INSERT INTO cache_warm (component, target, bucket, hits) VALUES ";
const ADD_TAIL: &str =
    " ON CONFLICT (component, target, bucket) DO UPDATE SET hits = cache_warm.hits + excluded.hits";
const PRUNE: &str = "DELETE FROM cache_warm WHERE bucket < $1";
const TOP_OF: &str = "SELECT target, CAST(SUM(hits) AS BIGINT) AS n FROM cache_warm \
     WHERE component = $1 AND bucket >= $2 GROUP BY target ORDER BY n DESC, target LIMIT $3";

/// Warming's settings.
#[derive(Debug, Clone)]
pub struct WarmSettings {
    /// Entries refilled on start and after a deploy; 0 turns counting and
    /// warming off.
    pub top: usize,
    /// Longest start waits for warming before taking traffic.
    pub wait: Duration,
    /// How often this host adds its counts to the table.
    pub record_every: Duration,
}

impl Default for WarmSettings {
    fn default() -> Self {
        Self {
            top: DEFAULT_WARM_TOP,
            wait: DEFAULT_WARM_WAIT,
            record_every: DEFAULT_RECORD_EVERY,
        }
    }
}

/// A component and what warming one of its targets did: `filled` (the
/// entry was computed and stored) or `hit` (it was there already).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Warmed {
    component: String,
    outcome: String,
}

/// Counts requests and warms the cache from the counts.
pub struct Warmer {
    settings: WarmSettings,
    /// Requests since the last flush.
    tally: Tally,
    runtime: Arc<Runtime>,
    registry: Arc<Registry>,
    /// The host's view of the database (`cache_warm` is a host table).
    db: Arc<dyn Database>,
    /// One warming at a time.
    running: tokio::sync::Mutex<()>,
    warmed: Family<Warmed, Counter>,
}

/// Maps keyed by what clients ask for, hashed with a seed of this
/// process's that they never see.
type Map<K, V> = HashMap<K, V, foldhash::quality::RandomState>;

/// Component to target (path and query) to requests.
type ByComponent = Map<String, Map<String, u64>>;

#[derive(Default)]
struct Counts {
    by_component: ByComponent,
    distinct: usize,
}

/// Requests counted per worker thread: counting one locks only its own
/// thread's counts, so the workers of a loaded host never wait on each
/// other for it (BENCHMARKS.md, "a twelfth run"); `take` adds them up.
#[derive(Default)]
struct Tally {
    threads: ThreadLocal<CachePadded<Mutex<Counts>>>,
}

impl Tally {
    /// Counts one request of `target` that `component` answered.
    fn count(&self, component: &str, target: &str) {
        let mut counts = self
            .threads
            .get_or_default()
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let Counts {
            by_component,
            distinct,
        } = &mut *counts;
        if let Some(n) = by_component
            .get_mut(component)
            .and_then(|t| t.get_mut(target))
        {
            *n += 1;
            return;
        }
        if *distinct >= TRACKED {
            return;
        }
        *distinct += 1;
        by_component
            .entry(component.to_string())
            .or_default()
            .insert(target.to_string(), 1);
    }

    /// Every thread's counts added up, and the counting started again.
    fn take(&self) -> ByComponent {
        let mut all = ByComponent::default();
        for thread in self.threads.iter() {
            let counts = std::mem::take(&mut *thread.lock().unwrap_or_else(|p| p.into_inner()));
            for (component, targets) in counts.by_component {
                let into = all.entry(component).or_default();
                for (target, n) in targets {
                    *into.entry(target).or_default() += n;
                }
            }
        }
        all
    }
}

impl Warmer {
    /// A warmer over `runtime` and `registry`, recording to `db`; its
    /// counter `marketplace_cache_warmed_total` goes into `metrics`.
    pub fn new(
        mut settings: WarmSettings,
        runtime: Arc<Runtime>,
        registry: Arc<Registry>,
        db: Arc<dyn Database>,
        metrics: &mut prometheus_client::registry::Registry,
    ) -> Arc<Self> {
        settings.top = settings.top.min(MAX_WARM_TOP);
        let warmed = Family::<Warmed, Counter>::default();
        metrics.register(
            "marketplace_cache_warmed",
            "Requests run again to warm the cache (on start and after a deploy) that answered 200, by whether they filled an entry or found it",
            warmed.clone(),
        );
        Arc::new(Self {
            settings,
            tally: Tally::default(),
            runtime,
            registry,
            db,
            running: tokio::sync::Mutex::new(()),
            warmed,
        })
    }

    /// Counts one anonymous GET of `target` (path and query) that
    /// `component` answered from or into the cache.
    pub fn record(&self, component: &str, target: &str) {
        if self.settings.top == 0 || target.len() > MAX_TARGET_BYTES {
            return;
        }
        self.tally.count(component, target);
    }

    /// Starts the background work: the periodic flush of the counts, the
    /// warming after each swap, and the warming at start, which this waits
    /// for at most `wait` when the database is ready (`ready`).
    pub async fn start(self: &Arc<Self>, ready: bool) {
        if self.settings.top == 0 {
            return;
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(flush_every(weak.clone(), self.settings.record_every));
        let mut swaps = self.registry.swaps();
        let on_swap = weak.clone();
        tokio::spawn(async move {
            loop {
                let only = match swaps.recv().await {
                    Ok(name) => Some(name),
                    // Fell behind: warm everything.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => None,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                };
                let Some(warmer) = on_swap.upgrade() else {
                    return;
                };
                warmer.warm(only.as_deref()).await;
            }
        });
        let at_start = tokio::spawn(async move {
            loop {
                let Some(warmer) = weak.upgrade() else { return };
                if warmer.db_ready().await {
                    warmer.warm(None).await;
                    return;
                }
                drop(warmer);
                tokio::time::sleep(READY_POLL).await;
            }
        });
        if ready
            && tokio::time::timeout(self.settings.wait, at_start)
                .await
                .is_err()
        {
            tracing::info!(
                wait = ?self.settings.wait,
                "cache warming goes on in the background; taking traffic"
            );
        }
    }

    /// Whether the database answers: the gate opens once it is migrated.
    async fn db_ready(&self) -> bool {
        self.db.query("SELECT 1", &[]).await.is_ok()
    }

    /// Adds the counts since the last flush to the table (per component,
    /// the `4 × top` most requested of the interval, in one transaction of
    /// multi-row upserts in a fixed order, so that hosts flushing at once
    /// never deadlock), then deletes the hours past the window (rows no
    /// flush writes any more). Counts that could not be added are dropped:
    /// they are a hint, and the next interval counts again.
    pub async fn flush(&self) {
        let taken = self.tally.take();
        let bucket = crate::now_ms() / BUCKET_MS;
        let mut rows: Vec<(String, String, u64)> = Vec::new();
        for (component, targets) in taken {
            let mut targets: Vec<(String, u64)> = targets.into_iter().collect();
            targets.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            targets.truncate(self.settings.top.saturating_mul(4).max(64));
            rows.extend(targets.into_iter().map(|(t, n)| (component.clone(), t, n)));
        }
        if rows.is_empty() {
            return;
        }
        rows.sort_unstable();
        let statements: Vec<crate::db::Statement> = rows
            .chunks(ROWS_PER_STATEMENT)
            .map(|chunk| {
                let mut sql = String::from(ADD_HEAD);
                let mut params = Vec::with_capacity(chunk.len() * 4);
                for (i, (component, target, hits)) in chunk.iter().enumerate() {
                    let n = i * 4;
                    if i > 0 {
                        sql.push_str(", ");
                    }
                    sql.push_str(&format!("(${}, ${}, ${}, ${})", n + 1, n + 2, n + 3, n + 4));
                    params.extend([
                        Value::Text(component.clone()),
                        Value::Text(target.clone()),
                        Value::Int(bucket),
                        Value::Int(i64::try_from(*hits).unwrap_or(i64::MAX)),
                    ]);
                }
                sql.push_str(ADD_TAIL);
                crate::db::Statement { sql, params }
            })
            .collect();
        if let Err(e) = self.db.transaction(&statements).await {
            tracing::warn!(error = %e, "request counts for warming not recorded");
            return;
        }
        let expired = Value::Int(bucket - WINDOW_BUCKETS);
        if let Err(e) = self.db.execute(PRUNE, &[expired]).await {
            tracing::warn!(error = %e, "old request counts for warming not deleted");
        }
    }

    /// The `top` most requested targets over the window, of `only` or of
    /// every component of the manifest, most requested first.
    async fn most_requested(
        &self,
        only: Option<&str>,
    ) -> Result<Vec<(String, String)>, crate::db::DbError> {
        let since = Value::Int(crate::now_ms() / BUCKET_MS - WINDOW_BUCKETS);
        let limit = Value::Int(self.settings.top as i64);
        let names: Vec<String> = match only {
            Some(name) => vec![name.to_string()],
            None => self.registry.list().into_iter().map(|c| c.name).collect(),
        };
        let mut found: Vec<(i64, String, String)> = Vec::new();
        for name in names {
            let rows = self
                .db
                .query(
                    TOP_OF,
                    &[Value::Text(name.clone()), since.clone(), limit.clone()],
                )
                .await?;
            for row in rows.rows {
                if let (Some(Value::Text(target)), Some(Value::Int(n))) = (row.first(), row.get(1))
                {
                    found.push((*n, name.clone(), target.clone()));
                }
            }
        }
        found.sort_unstable_by(|a, b| b.0.cmp(&a.0).then_with(|| (&a.1, &a.2).cmp(&(&b.1, &b.2))));
        found.truncate(self.settings.top);
        Ok(found.into_iter().map(|(_, c, t)| (c, t)).collect())
    }

    /// Runs the most requested GETs again (of `only`, or of every
    /// component), one at a time; returns how many filled an entry (a
    /// MISS: the others found theirs in the cache already).
    pub async fn warm(&self, only: Option<&str>) -> usize {
        let _one = self.running.lock().await;
        let started = Instant::now();
        let targets = match self.most_requested(only).await {
            Ok(targets) => targets,
            Err(e) => {
                tracing::info!(error = %e, "no cache warming: the request counts could not be read");
                return 0;
            }
        };
        let (mut filled, mut tried) = (0, 0);
        for (component, target) in targets {
            let request = Request::new(http::Method::GET, &target);
            // The route may have moved to another component since.
            let Some(loaded) = self.registry.resolve(request.path()) else {
                continue;
            };
            if loaded.name != component {
                continue;
            }
            tried += 1;
            let (response, database_failed) = self.runtime.warm(&loaded, request).await;
            // The database fails (or there is no slot): the rest would
            // fail too.
            if database_failed || matches!(response, Err(InvokeError::Exhausted(_))) {
                break;
            }
            let Ok(response) = response else { continue };
            let outcome = match response.x_cache() {
                _ if response.status != 200 => continue,
                Some("HIT") => "hit",
                Some("MISS") => {
                    filled += 1;
                    "filled"
                }
                _ => continue,
            };
            self.warmed
                .get_or_create(&Warmed {
                    component: component.clone(),
                    outcome: outcome.into(),
                })
                .inc();
        }
        tracing::info!(
            component = only.unwrap_or("*"),
            filled,
            tried,
            took = ?started.elapsed(),
            "cache warmed"
        );
        filled
    }
}

/// Flushes the counts of `warmer` every `every`, until it is dropped.
async fn flush_every(warmer: Weak<Warmer>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let Some(warmer) = warmer.upgrade() else {
            return;
        };
        warmer.flush().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tally_adds_up_what_every_thread_counted() {
        let tally = Arc::new(Tally::default());
        tally.count("listings", "/agents");
        let threads: Vec<_> = (0..3)
            .map(|_| {
                let tally = tally.clone();
                std::thread::spawn(move || {
                    tally.count("listings", "/agents");
                    tally.count("templates", "/templates");
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let all = tally.take();
        assert_eq!(all["listings"]["/agents"], 4);
        assert_eq!(all["templates"]["/templates"], 3);
        assert_eq!(all.len(), 2);
        assert!(tally.take().is_empty(), "taken, the counting starts again");
    }

    #[test]
    fn a_thread_counts_at_most_tracked_distinct_targets() {
        let tally = Tally::default();
        for i in 0..TRACKED + 10 {
            tally.count("listings", &format!("/agents?page={i}"));
        }
        tally.count("listings", "/agents?page=0");
        let all = tally.take();
        assert_eq!(all["listings"].len(), TRACKED);
        assert_eq!(
            all["listings"]["/agents?page=0"], 2,
            "known ones still count"
        );
    }
}
