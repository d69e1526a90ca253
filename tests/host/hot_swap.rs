//! Hot swap through the admin API: deploy, list and roll back while
//! serving.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use host::http::HttpLimits;
use host::runtime::SandboxConfig;
use sha2::{Digest, Sha256};
use std::time::Duration;
use support::{error_code, get, host_with, json, send, wasm};

const ADMIN: &str = "admin-secret-for-tests";

async fn greeter_host() -> support::TestHost {
    greeter_host_with(SandboxConfig::default()).await
}

async fn greeter_host_with(sandbox: SandboxConfig) -> support::TestHost {
    host_with(
        sandbox,
        HttpLimits {
            admin_token: Some(ADMIN.into()),
            ..Default::default()
        },
        &[("greeter", "greeter_v1.wasm", &["/greet"])],
    )
    .await
}

fn upload(name: &str, bytes: Vec<u8>, token: Option<&str>) -> Request<Body> {
    let mut r = Request::put(format!("/admin/components/{name}"))
        .header("content-type", "application/wasm");
    if let Some(t) = token {
        r = r.header("authorization", format!("Bearer {t}"));
    }
    r.body(Body::from(bytes)).unwrap()
}

fn rollback(name: &str) -> Request<Body> {
    Request::post(format!("/admin/components/{name}/rollback"))
        .header("authorization", format!("Bearer {ADMIN}"))
        .body(Body::empty())
        .unwrap()
}

