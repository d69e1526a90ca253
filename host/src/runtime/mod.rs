//! The component runtime: the only module that knows about wasmtime.
//!
//! - `Runtime` owns the one `Engine` (component model, async, pooling
//!   allocator, epoch interruption driven by one ticker thread) and the
//!   `Linker` that offers components exactly the `handler` world's imports
//!   plus the minimal WASI that `wasm32-wasip2` std needs to start.
//! - `Runtime::load` compiles a component and type-checks it against the
//!   world (pre-instantiation) before anything can use it.
//! - `Runtime::invoke` runs one request in a fresh `Store` and instance,
//!   with a deadline and a memory cap; or, for a component that opts in to
//!   instance reuse, in a warm instance of the same version (`reuse`).
//! - `config` holds the sandbox settings and the engine `Config` they
//!   make; `artifacts` keeps compiled components on disk by digest; `types`
//!   holds what loading and invoking return; `bindings` (private) holds the
//!   generated code; `invocation` implements the imports on the
//!   per-request store state; `wasi` links WASI without sockets, preopens
//!   or environment; `flights` coalesces concurrent misses on one key.
//!
//! **Invariant:** by default a request's instance is never reused: every
//! run instantiates afresh from the pre-instantiated component, so no state
//! leaks between requests. A component that opts in (`instance_reuse` of
//! N > 1) accepts that its statics survive between up to N requests of
//! the same version; an instance is never shared by two versions or two
//! components, serves one request at a time, and is retired after N
//! requests, an error, a 5xx, a failed database call, any memory
//! growth, or more resources held than after its first request (past a
//! few opened late and kept, see `LAZY_RESOURCES`).

mod artifacts;
mod bindings;
mod config;
pub mod flights;
mod invocation;
mod reuse;
mod types;
mod v010;
mod wasi;

pub use config::{
    DEFAULT_KEEP_RESIDENT, DEFAULT_MEMORY_INIT_COW, DEFAULT_PAGEMAP_SCAN,
    DEFAULT_REVALIDATE_WINDOW, DEFAULT_STACK_KEEP_RESIDENT, DEFAULT_STALE_GRACE, SandboxConfig,
};
pub use types::{InvokeError, LoadError, LoadedComponent, MAX_INSTANCE_REUSE};

use crate::cache::Cache;
use crate::db::Database;
use anyhow::Context as _;
use artifacts::Artifacts;
use bindings::marketplace::host::types::Method;
use invocation::{Invocation, Ran, Reading, Turn};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};
use types::Incoming;
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Engine, PoolingAllocationConfig, Store, UpdateDeadline};

/// How often the engine's epoch advances: the granularity of deadlines and
/// of the cooperative yields that keep a busy component from hogging a
/// worker thread.
const EPOCH_TICK: Duration = Duration::from_millis(5);
/// Epoch ticks seen while running wasm after which an instance counts as
/// busy: about 50 ms of computing. Ticks come only while wasm runs, so time
/// spent waiting on the database or the cache does not count.
const BUSY_AFTER_TICKS: u32 = 10;

/// The deadline of a stale replay (at most the request's own): it never
/// waits on the database, so a request that spent its deadline waiting on
/// it gets this much more for its stale answer.
const STALE_REPLAY_DEADLINE: Duration = Duration::from_secs(1);

/// The capabilities handed to components.
#[derive(Clone)]
pub struct Capabilities {
    /// Backs the `cache` import.
    pub cache: Arc<dyn Cache>,
    /// Backs the `db` import.
    pub db: Arc<dyn Database>,
}

pub use crate::request::{CacheStatus, Principal, Request, Response};

/// How often the sweeper drops warm instances idle for `reuse::IDLE_FOR`.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// A warm instance (instance reuse): its store, its exports, how many
/// requests it has served, and how many resources it held after its first.
pub(crate) struct Warm {
    store: Store<Invocation>,
    handler: types::Handler,
    served: u32,
    resources: usize,
}

/// How many more resources than after its first request a warm instance
/// may hold after a later one: stdin, stdout and stderr, which wasi-libc
/// opens on their first use and keeps, and one more.
const LAZY_RESOURCES: usize = 4;

/// Every component version's warm pool, for the idle sweep.
type Pools = Arc<Mutex<Vec<Weak<reuse::Pool<Warm>>>>>;

/// Drops the warm instances idle too long, and forgets dropped pools.
fn sweep(pools: &Pools) {
    let now = Instant::now();
    let live: Vec<Arc<reuse::Pool<Warm>>> = {
        let mut pools = pools.lock().unwrap_or_else(|p| p.into_inner());
        pools.retain(|p| p.strong_count() > 0);
        pools.iter().filter_map(Weak::upgrade).collect()
    };
    for pool in live {
        pool.sweep(now);
    }
}

