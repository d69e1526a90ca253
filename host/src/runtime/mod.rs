//! The component runtime: the only module that knows about wasmtime.
//!
//! - `Runtime` owns the one `Engine` (component model, async, pooling
//!   allocator, epoch interruption driven by one ticker thread) and the
//!   `Linker` that offers components exactly the `handler` world's imports
//!   plus the minimal WASI that `wasm32-wasip2` std needs to start.
//! - `Runtime::load` compiles a component and type-checks it against the
//!   world (pre-instantiation) before anything can use it.
//! - `Runtime::invoke` runs one request in a fresh `Store` and instance,
//!   with a deadline and a memory cap.
//! - `bindings` (private) holds the generated code; `invocation` implements
//!   the imports on the per-request store state; `wasi` links WASI without
//!   sockets, preopens or environment.
//!
//! **Invariant:** a request's instance is never reused: every `invoke`
//! instantiates afresh from the pre-instantiated component, so no state
//! leaks between requests.

mod bindings;
pub mod flights;
mod invocation;
mod wasi;

use crate::cache::Cache;
use crate::db::Database;
use anyhow::Context as _;
use bindings::marketplace::host::types;
use invocation::Invocation;
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap,
    UpdateDeadline,
};

/// How often the engine's epoch advances: the granularity of deadlines and
/// of the cooperative yields that keep a busy component from hogging a
/// worker thread.
const EPOCH_TICK: Duration = Duration::from_millis(5);
/// Epoch ticks seen while running wasm after which an instance counts as
/// busy: about 50 ms of computing. Ticks come only while wasm runs, so time
/// spent waiting on the database or the cache does not count.
const BUSY_AFTER_TICKS: u32 = 10;

/// Sandbox settings, fixed for the life of the runtime.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// The most requests running at once; sizes the instance pool.
    pub max_in_flight: u32,
    /// Each instance's linear memory cap, in bytes.
    pub memory_limit: usize,
    /// Wall-clock budget of one request, host calls included.
    pub deadline: Duration,
    /// Bytes of each instance's linear memory the pool keeps resident
    /// between instances (reset by `memset` rather than returned to the
    /// kernel): see BENCHMARKS.md for how it was chosen.
    pub keep_resident: usize,
    /// Whether an instance's memory is initialized by mapping the
    /// component's data copy-on-write (`true`) or by copying it (`false`):
    /// see BENCHMARKS.md for how it was chosen.
    pub memory_init_cow: bool,
    /// Bytes of each async fiber stack (the stack wasm runs on) kept
    /// resident between instances instead of being returned to the kernel.
    pub stack_keep_resident: usize,
    /// Whether the pool finds the pages an instance dirtied with Linux's
    /// `PAGEMAP_SCAN` and resets only those (up to `keep_resident` bytes of
    /// them), rather than resetting the lowest `keep_resident` bytes
    /// whether touched or not. Ignored where the kernel lacks it (before
    /// 6.7, or not Linux): see BENCHMARKS.md for how it was chosen.
    pub pagemap_scan: bool,
}

/// The default of `SandboxConfig::keep_resident`.
pub const DEFAULT_KEEP_RESIDENT: usize = 1 << 20;
/// The default of `SandboxConfig::stack_keep_resident`.
pub const DEFAULT_STACK_KEEP_RESIDENT: usize = 0;
/// The default of `SandboxConfig::memory_init_cow`.
pub const DEFAULT_MEMORY_INIT_COW: bool = true;
/// The default of `SandboxConfig::pagemap_scan`.
pub const DEFAULT_PAGEMAP_SCAN: bool = true;

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            max_in_flight: 64,
            memory_limit: 64 << 20,
            deadline: Duration::from_secs(10),
            keep_resident: DEFAULT_KEEP_RESIDENT,
            memory_init_cow: DEFAULT_MEMORY_INIT_COW,
            stack_keep_resident: DEFAULT_STACK_KEEP_RESIDENT,
            pagemap_scan: DEFAULT_PAGEMAP_SCAN,
        }
    }
}

/// The capabilities handed to components.
#[derive(Clone)]
pub struct Capabilities {
    /// Backs the `cache` import.
    pub cache: Arc<dyn Cache>,
    /// Backs the `db` import.
    pub db: Arc<dyn Database>,
}

pub use crate::request::{Principal, Request, Response};

/// Why a component could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("not a valid WebAssembly component: {0}")]
    Invalid(String),
    #[error("component does not fit the handler world: {0}")]
    WrongWorld(String),
}

