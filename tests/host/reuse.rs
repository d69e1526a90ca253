//! Instance reuse (opt-in): a warm instance keeps its statics between the
//! requests of one component version, up to its limit, and never past a
//! version, a component, or a request that went wrong. The fixtures'
//! `remember` action says how many requests its instance has served and
//! whether its statics were as built.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use host::http::HttpLimits;
use host::runtime::SandboxConfig;
use std::time::Duration;
use support::{TestHost, build_of, get, host_with, json, send};

const ADMIN: &str = "admin-secret-for-tests";

/// A host whose fixtures (at `/fixture` and, as a second component of the
/// same file, `/twin`) run with `instance_reuse`.
async fn reusing_host(instance_reuse: u32) -> TestHost {
    host_with(
        SandboxConfig {
            instance_reuse,
            deadline: Duration::from_millis(500),
            ..SandboxConfig::default()
        },
        HttpLimits {
            admin_token: Some(ADMIN.into()),
            ..Default::default()
        },
        &[
            ("fixtures", "fixtures.wasm", &["/fixture"]),
            ("twin", "fixtures.wasm", &["/twin"]),
        ],
    )
    .await
}

/// How many requests the instance that answered `GET {prefix}/remember`
/// has served, that one included (1: a fresh instance); asserts that the
/// statics were as built exactly when it is fresh.
async fn served(h: &TestHost, prefix: &str) -> u64 {
    served_by(&h.app, prefix).await
}

/// `served` of the host behind `app`.
async fn served_by(app: &axum::Router, prefix: &str) -> u64 {
    let (response, body) = get(app, &format!("{prefix}/remember")).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = json(&body);
    let served = body["served"].as_u64().expect("served");
    let fresh = served == 1;
    assert_eq!(body["dataFresh"], fresh, "{body}");
    assert_eq!(body["zeroedFresh"], fresh, "{body}");
    served
}

