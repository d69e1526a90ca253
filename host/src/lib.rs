//! The agent marketplace host: an HTTP server whose endpoint logic runs in
//! sandboxed WebAssembly components.
//!
//! - `runtime`: the wasmtime engine, component loading and per-request
//!   instantiation; the only module that knows about wasmtime.
//! - `cache`, `db`: the two capabilities components get, each a trait with
//!   its backends.
//! - `routes`, `registry`: the manifest's route table and the loaded
//!   components behind it.
//! - `http`: the axum application: in-flight bound, body limit, dispatch,
//!   and the one error type.
//! - `auth`: bearer tokens to principals.
//! - `admin_client`: the deploy CLI's requests to the admin API.
//! - `request`: the request, principal and response types every layer
//!   shares.
//! - `seed`: the deterministic demo dataset.
//! - `metrics`: the one registry every capability reports to.
//! - `relay`: delivers cache invalidations across the fleet.
//! - `versions`: component versions in the database, the fleet's truth.
//! - `warm`: counts the most requested GETs and refills the cache with
//!   them on start and after a deploy.
//!
//! `Settings` gathers the configuration; `build` wires everything;
//! `run` serves until shutdown.

pub mod admin_client;
pub mod auth;
pub mod cache;
pub mod db;
pub mod deployments;
mod files;
pub mod http;
pub mod metrics;
pub mod registry;
pub mod relay;
pub mod request;
pub mod routes;
pub mod runtime;
pub mod seed;
pub mod versions;
pub mod warm;
pub mod watch;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Seed of the demo dataset.
pub const DEMO_SEED: u64 = 42;
/// Agents in the default demo dataset.
pub const DEMO_AGENTS: usize = 300;
/// How often the host retries migrating a database that was down at start.
const PREPARE_RETRY: Duration = Duration::from_secs(2);
/// How often a host reads which component versions are active, besides
/// when a deploy's notification (PostgreSQL) wakes it.
pub const RECONCILE_EVERY: Duration = Duration::from_secs(1);
/// How often a host writes its heartbeat (what it serves) for the fleet
/// view.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);

/// Everything the host needs to start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `sqlite://…` or `postgres://…` database to open and migrate.
    pub database_url: String,
    /// Pool and timeout settings of the database.
    pub db: db::DbOptions,
    /// Agents of the demo dataset generated in an empty database; 0 for
    /// none.
    pub demo_agents: usize,
    /// The component manifest (route table).
    pub manifest: PathBuf,
    /// Sandbox limits.
    pub sandbox: runtime::SandboxConfig,
    /// HTTP limits.
    pub http: http::HttpLimits,
    /// Bytes the in-process cache may hold.
    pub memory_cache_bytes: u64,
    /// Redis, if configured; otherwise the memory tier only.
    pub redis: Option<cache::RedisSettings>,
    /// Where deployed components (`deployments/`) and compiled artifacts
    /// (`compiled/`) are kept across restarts.
    pub state_dir: PathBuf,
    /// Whether to deploy a component when its file in the manifest's
    /// directory changes.
    pub watch_components: bool,
    /// Cache warming.
    pub warm: warm::WarmSettings,
    /// How often the host reads which component versions are active
    /// (`RECONCILE_EVERY`), besides when a notification wakes it.
    pub reconcile_every: Duration,
}

/// Connects the capabilities, loads the components and builds the router.
///
/// A database that is unreachable at start does not stop the host: requests
/// that need it get 503 while a background task retries the migrations
/// (and the demo data) until they succeed.
pub async fn build(settings: &Settings) -> anyhow::Result<axum::Router> {
    build_wrapping(settings, |databases| databases).await
}