/// Why a request to a component failed. Each variant is the component's own
/// failure; none affects other requests.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error("component ran past its deadline of {0:?}")]
    DeadlineExceeded(Duration),
    #[error("component exceeded its memory limit of {0} bytes")]
    MemoryLimit(usize),
    #[error("component trapped: {0}")]
    Trap(String),
    #[error("component returned an invalid status {0}")]
    InvalidStatus(u16),
    #[error("no instance slot available: {0}")]
    Exhausted(String),
}

/// A compiled, type-checked component, ready to instantiate per request.
pub struct LoadedComponent {
    /// The name it is routed and listed by.
    pub name: String,
    /// The cache namespace its keys and tags live in: its name unless the
    /// manifest gives it a shared one (the registry sets it).
    pub cache_namespace: Arc<str>,
    /// Hex SHA-256 of the `.wasm` bytes it was compiled from.
    pub digest: String,
    /// Size of those bytes.
    pub size: usize,
    /// The `.wasm` bytes, so the version can be recorded on disk.
    pub bytes: Arc<[u8]>,
    /// When it was loaded.
    pub loaded_at: SystemTime,
    /// Whether its compiled code came from the artifact cache.
    pub from_cache: bool,
    /// Pre-instantiated with the linker: imports resolved and type-checked.
    pre: bindings::HandlerPre<Invocation>,
}

impl std::fmt::Debug for LoadedComponent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedComponent")
            .field("name", &self.name)
            .field("digest", &self.digest)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// Stops the epoch ticker thread when the runtime is dropped.
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
    /// Instances running past `BUSY_AFTER` now.
    busy: Arc<AtomicUsize>,
    /// Where compiled components are kept by digest; `None`: not kept.
    artifacts: Option<PathBuf>,
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
        let engine = Engine::new(&engine_config(&sandbox))
            .map_err(anyhow::Error::from)
            .context("building the wasm engine")?;
        let mut linker = Linker::new(&engine);
        wasi::add_to_linker(&mut linker)?;
        bindings::Handler::add_to_linker::<_, HasSelf<Invocation>>(&mut linker, |s| s)?;

        let stop = Arc::new(AtomicBool::new(false));
        let ticker_engine = engine.clone();
        let ticker_stop = stop.clone();
        // A plain thread rather than a tokio task: it must keep ticking even
        // when every worker thread is busy running wasm, since the ticks are
        // what make that wasm yield.
        std::thread::Builder::new()
            .name("epoch-ticker".into())
            .spawn(move || {
                while !ticker_stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    ticker_engine.increment_epoch();
                }
            })
            .context("starting the epoch ticker")?;

        Ok(Self {
            engine,
            linker,
            sandbox,
            capabilities,
            flights: Arc::default(),
            busy: Arc::default(),
            artifacts,
            _ticker: TickerGuard(stop),
        })
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
        let digest = hex(&Sha256::digest(bytes));
        let (component, from_cache) = self.compile(&digest, bytes)?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::WrongWorld(format!("{e:#}")))?;
        let pre =
            bindings::HandlerPre::new(pre).map_err(|e| LoadError::WrongWorld(format!("{e:#}")))?;
        Ok(LoadedComponent {
            name: name.to_string(),
            cache_namespace: name.into(),
            digest,
            size: bytes.len(),
            bytes: bytes.into(),
            loaded_at: SystemTime::now(),
            from_cache,
            pre,
        })
    }

    /// The compiled component for `bytes`: from the artifact cache if it is
    /// there, else compiled (and then kept there).
    fn compile(&self, digest: &str, bytes: &[u8]) -> Result<(Component, bool), LoadError> {
        let artifact = self.artifacts.as_ref().map(|dir| {
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            self.engine
                .precompile_compatibility_hash()
                .hash(&mut hasher);
            dir.join(format!("{digest}-{:016x}.cwasm", hasher.finish()))
        });
        if let Some(path) = artifact.as_ref().filter(|p| p.is_file()) {
            // SAFETY: deserializing runs the machine code in the file. The
            // artifact directory holds only files this host wrote from
            // `Component::serialize` of a component it compiled and
            // validated itself, named by the source's digest and the
            // engine's compatibility hash; it is trusted like the binary.
            match unsafe { Component::deserialize_file(&self.engine, path) } {
                Ok(component) => return Ok((component, true)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "unusable compiled artifact; compiling again")
                }
            }
        }
        let component = Component::new(&self.engine, bytes)
            .map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
        if let Some(path) = artifact {
            match component.serialize() {
                Ok(code) => {
                    if let Err(e) = crate::files::write_atomically(&path, &code) {
                        tracing::warn!(path = %path.display(), error = %e, "could not keep the compiled artifact");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "could not serialize the compiled component"),
            }
        }
        Ok((component, false))
    }

    /// Runs `request` through a fresh instance of `component`.
    pub async fn invoke(
        &self,
        component: &LoadedComponent,
        request: Request,
    ) -> Result<Response, InvokeError> {
        let deadline = self.sandbox.deadline;
        let mut store = Store::new(
            &self.engine,
            Invocation::new(
                &component.name,
                component.cache_namespace.clone(),
                self.capabilities.clone(),
                self.flights.clone(),
                self.sandbox.memory_limit,
            ),
        );
        store.limiter(|s| s.limits());
        let expires = Instant::now() + deadline;
        let busy = self.busy.clone();
        store.set_epoch_deadline(1);
        // Every tick a running instance yields its worker thread. Once it
        // has computed for `BUSY_AFTER_TICKS` ticks it also pauses for one
        // tick per busy instance, so that busy instances together take
        // about one core, and a looping component leaves the rest of the
        // machine to everyone else.
        store.epoch_deadline_callback(move |mut ctx| {
            let now = Instant::now();
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

        let request = types::Request::from(request);
        let run = async {
            let handler = component.pre.instantiate_async(&mut store).await?;
            handler.call_handle(&mut store, &request).await
        };
        // The epoch callback stops wasm that computes past the deadline; this
        // timeout also stops a request stuck in a host call. The small grace
        // lets the epoch path report first when both apply.
        let outcome = tokio::time::timeout(deadline + EPOCH_TICK * 4, run).await;
        let memory_exceeded = store.data().memory_exceeded();
        match outcome {
            Err(_elapsed) => Err(InvokeError::DeadlineExceeded(deadline)),
            Ok(Ok(response)) => Response::try_from(response),
            Ok(Err(err)) => Err(classify(
                err,
                memory_exceeded,
                deadline,
                self.sandbox.memory_limit,
            )),
        }
    }
}

fn classify(
    err: wasmtime::Error,
    memory_exceeded: bool,
    deadline: Duration,
    memory_limit: usize,
) -> InvokeError {
    if err.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
        InvokeError::DeadlineExceeded(deadline)
    } else if memory_exceeded {
        InvokeError::MemoryLimit(memory_limit)
    } else if err
        .downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
        .is_some()
    {
        InvokeError::Exhausted(format!("{err:#}"))
    } else {
        InvokeError::Trap(format!("{err:#}"))
    }
}

