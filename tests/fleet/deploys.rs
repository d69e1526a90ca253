//! Fleet deploys: hosts on one PostgreSQL schema, where the versions and
//! which one is active are recorded; a deploy or rollback on any host
//! reaches every other (by notification or by the periodic reconcile), a
//! host started afterwards serves what is active, a host cut from the
//! database keeps serving and converges when it is back, a corrupted
//! stored version does not stop a host from starting, and requests under
//! load across the hosts never fail while versions change.

use super::{Fleet, eventually};
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use host::http::HttpLimits;
use host::runtime::SandboxConfig;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use support::proxy::Proxy;
use support::{TestHost, build_of, get, json, manifest_of, send, settings_with, wasm};

pub(super) const ADMIN: &str = "fleet-admin-token";
const GREETER: &[(&str, &str, &[&str])] = &[("greeter", "greeter_v1.wasm", &["/greet"])];

/// A host of `fleet` serving the greeter (v1 in its manifest), with the
/// admin API, on `database_url`.
pub(super) async fn greeter_host(fleet: &Fleet, database_url: String) -> TestHost {
    greeter_host_reconciling(fleet, database_url, host::RECONCILE_EVERY).await
}

/// `greeter_host`, reading the active versions every `reconcile_every`
/// (besides notifications).
async fn greeter_host_reconciling(
    fleet: &Fleet,
    database_url: String,
    reconcile_every: std::time::Duration,
) -> TestHost {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut settings = settings_with(
        dir.path(),
        &manifest_of(GREETER),
        false,
        Some(database_url),
        Some(fleet.prefix.settings.clone()),
        SandboxConfig::default(),
        HttpLimits {
            admin_token: Some(ADMIN.into()),
            ..HttpLimits::default()
        },
    );
    settings.reconcile_every = reconcile_every;
    let app = host::build(&settings).await.expect("host builds");
    TestHost { app, _dir: dir }
}

/// Three greeter hosts of `fleet`.
pub(super) async fn three_hosts(fleet: &Fleet) -> [TestHost; 3] {
    let url = || fleet.schema.url.clone();
    [
        greeter_host(fleet, url()).await,
        greeter_host(fleet, url()).await,
        greeter_host(fleet, url()).await,
    ]
}

/// Deploys `file` as the greeter through `app`; asserts it was accepted.
pub(super) async fn deploy(app: &Router, file: &str) {
    deploy_bytes(app, wasm(file)).await;
}