/// `build`, with the database's two views passed through `wrap` before
/// anything uses them: the seam through which tests put a fault between
/// two of the host's steps (a `Database` that delegates, then fails or
/// freezes).
pub async fn build_wrapping(
    settings: &Settings,
    wrap: impl FnOnce(db::Databases) -> db::Databases,
) -> anyhow::Result<axum::Router> {
    let databases = wrap(db::connect(&settings.database_url, &settings.db).await?);
    let gate = Arc::new(db::Gate::new(databases.host));
    let component_gate = Arc::new(gate.sibling(databases.components));
    let demo = (settings.demo_agents > 0).then(|| seed::DemoSpec {
        seed: DEMO_SEED,
        agents: settings.demo_agents,
        now_ms: today_ms(),
    });
    match prepare(&gate, demo.as_ref()).await {
        Ok(()) => {}
        Err(db::DbError::Unavailable(reason)) => {
            tracing::warn!(%reason, "database unreachable at start; serving what the cache can and retrying");
            let gate = gate.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(PREPARE_RETRY).await;
                    match prepare(&gate, demo.as_ref()).await {
                        Ok(()) => break,
                        Err(e) => tracing::debug!(error = %e, "database still not ready"),
                    }
                }
            });
        }
        Err(other) => return Err(anyhow::anyhow!(other).context("preparing the database")),
    }
    let mut reported = prometheus_client::registry::Registry::default();
    let statements = db::Counted::counter(&mut reported);
    let db: Arc<dyn db::Database> = Arc::new(db::Counted::new(gate.clone(), statements.clone()));
    let component_db: Arc<dyn db::Database> =
        Arc::new(db::Counted::new(component_gate, statements));
    let cache_metrics = Arc::new(cache::CacheMetrics::default());
    cache_metrics.register(&mut reported);
    // Uncounted: `marketplace_db_statements_total` counts what requests run.
    let lag = relay::Lag::new(&mut reported);
    let relay = Arc::new(relay::Relay::new(gate.clone(), lag, &mut reported));
    let memory = cache::MemoryCache::new(settings.memory_cache_bytes);
    let cache = Arc::new(match &settings.redis {
        None => cache::TieredCache::memory_only(memory, cache_metrics),
        Some(redis) => {
            let redis = cache::RedisCache::new(redis.clone())?;
            let backlog: Arc<dyn cache::Backlog> = relay.clone();
            cache::TieredCache::with_redis(memory, redis, Some(backlog), cache_metrics).await
        }
    });
    relay.clone().spawn(&cache);
    if settings.database_url.starts_with("postgres") {
        relay::listen(settings.database_url.clone(), &cache, &relay);
    }
    let capabilities = runtime::Capabilities {
        cache,
        db: component_db,
    };
    let runtime = Arc::new(runtime::Runtime::new(
        settings.sandbox.clone(),
        capabilities,
        Some(settings.state_dir.join("compiled")),
    )?);
    let fleet =
        versions::VersionStore::new(gate.clone(), settings.database_url.starts_with("postgres"));
    let registry = Arc::new(
        registry::Registry::from_manifest(
            &runtime,
            &settings.manifest,
            Some(deployments::DeploymentStore::new(
                settings.state_dir.join("deployments"),
            )),
        )?
        .with_fleet(fleet, runtime.clone()),
    );
    // A host that starts serves what the fleet's record says is active;
    // with the database down, what it served last, until it is back.
    if gate.is_ready() {
        registry.converge_within(versions::CONVERGE_BOUND).await;
    }
    registry::spawn_reconcile(&registry, settings.reconcile_every);
    versions::spawn_heartbeat(&registry, host_id(), HEARTBEAT_EVERY);
    if settings.database_url.starts_with("postgres") {
        versions::listen(settings.database_url.clone(), &registry);
    }
    if settings.watch_components {
        let (manifest, dir) = routes::Manifest::load(&settings.manifest)?;
        let files = manifest
            .components
            .iter()
            .filter_map(|c| Some((c.name.clone(), c.file.file_name()?.to_os_string())))
            .collect();
        watch::spawn(&dir, files, runtime.clone(), registry.clone())?;
    }
    let warmer = warm::Warmer::new(
        settings.warm.clone(),
        runtime.clone(),
        registry.clone(),
        gate.clone(),
        &mut reported,
    );
    warmer.start(gate.is_ready()).await;
    let metrics = Arc::new(metrics::Metrics::new(reported));
    let state = http::AppState::new(
        runtime,
        registry,
        db,
        metrics,
        warmer,
        settings.http.clone(),
    );
    Ok(http::app(state))
}

/// Migrates, seeds the demo data if asked and the database is empty, and
/// opens the gate.
async fn prepare(gate: &db::Gate, demo: Option<&seed::DemoSpec>) -> Result<(), db::DbError> {
    gate.inner().migrate().await?;
    if let Some(spec) = demo {
        match seed::seed_if_empty(gate.inner(), spec).await? {
            seed::SeedOutcome::Generated | seed::SeedOutcome::Present => tracing::info!(
                token = seed::DEMO_TOKEN,
                workspace = seed::DEMO_WORKSPACE,
                "demo data ready; use the demo token as `Authorization: Bearer <token>`"
            ),
            seed::SeedOutcome::Skipped => {
                tracing::info!("the database already holds data; no demo data generated")
            }
            seed::SeedOutcome::Concurrent => {
                tracing::info!(
                    "another host is generating the demo data; it is ready when that host says so"
                )
            }
        }
    }
    gate.mark_ready();
    tracing::info!("database ready");
    Ok(())
}

/// This host's name in the fleet view: the machine's host name, the
/// process id and a random suffix (several hosts may share a process).
fn host_id() -> String {
    let machine = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into());
    let suffix = getrandom::u32().unwrap_or(0) & 0xffff;
    format!("{machine}-{}-{suffix:04x}", std::process::id())
}

/// Now, in epoch milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Today's midnight (UTC) in epoch milliseconds: the demo dataset's "now",
/// so that a day's generations are identical and install times are recent.
pub fn today_ms() -> i64 {
    const DAY_MS: i64 = 86_400_000;
    let now = now_ms();
    now - now % DAY_MS
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets requests
/// in flight finish for at most `drain`. A client that has not sent a whole
/// request head within `header_timeout` is disconnected.
pub async fn run(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
    header_timeout: Duration,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use tower::ServiceExt as _;
    // axum::serve has no header timeout: this is its loop, with one.
    // HTTP/1.1 only: the header timeout is an HTTP/1 setting, and cleartext
    // HTTP/2 (h2c) would let one connection hold many streams without it.
    let mut builder =
        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: back off, go on.
                tracing::warn!(error = %e, "could not accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(app.clone().map_request(
            |r: axum::http::Request<hyper::body::Incoming>| r.map(axum::body::Body::new),
        ));
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!("shutting down: draining requests in flight");
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(drain) => {
            tracing::warn!(?drain, "drain timed out; abandoning requests still in flight");
        }
    }
    Ok(())
}
