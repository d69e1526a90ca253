//! The cost of one request through the sandbox: a fresh instance from the
//! pre-instantiated component, the call, and the response, measured with
//! criterion. Needs the components built (`cargo xtask components`).
//!
//!     cargo bench -p host --bench invoke
//!
//! - `instantiate_and_call/describe`: the fixtures component describes the
//!   request it got (no capability calls): the floor of a request.
//! - `instantiate_and_call/categories_hit`: the marketplace component
//!   answers `GET /api/marketplace/categories` from the memory cache.
//! - `reuse_and_call/describe`, `reuse_and_call/categories_hit`: the same
//!   two with instance reuse on (a warm instance, no instantiation).
//! - `native/categories_hit`: the same cache read done natively, for scale.

use criterion::{Criterion, criterion_group, criterion_main};
use host::cache::{Cache, CacheMetrics, MemoryCache, Stamp, TieredCache};
use host::db::{Database, DbOptions, SqliteDatabase};
use host::runtime::{Capabilities, Request, Runtime, SandboxConfig};
use std::path::PathBuf;
use std::sync::Arc;

fn component(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/wasm32-wasip2/release")
        .join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; build the components first (`cargo xtask components`)",
            path.display()
        )
    })
}

fn get(path: &str) -> Request {
    Request::new(http::Method::GET, path)
}

/// Whether the component answered from the cache (`X-Cache: HIT`).
fn is_hit(r: &host::runtime::Response) -> bool {
    r.x_cache() == Some("HIT")
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (runtime, cache) = rt.block_on(async {
        let db = SqliteDatabase::open(
            "sqlite::memory:",
            &DbOptions {
                max_connections: 1,
                ..DbOptions::default()
            },
        )
        .await
        .unwrap();
        db.migrate().await.unwrap();
        let spec = host::seed::DemoSpec {
            seed: host::DEMO_SEED,
            agents: 50,
            now_ms: host::today_ms(),
        };
        host::seed::generate(&db, &spec).await.unwrap();
        let cache: Arc<dyn Cache> = Arc::new(TieredCache::memory_only(
            MemoryCache::new(64 << 20),
            Arc::new(CacheMetrics::default()),
        ));
        let capabilities = Capabilities {
            cache: cache.clone(),
            db: Arc::new(db),
        };
        let runtime = Runtime::new(SandboxConfig::default(), capabilities, None).unwrap();
        (runtime, cache)
    });
    // Each component loaded twice: once fresh per request (the default),
    // once reusing its instances.
    let load = |name: &str, reuse: Option<u32>| {
        let component = runtime.load(name, &component(name)).unwrap();
        component.set_instance_reuse(reuse);
        component
    };
    for (group, reuse) in [
        ("instantiate_and_call", None),
        ("reuse_and_call", Some(host::runtime::MAX_INSTANCE_REUSE)),
    ] {
        let fixtures = load("fixtures", reuse);
        let marketplace = load("marketplace", reuse);
        // Warm the cache entry the hit benchmarks read.
        let warm = rt
            .block_on(runtime.invoke(&marketplace, get("/api/marketplace/categories")))
            .unwrap();
        assert_eq!(warm.status, 200);

        let mut group = c.benchmark_group(group);
        group.bench_function("describe", |b| {
            b.iter(|| {
                rt.block_on(runtime.invoke(&fixtures, get("/fixture/describe")))
                    .unwrap()
            })
        });
        group.bench_function("categories_hit", |b| {
            b.iter(|| {
                let r = rt
                    .block_on(runtime.invoke(&marketplace, get("/api/marketplace/categories")))
                    .unwrap();
                assert_eq!(r.status, 200);
                assert!(is_hit(&r), "a cache hit every time");
                r
            })
        });
        group.finish();
    }
    c.bench_function("native/categories_hit", |b| {
        b.iter(|| {
            rt.block_on(cache.get("marketplace/marketplace:categories", &mut Stamp::default()))
                .unwrap()
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