fn engine_config(sandbox: &SandboxConfig) -> Config {
    let slots = sandbox.max_in_flight.max(1);
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(slots)
        // A wasip2 Rust component is a handful of core instances (the main
        // module plus shims); leave room for more.
        .total_core_instances(slots * 16)
        .total_memories(slots * 2)
        .total_tables(slots * 4)
        .total_stacks(slots)
        .max_memory_size(sandbox.memory_limit)
        // Keep the pages a small-stack guest touches resident between
        // instances instead of returning them to the kernel each time.
        .linear_memory_keep_resident(sandbox.keep_resident)
        .table_keep_resident(64 << 10)
        .async_stack_keep_resident(sandbox.stack_keep_resident)
        .pagemap_scan(if sandbox.pagemap_scan {
            Enabled::Auto
        } else {
            Enabled::No
        });

    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .memory_init_cow(sandbox.memory_init_cow)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    config
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            // Writing to a String cannot fail.
            let _ = write!(s, "{b:02x}");
            s
        })
}

impl From<Request> for types::Request {
    fn from(r: Request) -> Self {
        types::Request {
            method: r.method,
            path: r.path,
            query: r.query,
            headers: r
                .headers
                .into_iter()
                .map(|(name, value)| types::Header { name, value })
                .collect(),
            body: r.body,
            principal: r.principal.map(|p| types::Principal {
                user_id: p.user_id,
                workspace_ids: p.workspace_ids,
            }),
        }
    }
}

impl TryFrom<types::Response> for Response {
    type Error = InvokeError;

    fn try_from(r: types::Response) -> Result<Self, InvokeError> {
        if !(100..=599).contains(&r.status) {
            return Err(InvokeError::InvalidStatus(r.status));
        }
        Ok(Response {
            status: r.status,
            headers: r.headers.into_iter().map(|h| (h.name, h.value)).collect(),
            body: r.body,
        })
    }
}