/// Starts a thread named `name` that runs `work` every `period` until
/// `stop` is set.
fn every(
    period: Duration,
    name: &str,
    stop: &Arc<AtomicBool>,
    work: impl Fn() + Send + 'static,
) -> std::io::Result<()> {
    let stop = stop.clone();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(period);
                work();
            }
        })
        .map(drop)
}

/// Stops the epoch ticker and sweeper threads when the runtime is dropped.
struct TickerGuard(Arc<AtomicBool>);

impl Drop for TickerGuard {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The engine, linker and capabilities shared by every request.
pub struct Runtime {
    engine: Engine,
    linker: Linker<Invocation>,
    sandbox: SandboxConfig,
    capabilities: Capabilities,
    /// Cache keys being computed now, shared by every request.
    flights: Arc<flights::Flights>,
    /// Instances running past `BUSY_AFTER_TICKS` now.
    busy: Arc<AtomicUsize>,
    /// One permit per background refresh that may run now.
    refreshes: Arc<tokio::sync::Semaphore>,
    /// Where compiled components are kept.
    artifacts: Artifacts,
    /// Idle warm instances, all pools together.
    warm_budget: Arc<reuse::Budget>,
    /// Every loaded version's warm pool, for the idle sweep.
    pools: Pools,
    _ticker: TickerGuard,
}

impl Runtime {
    /// Builds the engine and linker and starts the epoch ticker. Compiled
    /// components are kept in `artifacts`, if given, so that loading the same
    /// bytes again (after a restart, say) does not compile them again.
    pub fn new(
        sandbox: SandboxConfig,
        capabilities: Capabilities,
        artifacts: Option<PathBuf>,
    ) -> anyhow::Result<Self> {
        if sandbox.pagemap_scan && !PoolingAllocationConfig::is_pagemap_scan_available() {
            tracing::info!(
                "PAGEMAP_SCAN is not available on this kernel; instance memory is reset by keep-resident size"
            );
        }
        let engine = Engine::new(&config::engine_config(&sandbox))
            .map_err(anyhow::Error::from)
            .context("building the wasm engine")?;
        let mut linker = Linker::new(&engine);
        wasi::add_to_linker(&mut linker)?;
        bindings::Handler::add_to_linker::<_, HasSelf<Invocation>>(&mut linker, |s| s)?;
        bindings::v010::Handler::add_to_linker::<_, HasSelf<Invocation>>(&mut linker, |s| s)?;

        let refresh_slots = config::refresh_slots(&sandbox) as usize;
        let warm_budget = reuse::Budget::new(config::warm_slots(&sandbox) as usize);
        let stop = Arc::new(AtomicBool::new(false));
        let ticker_engine = engine.clone();
        let pools: Pools = Arc::default();
        let sweeper_pools = pools.clone();
        // A plain thread rather than a tokio task: it must keep ticking even
        // when every worker thread is busy running wasm, since the ticks are
        // what make that wasm yield.
        every(EPOCH_TICK, "epoch-ticker", &stop, move || {
            ticker_engine.increment_epoch()
        })
        .context("starting the epoch ticker")?;
        // Its own thread, so that dropping instances (resetting their
        // memory) never delays a tick.
        every(SWEEP_EVERY, "warm-sweeper", &stop, move || {
            sweep(&sweeper_pools)
        })
        .context("starting the warm instance sweeper")?;

        Ok(Self {
            engine,
            linker,
            sandbox,
            capabilities,
            flights: Arc::default(),
            busy: Arc::default(),
            refreshes: Arc::new(tokio::sync::Semaphore::new(refresh_slots)),
            artifacts: Artifacts(artifacts),
            warm_budget,
            pools,
            _ticker: TickerGuard(stop),
        })
    }

    /// Deletes the compiled artifacts kept on disk for digests not in
    /// `keep` (but those written in the last minute); the number deleted.
    pub fn collect_artifacts(&self, keep: &std::collections::HashSet<&str>) -> usize {
        self.artifacts.collect(&self.engine, keep)
    }

    /// The sandbox settings.
    pub fn sandbox(&self) -> &SandboxConfig {
        &self.sandbox
    }

