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
//! - `seed`: the deterministic demo dataset.
//!
//! `Settings` gathers the configuration; `build` wires everything;
//! `run` serves until shutdown.

pub mod cache;
pub mod db;
pub mod http;
pub mod registry;
pub mod routes;
pub mod runtime;
pub mod seed;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Seed of the demo dataset.
pub const DEMO_SEED: u64 = 42;
/// Agents in the demo dataset.
pub const DEMO_AGENTS: usize = 300;

/// Everything the host needs to start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `sqlite://…` database to open and migrate.
    pub database_url: String,
    /// The component manifest (route table).
    pub manifest: PathBuf,
    /// Sandbox limits.
    pub sandbox: runtime::SandboxConfig,
    /// HTTP limits.
    pub http: http::HttpLimits,
    /// Bytes the in-process cache may hold.
    pub memory_cache_bytes: u64,
}

/// Connects the capabilities, loads the components and builds the router.
pub async fn build(settings: &Settings) -> anyhow::Result<axum::Router> {
    let db = db::connect(&settings.database_url).await?;
    if seed::seed_if_empty(db.as_ref(), DEMO_AGENTS, DEMO_SEED).await? {
        tracing::info!(agents = DEMO_AGENTS, "demo dataset generated");
    }
    tracing::info!("cache: in-process memory tier");
    let cache: Arc<dyn cache::Cache> =
        Arc::new(cache::MemoryCache::new(settings.memory_cache_bytes));
    let capabilities = runtime::Capabilities { cache, db };
    let runtime = Arc::new(runtime::Runtime::new(
        settings.sandbox.clone(),
        capabilities,
    )?);
    let registry = Arc::new(registry::Registry::from_manifest(
        &runtime,
        &settings.manifest,
    )?);
    let state = http::AppState::new(runtime, registry, settings.http.clone());
    Ok(http::app(state))
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets requests
/// in flight finish for at most `drain`.
pub async fn run(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
) -> std::io::Result<()> {
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        tracing::info!("shutting down: draining requests in flight");
        let _ = stopping_tx.send(());
    });
    tokio::select! {
        result = server => result,
        () = async {
            // Only a sent signal starts the drain clock; a dropped sender
            // means the server already finished.
            if stopping_rx.await.is_ok() {
                tokio::time::sleep(drain).await;
            } else {
                std::future::pending::<()>().await;
            }
        } => {
            tracing::warn!(?drain, "drain timed out; abandoning requests still in flight");
            Ok(())
        }
    }
}
