//! Cache warming on SQLite and on PostgreSQL, on the memory tier and on
//! the Redis tier:
//! a host counts the anonymous GETs it answers through the cache into the
//! database; a host started afterwards (a restart, with a cold cache) runs
//! the most requested again before it takes traffic, so that they are
//! HITs from the first request; one started while the database is down
//! warms once it is back; and a deploy warms the component it swapped.

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use host::http::HttpLimits;
use host::runtime::SandboxConfig;
use std::time::Duration;
use support::proxy::Proxy;
use support::{DEFAULT_ROUTES, get, manifest_of, send, settings_with};

/// Requests made before the restart, most requested first: with
/// `--cache-warm 3`, the first three are warmed and the last is not.
const ASKED: &[(&str, usize)] = &[
    ("/api/marketplace?category=coding&limit=20", 6),
    ("/api/marketplace/agents/agent-000007", 5),
    ("/api/marketplace/categories", 4),
    ("/api/marketplace/trending?limit=5", 1),
];
const TOP: usize = 3;
const ADMIN: &str = "admin-secret-for-warming";

/// A host on `database_url` in `dir`, with Redis or not, that warms the
/// `TOP` most requested GETs, counts every 100 ms, and waits for warming at
/// start as long as it takes (within reason).
async fn host(
    dir: &std::path::Path,
    database_url: String,
    redis: Option<host::cache::RedisSettings>,
) -> Router {
    let mut settings = settings_with(
        dir,
        &manifest_of(DEFAULT_ROUTES),
        false,
        Some(database_url),
        redis,
        SandboxConfig::default(),
        HttpLimits {
            admin_token: Some(ADMIN.into()),
            ..HttpLimits::default()
        },
    );
    settings.warm = host::warm::WarmSettings {
        top: TOP,
        wait: Duration::from_secs(60),
        record_every: Duration::from_millis(100),
    };
    host::build(&settings).await.expect("host builds")
}

/// Makes the requests of `ASKED`, and more with a token (which are not
/// counted), and waits until the database at `url` holds their counts.
async fn ask(app: &Router, url: &str) {
    for (target, times) in ASKED {
        for _ in 0..*times {
            let (response, _) = get(app, target).await;
            assert_eq!(response.status(), 200, "{target}");
        }
    }
    for _ in 0..10 {
        let (response, _) = send(app, with_token(Request::get("/api/marketplace/featured"))).await;
        assert_eq!(response.status(), 200);
    }
    let want: i64 = ASKED.iter().map(|(_, n)| *n as i64).sum();
    let mut counted = 0;
    for _ in 0..200 {
        counted = hits(url).await;
        if counted == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(counted, want, "every request counted in the database");
}

/// The requests counted in the database at `url`.
async fn hits(url: &str) -> i64 {
    use sqlx::Connection as _;
    const SUM: &str = "SELECT CAST(COALESCE(SUM(hits), 0) AS BIGINT) FROM cache_warm";
    if url.starts_with("sqlite") {
        let mut conn = sqlx::SqliteConnection::connect(url).await.expect("SQLite");
        sqlx::query_scalar(SUM).fetch_one(&mut conn).await
    } else {
        let mut conn = sqlx::PgConnection::connect(url).await.expect("PostgreSQL");
        sqlx::query_scalar(SUM).fetch_one(&mut conn).await
    }
    .expect("the counts are readable")
}

/// `X-Cache` of the first request to each of `ASKED`.
async fn first_answers(app: &Router) -> Vec<(&'static str, String)> {
    let mut seen = Vec::new();
    for (target, _) in ASKED {
        let (response, _) = get(app, target).await;
        assert_eq!(response.status(), 200, "{target}");
        let x_cache = response
            .headers()
            .get("x-cache")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        seen.push((*target, x_cache));
    }
    seen
}

/// What warming should give: the `TOP` most requested HIT, the rest MISS.
fn expected() -> Vec<(&'static str, String)> {
    ASKED
        .iter()
        .enumerate()
        .map(|(i, (t, _))| (*t, if i < TOP { "HIT" } else { "MISS" }.to_string()))
        .collect()
}

/// `request` with the demo token.
fn with_token(request: axum::http::request::Builder) -> Request<Body> {
    request
        .header(
            "authorization",
            format!("Bearer {}", host::seed::DEMO_TOKEN),
        )
        .body(Body::empty())
        .unwrap()
}

/// The marketplace's entries warming filled (`marketplace_cache_warmed_total`).
async fn warmed(app: &Router) -> u64 {
    let (_, body) = get(app, "/metrics").await;
    String::from_utf8(body)
        .expect("metrics are text")
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                "marketplace_cache_warmed_total{component=\"marketplace\",outcome=\"filled\"} ",
            )
        })
        .map_or(0, |v| v.trim().parse().expect("a counter value"))
}

