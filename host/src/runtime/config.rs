//! The sandbox settings and the wasmtime `Config` they make: the pooling
//! allocator sized for `max_in_flight` instances, the memory cap, epoch
//! interruption and the memory-reset settings chosen in BENCHMARKS.md.

use std::time::Duration;
use wasmtime::{Config, Enabled, InstanceAllocationStrategy, PoolingAllocationConfig};

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
    /// The longest TTL a component's cache entry gets, whatever it asks
    /// for; `None`: what it asks for.
    pub max_cache_ttl: Option<Duration>,
    /// How long a component's cache entries are kept after their TTL, to
    /// be served when the database cannot answer a GET (stale-if-error),
    /// unless its manifest entry says otherwise.
    pub stale_grace: Duration,
    /// How long after an entry's TTL a request that misses it is answered
    /// from it at once while one background run refreshes it
    /// (stale-while-revalidate); zero turns that off.
    pub revalidate_window: Duration,
    /// How many requests one instance may serve, for components whose
    /// manifest entry or upload says nothing (instance reuse); 0 or 1: a
    /// fresh instance per request.
    pub instance_reuse: u32,
}

/// The default of `SandboxConfig::revalidate_window`.
pub const DEFAULT_REVALIDATE_WINDOW: Duration = Duration::from_secs(10);

/// The default of `SandboxConfig::stale_grace`.
pub const DEFAULT_STALE_GRACE: Duration = Duration::from_secs(300);

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
            max_cache_ttl: None,
            stale_grace: DEFAULT_STALE_GRACE,
            revalidate_window: DEFAULT_REVALIDATE_WINDOW,
            instance_reuse: 0,
        }
    }
}

/// How many background refreshes (stale-while-revalidate) may run at
/// once: an eighth of the in-flight bound, at least one. They have instance
/// slots of their own, so they never take one from an admitted request.
pub(super) fn refresh_slots(sandbox: &SandboxConfig) -> u32 {
    (sandbox.max_in_flight / 8).max(1)
}

/// How many warm instances (instance reuse) may sit idle at once, all
/// components together: as many as requests may run at once. They have
/// instance slots of their own, so an idle one never keeps a request from
/// getting a slot.
pub(super) fn warm_slots(sandbox: &SandboxConfig) -> u32 {
    sandbox.max_in_flight.max(1)
}

/// The engine configuration for `sandbox`.
pub(super) fn engine_config(sandbox: &SandboxConfig) -> Config {
    // Room for the background refreshes and idle warm instances too (see
    // `refresh_slots` and `warm_slots`).
    let slots = sandbox.max_in_flight.max(1) + refresh_slots(sandbox) + warm_slots(sandbox);
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
    // For profiling only (BENCHMARKS.md, "How to run"): the compiled
    // components' functions named in `/tmp/perf-{pid}.map`, where `perf`,
    // or a script over callgrind's addresses, finds them.
    if std::env::var_os("MARKETPLACE_PERF_MAP").is_some() {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    config
}
