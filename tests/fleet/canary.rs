//! Canaries across a fleet: a version served to a share of requests beside
//! the active one, on every host; a client told apart by its token or
//! `X-Client-Id` stays on one side on every host; `promote` and `abort`
//! reach every host; a canary that fails clearly more than the active
//! version is aborted by the hosts themselves.

use super::deploys::{ADMIN, deploy, digest_of, listed, three_hosts, until_all_serve, version};
use super::{Fleet, eventually};
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use support::{TestHost, get, json, send, wasm};

/// `PUT /admin/components/greeter?{query}` with `file` through `app`: the
/// status and body.
async fn upload(app: &Router, file: &str, query: &str) -> (StatusCode, String) {
    let request = Request::put(format!("/admin/components/greeter?{query}"))
        .header("authorization", format!("Bearer {ADMIN}"))
        .body(Body::from(wasm(file)))
        .unwrap();
    let (response, body) = send(app, request).await;
    (
        response.status(),
        String::from_utf8_lossy(&body).into_owned(),
    )
}

/// Starts `file` as the greeter's canary at `share` percent through
/// `app`; asserts it was accepted.
pub(super) async fn canary(app: &Router, file: &str, share: u8) {
    let (status, body) = upload(app, file, &format!("canary={share}&note=canary")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// `POST /admin/components/greeter/{action}` through `app`.
pub(super) async fn admin_post(app: &Router, action: &str) -> (StatusCode, String) {
    let request = Request::post(format!("/admin/components/greeter/{action}"))
        .header("authorization", format!("Bearer {ADMIN}"))
        .body(Body::empty())
        .unwrap();
    let (response, body) = send(app, request).await;
    (
        response.status(),
        String::from_utf8_lossy(&body).into_owned(),
    )
}

/// Waits until every host of `hosts` serves `digest` as the greeter's
/// canary (`None`: no canary).
pub(super) async fn until_canary(hosts: &[TestHost], digest: Option<&str>) {
    for (i, h) in hosts.iter().enumerate() {
        eventually(&format!("host {i} has canary {digest:?}"), || async {
            listed(&h.app).await["canary"]["digest"].as_str() == digest
        })
        .await;
    }
}

/// The greeter's answer to a request of `client` (if given) through
/// `app`: its status and version.
async fn answer(app: &Router, client: Option<&str>) -> (StatusCode, String) {
    let mut request = Request::get("/greet");
    if let Some(client) = client {
        request = request.header("x-client-id", client);
    }
    let (response, body) = send(app, request.body(Body::empty()).unwrap()).await;
    let version = json(&body)["version"].as_str().unwrap_or("?").to_string();
    (response.status(), version)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_serves_its_share_a_client_stays_on_its_side_and_promote_reaches_every_host() {
    let Some(fleet) = Fleet::new().await else {
        return;
    };
    let hosts = three_hosts(&fleet).await;
    let v2 = digest_of("greeter_v2.wasm");
    canary(&hosts[0].app, "greeter_v2.wasm", 20).await;
    until_canary(&hosts, Some(&v2)).await;

    // Clients not told apart: a random fifth, across the hosts.
    let mut on_canary = 0;
    for i in 0..500 {
        let (status, version) = answer(&hosts[i % 3].app, None).await;
        assert_eq!(status, StatusCode::OK);
        on_canary += usize::from(version == "v2");
    }
    assert!(
        (50..=150).contains(&on_canary),
        "{on_canary} of 500 requests on the canary, not 10% to 30%"
    );

    // Clients told apart: each on one side, the same on every host.
    let mut clients_on_canary = 0;
    for client in 0..100 {
        let client = format!("client-{client}");
        let mut seen = Vec::new();
        for h in &hosts {
            let (status, version) = answer(&h.app, Some(&client)).await;
            assert_eq!(status, StatusCode::OK, "{client}");
            seen.push(version);
        }
        assert!(seen.iter().all(|v| *v == seen[0]), "{client}: {seen:?}");
        clients_on_canary += usize::from(seen[0] == "v2");
    }
    assert!(
        (5..=40).contains(&clients_on_canary),
        "{clients_on_canary} of 100 clients on the canary"
    );

    let entry = listed(&hosts[2].app).await;
    assert_eq!(entry["fleet"]["canary"]["state"], "running", "{entry}");
    assert_eq!(entry["fleet"]["canary"]["share"], 20, "{entry}");
    assert_eq!(
        entry["fleet"]["active"],
        digest_of("greeter_v1.wasm").as_str()
    );

    let (status, body) = admin_post(&hosts[1].app, "promote").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    until_canary(&hosts, None).await;
    for i in 0..60 {
        let (status, version) = answer(&hosts[i % 3].app, None).await;
        assert_eq!((status, version.as_str()), (StatusCode::OK, "v2"));
    }
    let entry = listed(&hosts[0].app).await;
    assert_eq!(entry["fleet"]["active"], v2.as_str(), "{entry}");
    assert_eq!(entry["fleet"]["canary"]["state"], "promoted", "{entry}");
    // Promoted: a rollback returns to v1.
    let (status, body) = admin_post(&hosts[0].app, "rollback").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    until_all_serve(&[&hosts[0], &hosts[1], &hosts[2]], "v1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_that_fails_every_request_is_aborted_by_the_hosts_themselves() {
    let Some(fleet) = Fleet::new().await else {
        return;
    };
    let hosts = three_hosts(&fleet).await;
    let failing = digest_of("greeter_failing.wasm");
    canary(&hosts[0].app, "greeter_failing.wasm", 50).await;
    until_canary(&hosts, Some(&failing)).await;

    // Requests across the hosts until the record says aborted; far fewer
    // than the bound are needed (50 canary requests on one host).
    let mut sent = 0;
    loop {
        for h in &hosts {
            for _ in 0..10 {
                answer(&h.app, None).await;
            }
        }
        sent += 30;
        if listed(&hosts[1].app).await["fleet"]["canary"]["state"] == "aborted" {
            break;
        }
        assert!(sent < 3000, "no abort after {sent} requests");
    }
    let entry = listed(&hosts[1].app).await;
    let reason = entry["fleet"]["canary"]["reason"].as_str().unwrap();
    assert!(reason.starts_with("aborted automatically"), "{entry}");

    // Its share returns to the stable version on every host.
    until_canary(&hosts, None).await;
    for i in 0..150 {
        let (status, version) = answer(&hosts[i % 3].app, None).await;
        assert_eq!((status, version.as_str()), (StatusCode::OK, "v1"));
    }
    // The stored bytes of the aborted canary are collected.
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&fleet.schema.url)
        .await
        .expect("PostgreSQL reachable");
    let kept: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM component_versions WHERE digest = $1")
        .bind(&failing)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(kept, 0, "the aborted canary's bytes");

    // Per-version counts on /metrics: the canary's 5xx, labelled by digest.
    let (_, body) = get(&hosts[0].app, "/metrics").await;
    let metrics = String::from_utf8_lossy(&body);
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("marketplace_requests_total")
                && l.contains(&failing)
                && l.contains("class=\"5xx\"")),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_canary_requests_are_refused_and_abort_or_a_deploy_ends_a_canary_everywhere() {
    let Some(fleet) = Fleet::new().await else {
        return;
    };
    let hosts = three_hosts(&fleet).await;
    for query in [
        "canary=0",
        "canary=100",
        "canary=abc",
        "canary=",
        "canary=20&canary=30",
        "canry=20",
    ] {
        let (status, body) = upload(&hosts[0].app, "greeter_v2.wasm", query).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
    }
    let (status, body) = upload(&hosts[0].app, "greeter_v1.wasm", "canary=20").await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "the active version as its own canary: {body}"
    );
    for action in ["promote", "abort"] {
        let (status, body) = admin_post(&hosts[1].app, action).await;
        assert_eq!(
            status,
            StatusCode::CONFLICT,
            "{action} without a canary: {body}"
        );
    }
    let entry = listed(&hosts[0].app).await;
    assert!(
        entry["fleet"]["canary"].is_null(),
        "nothing recorded: {entry}"
    );
    assert_eq!(
        entry["fleet"]["versions"],
        serde_json::json!([]),
        "nothing recorded: {entry}"
    );
    assert_eq!(version(&hosts[2].app).await, "v1");

    // An operator's abort: every host back to v1 alone.
    let v2 = digest_of("greeter_v2.wasm");
    canary(&hosts[0].app, "greeter_v2.wasm", 90).await;
    until_canary(&hosts, Some(&v2)).await;
    // Deploying the active version again changes nothing: the canary
    // runs on.
    deploy(&hosts[1].app, "greeter_v1.wasm").await;
    assert_eq!(
        listed(&hosts[1].app).await["fleet"]["canary"]["state"],
        "running"
    );
    let (status, body) = admin_post(&hosts[2].app, "abort").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    until_canary(&hosts, None).await;
    for i in 0..30 {
        assert_eq!(answer(&hosts[i % 3].app, None).await.1, "v1");
    }
    let entry = listed(&hosts[0].app).await;
    assert_eq!(entry["fleet"]["canary"]["state"], "aborted", "{entry}");
    assert_eq!(entry["fleet"]["canary"]["reason"], "aborted by an operator");

    // A deploy while a canary runs supersedes it.
    canary(&hosts[0].app, "greeter_v2.wasm", 90).await;
    until_canary(&hosts, Some(&v2)).await;
    deploy(&hosts[1].app, "greeter_failing.wasm").await;
    until_canary(&hosts, None).await;
    let entry = listed(&hosts[0].app).await;
    assert_eq!(entry["fleet"]["canary"]["state"], "superseded", "{entry}");
}
