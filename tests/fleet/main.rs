//! Several hosts on one PostgreSQL schema and one Redis key prefix, as
//! users run a fleet: each host a full host in this process, with its own
//! caches and pools, and its Redis behind its own cuttable proxy where a
//! test cuts it. Tests wait for propagation with a generous bound, then
//! assert; they never assert timings.

mod canary;
mod crash;
mod deploys;
mod invalidation;
mod near;
mod workload;

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use host::cache::RedisSettings;
use host::http::HttpLimits;
use host::runtime::SandboxConfig;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::proxy::Proxy;
use support::redis::RedisPrefix;
use support::{DEFAULT_ROUTES, TestHost, host_on, json, send};

/// How long a test waits for a change to reach another host.
const PROPAGATION_BOUND: Duration = Duration::from_secs(10);

/// One fleet's shared engines: a fresh schema and a fresh Redis prefix.
struct Fleet {
    schema: support::postgres::PgSchema,
    prefix: RedisPrefix,
    redis: SocketAddr,
}

impl Fleet {
    /// `None` when the servers are not configured (and CI is not set).
    async fn new() -> Option<Self> {
        let schema = support::postgres::fresh_schema().await?;
        let url = support::redis::server_url()?;
        let redis: SocketAddr = url
            .trim_start_matches("redis://")
            .trim_end_matches('/')
            .parse()
            .expect("REDIS_URL of the form redis://127.0.0.1:6379");
        let prefix = support::redis::fresh_prefix(&url);
        Some(Self {
            schema,
            prefix,
            redis,
        })
    }

    /// A host reaching Redis directly.
    async fn host(&self) -> TestHost {
        self.host_with_redis(self.prefix.settings.clone()).await
    }

    /// A host reaching Redis through a proxy of its own.
    async fn host_behind_proxy(&self) -> (TestHost, Proxy) {
        let (settings, proxy) = self.redis_behind_proxy().await;
        (self.host_with_redis(settings).await, proxy)
    }

    /// This fleet's Redis settings through a new proxy.
    async fn redis_behind_proxy(&self) -> (RedisSettings, Proxy) {
        let proxy = Proxy::start(self.redis, true).await;
        let settings = RedisSettings {
            url: format!("redis://{}", proxy.addr),
            ..self.prefix.settings.clone()
        };
        (settings, proxy)
    }

    /// A host reaching Redis directly, its database views passed through
    /// `wrap` (see `host::build_wrapping`).
    async fn host_wrapping(
        &self,
        wrap: impl FnOnce(host::db::Databases) -> host::db::Databases,
    ) -> TestHost {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let settings = support::settings_with(
            dir.path(),
            &support::manifest_of(DEFAULT_ROUTES),
            false,
            Some(self.schema.url.clone()),
            Some(self.prefix.settings.clone()),
            SandboxConfig::default(),
            HttpLimits::default(),
        );
        let app = host::build_wrapping(&settings, wrap)
            .await
            .expect("host builds");
        TestHost { app, _dir: dir }
    }

    /// A host without Redis (its memory tier only).
    async fn host_without_redis(&self) -> TestHost {
        host_on(
            Some(self.schema.url.clone()),
            None,
            SandboxConfig::default(),
            HttpLimits::default(),
            DEFAULT_ROUTES,
        )
        .await
    }

    /// A host reaching Redis and PostgreSQL through proxies of its own.
    async fn host_behind_proxies(&self) -> (TestHost, Proxy, Proxy) {
        let (redis, redis_proxy) = self.redis_behind_proxy().await;
        let pg_proxy = Proxy::start(self.schema.server(), true).await;
        let host = host_on(
            Some(self.schema.url_via(pg_proxy.addr)),
            Some(redis),
            SandboxConfig::default(),
            HttpLimits::default(),
            DEFAULT_ROUTES,
        )
        .await;
        (host, redis_proxy, pg_proxy)
    }

    async fn host_with_redis(&self, redis: RedisSettings) -> TestHost {
        host_on(
            Some(self.schema.url.clone()),
            Some(redis),
            SandboxConfig::default(),
            HttpLimits::default(),
            DEFAULT_ROUTES,
        )
        .await
    }
}

/// An agent's details as `app` serves them: (x-cache, install count).
async fn details(app: &Router, id: &str) -> (String, i64) {
    let (response, body) = support::get(app, &format!("/api/marketplace/agents/{id}")).await;
    assert_eq!(response.status(), 200, "{}", String::from_utf8_lossy(&body));
    let cache = response.headers()["x-cache"].to_str().unwrap().to_string();
    let count = json(&body)["agent"]["installCount"]
        .as_i64()
        .expect("an install count");
    (cache, count)
}

/// Installs agent `id` in the demo workspace through `app`.
async fn install(app: &Router, id: &str) -> u16 {
    install_as(app, id, host::seed::DEMO_TOKEN, host::seed::DEMO_WORKSPACE)
        .await
        .0
}

/// Installs agent `id` in `workspace` with `token` through `app`: the
/// status and, on success, the agent's install count after it.
async fn install_as(app: &Router, id: &str, token: &str, workspace: &str) -> (u16, Option<i64>) {
    let request = Request::post(format!("/api/marketplace/agents/{id}/install"))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Body::from(format!(r#"{{"workspaceId":"{workspace}"}}"#)))
        .unwrap();
    let (response, body) = send(app, request).await;
    let count = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["agent"]["installCount"].as_i64());
    (response.status().as_u16(), count)
}

/// Waits until `check` holds, at most `PROPAGATION_BOUND`.
async fn eventually<F: std::future::Future<Output = bool>>(
    what: &str,
    mut check: impl FnMut() -> F,
) {
    let started = Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < PROPAGATION_BOUND,
            "{what}: not within {PROPAGATION_BOUND:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
