//! The runtime and sandbox over HTTP: routing, pass-through, traps,
//! deadlines, memory caps, the in-flight bound, and load-time checks.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use host::runtime::SandboxConfig;
use std::time::{Duration, Instant};
use support::{error_code, get, host, host_with, json, send};

fn sandbox() -> SandboxConfig {
    SandboxConfig {
        max_in_flight: 16,
        memory_limit: 32 << 20,
        deadline: Duration::from_secs(5),
        ..SandboxConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_reaches_its_component_and_the_response_comes_back_unchanged() {
    let h = host(sandbox()).await;
    let body: Vec<u8> = vec![0, 1, 2, 254, 255, b'{'];
    let request = Request::post("/fixture/echo?status=207")
        .header("x-echo-first", "one")
        .header("x-echo-second", "two words")
        .header("x-other", "not echoed")
        .body(Body::from(body.clone()))
        .unwrap();
    let (response, got) = send(&h.app, request).await;
    assert_eq!(response.status().as_u16(), 207);
    assert_eq!(response.headers()["x-echo-first"], "one");
    assert_eq!(response.headers()["x-echo-second"], "two words");
    assert!(response.headers().get("x-other").is_none());
    assert_eq!(
        response.headers()["content-type"],
        "application/octet-stream"
    );
    assert_eq!(got, body);
}

// The response's typed `etag` and `cache` (contract 0.2.0) are sent as
// the `ETag` and `X-Cache` headers, after the component's list; an ETag
// that is no header value is the component's bug: 500, nothing sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typed_etag_and_cache_status_are_sent_as_headers() {
    let h = host(sandbox()).await;
    for (cache, sent) in [("hit", "HIT"), ("miss", "MISS")] {
        let uri = format!("/fixture/echo?etag=%22abc%22&cache={cache}");
        let (response, _) = get(&h.app, &uri).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["etag"], "\"abc\"");
        assert_eq!(response.headers()["x-cache"], sent);
        let names: Vec<&str> = response.headers().keys().map(|n| n.as_str()).collect();
        let at = |name: &str| names.iter().position(|n| *n == name).expect(name);
        assert_eq!(
            response.headers()["content-type"],
            "application/octet-stream"
        );
        assert!(
            at("content-type") < at("etag") && at("etag") < at("x-cache"),
            "after the component's list: {names:?}"
        );
    }
    let (response, _) = get(&h.app, "/fixture/echo").await;
    assert!(response.headers().get("etag").is_none());
    assert!(response.headers().get("x-cache").is_none());

    let (response, body) = get(&h.app, "/fixture/echo?etag=%22a%0Ab%22&cache=hit").await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(error_code(&body), "internal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_answers_if_none_match_for_a_typed_etag() {
    let h = host(sandbox()).await;
    let echo = "/fixture/echo?etag=%22abc%22&cache=hit";
    let conditional = |uri: &str, inm: &[&str]| {
        let mut request = Request::get(uri).header("x-echo-kept", "yes");
        for value in inm {
            request = request.header("if-none-match", *value);
        }
        request.body(Body::from("the body")).unwrap()
    };
    // Named exactly, weakly, by `*`, or in a list split over two lines.
    for inm in [
        &["\"abc\""][..],
        &["W/\"abc\""],
        &["*"],
        &["\"x\"", "\"y\", \"abc\""],
    ] {
        let (response, body) = send(&h.app, conditional(echo, inm)).await;
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED, "{inm:?}");
        assert!(body.is_empty(), "{inm:?}");
        let headers = response.headers();
        assert_eq!(headers["etag"], "\"abc\"");
        assert_eq!(headers["x-cache"], "HIT");
        assert_eq!(headers["x-echo-kept"], "yes");
        assert!(headers.get("content-type").is_none(), "{headers:?}");
    }
    // Not named, not a 200, not a read (for a write, `*` is a precondition
    // the component decides on), no ETag, or one in the component's list
    // (which it answers for itself, if it wants to): the component's
    // response as it is.
    let (response, body) = send(&h.app, conditional(echo, &["\"abd\""])).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(&body[..], b"the body");
    let created = "/fixture/echo?etag=%22abc%22&status=201";
    let (response, body) = send(&h.app, conditional(created, &["\"abc\""])).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(&body[..], b"the body");
    let (response, _) = send(&h.app, conditional("/fixture/echo", &["*"])).await;
    assert_eq!(response.status(), StatusCode::OK);
    let listed = "/fixture/echo?listetag=%22abc%22";
    let (response, body) = send(&h.app, conditional(listed, &["\"abc\""])).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["etag"], "\"abc\"");
    assert_eq!(&body[..], b"the body");
    for method in ["POST", "PUT", "DELETE"] {
        let write = Request::builder()
            .method(method)
            .uri(echo)
            .header("if-none-match", "*")
            .body(Body::from("the body"))
            .unwrap();
        let (response, body) = send(&h.app, write).await;
        assert_eq!(response.status(), StatusCode::OK, "{method}");
        assert_eq!(&body[..], b"the body", "{method}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_component_sees_every_method_by_name_and_the_body_it_was_sent() {
    let h = host(sandbox()).await;
    for method in ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "PURGE"] {
        let request = Request::builder()
            .method(method)
            .uri("/fixture/describe")
            .body(Body::from("12345"))
            .unwrap();
        let (response, body) = send(&h.app, request).await;
        assert_eq!(response.status(), StatusCode::OK, "{method}");
        let seen = json(&body);
        assert_eq!(seen["method"], method);
        assert_eq!(seen["path"], "/fixture/describe");
        assert_eq!(seen["rawQuery"], "");
        assert_eq!(seen["bodyLength"], 5, "{method}");
    }
    let request = Request::post("/fixture/describe?a=1")
        .body(Body::empty())
        .unwrap();
    let (_, body) = send(&h.app, request).await;
    let seen = json(&body);
    assert_eq!(seen["path"], "/fixture/describe");
    assert_eq!(seen["rawQuery"], "a=1");
    assert_eq!(seen["bodyLength"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_component_sees_the_decoded_query_and_never_the_authorization_header() {
    let h = host(sandbox()).await;
    let request = Request::get("/fixture/describe?query=a%3Ab&tag=x&tag=y%20z")
        .header(
            "authorization",
            format!("Bearer {}", host::seed::DEMO_TOKEN),
        )
        .header("x-trace", "t1")
        .body(Body::empty())
        .unwrap();
    let (response, body) = send(&h.app, request).await;
    assert_eq!(response.status(), StatusCode::OK);
    let seen = json(&body);
    assert_eq!(seen["method"], "GET");
    assert_eq!(seen["path"], "/fixture/describe");
    assert_eq!(
        seen["query"],
        serde_json::json!([["query", "a:b"], ["tag", "x"], ["tag", "y z"]])
    );
    let headers = seen["headers"].as_array().unwrap();
    assert!(
        headers.iter().any(|h| h[0] == "x-trace" && h[1] == "t1"),
        "{headers:?}"
    );
    assert!(
        !headers.iter().any(|h| h[0] == "authorization"),
        "{headers:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_component_gets_the_raw_query_and_reads_the_headers_it_asks_for() {
    let h = host(sandbox()).await;
    let request = Request::get(
        "/fixture/describe?header=X-Multi&header=x-trace&header=authorization&header=x-absent&header=not%20a%20name&a=%E2%9C%93+b",
    )
    .header("authorization", format!("Bearer {}", host::seed::DEMO_TOKEN))
    .header("x-multi", "one")
    .header("x-trace", "t1")
    .header("X-Multi", "two, three")
    .header("x-binary", &b"caf\xe9"[..])
    .body(Body::empty())
    .unwrap();
    let (response, body) = send(&h.app, request).await;
    assert_eq!(response.status(), StatusCode::OK);
    let seen = json(&body);
    // As received: not split, not decoded.
    assert_eq!(
        seen["rawQuery"],
        "header=X-Multi&header=x-trace&header=authorization&header=x-absent&header=not%20a%20name&a=%E2%9C%93+b"
    );
    assert_eq!(seen["query"][5], serde_json::json!(["a", "\u{2713} b"]));
    // Any case; a repeated header's values joined; the token never; an
    // absent header or a name that is none: nothing.
    assert_eq!(
        seen["asked"],
        serde_json::json!([
            ["X-Multi", "one, two, three"],
            ["x-trace", "t1"],
            ["authorization", null],
            ["x-absent", null],
            ["not a name", null],
        ])
    );
    // All of them, in order, names lower-case, bytes that are not UTF-8
    // replaced.
    assert_eq!(
        seen["headers"],
        serde_json::json!([
            ["x-multi", "one"],
            ["x-multi", "two, three"],
            ["x-trace", "t1"],
            ["x-binary", "caf\u{fffd}"],
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_categories_component_reads_the_database_then_answers_from_the_cache() {
    let h = host(sandbox()).await;
    let (first, first_body) = get(&h.app, "/api/marketplace/categories").await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(first.headers()["x-cache"], "MISS");
    assert_eq!(first.headers()["content-type"], "application/json");
    let categories = json(&first_body)["categories"].as_array().unwrap().clone();
    assert_eq!(categories.len(), 12);
    let total: i64 = categories
        .iter()
        .map(|c| c["agentCount"].as_i64().unwrap())
        .sum();
    assert_eq!(
        total,
        host::DEMO_AGENTS as i64,
        "every demo agent is in one category"
    );

    let (second, second_body) = get(&h.app, "/api/marketplace/categories").await;
    assert_eq!(second.headers()["x-cache"], "HIT");
    assert_eq!(second_body, first_body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_route_is_404_in_the_error_shape() {
    let h = host(sandbox()).await;
    for path in ["/nope", "/api/marketplace/categoriesx", "/fixturex/echo"] {
        let (response, body) = get(&h.app, path).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        assert_eq!(error_code(&body), "not_found", "{path}");
    }
}

/// Every request sees the component's memory as built, whether the pool
/// resets a slot's dirty pages found by `PAGEMAP_SCAN` or its lowest
/// keep-resident bytes, one request after another and many at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_sees_what_an_earlier_instance_wrote_to_its_memory() {
    for pagemap_scan in [true, false] {
        let h = host(SandboxConfig {
            pagemap_scan,
            ..sandbox()
        })
        .await;
        let fresh = serde_json::json!({ "dataFresh": true, "zeroedFresh": true, "served": 1 });
        for _ in 0..20 {
            let (response, body) = get(&h.app, "/fixture/remember").await;
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(json(&body), fresh, "pagemap_scan = {pagemap_scan}");
        }
        let answers =
            futures::future::join_all((0..32).map(|_| get(&h.app, "/fixture/remember"))).await;
        for (response, body) in answers {
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(json(&body), fresh, "pagemap_scan = {pagemap_scan}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trapping_component_gets_500_and_the_next_request_succeeds() {
    let h = host(sandbox()).await;
    let (response, body) = get(&h.app, "/fixture/trap").await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(error_code(&body), "internal");
    assert!(
        !String::from_utf8_lossy(&body).contains("fixture asked to trap"),
        "a 500 never leaks internals"
    );

    let (after, _) = get(&h.app, "/api/marketplace/categories").await;
    assert_eq!(after.status(), StatusCode::OK);
    let (same_component, _) = get(&h.app, "/fixture/echo").await;
    assert_eq!(
        same_component.status(),
        StatusCode::OK,
        "a fresh instance serves the next request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_looping_component_is_stopped_at_its_deadline_while_others_are_served() {
    let deadline = Duration::from_millis(500);
    let h = host(SandboxConfig {
        deadline,
        ..sandbox()
    })
    .await;
    let app = h.app.clone();
    let started = Instant::now();
    let looping = tokio::spawn(async move { get(&app, "/fixture/loop").await });

    // While the loop runs, other requests keep being answered.
    let mut served = 0;
    while !looping.is_finished() {
        let (response, _) = get(&h.app, "/api/marketplace/categories").await;
        assert_eq!(response.status(), StatusCode::OK);
        served += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (response, body) = looping.await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(error_code(&body), "deadline_exceeded");
    assert!(elapsed >= deadline, "stopped early, after {elapsed:?}");
    assert!(elapsed < deadline * 10, "stopped only after {elapsed:?}");
    assert!(
        served > 1,
        "only {served} other requests were served meanwhile"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allocating_component_hits_its_cap_and_fails_alone() {
    let h = host(SandboxConfig {
        memory_limit: 16 << 20,
        ..sandbox()
    })
    .await;
    let (response, body) = get(&h.app, "/fixture/alloc").await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(error_code(&body), "internal");
    for _ in 0..3 {
        let (response, _) = get(&h.app, "/fixture/echo").await;
        assert_eq!(response.status(), StatusCode::OK);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_in_flight_bound_requests_get_503_at_once() {
    // The fixtures alone: a component among others may hold only part of
    // the bound (see `security/http_front.rs`); alone it may hold all of it.
    let h = host_with(
        SandboxConfig {
            max_in_flight: 2,
            ..sandbox()
        },
        host::http::HttpLimits::default(),
        &[("fixtures", "fixtures.wasm", &["/fixture"])],
    )
    .await;
    // Three slow requests against a bound of two: two are admitted and one
    // is refused. Nothing else is sent meanwhile, so which one is refused is
    // the only thing left to chance.
    let slow: Vec<_> = (0..3)
        .map(|_| {
            let app = h.app.clone();
            tokio::spawn(async move {
                let (response, body) = get(&app, "/fixture/sleep?ms=3000").await;
                (response, body, Instant::now())
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in slow {
        outcomes.push(task.await.unwrap());
    }
    let (refused, admitted): (Vec<_>, Vec<_>) = outcomes
        .into_iter()
        .partition(|(r, _, _)| r.status() == StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.len(), 1, "exactly one of three is refused");
    assert!(
        admitted
            .iter()
            .all(|(r, _, _)| r.status() == StatusCode::OK)
    );
    let (response, body, refused_at) = &refused[0];
    assert_eq!(response.headers()["retry-after"], "1");
    assert_eq!(error_code(body), "overloaded");
    assert!(
        admitted.iter().all(|(_, _, done)| refused_at < done),
        "the refusal waited for a slot instead of coming back at once"
    );

    let (after, _) = get(&h.app, "/fixture/echo").await;
    assert_eq!(after.status(), StatusCode::OK, "slots are released");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_gets_413_before_any_component_runs() {
    let h = host_with(
        sandbox(),
        host::http::HttpLimits {
            max_body_bytes: 1024,
            ..Default::default()
        },
        support::DEFAULT_ROUTES,
    )
    .await;
    let request = Request::post("/fixture/echo")
        .body(Body::from(vec![b'x'; 4096]))
        .unwrap();
    let (response, body) = send(&h.app, request).await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_code(&body), "payload_too_large");
}

// A request waiting for another request's fill of the same key gives up in
// time to compute the value itself: a filler stuck until its own deadline
// does not make the requests waiting on it miss theirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_waiting_on_a_stuck_fill_still_answers_within_its_deadline() {
    let h = host(SandboxConfig {
        deadline: Duration::from_secs(2),
        ..sandbox()
    })
    .await;
    let app = h.app.clone();
    let filler = tokio::spawn(async move {
        let (response, _) = get(&app, "/fixture/cache-get?key=k&ms=60000").await;
        response.status()
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (response, body) = get(&h.app, "/fixture/cache-get?key=k&ms=400").await;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(filler.await.unwrap(), StatusCode::GATEWAY_TIMEOUT);
}

/// The contract is versioned, and a component built against the old one
/// (`legacy-v010`, on `marketplace:host@0.1.0`) loads and runs unchanged
/// beside the product's: its database reads and 0.1.0-shaped transactions,
/// its cache reads, writes and tag invalidations, and its logging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_built_against_contract_0_1_0_still_serves() {
    // A component's imports are named by strings in its binary: this proves
    // the test exercises the old contract and not, after someone moves the
    // component along, the current one.
    let wasm = std::fs::read(support::components_dir().join("legacy_v010.wasm"))
        .expect("legacy_v010.wasm is built");
    let holds = |s: &str| wasm.windows(s.len()).any(|w| w == s.as_bytes());
    assert!(holds("marketplace:host/db@0.1.0"), "imports db@0.1.0");
    assert!(!holds("marketplace:host/db@0.2.0"), "imports no db@0.2.0");

    let mut routes = support::DEFAULT_ROUTES.to_vec();
    routes.push(("legacy-v010", "legacy_v010.wasm", &["/legacy"]));
    let h = host_with(sandbox(), host::http::HttpLimits::default(), &routes).await;
    let expected = serde_json::json!({ "categories": [
        "coding", "customer-support", "data-analysis", "design", "devops", "finance",
        "marketing", "productivity", "research", "sales", "security", "writing",
    ] });

    let (first, first_body) = get(&h.app, "/legacy/read").await;
    assert_eq!(
        first.status(),
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&first_body)
    );
    assert_eq!(first.headers()["x-cache"], "MISS");
    assert_eq!(json(&first_body), expected);

    let (second, second_body) = get(&h.app, "/legacy/read").await;
    assert_eq!(second.status(), StatusCode::OK);
    assert_eq!(second.headers()["x-cache"], "HIT");
    assert_eq!(second_body, first_body);

    let (write, write_body) = get(&h.app, "/legacy/write?slug=coding").await;
    assert_eq!(
        write.status(),
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&write_body)
    );
    assert_eq!(json(&write_body), serde_json::json!({ "ok": true }));

    // The tag invalidation of the 0.1.0 component took effect.
    let (third, third_body) = get(&h.app, "/legacy/read").await;
    assert_eq!(third.status(), StatusCode::OK);
    assert_eq!(third.headers()["x-cache"], "MISS");
    assert_eq!(json(&third_body), expected);

    let (logged, _) = get(&h.app, "/legacy/log").await;
    assert_eq!(logged.status(), StatusCode::NO_CONTENT);
}

// `--cache-max-ttl` caps the TTL a component asks for: the fixture asks
// for 600 s, and with a 1 s cap its entry is gone after 1.2 s (without
// stale-while-revalidate, which would still answer with it), while on a
// host without the cap it is still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_max_cache_ttl_caps_the_ttl_a_component_asks_for() {
    let capped = host(SandboxConfig {
        max_cache_ttl: Some(Duration::from_secs(1)),
        revalidate_window: Duration::ZERO,
        ..sandbox()
    })
    .await;
    let uncapped = host(sandbox()).await;
    let cached = |app: axum::Router| async move {
        let (_, body) = get(&app, "/fixture/cache-get?key=k").await;
        json(&body)["value"].as_str().map(str::to_string)
    };
    for h in [&capped, &uncapped] {
        get(&h.app, "/fixture/cache-set?key=k&value=v").await;
        assert_eq!(cached(h.app.clone()).await.as_deref(), Some("v"));
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(cached(capped.app.clone()).await, None, "capped at 1 s");
    assert_eq!(cached(uncapped.app.clone()).await.as_deref(), Some("v"));
}

// `/metrics` counts each component version's answers by status class, and
// times them, labelled by the component and its digest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_counted_per_component_version_and_status_class() {
    use sha2::Digest as _;
    let h = host(sandbox()).await;
    let bytes = std::fs::read(support::components_dir().join("fixtures.wasm")).unwrap();
    let digest: String = sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    for _ in 0..3 {
        assert_eq!(
            get(&h.app, "/fixture/echo").await.0.status(),
            StatusCode::OK
        );
    }
    let (response, _) = get(&h.app, "/fixture/trap").await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);

    let (_, body) = get(&h.app, "/metrics").await;
    let text = String::from_utf8(body).unwrap();
    let value = |series: String| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{series} ")))
            .map(|v| v.trim().parse::<f64>().unwrap())
    };
    let version = format!("component=\"fixtures\",digest=\"{digest}\"");
    assert_eq!(
        value(format!(
            "marketplace_requests_total{{{version},class=\"2xx\"}}"
        )),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        value(format!(
            "marketplace_requests_total{{{version},class=\"5xx\"}}"
        )),
        Some(1.0)
    );
    assert_eq!(
        value(format!(
            "marketplace_request_duration_seconds_count{{{version}}}"
        )),
        Some(4.0)
    );
}

// `cache.get-entry` (contract 0.2.0): the entry stays in the host and a
// response sends it, or a slice of it, as its body; the component gets its
// size and tail, and may read it in. A slice past the entry's end is the
// component's bug: 500, and the next request is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_entry_is_sent_as_a_body_from_the_hosts_copy() {
    let h = host(sandbox()).await;
    let (response, _) = get(&h.app, "/fixture/cache-entry?key=k").await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND, "a miss");
    get(&h.app, "/fixture/cache-set?key=k&value=hello%20world").await;

    let (response, body) = get(&h.app, "/fixture/cache-entry?key=k&tail=5").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body, b"hello world");
    assert_eq!(response.headers()["x-size"], "11");
    assert_eq!(response.headers()["x-tail"], "world");
    let (_, body) = get(&h.app, "/fixture/cache-entry?key=k&tail=50").await;
    assert_eq!(
        body, b"hello world",
        "a tail longer than the entry is all of it"
    );

    let (response, body) = get(&h.app, "/fixture/cache-entry?key=k&offset=6&length=3").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body, b"wor");
    assert!(response.headers().get("x-read").is_none());
    let (response, body) = get(
        &h.app,
        "/fixture/cache-entry?key=k&offset=6&length=99&read=1",
    )
    .await;
    assert_eq!(response.headers()["x-read"], "1");
    assert_eq!(body, b"world", "a read stops at the end");
    let (_, body) = get(&h.app, "/fixture/cache-entry?key=k&offset=99&read=1").await;
    assert_eq!(body, b"", "and reads nothing past it");

    for bad in [
        "offset=6&length=6",
        "offset=12&length=0",
        "offset=18446744073709551615&length=2",
    ] {
        let (response, body) = get(&h.app, &format!("/fixture/cache-entry?key=k&{bad}")).await;
        assert_eq!(
            response.status(),
            StatusCode::INTERNAL_SERVER_ERROR,
            "{bad}"
        );
        assert_eq!(error_code(&body), "internal", "{bad}");
    }
    let (response, body) = get(&h.app, "/fixture/cache-entry?key=k&offset=11&length=0").await;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "an empty slice at the end"
    );
    assert_eq!(body, b"");
}

// The entries a component holds count against its memory cap, as values
// read into its memory do: asking for a 1 MiB entry again and again,
// keeping each, gets no more than the cap's worth (32 MiB here), then
// misses. Without the count, all 100 (100 MiB of host memory) came back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_entries_a_component_holds_count_against_its_memory_cap() {
    let h = host(sandbox()).await;
    let (response, _) = get(&h.app, "/fixture/cache-set?key=big&value=x&repeat=1048576").await;
    assert_eq!(response.status(), StatusCode::OK);
    let (response, body) = get(&h.app, "/fixture/cache-entry?key=big&hold=100").await;
    assert_eq!(response.status(), StatusCode::OK);
    let held = json(&body)["held"].as_u64().expect("held");
    assert!((1..=32).contains(&held), "held {held} entries of 1 MiB");
    // Dropped at the end of that request: the next one gets them again.
    let (_, body) = get(&h.app, "/fixture/cache-entry?key=big&hold=2").await;
    assert_eq!(json(&body)["held"], 2);
}
