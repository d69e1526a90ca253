//! Authentication in the host, and serving while the database is away.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use host::http::HttpLimits;
use host::runtime::SandboxConfig;
use host::seed::{DEMO_TOKEN, DEMO_USER, DEMO_WORKSPACE};
use std::time::{Duration, Instant};
use support::{DEFAULT_ROUTES, error_code, get, host, host_on, json, send};

fn describe(token: Option<&str>) -> Request<Body> {
    let mut r = Request::get("/fixture/describe");
    if let Some(t) = token {
        r = r.header("authorization", t);
    }
    r.body(Body::empty()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_created_token_authenticates_its_user_with_its_workspace() {
    let h = host(SandboxConfig::default()).await;
    let url = format!("sqlite://{}", h._dir.path().join("test.db").display());
    let databases = host::db::connect(&url, &host::db::DbOptions::default())
        .await
        .unwrap();
    let token = host::auth::create_token(
        databases.host.as_ref(),
        "user-ops",
        "ops@example.com",
        Some("ws-ops"),
        "test",
        host::now_ms(),
    )
    .await
    .unwrap();
    assert_eq!(token.len(), 64);
    let (response, body) = send(&h.app, describe(Some(&format!("Bearer {token}")))).await;
    assert_eq!(response.status(), StatusCode::OK);
    let principal = &json(&body)["principal"];
    assert_eq!(principal["userId"], "user-ops");
    assert_eq!(principal["workspaceIds"], serde_json::json!(["ws-ops"]));
}

/// Statements the host has run against its database so far.
async fn statements(app: &axum::Router) -> u64 {
    let (_, body) = get(app, "/metrics").await;
    String::from_utf8(body)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("marketplace_db_statements_total "))
        .expect("a statement counter")
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authenticated_request_costs_one_token_query() {
    let h = host(SandboxConfig::default()).await;
    let before = statements(&h.app).await;
    let (response, body) = send(&h.app, describe(Some(&format!("Bearer {DEMO_TOKEN}")))).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        json(&body)["principal"]["workspaceIds"],
        serde_json::json!([DEMO_WORKSPACE])
    );
    assert_eq!(statements(&h.app).await - before, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_token_becomes_the_principal_the_component_sees() {
    let h = host(SandboxConfig::default()).await;
    let (response, body) = send(&h.app, describe(Some(&format!("Bearer {DEMO_TOKEN}")))).await;
    assert_eq!(response.status(), StatusCode::OK);
    let principal = &json(&body)["principal"];
    assert_eq!(principal["userId"], DEMO_USER);
    assert_eq!(
        principal["workspaceIds"],
        serde_json::json!([DEMO_WORKSPACE])
    );

    let (_, body) = send(&h.app, describe(None)).await;
    assert!(json(&body)["principal"].is_null(), "no token, no principal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_or_malformed_token_is_401_before_any_component_runs() {
    let h = host(SandboxConfig::default()).await;
    for header in [
        "Bearer not-a-token",
        "Basic dXNlcjpwdw==",
        "Bearer",
        "token-without-scheme",
    ] {
        // The trap fixture would answer 500 if it ran.
        let request = Request::get("/fixture/trap")
            .header("authorization", header)
            .body(Body::empty())
            .unwrap();
        let (response, body) = send(&h.app, request).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{header}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        assert_eq!(error_code(&body), "unauthorized", "{header}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_starts_without_its_database_and_catches_up_when_it_returns() {
    let Some(schema) = support::postgres::fresh_schema().await else {
        return;
    };
    let upstream = "127.0.0.1:5432".parse().unwrap();
    let proxy = support::proxy::Proxy::start(upstream, false).await;
    let url = schema
        .url
        .replacen("127.0.0.1:5432", &proxy.addr.to_string(), 1);
    assert_ne!(
        url, schema.url,
        "DATABASE_URL must point at 127.0.0.1:5432 for this test"
    );

    let h = host_on(
        Some(url),
        None,
        SandboxConfig::default(),
        HttpLimits::default(),
        DEFAULT_ROUTES,
    )
    .await;

    // Requests that need the database get 503 with Retry-After ...
    let (response, body) = get(&h.app, "/api/marketplace/categories").await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(error_code(&body), "database_unavailable");
    let (response, _) = send(&h.app, describe(Some(&format!("Bearer {DEMO_TOKEN}")))).await;
    assert_eq!(
        response.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "authentication needs the database"
    );
    // ... and requests that do not are served.
    let (response, _) = get(&h.app, "/fixture/echo").await;
    assert_eq!(response.status(), StatusCode::OK);

    // When the database returns, the host migrates, seeds and serves.
    proxy.restore();
    let started = Instant::now();
    loop {
        let (response, body) = get(&h.app, "/api/marketplace/categories").await;
        if response.status() == StatusCode::OK {
            assert_eq!(json(&body)["categories"].as_array().unwrap().len(), 12);
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "still {} after 30 s",
            response.status()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A cut after that is survived too: what is cached is still served
    // (fresh until the listener notices it lost its connection, then
    // marked stale, since other hosts' writes could no longer be heard),
    // what needs the database is 503, and all is well once it is back.
    proxy.cut().await;
    let started = Instant::now();
    loop {
        let (response, _) = get(&h.app, "/api/marketplace/categories").await;
        assert_eq!(response.status(), StatusCode::OK);
        let x_cache = response.headers()["x-cache"].to_str().unwrap().to_string();
        if x_cache == "STALE" {
            break;
        }
        assert_eq!(x_cache, "HIT");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the listener did not notice the cut"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (response, _) = send(&h.app, describe(Some(&format!("Bearer {DEMO_TOKEN}")))).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    proxy.restore();
    let started = Instant::now();
    loop {
        let (response, _) = send(&h.app, describe(Some(&format!("Bearer {DEMO_TOKEN}")))).await;
        if response.status() == StatusCode::OK {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the pool did not reconnect"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