/// Deploys `bytes` as the greeter through `app`; asserts it was accepted.
async fn deploy_bytes(app: &Router, bytes: Vec<u8>) {
    let (status, body) = try_deploy_bytes(app, bytes).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// Deploys `file` as the greeter through `app`: the status and body.
async fn try_deploy(app: &Router, file: &str) -> (StatusCode, String) {
    try_deploy_bytes(app, wasm(file)).await
}

/// Deploys `bytes` as the greeter through `app`: the status and body.
pub(super) async fn try_deploy_bytes(app: &Router, bytes: Vec<u8>) -> (StatusCode, String) {
    let request = Request::put("/admin/components/greeter?note=from%20the%20fleet%20tests")
        .header("authorization", format!("Bearer {ADMIN}"))
        .body(Body::from(bytes))
        .unwrap();
    let (response, body) = send(app, request).await;
    (
        response.status(),
        String::from_utf8_lossy(&body).into_owned(),
    )
}

/// Rolls the greeter back through `app`; asserts it was accepted.
async fn rollback(app: &Router) {
    let (status, body) = try_rollback(app).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// Rolls the greeter back through `app`: the status and body.
pub(super) async fn try_rollback(app: &Router) -> (StatusCode, String) {
    super::canary::admin_post(app, "rollback").await
}

/// One number from the fleet's database.
async fn scalar(fleet: &Fleet, sql: &str) -> i64 {
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&fleet.schema.url)
        .await
        .expect("PostgreSQL reachable");
    sqlx::query_scalar(sql)
        .fetch_one(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// The greeter version `app` serves.
pub(super) async fn version(app: &Router) -> String {
    let (response, body) = get(app, "/greet").await;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&body)
    );
    json(&body)["version"].as_str().unwrap().to_string()
}

/// Waits until every host of `hosts` serves `expected`.
pub(super) async fn until_all_serve(hosts: &[&TestHost], expected: &str) {
    for (i, h) in hosts.iter().enumerate() {
        eventually(&format!("host {i} serves {expected}"), || async {
            version(&h.app).await == expected
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_on_one_host_reaches_the_others_and_so_does_a_rollback() {
    let Some(fleet) = Fleet::new().await else {
        return;
    };
    let a = greeter_host(&fleet, fleet.schema.url.clone()).await;
    let b = greeter_host(&fleet, fleet.schema.url.clone()).await;
    let c = greeter_host(&fleet, fleet.schema.url.clone()).await;
    until_all_serve(&[&a, &b, &c], "v1").await;

    deploy(&a.app, "greeter_v2.wasm").await;
    assert_eq!(version(&a.app).await, "v2", "the host deployed to, at once");
    until_all_serve(&[&b, &c], "v2").await;

    rollback(&c.app).await;
    assert_eq!(version(&c.app).await, "v1", "the host rolled back, at once");
    until_all_serve(&[&a, &b], "v1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_started_afterwards_serves_the_active_version() {
    let Some(fleet) = Fleet::new().await else {
        return;
    };
    let a = greeter_host(&fleet, fleet.schema.url.clone()).await;
    deploy(&a.app, "greeter_v2.wasm").await;
    let later = greeter_host(&fleet, fleet.schema.url.clone()).await;
    assert_eq!(version(&later.app).await, "v2", "its first request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_cut_from_the_database_keeps_serving_and_converges_when_it_returns() {
    let Some(fleet) = Fleet::new().await else {
        return;
    };
    let a = greeter_host(&fleet, fleet.schema.url.clone()).await;
    let proxy = Proxy::start(fleet.schema.server(), true).await;
    let b = greeter_host(&fleet, fleet.schema.url_via(proxy.addr)).await;
    assert_eq!(version(&b.app).await, "v1");

    proxy.cut().await;
    deploy(&a.app, "greeter_v2.wasm").await;
    // Past several reconcile passes: B still serves what it has.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(version(&b.app).await, "v1", "serving while cut off");

    proxy.restore();
    until_all_serve(&[&b], "v2").await;
}

// The active version's stored bytes are corrupted: a host that starts
// afterwards starts, and serves the newest recorded version that loads (v2),
// not its manifest's (v1); once the build is uploaded again, it serves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_stored_version_does_not_stop_a_host_from_starting() {
    let Some(fleet) = Fleet::new().await else {
        return;
    };
    let a = greeter_host(&fleet, fleet.schema.url.clone()).await;
    deploy(&a.app, "greeter_v2.wasm").await;
    let build = build_of("greeter_v2.wasm", 1);
    deploy_bytes(&a.app, build).await;
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&fleet.schema.url)
        .await
        .expect("PostgreSQL reachable");
    let corrupted = sqlx::query(
        "UPDATE component_versions SET bytes = $1 \
         WHERE digest = (SELECT digest FROM component_history ORDER BY seq DESC LIMIT 1)",
    )
    .bind(b"\0asm not really".to_vec())
    .execute(&mut conn)
    .await
    .expect("the active version's bytes overwritten");
    assert_eq!(corrupted.rows_affected(), 1);

    let later = greeter_host(&fleet, fleet.schema.url.clone()).await;
    assert_eq!(
        version(&later.app).await,
        "v2",
        "the newest recorded version that loads, not the manifest's v1"
    );
    let entry = listed(&later.app).await;
    assert_eq!(
        entry["current"]["digest"],
        digest_of("greeter_v2.wasm").as_str(),
        "{entry}"
    );
    assert_eq!(version(&a.app).await, "v2", "the others are unaffected");

    // The same build uploaded again stores its bytes again: the new host
    // tries it again and serves it.
    deploy_bytes(&a.app, build_of("greeter_v2.wasm", 1)).await;
    let repaired = hex_sha256(&build_of("greeter_v2.wasm", 1));
    eventually("the new host serves the repaired build", || async {
        listed(&later.app).await["current"]["digest"] == repaired.as_str()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_across_the_fleet_never_fail_while_versions_change() {
    let Some(fleet) = Fleet::new().await else {
        return;
    };
    let hosts = three_hosts(&fleet).await;
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = hosts
        .iter()
        .flat_map(|h| [h.app.clone(), h.app.clone()])
        .map(|app| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0u32, Vec::new());
                while !stop.load(Ordering::Relaxed) {
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

    deploy(&hosts[0].app, "greeter_v2.wasm").await;
    until_all_serve(&[&hosts[0], &hosts[1], &hosts[2]], "v2").await;
    rollback(&hosts[1].app).await;
    until_all_serve(&[&hosts[0], &hosts[1], &hosts[2]], "v1").await;
    let v2 = digest_of("greeter_v2.wasm");
    super::canary::canary(&hosts[2].app, "greeter_v2.wasm", 50).await;
    super::canary::until_canary(&hosts, Some(&v2)).await;
    let (status, body) = super::canary::admin_post(&hosts[0].app, "promote").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    super::canary::until_canary(&hosts, None).await;
    until_all_serve(&[&hosts[0], &hosts[1], &hosts[2]], "v2").await;

    stop.store(true, Ordering::Relaxed);
    let mut served = 0;
    for client in clients {
        let (ok, failed) = client.await.unwrap();
        assert!(failed.is_empty(), "failed requests: {failed:?}");
        served += ok;
    }
    assert!(served > 0, "the clients made requests");
}

// With the periodic reconcile an hour apart, only the deploy's
// notification can bring the others along.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_notification_alone_brings_the_other_hosts_along() {
    let Some(fleet) = Fleet::new().await else {
        return;
    };
    let hour = std::time::Duration::from_secs(3600);
    let a = greeter_host_reconciling(&fleet, fleet.schema.url.clone(), hour).await;
    let b = greeter_host_reconciling(&fleet, fleet.schema.url.clone(), hour).await;
    deploy(&a.app, "greeter_v2.wasm").await;
    until_all_serve(&[&b], "v2").await;
    rollback(&a.app).await;
    until_all_serve(&[&b], "v1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_is_bounded_and_bytes_no_version_names_are_collected() {
    let Some(fleet) = Fleet::new().await else {
        return;
    };
    let a = greeter_host(&fleet, fleet.schema.url.clone()).await;
    // The manifest's v1, then eight builds of v2: six kept.
    for n in 0..8 {
        deploy_bytes(&a.app, build_of("greeter_v2.wasm", n)).await;
    }
    let rows = "SELECT COUNT(*) FROM component_history";
    let versions = "SELECT COUNT(*) FROM component_versions";
    assert_eq!(scalar(&fleet, rows).await, 6);
    assert_eq!(
        scalar(&fleet, versions).await,
        6,
        "v1 and the oldest builds collected"
    );
    // Deploying the active build again changes nothing kept.
    deploy_bytes(&a.app, build_of("greeter_v2.wasm", 7)).await;
    assert_eq!(scalar(&fleet, rows).await, 6);
    // A kept build deployed again moves to the top: one row per build.
    deploy_bytes(&a.app, build_of("greeter_v2.wasm", 3)).await;
    assert_eq!(scalar(&fleet, rows).await, 6);
    assert_eq!(scalar(&fleet, versions).await, 6);
    // Rolled back to one build: the others' bytes go.
    for _ in 0..5 {
        rollback(&a.app).await;
    }
    assert_eq!(scalar(&fleet, rows).await, 1);
    assert_eq!(scalar(&fleet, versions).await, 1);
    assert_eq!(version(&a.app).await, "v2");
    let (status, body) = try_rollback(&a.app).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
}

// Deploys and rollbacks of one component sent to three hosts at once:
// each is recorded whole or refused (409), the history never names bytes
// that are not stored, and every host ends on what is active.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_changes_on_several_hosts_leave_one_consistent_history() {
    let Some(fleet) = Fleet::new().await else {
        return;
    };
    let hosts = three_hosts(&fleet).await;
    deploy(&hosts[0].app, "greeter_v2.wasm").await;
    for _ in 0..8 {
        let (a, b, c) = tokio::join!(
            try_deploy(&hosts[0].app, "greeter_v1.wasm"),
            try_rollback(&hosts[1].app),
            try_deploy(&hosts[2].app, "greeter_v2.wasm"),
        );
        for (status, body) in [a, b, c] {
            assert!(
                status == StatusCode::OK || status == StatusCode::CONFLICT,
                "{status}: {body}"
            );
        }
        let orphans = scalar(
            &fleet,
            "SELECT COUNT(*) FROM component_history h WHERE NOT EXISTS \
             (SELECT 1 FROM component_versions v WHERE v.component = h.component AND v.digest = h.digest)",
        )
        .await;
        assert_eq!(orphans, 0, "history rows without bytes");
    }
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&fleet.schema.url)
        .await
        .expect("PostgreSQL reachable");
    let active: String =
        sqlx::query_scalar("SELECT digest FROM component_history ORDER BY seq DESC LIMIT 1")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    let expected = if active == digest_of("greeter_v1.wasm") {
        "v1"
    } else {
        assert_eq!(active, digest_of("greeter_v2.wasm"));
        "v2"
    };
    until_all_serve(&[&hosts[0], &hosts[1], &hosts[2]], expected).await;
}

/// The hex SHA-256 of a built component.
pub(super) fn digest_of(file: &str) -> String {
    hex_sha256(&wasm(file))
}

/// The hex SHA-256 of `bytes`: a version's digest.
fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `GET /admin/components` of `app`: the greeter's entry.
pub(super) async fn listed(app: &Router) -> serde_json::Value {
    let request = Request::get("/admin/components")
        .header("authorization", format!("Bearer {ADMIN}"))
        .body(Body::empty())
        .unwrap();
    let (response, body) = send(app, request).await;
    assert_eq!(response.status(), StatusCode::OK);
    json(&body)["components"][0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_view_shows_what_each_host_serves_and_any_kept_version_can_be_activated() {
    let Some(fleet) = Fleet::new().await else {
        return;
    };
    let hosts = three_hosts(&fleet).await;
    deploy(&hosts[0].app, "greeter_v2.wasm").await;
    let (v1, v2) = (digest_of("greeter_v1.wasm"), digest_of("greeter_v2.wasm"));
    eventually("every host reports v2", || async {
        let entry = listed(&hosts[1].app).await;
        let serving = entry["fleet"]["hosts"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        serving.len() == 3 && serving.iter().all(|h| h["digest"] == v2.as_str())
    })
    .await;
    let entry = listed(&hosts[2].app).await;
    assert_eq!(entry["fleet"]["active"], v2.as_str(), "{entry}");
    let versions = entry["fleet"]["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2, "{entry}");
    assert_eq!(versions[0]["digest"], v1.as_str());
    assert_eq!(versions[1]["note"], "from the fleet tests");

    // Any kept version, activated on any host, serves everywhere.
    let activate = |digest: &str| {
        Request::post(format!("/admin/components/greeter/activate/{digest}"))
            .header("authorization", format!("Bearer {ADMIN}"))
            .body(Body::empty())
            .unwrap()
    };
    let (response, _) = send(&hosts[2].app, activate(&v1)).await;
    assert_eq!(response.status(), StatusCode::OK);
    until_all_serve(&[&hosts[0], &hosts[1], &hosts[2]], "v1").await;
    let (response, body) = send(&hosts[2].app, activate(&"0".repeat(64))).await;
    assert_eq!(
        response.status(),
        StatusCode::NOT_FOUND,
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(version(&hosts[0].app).await, "v1", "nothing changed");
}

// The deploy CLI's requests (`marketplace-host deploy`, `list`, `rollback`,
// `activate`, `promote`, `abort` run `host::admin_client`) against two hosts served over HTTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_deploys_lists_and_rolls_back_end_to_end() {
    use host::admin_client::{AdminApi, CliError};
    let Some(fleet) = Fleet::new().await else {
        return;
    };
    let a = greeter_host(&fleet, fleet.schema.url.clone()).await;
    let b = greeter_host(&fleet, fleet.schema.url.clone()).await;
    let timeout = HttpLimits::default().header_timeout;
    let (a_addr, _stop_a) = support::served::spawn(a.app.clone(), timeout).await;
    let (b_addr, _stop_b) = support::served::spawn(b.app.clone(), timeout).await;
    let api = |addr: std::net::SocketAddr, token: &str| AdminApi {
        url: format!("http://{addr}"),
        token: token.into(),
    };

    let said = api(a_addr, ADMIN)
        .deploy(
            "greeter",
            wasm("greeter_v2.wasm"),
            "the CLI's note",
            None,
            Some(50),
        )
        .await
        .expect("deployed");
    let v2 = digest_of("greeter_v2.wasm");
    assert!(said.contains(&v2), "{said}");
    until_all_serve(&[&b], "v2").await;
    let versions = listed(&b.app).await["fleet"]["versions"].clone();
    let recorded = versions
        .as_array()
        .expect("versions")
        .iter()
        .find(|v| v["digest"] == v2.as_str())
        .cloned();
    assert_eq!(
        recorded.map(|v| v["instanceReuse"].clone()),
        Some(serde_json::json!(50)),
        "{versions}"
    );

    let serving_v2 = format!("serves {}", &v2[..12]);
    let started = std::time::Instant::now();
    let listed = loop {
        let listed = api(b_addr, ADMIN).list().await.expect("listed");
        if listed.matches(&serving_v2).count() == 2 {
            break listed;
        }
        assert!(
            started.elapsed() < super::PROPAGATION_BOUND,
            "both hosts never listed on v2: {listed}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(
        listed.contains(&format!("greeter  active {v2}")),
        "{listed}"
    );
    assert!(listed.contains("the CLI's note"), "{listed}");

    let said = api(b_addr, ADMIN)
        .rollback("greeter")
        .await
        .expect("rolled back");
    assert!(said.contains(&digest_of("greeter_v1.wasm")), "{said}");
    until_all_serve(&[&a, &b], "v1").await;

    // A canary through the CLI: listed, then promoted; then there is
    // none to abort.
    let said = api(a_addr, ADMIN)
        .deploy("greeter", wasm("greeter_v2.wasm"), "canary", Some(30), None)
        .await
        .expect("canary started");
    assert!(said.contains("serves 30% of requests"), "{said}");
    let listed = api(b_addr, ADMIN).list().await.expect("listed");
    assert!(
        listed.contains(&format!("  canary {v2} on 30% of requests")),
        "{listed}"
    );
    let said = api(b_addr, ADMIN)
        .promote("greeter")
        .await
        .expect("promoted");
    assert!(said.contains(&v2), "{said}");
    for _ in 0..20 {
        assert_eq!(version(&b.app).await, "v2", "promoted on the host asked");
    }
    let none = api(a_addr, ADMIN).abort("greeter").await.unwrap_err();
    assert!(
        matches!(&none, CliError::Refused { status, .. } if status.as_u16() == 409),
        "{none}"
    );

    // Clear errors: a wrong token, an unknown component, no host there.
    let wrong = api(a_addr, "not-the-token").list().await.unwrap_err();
    assert!(
        matches!(&wrong, CliError::Refused { status, .. } if status.as_u16() == 401),
        "{wrong}"
    );
    let unknown = api(a_addr, ADMIN).rollback("nobody").await.unwrap_err();
    assert!(unknown.to_string().contains("nobody"), "{unknown}");
    let bad_name = api(a_addr, ADMIN).rollback("../admin").await.unwrap_err();
    assert!(matches!(bad_name, CliError::Usage(_)), "{bad_name}");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let nobody = api(closed, ADMIN).list().await.unwrap_err();
    assert!(matches!(nobody, CliError::Unreachable { .. }), "{nobody}");
}

/// A host of `fleet` serving the fixtures at `/fixture`, fresh instances
/// by default, with the admin API.
async fn fixtures_host(fleet: &Fleet) -> TestHost {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let settings = settings_with(
        dir.path(),
        &manifest_of(&[("fixtures", "fixtures.wasm", &["/fixture"])]),
        false,
        Some(fleet.schema.url.clone()),
        Some(fleet.prefix.settings.clone()),
        SandboxConfig::default(),
        HttpLimits {
            admin_token: Some(ADMIN.into()),
            ..HttpLimits::default()
        },
    );
    let app = host::build(&settings).await.expect("host builds");
    TestHost { app, _dir: dir }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_instance_reuse_an_upload_names_holds_on_every_host() {
    let Some(fleet) = Fleet::new().await else {
        return;
    };
    let a = fixtures_host(&fleet).await;
    let b = fixtures_host(&fleet).await;
    let bytes = build_of("fixtures.wasm", 5);
    let digest = hex_sha256(&bytes);
    let request = Request::put("/admin/components/fixtures?instance_reuse=3")
        .header("authorization", format!("Bearer {ADMIN}"))
        .body(Body::from(bytes))
        .unwrap();
    let (response, body) = send(&a.app, request).await;
    assert_eq!(response.status(), StatusCode::OK, "{body:?}");
    let serving = |app: Router| {
        let digest = digest.clone();
        async move {
            let request = Request::get("/admin/components")
                .header("authorization", format!("Bearer {ADMIN}"))
                .body(Body::empty())
                .unwrap();
            let (_, body) = send(&app, request).await;
            json(&body)["components"][0]["current"]["digest"] == digest.as_str()
        }
    };
    eventually("the other host serves the upload", || {
        serving(b.app.clone())
    })
    .await;
    let mut seen = Vec::new();
    for _ in 0..4 {
        let (response, body) = get(&b.app, "/fixture/remember").await;
        assert_eq!(response.status(), StatusCode::OK);
        seen.push(json(&body)["served"].as_u64().expect("served"));
    }
    assert_eq!(seen, [1, 2, 3, 1], "one instance serves three requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_starting_at_once_on_a_new_schema_all_come_up() {
    // Several rounds: the race between hosts preparing the database's
    // component role is not lost every time.
    for _ in 0..3 {
        let Some(fleet) = Fleet::new().await else {
            return;
        };
        let url = || fleet.schema.url.clone();
        let hosts = tokio::join!(
            greeter_host(&fleet, url()),
            greeter_host(&fleet, url()),
            greeter_host(&fleet, url()),
            greeter_host(&fleet, url()),
        );
        for h in [&hosts.0, &hosts.1, &hosts.2, &hosts.3] {
            assert_eq!(version(&h.app).await, "v1");
        }
    }
}