    /// The capabilities components get.
    pub fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    /// Compiles `bytes` and checks them against the `handler` world. Nothing
    /// is replaced or served until this succeeds.
    pub fn load(&self, name: &str, bytes: &[u8]) -> Result<LoadedComponent, LoadError> {
        let digest = artifacts::hex(&Sha256::digest(bytes));
        let (component, from_cache) = self.artifacts.compile(&self.engine, &digest, bytes)?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::WrongWorld(format!("{e:#}")))?;
        let pre = types::Pre::new(pre)?;
        let warm = Arc::new(reuse::Pool::new(self.warm_budget.clone()));
        self.pools
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::downgrade(&warm));
        Ok(LoadedComponent {
            name: name.to_string(),
            cache_namespace: name.into(),
            stale_grace: None,
            digest,
            size: bytes.len(),
            bytes: bytes.into(),
            loaded_at: SystemTime::now(),
            from_cache,
            instance_reuse: types::UNSET.into(),
            pre,
            warm,
            metrics: Default::default(),
        })
    }

    /// Runs `request` through a fresh instance of `component`.
    ///
    /// Stale-if-error: a GET that fails (5xx, or an error) after the
    /// database could not answer it runs once more, in a fresh instance
    /// whose cache reads also return entries past their TTL within their
    /// grace (never invalidated ones) and whose database calls fail at
    /// once; if that answers 2xx or 3xx from at least one such entry, it
    /// is the response, with `X-Cache: STALE` and `Age` (the oldest entry
    /// served). Components need nothing for it.
    pub async fn invoke(
        &self,
        component: &LoadedComponent,
        request: Request,
    ) -> Result<Response, InvokeError> {
        let request = Incoming::from(request);
        let (response, ran) = self.answer(component, &request, Reading::Fresh).await;
        drop(ran.refresh);
        response
    }

    /// `invoke` for work no client waits on (cache warming): it waits for
    /// one of the background refreshes' instance slots, so it never takes
    /// a slot a client's request could have had. Also says whether a
    /// database call failed (could not be answered) on the way.
    pub async fn warm(
        &self,
        component: &LoadedComponent,
        request: Request,
    ) -> (Result<Response, InvokeError>, bool) {
        let Ok(_permit) = self.refreshes.acquire().await else {
            let closed = InvokeError::Exhausted("the runtime is shutting down".into());
            return (Err(closed), false);
        };
        let request = Incoming::from(request);
        let (response, ran) = self.answer(component, &request, Reading::Fresh).await;
        (response, ran.database_failed)
    }

    /// `invoke`, with stale-while-revalidate: a GET that misses an entry
    /// whose TTL ended within the revalidate window is answered from it at
    /// once (`X-Cache: STALE`), and the first such request per key runs
    /// the request again in the background, holding the key's fill, so
    /// that one run refreshes it while everyone else keeps getting the
    /// stale entry.
    pub async fn serve(
        self: &Arc<Self>,
        component: &Arc<LoadedComponent>,
        request: Request,
    ) -> Result<Response, InvokeError> {
        let reading = if request.method == http::Method::GET {
            Reading::Revalidating
        } else {
            Reading::Fresh
        };
        let request = Incoming::from(request);
        let (response, ran) = self.answer(component, &request, reading).await;
        // No refresh while the database fails (it would fail too), nor
        // past the refreshes' own slots: the keys' fills are released, and
        // a later request claims them again.
        if ran.refresh.is_empty() || ran.database_failed {
            return response;
        }
        let Ok(permit) = self.refreshes.clone().try_acquire_owned() else {
            return response;
        };
        let runtime = self.clone();
        let component = component.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let deadline = runtime.sandbox.deadline;
            let (refreshed, _) = runtime
                .run(&component, &request, Reading::Fresh, deadline, ran.refresh)
                .await;
            match refreshed {
                Ok(r) if r.status < 400 => {}
                Ok(r) => {
                    tracing::warn!(component = %component.name, status = r.status, "a background refresh was answered with an error; the entry stays stale")
                }
                Err(e) => {
                    tracing::warn!(component = %component.name, error = %e, "a background refresh failed; the entry stays stale")
                }
            }
        });
        response
    }

    /// A run in `reading` and, if it failed for want of the database, the
    /// stale replay (see `invoke`); a response made from stale entries is
    /// labelled so. A GET's or HEAD's 200 with a typed ETag that the
    /// request's `If-None-Match` names becomes a 304.
    async fn answer(
        &self,
        component: &LoadedComponent,
        request: &Incoming,
        reading: Reading,
    ) -> (Result<Response, InvokeError>, Ran) {
        let (response, ran) = self.answer_once(component, request, reading).await;
        // Only a read is answered so: for a write, a matching
        // `If-None-Match` (`*`, "create only if absent") is a precondition
        // the component decides on (RFC 9110, 13.1.2: 412, not 304).
        let read = matches!(request.request.method, Method::Get | Method::Head);
        if !read {
            return (response, ran);
        }
        (response.map(|r| not_modified(r, &request.headers)), ran)
    }

    /// `answer` but for `If-None-Match`.
    async fn answer_once(
        &self,
        component: &LoadedComponent,
        request: &Incoming,
        reading: Reading,
    ) -> (Result<Response, InvokeError>, Ran) {
        let grace = component.stale_grace.unwrap_or(self.sandbox.stale_grace);
        let (first, ran) = self
            .run(
                component,
                request,
                reading,
                self.sandbox.deadline,
                Vec::new(),
            )
            .await;
        let failed = !first.as_ref().is_ok_and(|r| r.status < 500);
        if !failed {
            return (labelled(first, ran.stale_age), ran);
        }
        let get = matches!(request.request.method, Method::Get);
        if !(get && !grace.is_zero() && ran.database_failed) {
            return (first, ran);
        }
        // The first run may have spent the whole deadline waiting on the
        // database; this one never waits on it.
        let budget = self.sandbox.deadline.min(STALE_REPLAY_DEADLINE);
        // Boxed, as are the other paths a cache hit never takes: a future
        // holds room for all it may await, and is copied whole each time
        // it moves (BENCHMARKS.md, "a ninth run").
        let (again, replayed) =
            Box::pin(self.run(component, request, Reading::Stale, budget, Vec::new())).await;
        match (again, replayed.stale_age) {
            (Ok(response), Some(age)) if response.status < 400 => {
                (labelled(Ok(response), Some(age)), ran)
            }
            _ => (first, ran),
        }
    }

    /// How many requests one instance of `component` may serve.
    pub fn instance_reuse(&self, component: &LoadedComponent) -> u32 {
        component
            .instance_reuse()
            .unwrap_or(self.sandbox.instance_reuse)
    }

    /// A new store for an instance of `component`, its epoch callback and
    /// memory cap set.
    fn store(&self, component: &LoadedComponent, turn: Turn) -> Store<Invocation> {
        let mut store = Store::new(
            &self.engine,
            Invocation::new(
                component,
                &self.sandbox,
                self.capabilities.clone(),
                self.flights.clone(),
                turn,
            ),
        );
        store.limiter(|s| s.limits());
        let busy = self.busy.clone();
        // Every tick a running instance yields its worker thread. Once it
        // has computed for `BUSY_AFTER_TICKS` ticks it also pauses for one
        // tick per busy instance, so that busy instances together take
        // about one core, and a looping component leaves the rest of the
        // machine to everyone else. The deadline is the current request's
        // (a warm instance serves several).
        store.epoch_deadline_callback(move |mut ctx| {
            let now = Instant::now();
            let expires = ctx.data().expires();
            if now >= expires {
                return Ok(UpdateDeadline::Interrupt);
            }
            let Some(busy_now) = ctx.data_mut().tick(&busy, BUSY_AFTER_TICKS) else {
                return Ok(UpdateDeadline::Yield(1));
            };
            let pause = (EPOCH_TICK * busy_now as u32).min(expires - now);
            Ok(UpdateDeadline::YieldCustom(
                1,
                Box::pin(tokio::time::sleep(pause)),
            ))
        });
        store
    }

    /// One run of `request` through an instance of `component`: a warm
    /// one of the same version if it opts in to reuse and one is idle,
    /// else a fresh one.
    async fn run(
        &self,
        component: &LoadedComponent,
        request: &Incoming,
        reading: Reading,
        deadline: Duration,
        filling: Vec<flights::FillGuard>,
    ) -> (Result<Response, InvokeError>, Ran) {
        // One clock read for both the deadline and the timeout below.
        let expires = Instant::now() + deadline;
        let reuse = self.instance_reuse(component);
        // A warm instance only while the version reuses: one whose reuse
        // was turned off serves none of those it left idle.
        let warm = if reuse > 1 {
            component.warm.take()
        } else {
            None
        };
        let turn = Turn {
            expires,
            reading,
            filling,
            headers: request.headers.clone(),
        };
        // `place`: a warm instance's place among those kept for reuse,
        // given back if it is retired (`reuse::Place`).
        let (mut store, warm_handler, served, held, place) = match warm {
            Some((mut warm, place)) => {
                warm.store.data_mut().begin(turn);
                let held = Some(warm.resources);
                (
                    warm.store,
                    Some(warm.handler),
                    warm.served,
                    held,
                    Some(place),
                )
            }
            None => {
                let store = self.store(component, turn);
                (store, None, 0, None, None)
            }
        };
        store.set_epoch_deadline(1);

        let run = async {
            let handler = match warm_handler {
                Some(handler) => handler,
                None => {
                    // Boxed: a warm instance's request never needs room
                    // for it (see `answer_once`).
                    let handler = Box::pin(component.pre.instantiate(&mut store)).await?;
                    store.data_mut().forget_growth();
                    handler
                }
            };
            let response = handler.call(&mut store, request).await?;
            Ok::<_, wasmtime::Error>((handler, response))
        };
        // The epoch callback stops wasm that computes past the deadline; this
        // timeout also stops a request stuck in a host call. The small grace
        // lets the epoch path report first when both apply.
        let outcome = tokio::time::timeout_at((expires + EPOCH_TICK * 4).into(), run).await;
        let memory_exceeded = store.data().memory_exceeded();
        let ran = store.data_mut().take_ran();
        let (result, handler) = match outcome {
            Err(_elapsed) => (Err(InvokeError::DeadlineExceeded(deadline)), None),
            Ok(Ok((handler, response))) => (response, Some(handler)),
            Ok(Err(err)) => (
                Err(types::classify(
                    err,
                    memory_exceeded,
                    deadline,
                    self.sandbox.memory_limit,
                )),
                None,
            ),
        };
        // Kept warm only after a request that ended well in every way; a
        // trap, a deadline, a bad response, a 5xx, a failed database call,
        // grown memory or leaked resources retire the instance (dropped
        // here).
        let served = served + 1;
        if reuse > 1 {
            // What it holds after its first request is what it keeps, and
            // `LAZY_RESOURCES` more that it may open later and keep (the
            // stdio streams wasi-libc opens on first use); past that, a
            // leak that would grow with every request.
            let resources = store.data_mut().resources();
            let retired = match (&handler, &result) {
                _ if served >= reuse => Some("served its requests"),
                (None, _) | (_, Err(_)) => Some("the request failed"),
                (_, Ok(r)) if r.status >= 500 => Some("a 5xx"),
                _ if ran.database_failed => Some("a database call failed"),
                // Its database calls were refused, unseen by `ran`.
                _ if reading == Reading::Stale => Some("a stale replay"),
                _ if store.data().memory_grew() => Some("its memory grew"),
                _ if held.is_some_and(|held| resources > held + LAZY_RESOURCES) => {
                    Some("it holds more resources")
                }
                _ => None,
            };
            match (retired, handler) {
                (None, Some(handler)) => {
                    store.data_mut().end();
                    let warm = Warm {
                        store,
                        handler,
                        served,
                        resources: held.unwrap_or(resources),
                    };
                    if component.warm.put(warm, place, Instant::now()).is_err() {
                        tracing::debug!(component = %component.name, "warm instance dropped: the pool is retired or full");
                    }
                }
                (why, _) => {
                    tracing::debug!(component = %component.name, served, why = why.unwrap_or_default(), "warm instance retired");
                }
            }
        }
        (result, ran)
    }
}

