//! Cache warming: the host counts which anonymous GETs are answered from
//! the cache (their answer carries `X-Cache`), adds the counts to the
//! database's `cache_warm` table every `record_every`, and, on start and
//! after each swap of a component's version, runs the most requested of
//! them again in the background, so that their entries are in the cache
//! before clients ask.
//!
//! - The table is shared by the fleet: a host that starts warms what the
//!   fleet's clients ask for most, and every host's counts add up.
//! - Warming runs one request at a time on the runtime's background
//!   instance slots (`Runtime::warm`): it never takes a client's slot and
//!   never sends the database more than one request's statements at once.
//!   It stops at the first answer that says the database is failing.
//! - Start waits for it at most `wait` before taking traffic (and not at
//!   all when the database is down then: it warms once it is back).
//! - Only GETs without a bearer token are counted and run again: a
//!   client's token is never kept, and what a principal sees is theirs.
//!
//! **Invariant:** warming only ever runs a GET the way a client would; it
//! writes nothing a request could not.

use crate::db::{Database, Value};
use crate::registry::Registry;
use crate::runtime::{InvokeError, Request, Runtime};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// Entries refilled on start and after a deploy, by default.
pub const DEFAULT_WARM_TOP: usize = 64;
/// Longest start waits for warming, by default.
pub const DEFAULT_WARM_WAIT: Duration = Duration::from_secs(2);
/// How often counts are added to the table, by default.
pub const DEFAULT_RECORD_EVERY: Duration = Duration::from_secs(10);
/// Distinct targets counted between two flushes; past it, new ones are
/// not counted until the next (a crawler cannot grow the map without
/// bound).
const TRACKED: usize = 4096;
/// Targets kept in the table per component, the most requested.
const KEPT_PER_COMPONENT: i64 = 1000;
/// Longest path and query counted.
const MAX_TARGET_BYTES: usize = 2048;
/// How often a warming that waits for the database checks it again.
const READY_POLL: Duration = Duration::from_millis(200);

const ADD: &str = "INSERT INTO cache_warm (component, target, hits, seen_at) VALUES ($1, $2, $3, $4) \
     ON CONFLICT (component, target) DO UPDATE SET hits = cache_warm.hits + excluded.hits, seen_at = excluded.seen_at";
const PRUNE: &str = "DELETE FROM cache_warm WHERE component = $1 AND target NOT IN \
     (SELECT target FROM cache_warm WHERE component = $2 ORDER BY hits DESC, target LIMIT $3)";
const TOP: &str = "SELECT component, target FROM cache_warm ORDER BY hits DESC, target LIMIT $1";
const TOP_OF: &str = "SELECT component, target FROM cache_warm WHERE component = $1 ORDER BY hits DESC, target LIMIT $2";

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

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Of {
    component: String,
}

/// Counts requests and warms the cache from the counts.
pub struct Warmer {
    settings: WarmSettings,
    /// Component to target (path and query) to requests since the last
    /// flush.
    counts: Mutex<Counts>,
    runtime: Arc<Runtime>,
    registry: Arc<Registry>,
    /// The host's view of the database (`cache_warm` is a host table).
    db: Arc<dyn Database>,
    /// One warming at a time.
    running: tokio::sync::Mutex<()>,
    warmed: Family<Of, Counter>,
}

#[derive(Default)]
struct Counts {
    by_component: HashMap<String, HashMap<String, u64>>,
    distinct: usize,
}