async fn version(app: &axum::Router) -> String {
    let (response, body) = get(app, "/greet").await;
    assert_eq!(response.status(), StatusCode::OK);
    json(&body)["version"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapping_back_and_forth_under_load_fails_no_request() {
    // Fresh instances, then warm ones (instance reuse).
    for instance_reuse in [0, 50] {
        swap_back_and_forth_under_load(SandboxConfig {
            instance_reuse,
            ..SandboxConfig::default()
        })
        .await;
    }
}

async fn swap_back_and_forth_under_load(sandbox: SandboxConfig) {
    let h = greeter_host_with(sandbox).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let app = h.app.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0u32, Vec::new());
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let (response, body) = get(&app, "/greet").await;
                    if response.status() == StatusCode::OK {
                        ok += 1;
                    } else {
                        failed.push((
                            response.status(),
                            String::from_utf8_lossy(&body).into_owned(),
                        ));
                    }
                }
                (ok, failed)
            })
        })
        .collect();

    for (file, expected) in [
        ("greeter_v2.wasm", "v2"),
        ("greeter_v1.wasm", "v1"),
        ("greeter_v2.wasm", "v2"),
        ("greeter_v1.wasm", "v1"),
    ] {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (response, body) = send(&h.app, upload("greeter", wasm(file), Some(ADMIN))).await;
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "{}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(version(&h.app).await, expected, "after deploying {file}");
    }
    let (response, _) = send(&h.app, rollback("greeter")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        version(&h.app).await,
        "v2",
        "rolled back to the version before"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut served = 0;
    for client in clients {
        let (ok, failed) = client.await.unwrap();
        assert!(
            failed.is_empty(),
            "failed requests during swaps: {failed:?}"
        );
        served += ok;
    }
    assert!(served > 50, "only {served} requests were served under load");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_during_a_swap_finishes_on_the_old_version() {
    let h = greeter_host().await;
    let app = h.app.clone();
    let slow = tokio::spawn(async move { get(&app, "/greet/slow?ms=1500").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!slow.is_finished(), "the slow request is still running");
    let (response, _) = send(
        &h.app,
        upload("greeter", wasm("greeter_v2.wasm"), Some(ADMIN)),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        version(&h.app).await,
        "v2",
        "new requests get the new version"
    );
    let (response, body) = slow.await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        json(&body)["version"],
        "v1",
        "the old request finished on the old version"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_uploads_leave_the_running_version_serving() {
    let h = greeter_host().await;
    struct Rejected {
        what: &'static str,
        bytes: Vec<u8>,
        token: Option<&'static str>,
        status: StatusCode,
        code: &'static str,
        /// A part of the reason given.
        mentions: &'static str,
    }
    let bad = |what, bytes, status, code, mentions| Rejected {
        what,
        bytes,
        token: Some(ADMIN),
        status,
        code,
        mentions,
    };
    let unauthorized = |what, token| Rejected {
        what,
        bytes: wasm("greeter_v2.wasm"),
        token,
        status: StatusCode::UNAUTHORIZED,
        code: "unauthorized",
        mentions: "",
    };
    let cases = [
        bad(
            "not wasm",
            b"definitely not wasm".to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_component",
            "",
        ),
        bad(
            "truncated",
            wasm("greeter_v2.wasm")[..4096].to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_component",
            "",
        ),
        bad(
            "wrong world",
            wasm("not-a-handler.wasm"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "wrong_world",
            "",
        ),
        bad(
            "imports sockets",
            wasm("rogue.wasm"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "wrong_world",
            "wasi:sockets",
        ),
        unauthorized("no token", None),
        unauthorized("wrong token", Some("guess")),
    ];
    for case in cases {
        let what = case.what;
        let (response, body) = send(&h.app, upload("greeter", case.bytes, case.token)).await;
        assert_eq!(
            response.status(),
            case.status,
            "{what}: {}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(error_code(&body), case.code, "{what}");
        let message = json(&body)["error"]["message"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            message.contains(case.mentions),
            "{what}: the reason names {:?}: {message}",
            case.mentions
        );
        assert_eq!(
            version(&h.app).await,
            "v1",
            "{what}: the old version still serves"
        );
    }
    let (response, _) = send(
        &h.app,
        upload("nobody", wasm("greeter_v2.wasm"), Some(ADMIN)),
    )
    .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_list_shows_digests_and_previous_versions_and_rollback_needs_one() {
    let h = greeter_host().await;
    let (response, body) = send(&h.app, rollback("greeter")).await;
    assert_eq!(
        response.status(),
        StatusCode::CONFLICT,
        "nothing to roll back to yet"
    );
    assert_eq!(error_code(&body), "conflict");

    let v2 = wasm("greeter_v2.wasm");
    let (response, _) = send(&h.app, upload("greeter", v2.clone(), Some(ADMIN))).await;
    assert_eq!(response.status(), StatusCode::OK);
    let list = Request::get("/admin/components")
        .header("authorization", format!("Bearer {ADMIN}"))
        .body(Body::empty())
        .unwrap();
    let (response, body) = send(&h.app, list).await;
    assert_eq!(response.status(), StatusCode::OK);
    let component = &json(&body)["components"][0];
    assert_eq!(component["name"], "greeter");
    assert_eq!(component["routes"], serde_json::json!(["/greet"]));
    let digest: String = Sha256::digest(&v2)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(component["current"]["digest"], digest);
    assert_eq!(component["current"]["size"], v2.len());
    let v1 = wasm("greeter_v1.wasm");
    let v1_digest: String = Sha256::digest(&v1)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(component["previous"][0]["digest"], v1_digest);
    assert!(component["current"]["loadedAt"].as_u64().unwrap() > 0);

    let (response, _) = send(&h.app, rollback("greeter")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(version(&h.app).await, "v1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_admin_token_there_is_no_admin_api() {
    let h = host_with(
        SandboxConfig::default(),
        HttpLimits::default(),
        &[("greeter", "greeter_v1.wasm", &["/greet"])],
    )
    .await;
    let (response, _) = send(
        &h.app,
        upload("greeter", wasm("greeter_v2.wasm"), Some(ADMIN)),
    )
    .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(version(&h.app).await, "v1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployed_version_survives_a_restart_without_being_compiled_again() {
    let dir = tempfile::tempdir().unwrap();
    let routes: &[(&str, &str, &[&str])] = &[("greeter", "greeter_v1.wasm", &["/greet"])];
    let http = || HttpLimits {
        admin_token: Some(ADMIN.into()),
        ..Default::default()
    };
    let first = support::build_in(
        dir.path(),
        None,
        None,
        SandboxConfig::default(),
        http(),
        routes,
    )
    .await;
    let (response, _) = send(
        &first,
        upload("greeter", wasm("greeter_v2.wasm"), Some(ADMIN)),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    drop(first);

    let second = support::build_in(
        dir.path(),
        None,
        None,
        SandboxConfig::default(),
        http(),
        routes,
    )
    .await;
    assert_eq!(
        version(&second).await,
        "v2",
        "the deployed version serves after a restart"
    );
    let list = Request::get("/admin/components")
        .header("authorization", format!("Bearer {ADMIN}"))
        .body(Body::empty())
        .unwrap();
    let (_, body) = send(&second, list).await;
    let component = &json(&body)["components"][0];
    assert_eq!(
        component["current"]["compiledFromCache"], true,
        "{component}"
    );
    assert_eq!(
        component["previous"][0]["compiledFromCache"], true,
        "{component}"
    );

    // The history survived too: rolling back returns to v1, and that
    // survives another restart.
    let (response, _) = send(&second, rollback("greeter")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(version(&second).await, "v1");
    drop(second);
    let third = support::build_in(
        dir.path(),
        None,
        None,
        SandboxConfig::default(),
        http(),
        routes,
    )
    .await;
    assert_eq!(version(&third).await, "v1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_the_file_swaps_the_component_and_a_half_written_file_is_never_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let components = dir.path().join("components");
    std::fs::create_dir(&components).unwrap();
    let file = components.join("greeter.wasm");
    std::fs::write(&file, wasm("greeter_v1.wasm")).unwrap();
    let manifest = format!(
        "dir = {:?}\n[[component]]\nname = \"greeter\"\nfile = \"greeter.wasm\"\nroutes = [\"/greet\"]\n",
        components.display().to_string()
    );
    let app = support::build_with(
        dir.path(),
        &manifest,
        true,
        None,
        None,
        SandboxConfig::default(),
        HttpLimits::default(),
    )
    .await;
    assert_eq!(version(&app).await, "v1");

    // Published the safe way: written aside, then renamed over the file.
    let aside = components.join(".greeter.wasm.new");
    std::fs::write(&aside, wasm("greeter_v2.wasm")).unwrap();
    std::fs::rename(&aside, &file).unwrap();
    wait_for_version(&app, "v2").await;

    // Written in place, in two halves with a pause: the first half is not a
    // component and never serves; the whole file does.
    let v1 = wasm("greeter_v1.wasm");
    std::fs::write(&file, &v1[..v1.len() / 2]).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(version(&app).await, "v2", "a half-written file was loaded");
    std::fs::write(&file, &v1).unwrap();
    wait_for_version(&app, "v1").await;
}

async fn wait_for_version(app: &axum::Router, expected: &str) {
    let started = std::time::Instant::now();
    while version(app).await != expected {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "never switched to {expected}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// A recorded version that no longer loads (its bytes altered, or gone)
// never stops the host from starting: the database's record wins over
// this host's local copy, and when neither loads, the newest version
// that does serves, with none the manifest's file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_recorded_version_does_not_stop_the_host_from_starting() {
    let dir = tempfile::tempdir().unwrap();
    let routes: &[(&str, &str, &[&str])] = &[("greeter", "greeter_v1.wasm", &["/greet"])];
    let http = || HttpLimits {
        admin_token: Some(ADMIN.into()),
        ..Default::default()
    };
    let start = || {
        support::build_in(
            dir.path(),
            None,
            None,
            SandboxConfig::default(),
            http(),
            routes,
        )
    };
    let first = start().await;
    let v2 = wasm("greeter_v2.wasm");
    let (response, _) = send(&first, upload("greeter", v2.clone(), Some(ADMIN))).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(version(&first).await, "v2");
    drop(first);

    // v2's local copy is altered: the database's record serves it.
    let digest: String = Sha256::digest(&v2)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let recorded = dir.path().join("state/deployments/greeter");
    let v2_file = recorded.join(format!("{digest}.wasm"));
    assert!(v2_file.is_file(), "v2 recorded at {}", v2_file.display());
    std::fs::write(&v2_file, b"not a component").unwrap();
    let second = start().await;
    assert_eq!(version(&second).await, "v2", "from the database's record");
    drop(second);

    // Both copies altered: v1, recorded before it, serves.
    std::fs::write(&v2_file, b"not a component").unwrap();
    let url = format!("sqlite://{}", dir.path().join("test.db").display());
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    let altered = sqlx::query("UPDATE component_versions SET bytes = x'00' WHERE digest = $1")
        .bind(&digest)
        .execute(&mut conn)
        .await
        .unwrap();
    assert_eq!(altered.rows_affected(), 1);
    drop(conn);
    let second = start().await;
    assert_eq!(version(&second).await, "v1");
    drop(second);

    // Every local file gone: the manifest's file serves.
    for entry in std::fs::read_dir(&recorded).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "wasm") {
            std::fs::remove_file(path).unwrap();
        }
    }
    let third = start().await;
    assert_eq!(version(&third).await, "v1");
}

// A host upgraded from a version that kept its deployments only in its
// state directory: at its first start, those become the database's record
// (once), so the deployed version still serves and a rollback still
// returns to the version before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_deployments_are_imported_into_the_database_once() {
    let dir = tempfile::tempdir().unwrap();
    let routes: &[(&str, &str, &[&str])] = &[("greeter", "greeter_v1.wasm", &["/greet"])];
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
            routes,
        )
    };
    let first = start().await;
    let (response, _) = send(
        &first,
        upload("greeter", wasm("greeter_v2.wasm"), Some(ADMIN)),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    drop(first);

    // What the host before the database record left: the local copy only.
    let url = format!("sqlite://{}", dir.path().join("test.db").display());
    let count = |sql: &'static str| {
        let url = url.clone();
        async move {
            let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url)
                .await
                .unwrap();
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&mut conn)
                .await
                .unwrap()
        }
    };
    {
        let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url)
            .await
            .unwrap();
        for table in ["component_history", "component_versions"] {
            sqlx::query(&format!("DELETE FROM {table}"))
                .execute(&mut conn)
                .await
                .unwrap();
        }
    }
    let second = start().await;
    assert_eq!(version(&second).await, "v2");
    assert_eq!(count("SELECT COUNT(*) FROM component_history").await, 2);
    assert_eq!(count("SELECT COUNT(*) FROM component_versions").await, 2);
    let (response, _) = send(&second, rollback("greeter")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(version(&second).await, "v1");
    drop(second);

    // Imported once: the record (v1 now) wins over the local copy.
    let third = start().await;
    assert_eq!(version(&third).await, "v1");
    assert_eq!(count("SELECT COUNT(*) FROM component_history").await, 1);
}

// Canaries on the embedded SQLite database (the fleet tests cover
// PostgreSQL): started, served to their share, aborted, promoted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_on_the_embedded_database_serves_its_share_and_is_aborted_or_promoted() {
    let h = greeter_host().await;
    let post = |action: &str| {
        Request::post(format!("/admin/components/greeter/{action}"))
            .header("authorization", format!("Bearer {ADMIN}"))
            .body(Body::empty())
            .unwrap()
    };
    let canary = || {
        Request::put("/admin/components/greeter?canary=50")
            .header("authorization", format!("Bearer {ADMIN}"))
            .body(Body::from(wasm("greeter_v2.wasm")))
            .unwrap()
    };
    let versions_of = |n: usize| {
        let app = h.app.clone();
        async move {
            let mut seen = std::collections::BTreeMap::<String, usize>::new();
            for _ in 0..n {
                *seen.entry(version(&app).await).or_default() += 1;
            }
            seen
        }
    };

    let (response, body) = send(&h.app, canary()).await;
    assert_eq!(response.status(), StatusCode::OK, "{body:?}");
    let answer = json(&body);
    assert_eq!(answer["canary"]["share"], 50, "{answer}");
    let seen = versions_of(200).await;
    assert!(seen["v1"] >= 50 && seen["v2"] >= 50, "{seen:?}");

    let (response, _) = send(&h.app, post("abort")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(versions_of(50).await.keys().collect::<Vec<_>>(), ["v1"]);
    let (response, _) = send(&h.app, post("abort")).await;
    assert_eq!(response.status(), StatusCode::CONFLICT, "none runs");

    let (response, _) = send(&h.app, canary()).await;
    assert_eq!(response.status(), StatusCode::OK);
    let (response, _) = send(&h.app, post("promote")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(versions_of(50).await.keys().collect::<Vec<_>>(), ["v2"]);
    let (response, _) = send(&h.app, rollback("greeter")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(version(&h.app).await, "v1", "promoted, then rolled back");
}