async fn status(h: &TestHost, uri: &str) -> StatusCode {
    get(&h.app, uri).await.0.status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_instance_serves_up_to_its_limit_then_a_fresh_one_takes_over() {
    let h = reusing_host(3).await;
    let mut seen = Vec::new();
    for _ in 0..7 {
        seen.push(served(&h, "/fixture").await);
    }
    assert_eq!(seen, [1, 2, 3, 1, 2, 3, 1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_reuse_every_request_gets_a_fresh_instance() {
    for instance_reuse in [0, 1] {
        let h = reusing_host(instance_reuse).await;
        for _ in 0..5 {
            assert_eq!(served(&h, "/fixture").await, 1, "reuse {instance_reuse}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_instance_never_serves_another_component() {
    let h = reusing_host(100).await;
    assert_eq!(served(&h, "/fixture").await, 1);
    assert_eq!(served(&h, "/fixture").await, 2);
    assert_eq!(served(&h, "/twin").await, 1, "its own instance");
    assert_eq!(served(&h, "/fixture").await, 3);
    assert_eq!(served(&h, "/twin").await, 2);
}

fn upload(bytes: Vec<u8>) -> Request<Body> {
    upload_with(bytes, "")
}

/// `PUT /admin/components/fixtures?{query}` with `bytes`.
fn upload_with(bytes: Vec<u8>, query: &str) -> Request<Body> {
    Request::put(format!("/admin/components/fixtures?{query}"))
        .header("authorization", format!("Bearer {ADMIN}"))
        .body(Body::from(bytes))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_instance_never_serves_another_version() {
    let h = reusing_host(100).await;
    assert_eq!(served(&h, "/fixture").await, 1);
    assert_eq!(served(&h, "/fixture").await, 2);

    let (response, body) = send(&h.app, upload(build_of("fixtures.wasm", 1))).await;
    assert_eq!(response.status(), StatusCode::OK, "{body:?}");
    assert_eq!(served(&h, "/fixture").await, 1, "the new version's own");
    assert_eq!(served(&h, "/fixture").await, 2);

    let rollback = Request::post("/admin/components/fixtures/rollback")
        .header("authorization", format!("Bearer {ADMIN}"))
        .body(Body::empty())
        .unwrap();
    let (response, _) = send(&h.app, rollback).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        served(&h, "/fixture").await,
        1,
        "the swap away retired the first version's instance"
    );
    assert_eq!(served(&h, "/fixture").await, 2, "and it keeps new ones");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_goes_wrong_retires_its_instance() {
    let h = reusing_host(100).await;
    let wrong = [
        ("/fixture/trap", StatusCode::INTERNAL_SERVER_ERROR),
        ("/fixture/loop", StatusCode::GATEWAY_TIMEOUT),
        ("/fixture/grow?kb=2048", StatusCode::OK),
        // More than the few streams a guest may open late and keep.
        ("/fixture/leak?n=5", StatusCode::OK),
        ("/fixture/echo?status=503", StatusCode::SERVICE_UNAVAILABLE),
    ];
    for (uri, expected) in wrong {
        assert_eq!(served(&h, "/fixture").await, 1, "before {uri}");
        assert_eq!(served(&h, "/fixture").await, 2, "before {uri}");
        assert_eq!(status(&h, uri).await, expected, "{uri}");
        assert_eq!(
            served(&h, "/fixture").await,
            1,
            "{uri} retired the instance it ran on"
        );
        // Start the next case on a fresh instance.
        assert_eq!(
            status(&h, "/fixture/trap").await,
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
    // A request that ends well, a 4xx included, keeps it.
    assert_eq!(served(&h, "/fixture").await, 1);
    assert_eq!(
        status(&h, "/fixture/echo?status=404").await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(served(&h, "/fixture").await, 2);
    // So does one that first prints on a later request (wasi-libc then
    // opens its stdio streams and keeps them).
    assert_eq!(status(&h, "/fixture/print").await, StatusCode::OK);
    assert_eq!(served(&h, "/fixture").await, 3);
    // A guest that leaks one stream a request is retired within a few.
    let mut leaks = 0;
    while served(&h, "/fixture").await > 1 {
        assert_eq!(status(&h, "/fixture/leak").await, StatusCode::OK);
        leaks += 1;
        assert!(
            leaks <= 6,
            "an instance leaking a stream a request was kept"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manifest_sets_a_components_reuse_over_the_hosts_default() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let manifest = format!(
        "{}instance_reuse = 2\n{}instance_reuse = 0\n",
        support::manifest_of(&[("fixtures", "fixtures.wasm", &["/fixture"])]),
        support::manifest_of(&[("twin", "fixtures.wasm", &["/twin"])])
            .split_once('\n')
            .expect("a dir line")
            .1,
    );
    let app = support::build_with(
        dir.path(),
        &manifest,
        false,
        None,
        None,
        SandboxConfig {
            instance_reuse: 100,
            ..SandboxConfig::default()
        },
        HttpLimits::default(),
    )
    .await;
    let h = TestHost { app, _dir: dir };
    let mut fixtures = Vec::new();
    let mut twin = Vec::new();
    for _ in 0..4 {
        fixtures.push(served(&h, "/fixture").await);
        twin.push(served(&h, "/twin").await);
    }
    assert_eq!(fixtures, [1, 2, 1, 2]);
    assert_eq!(twin, [1, 1, 1, 1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_sets_its_versions_reuse_which_outlives_a_restart() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let start = || {
        support::build_in(
            dir.path(),
            None,
            None,
            SandboxConfig::default(),
            HttpLimits {
                admin_token: Some(ADMIN.into()),
                ..Default::default()
            },
            &[("fixtures", "fixtures.wasm", &["/fixture"])],
        )
    };
    let first = start().await;
    assert_eq!(served_by(&first, "/fixture").await, 1);
    assert_eq!(served_by(&first, "/fixture").await, 1, "fresh by default");

    let (response, body) = send(
        &first,
        upload_with(build_of("fixtures.wasm", 1), "instance_reuse=2&note=warm"),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK, "{body:?}");
    assert_eq!(json(&body)["current"]["instanceReuse"], 2);
    let seen = [
        served_by(&first, "/fixture").await,
        served_by(&first, "/fixture").await,
        served_by(&first, "/fixture").await,
    ];
    assert_eq!(seen, [1, 2, 1]);

    for bad in [
        "instance_reuse=-1",
        "instance_reuse=two",
        "instance_reuse=1000001",
    ] {
        let (response, body) = send(&first, upload_with(build_of("fixtures.wasm", 2), bad)).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(support::error_code(&body), "bad_request", "{bad}");
        assert!(
            String::from_utf8_lossy(&body).contains("instance_reuse"),
            "{bad}: the message names the parameter"
        );
    }
    assert_eq!(
        served_by(&first, "/fixture").await,
        2,
        "a refused upload changed nothing"
    );
    drop(first);

    let second = start().await;
    let seen = [
        served_by(&second, "/fixture").await,
        served_by(&second, "/fixture").await,
        served_by(&second, "/fixture").await,
    ];
    assert_eq!(seen, [1, 2, 1], "the recorded reuse serves after a restart");

    let rollback = Request::post("/admin/components/fixtures/rollback")
        .header("authorization", format!("Bearer {ADMIN}"))
        .body(Body::empty())
        .unwrap();
    let (response, _) = send(&second, rollback).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(served_by(&second, "/fixture").await, 1);
    assert_eq!(
        served_by(&second, "/fixture").await,
        1,
        "the version before was uploaded without it: fresh"
    );
}

// Cache entries handed to a warm instance (`cache.get-entry`) go back to
// the host whether a response sends them or the guest drops them, so they
// never pile up in its table and it is kept; a body slice past its entry
// is a failed request, which retires it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_entries_leave_nothing_behind_in_a_warm_instance() {
    let h = reusing_host(100).await;
    assert_eq!(
        status(&h, "/fixture/cache-set?key=k&value=v").await,
        StatusCode::OK
    );
    assert_eq!(served(&h, "/fixture").await, 1);
    for _ in 0..8 {
        assert_eq!(
            status(&h, "/fixture/cache-entry?key=k").await,
            StatusCode::OK
        );
        assert_eq!(
            status(&h, "/fixture/cache-entry?key=k&read=1").await,
            StatusCode::OK
        );
    }
    assert_eq!(served(&h, "/fixture").await, 2, "kept through 16 entries");
    assert_eq!(
        status(&h, "/fixture/cache-entry?key=k&offset=1&length=1").await,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(served(&h, "/fixture").await, 1, "a bad slice retired it");
}

// A warm instance reads the headers of the request it serves, never those
// of one before it: the host hands them over per request (`headers.get`,
// `headers.all`) and lets go of them when the request ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_instance_sees_only_its_own_requests_headers() {
    let h = reusing_host(100).await;
    assert_eq!(served(&h, "/fixture").await, 1);
    let describe = |probe: Option<&str>| {
        let mut request = Request::get("/fixture/describe?header=x-probe");
        if let Some(probe) = probe {
            request = request.header("x-probe", probe);
        }
        request.body(Body::empty()).unwrap()
    };
    let (response, body) = send(&h.app, describe(Some("first"))).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = json(&body);
    assert_eq!(body["asked"][0][1], "first", "{body}");
    assert_eq!(served(&h, "/fixture").await, 2, "still the same instance");

    let (response, body) = send(&h.app, describe(None)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = json(&body);
    assert_eq!(body["asked"][0][1], serde_json::Value::Null, "{body}");
    let names: Vec<&str> = body["headers"]
        .as_array()
        .expect("headers")
        .iter()
        .map(|h| h[0].as_str().expect("a name"))
        .collect();
    assert!(!names.contains(&"x-probe"), "{body}");

    let (_, body) = send(&h.app, describe(Some("third"))).await;
    assert_eq!(json(&body)["asked"][0][1], "third");
    assert_eq!(
        served(&h, "/fixture").await,
        3,
        "all three served by the instance that served the first"
    );
}
