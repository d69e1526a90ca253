//! One cache hit through the whole HTTP application, without sockets: the
//! router, admission, the request's conversion, the component (or the
//! native baseline) and the response, measured with criterion on one
//! worker thread. What the load benchmarks (`bench/ab.sh`) add on top is
//! the kernel: sockets, and waking the load generator. Needs the components
//! built (`cargo xtask components`).
//!
//!     cargo bench -p host --bench http
//!
//! With `HTTP_BENCH_CASE=details_reuse` (any case below) and
//! `HTTP_BENCH_ITERS=N` it runs that case N times instead, without
//! criterion, inside the one function `measured_requests`: what
//! `valgrind --tool=callgrind --collect-atstart=no
//! --toggle-collect='*measured_requests*'` counts, in instructions (the
//! same count whatever else the machine is doing; BENCHMARKS.md). With
//! `HTTP_BENCH_DIR=DIR` its hosts keep their databases and compiled
//! components in DIR, so that a run under valgrind need not compile them.
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
/// mounted, `instance_reuse` as the components' default, and room for
/// `max_in_flight` requests at once.
async fn host(dir: &std::path::Path, instance_reuse: u32, max_in_flight: u32) -> Router {
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
            max_in_flight,
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
    // `HTTP_BENCH_DIR`: directories kept between runs instead, so that a
    // run under callgrind loads the components compiled by one before it
    // rather than compiling them at valgrind's pace.
    let kept = std::env::var_os("HTTP_BENCH_DIR").map(PathBuf::from);
    let dir = |i: usize, name: &str| match &kept {
        Some(kept) => {
            let dir = kept.join(name);
            std::fs::create_dir_all(&dir).unwrap();
            dir
        }
        None => dirs[i].path().to_path_buf(),
    };
    // One request at a time is all either runs; a run of one case (as under
    // valgrind, which cannot reserve the address space of 64 slots) asks
    // for a pool of that size only.
    let in_flight = if std::env::var_os("HTTP_BENCH_CASE").is_some() {
        1
    } else {
        SandboxConfig::default().max_in_flight
    };
    let (fresh, reuse) = rt.block_on(async {
        (
            host(&dir(0, "fresh"), 0, in_flight).await,
            host(&dir(1, "reuse"), 1000, in_flight).await,
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

    if let Ok(case) = std::env::var("HTTP_BENCH_CASE") {
        let iters: u64 = std::env::var("HTTP_BENCH_ITERS")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(10_000);
        let (_, app, path) = cases
            .iter()
            .find(|(name, _, _)| *name == case)
            .unwrap_or_else(|| panic!("no case {case}"));
        measured_requests(&rt, app, path, iters);
        return;
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

/// `iters` cache hits on `path` through `app`, and nothing else: the
/// function a callgrind run counts.
#[inline(never)]
fn measured_requests(rt: &tokio::runtime::Runtime, app: &Router, path: &str, iters: u64) {
    for _ in 0..iters {
        let (status, hit, _) = rt.block_on(get(app, path));
        assert_eq!((status, hit), (StatusCode::OK, true));
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