/// Waits until `app` has warmed `n` requests, then asserts it did.
async fn until_warmed(app: &Router, n: u64) {
    let mut seen = 0;
    for _ in 0..300 {
        seen = warmed(app).await;
        if seen >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen, n, "requests warmed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_the_most_requested_pages_are_warm() {
    // The embedded stack (SQLite, memory tier) as a baseline, then
    // PostgreSQL with the memory tier and with Redis.
    let embedded = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}", embedded.path().join("shared.db").display());
    for (tier, postgres, redis) in [
        ("embedded", false, false),
        ("memory", true, false),
        ("redis", true, true),
    ] {
        let schema = if postgres {
            let Some(schema) = support::postgres::fresh_schema().await else {
                return;
            };
            Some(schema)
        } else {
            None
        };
        let url = schema.as_ref().map_or(sqlite.clone(), |s| s.url.clone());
        let prefix = if redis {
            let Some(url) = support::redis::server_url() else {
                return;
            };
            Some(support::redis::fresh_prefix(&url))
        } else {
            None
        };
        let redis_settings = || prefix.as_ref().map(|p| p.settings.clone());
        let before = tempfile::tempdir().unwrap();
        let app = host(before.path(), url.clone(), redis_settings()).await;
        ask(&app, &url).await;
        drop(app);
        // A cold start: a new host (its memory tier empty), and Redis,
        // where there is one, emptied.
        if let Some(prefix) = &prefix {
            prefix.clear();
        }
        let after = tempfile::tempdir().unwrap();
        let app = host(after.path(), url.clone(), redis_settings()).await;
        assert_eq!(first_answers(&app).await, expected(), "{tier}");
        assert_eq!(warmed(&app).await, TOP as u64, "{tier}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_started_while_the_database_is_down_warms_once_it_is_back() {
    let Some(schema) = support::postgres::fresh_schema().await else {
        return;
    };
    let before = tempfile::tempdir().unwrap();
    let app = host(before.path(), schema.url.clone(), None).await;
    ask(&app, &schema.url).await;
    drop(app);

    let proxy = Proxy::start(schema.server(), false).await;
    let after = tempfile::tempdir().unwrap();
    // Start does not wait (60 s) for warming while the database is down.
    let started = std::time::Instant::now();
    let app = host(after.path(), schema.url_via(proxy.addr), None).await;
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "start waited {:?}",
        started.elapsed()
    );
    assert_eq!(warmed(&app).await, 0);
    proxy.restore();
    until_warmed(&app, TOP as u64).await;
    assert_eq!(first_answers(&app).await, expected());
}

// The deploy keeps the component's cache namespace, so warming refills
// what the new version does not find: here, the pages an install
// invalidated just before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_warms_the_component_it_swapped() {
    let Some(schema) = support::postgres::fresh_schema().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let app = host(dir.path(), schema.url.clone(), None).await;
    ask(&app, &schema.url).await;
    assert_eq!(warmed(&app).await, 0, "nothing counted at start");
    // Invalidates the listing, agent-000007's details and the categories.
    let install = Request::post("/api/marketplace/agents/agent-000007/install")
        .header("content-type", "application/json")
        .header(
            "authorization",
            format!("Bearer {}", host::seed::DEMO_TOKEN),
        )
        .body(Body::from(r#"{"workspaceId":"ws-demo"}"#))
        .unwrap();
    let (response, body) = send(&app, install).await;
    assert_eq!(response.status(), 201, "{}", String::from_utf8_lossy(&body));

    let bytes = std::fs::read(support::components_dir().join("marketplace.wasm")).unwrap();
    let upload = Request::put("/admin/components/marketplace")
        .header("content-type", "application/wasm")
        .header("authorization", format!("Bearer {ADMIN}"))
        .body(Body::from(bytes))
        .unwrap();
    let (response, body) = send(&app, upload).await;
    assert_eq!(response.status(), 200, "{}", String::from_utf8_lossy(&body));
    until_warmed(&app, TOP as u64).await;
    assert_eq!(first_answers(&app).await, expected());
}
