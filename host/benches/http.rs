//! One cache hit through the whole HTTP application, without sockets: the
//! router, admission, the request's conversion, the component (or the
//! native baseline) and the response, measured with criterion on one
//! worker thread. What the load benchmarks (`bench/ab.sh`) add on top is
//! the kernel: sockets, and waking the load generator. Needs the components
//! built (`cargo xtask components`).
//!
//!     cargo bench -p host --bench http
//!
//! - `http/details_fresh`: `GET /api/marketplace/agents/{id}`, a fresh
//!   instance per request.
//! - `http/details_reuse`: the same with instance reuse (1000).
//! - `http/details_native`: the native baseline's route for it
//!   (`/native/...`), the same bytes.
//! - `http/listing_fresh`, `http/listing_reuse`, `http/listing_native`:
//!   the same for the listing page of the load benchmarks
//!   (`/api/marketplace?category=coding&sortBy=popular&limit=20`).

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use criterion::{Criterion, criterion_group, criterion_main};
use host::Settings;
use host::http::HttpLimits;
use host::runtime::SandboxConfig;
use http_body_util::BodyExt as _;
use std::path::PathBuf;
use tower::ServiceExt as _;

/// A host on SQLite in `dir` with the demo data, the native baseline
/// mounted, and `instance_reuse` as the components' default.
async fn host(dir: &std::path::Path, instance_reuse: u32) -> Router {
    let wasm = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/wasm32-wasip2/release");
    assert!(
        wasm.join("marketplace.wasm").exists(),
        "build the components first (`cargo xtask components`)"
    );
    let manifest = dir.join("components.toml");
    std::fs::write(
        &manifest,
        format!(
            "dir = {:?}\n[[component]]\nname = \"marketplace\"\nfile = \"marketplace.wasm\"\nroutes = [\"/api/marketplace\"]\n",
            wasm.display().to_string()
        ),
    )
    .unwrap();
    let settings = Settings {
        database_url: format!("sqlite://{}", dir.join("bench.db").display()),
        db: host::db::DbOptions::default(),
        // Enough that the listing fills its page of 20, as in the load
        // benchmarks.
        demo_agents: 1000,
        manifest,
        sandbox: SandboxConfig {
            instance_reuse,
            ..SandboxConfig::default()
        },
        http: HttpLimits {
            native_baseline: true,
            ..HttpLimits::default()
        },
        memory_cache_bytes: 16 << 20,
        redis: None,
        state_dir: dir.join("state"),
        watch_components: false,
        reconcile_every: host::RECONCILE_EVERY,
        warm: host::warm::WarmSettings {
            top: 0,
            ..host::warm::WarmSettings::default()
        },
    };
    host::build(&settings).await.unwrap()
}

/// The status, whether it was a cache hit (`X-Cache: HIT`) and the body
/// of `GET path` through `app`.
async fn get(app: &Router, path: &str) -> (StatusCode, bool, axum::body::Bytes) {
    let request = Request::get(path)
        .header("host", "127.0.0.1")
        .body(Body::empty())
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let hit = response
        .headers()
        .get("x-cache")
        .is_some_and(|v| v.as_bytes() == b"HIT");
    (
        status,
        hit,
        response.into_body().collect().await.unwrap().to_bytes(),
    )
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let (fresh, reuse) = rt.block_on(async {
        (
            host(dirs[0].path(), 0).await,
            host(dirs[1].path(), 1000).await,
        )
    });
    // The two pages of the load benchmarks (`bench/common.sh`).
    let pages = [
        ("details", "/api/marketplace/agents/agent-000042"),
        (
            "listing",
            "/api/marketplace?category=coding&sortBy=popular&limit=20",
        ),
    ];
    let mut cases = Vec::new();
    for (page, path) in pages {
        let native = format!("/native{path}");
        // The entries the hits read (a miss on each host fills it), and
        // the check that both paths answer the same bytes.
        let (wasm_bytes, native_bytes) = rt.block_on(async {
            for app in [&fresh, &reuse] {
                let (status, _, _) = get(app, path).await;
                assert_eq!(status, StatusCode::OK);
            }
            (get(&fresh, path).await.2, get(&fresh, &native).await.2)
        });
        assert_eq!(
            wasm_bytes, native_bytes,
            "the baseline answers the same bytes"
        );
        cases.push((format!("{page}_fresh"), &fresh, path.to_string()));
        cases.push((format!("{page}_reuse"), &reuse, path.to_string()));
        cases.push((format!("{page}_native"), &reuse, native));
    }

    let mut group = c.benchmark_group("http");
    for (name, app, path) in &cases {
        let (app, path) = (*app, path.as_str());
        group.bench_function(name.as_str(), |b| {
            b.iter(|| {
                // A hit every time: a miss (or the native route handing
                // the request to the component) would measure the wrong path.
                let (status, hit, body) = rt.block_on(get(app, path));
                assert_eq!((status, hit), (StatusCode::OK, true));
                body
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