/// `response` to a GET or HEAD as `304 Not Modified` (no body, no
/// `content-type`; its ETag and X-Cache kept) when it is a 200 whose typed ETag the request's
/// `If-None-Match` names: the host answers conditional requests for the
/// ETags components give it typed (contract 0.2.0's `response.etag`).
fn not_modified(mut response: Response, headers: &http::HeaderMap) -> Response {
    if response.status != 200 {
        return response;
    }
    let Some(etag) = &response.etag else {
        return response;
    };
    // Every `If-None-Match` line counts: a list may come split over several.
    let named = headers
        .get_all(http::header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| cache_entry::if_none_match_names(v, etag));
    if named {
        response.status = 304;
        response.body = Vec::new();
        response
            .headers
            .retain(|(name, _)| !name.eq_ignore_ascii_case("content-type"));
    }
    response
}

/// `response` labelled as made from stale cache entries, the oldest `age`
/// old: `X-Cache: STALE` and `Age`, in place of what the component said.
fn labelled(
    response: Result<Response, InvokeError>,
    age: Option<Duration>,
) -> Result<Response, InvokeError> {
    match (response, age) {
        (Ok(mut response), Some(age)) => {
            response.headers.retain(|(name, _)| {
                !name.eq_ignore_ascii_case("x-cache") && !name.eq_ignore_ascii_case("age")
            });
            response.cache = Some(CacheStatus::Stale);
            response
                .headers
                .push(("age".into(), age.as_secs().to_string()));
            Ok(response)
        }
        (response, _) => response,
    }
}