impl Warmer {
    /// A warmer over `runtime` and `registry`, recording to `db`; its
    /// counter `marketplace_cache_warmed_total` goes into `metrics`.
    pub fn new(
        settings: WarmSettings,
        runtime: Arc<Runtime>,
        registry: Arc<Registry>,
        db: Arc<dyn Database>,
        metrics: &mut prometheus_client::registry::Registry,
    ) -> Arc<Self> {
        let warmed = Family::<Of, Counter>::default();
        metrics.register(
            "marketplace_cache_warmed",
            "Requests run again to warm the cache (on start and after a deploy) that answered 200",
            warmed.clone(),
        );
        Arc::new(Self {
            settings,
            counts: Mutex::default(),
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
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
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

    /// Adds the counts since the last flush to the table and keeps the
    /// most requested targets of each component. Counts that could not be
    /// added are dropped: they are a hint, and the next interval counts
    /// again.
    pub async fn flush(&self) {
        let taken = std::mem::take(&mut *self.counts.lock().unwrap_or_else(|p| p.into_inner()));
        let now = crate::now_ms();
        for (component, targets) in taken.by_component {
            // Deterministic order: hosts flushing at once lock rows in the
            // same order.
            let mut targets: Vec<(String, u64)> = targets.into_iter().collect();
            targets.sort_unstable();
            let mut statements: Vec<crate::db::Statement> = targets
                .into_iter()
                .map(|(target, hits)| crate::db::Statement {
                    sql: ADD.to_string(),
                    params: vec![
                        Value::Text(component.clone()),
                        Value::Text(target),
                        Value::Int(hits as i64),
                        Value::Int(now),
                    ],
                })
                .collect();
            statements.push(crate::db::Statement {
                sql: PRUNE.to_string(),
                params: vec![
                    Value::Text(component.clone()),
                    Value::Text(component.clone()),
                    Value::Int(KEPT_PER_COMPONENT),
                ],
            });
            if let Err(e) = self.db.transaction(&statements).await {
                tracing::debug!(%component, error = %e, "request counts for warming not recorded");
            }
        }
    }

    /// Runs the most requested GETs again (of `only`, or of every
    /// component), one at a time; returns how many answered 200.
    pub async fn warm(&self, only: Option<&str>) -> usize {
        let _one = self.running.lock().await;
        let started = Instant::now();
        let limit = Value::Int(self.settings.top as i64);
        let rows = match only {
            Some(name) => {
                self.db
                    .query(TOP_OF, &[Value::Text(name.to_string()), limit])
                    .await
            }
            None => self.db.query(TOP, &[limit]).await,
        };
        let rows = match rows {
            Ok(rows) => rows.rows,
            Err(e) => {
                tracing::info!(error = %e, "no cache warming: the request counts could not be read");
                return 0;
            }
        };
        let (mut warmed, mut tried) = (0, 0);
        for row in rows {
            let (Some(Value::Text(component)), Some(Value::Text(target))) =
                (row.first(), row.get(1))
            else {
                continue;
            };
            let (path, query) = target.split_once('?').unwrap_or((target, ""));
            // The route may have moved to another component since.
            let Some(loaded) = self.registry.resolve(path) else {
                continue;
            };
            if loaded.name != *component {
                continue;
            }
            tried += 1;
            let request = Request {
                method: "GET".into(),
                path: path.to_string(),
                query: form_urlencoded::parse(query.as_bytes())
                    .into_owned()
                    .collect(),
                ..Request::default()
            };
            match self.runtime.warm(&loaded, request).await {
                Ok(response) if response.status == 200 && !stale(&response) => {
                    warmed += 1;
                    self.warmed
                        .get_or_create(&Of {
                            component: component.clone(),
                        })
                        .inc();
                }
                // Answered from stale entries, or 503, or out of time: the
                // database fails, and the rest would fail too.
                Ok(response) if response.status == 503 || stale(&response) => break,
                Err(InvokeError::DeadlineExceeded(_) | InvokeError::Exhausted(_)) => break,
                Ok(_) | Err(_) => {}
            }
        }
        tracing::info!(
            component = only.unwrap_or("*"),
            warmed,
            tried,
            took = ?started.elapsed(),
            "cache warmed"
        );
        warmed
    }
}

/// Whether `response` was served from entries past their TTL.
fn stale(response: &crate::runtime::Response) -> bool {
    response
        .headers
        .iter()
        .any(|(name, value)| name.eq_ignore_ascii_case("x-cache") && value == "STALE")
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
