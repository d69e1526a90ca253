//! Shared set-up for the tests of the whole system: a fresh SQLite database
//! and manifest in a temporary directory per test, the components built by
//! `cargo xtask test`, and hosts reached through their router or over real
//! HTTP ([`serve`]).

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response};
use host::Settings;
use host::http::HttpLimits;
use host::runtime::SandboxConfig;
use http_body_util::BodyExt;
use std::path::PathBuf;
use tower::ServiceExt;

pub mod postgres;
pub mod proxy;
pub mod redis;
pub mod served;

/// Where `cargo xtask` puts the built components.
pub fn components_dir() -> PathBuf {
    let dir = std::env::var_os("COMPONENTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/wasm32-wasip2/release")
        });
    let probe = dir.join("fixtures.wasm");
    assert!(
        probe.is_file(),
        "{} is missing: build the components first with `cargo xtask components` (or run `cargo xtask test`)",
        probe.display()
    );
    dir
}

/// The bytes of the built component `file`.
pub fn wasm(file: &str) -> Vec<u8> {
    std::fs::read(components_dir().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// `file` with a custom section naming `n` appended: a distinct build of
/// the same component (custom sections may come anywhere).
pub fn build_of(file: &str, n: u8) -> Vec<u8> {
    let name = b"build";
    let mut bytes = wasm(file);
    bytes.extend([0x00, (1 + name.len() + 1) as u8, name.len() as u8]);
    bytes.extend(name);
    bytes.push(n);
    bytes
}

/// A host over a fresh database with the given components and limits.
pub struct TestHost {
    pub app: Router,
    /// Keeps the database and manifest alive for the test's duration.
    pub _dir: tempfile::TempDir,
}

/// The default test routes: the product's routes (as in `components.toml`)
/// and the fixtures under `/fixture`.
pub const DEFAULT_ROUTES: &[(&str, &str, &[&str])] = &[
    ("marketplace", "marketplace.wasm", &["/api/marketplace"]),
    ("templates", "templates.wasm", &["/api/templates"]),
    ("fixtures", "fixtures.wasm", &["/fixture"]),
];

pub async fn host(sandbox: SandboxConfig) -> TestHost {
    host_with(sandbox, HttpLimits::default(), DEFAULT_ROUTES).await
}

pub async fn host_with(
    sandbox: SandboxConfig,
    http: HttpLimits,
    routes: &[(&str, &str, &[&str])],
) -> TestHost {
    host_on(None, None, sandbox, http, routes).await
}

/// A host on `database_url` (default: a fresh SQLite file) with `redis`
/// (default: the memory tier only).
pub async fn host_on(
    database_url: Option<String>,
    redis: Option<host::cache::RedisSettings>,
    sandbox: SandboxConfig,
    http: HttpLimits,
    routes: &[(&str, &str, &[&str])],
) -> TestHost {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let app = build_in(dir.path(), database_url, redis, sandbox, http, routes).await;
    TestHost { app, _dir: dir }
}

/// Sends `request` through the router and collects the response.
pub async fn send(app: &Router, request: Request<Body>) -> (Response<()>, Vec<u8>) {
    let response = app
        .clone()
        .oneshot(request)
        .await
        .expect("the router is infallible");
    let (parts, body) = response.into_parts();
    let bytes = body
        .collect()
        .await
        .expect("body readable")
        .to_bytes()
        .to_vec();
    (Response::from_parts(parts, ()), bytes)
}

pub async fn get(app: &Router, uri: &str) -> (Response<()>, Vec<u8>) {
    send(app, Request::get(uri).body(Body::empty()).unwrap()).await
}

/// The body as JSON, failing the test with the body shown if it is not.
pub fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)))
}

/// Asserts the error shape of the spec and returns its code.
pub fn error_code(body: &[u8]) -> String {
    let v = json(body);
    let code = v["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error.code in {v}"));
    assert!(v["error"]["message"].is_string(), "no error.message in {v}");
    code.to_string()
}

/// The value of one counter in `/metrics`, 0 if absent.
pub async fn counter(app: &Router, endpoint: &str, tier: &str, outcome: &str) -> u64 {
    let (_, body) = get(app, "/metrics").await;
    let text = String::from_utf8(body).expect("metrics are text");
    let series = format!(
        "marketplace_cache_operations_total{{endpoint=\"{endpoint}\",tier=\"{tier}\",outcome=\"{outcome}\"}} "
    );
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .map(|v| v.trim().parse().expect("a counter value"))
        .unwrap_or(0)
}

/// A host whose database (by default), manifest and state live in `dir`:
/// building a second one in the same directory is a restart.
pub async fn build_in(
    dir: &std::path::Path,
    database_url: Option<String>,
    redis: Option<host::cache::RedisSettings>,
    sandbox: SandboxConfig,
    http: HttpLimits,
    routes: &[(&str, &str, &[&str])],
) -> Router {
    let manifest = manifest_of(routes);
    build_with(dir, &manifest, false, database_url, redis, sandbox, http).await
}

/// A manifest of the built components serving `routes`.
pub fn manifest_of(routes: &[(&str, &str, &[&str])]) -> String {
    let mut manifest = format!("dir = {:?}\n", components_dir().display().to_string());
    for (name, file, prefixes) in routes {
        manifest.push_str(&format!(
            "[[component]]\nname = {name:?}\nfile = {file:?}\nroutes = {prefixes:?}\n"
        ));
    }
    manifest
}

/// A host in `dir` with the manifest `manifest`, watching its components'
/// files if `watch`.
pub async fn build_with(
    dir: &std::path::Path,
    manifest: &str,
    watch: bool,
    database_url: Option<String>,
    redis: Option<host::cache::RedisSettings>,
    sandbox: SandboxConfig,
    http: HttpLimits,
) -> Router {
    let settings = settings_with(dir, manifest, watch, database_url, redis, sandbox, http);
    host::build(&settings).await.expect("host builds")
}

/// The settings of a host in `dir` (see `build_with`), its manifest
/// written there.
pub fn settings_with(
    dir: &std::path::Path,
    manifest: &str,
    watch: bool,
    database_url: Option<String>,
    redis: Option<host::cache::RedisSettings>,
    sandbox: SandboxConfig,
    http: HttpLimits,
) -> Settings {
    let manifest_path = dir.join("components.toml");
    std::fs::write(&manifest_path, manifest).expect("manifest written");
    Settings {
        database_url: database_url
            .unwrap_or_else(|| format!("sqlite://{}", dir.join("test.db").display())),
        db: host::db::DbOptions {
            acquire_timeout: std::time::Duration::from_millis(500),
            ..host::db::DbOptions::default()
        },
        demo_agents: host::DEMO_AGENTS,
        manifest: manifest_path,
        sandbox,
        http,
        memory_cache_bytes: 16 << 20,
        redis,
        state_dir: dir.join("state"),
        watch_components: watch,
        reconcile_every: host::RECONCILE_EVERY,
        // Off but in the tests about it (`cache/warm.rs`): no other test's
        // counters see its requests.
        warm: host::warm::WarmSettings {
            top: 0,
            ..host::warm::WarmSettings::default()
        },
    }
}
