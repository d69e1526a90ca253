//! The API of SPEC 3 end to end, over real HTTP, once on the embedded
//! defaults (SQLite, memory tier) and once on the machine's PostgreSQL and
//! Redis: every endpoint and parameter, the defaults, the error statuses,
//! caching (hits, shared and distinct keys, ETag and 304), invalidation on
//! install and template creation, and bad input changing nothing.
//!
//! One test binary, a module per endpoint family: the read endpoints'
//! defaults, filters, paging and errors (`listings`), the response cache
//! (`caching`), installs (`installs`), template creation and bad bodies
//! (`templates`), the database going down (`outage`), and the native
//! baseline the benchmarks compare with (`native`).

mod caching;
mod installs;
mod listings;
mod native;
mod outage;
mod templates;

use serde_json::Value;
use support::served::{Reply, Served, Stack, serve};

async fn host(stack: Stack) -> Option<Served> {
    serve(stack, false).await
}

fn agents(reply: &Reply) -> Vec<Value> {
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    reply.json()["agents"].as_array().expect("agents").clone()
}

fn ids(list: &[Value]) -> Vec<String> {
    list.iter()
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect()
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or_else(|| panic!("not an integer: {v}"))
}

/// Asserts that `key(item)` does not increase along `list`.
fn non_increasing(list: &[Value], key: &str) {
    for pair in list.windows(2) {
        assert!(
            pair[0][key].as_f64() >= pair[1][key].as_f64(),
            "{key} increases: {} then {}",
            pair[0],
            pair[1]
        );
    }
}

fn install_path(id: &str) -> String {
    format!("/api/marketplace/agents/{id}/install")
}

async fn install_count(h: &Served, id: &str) -> i64 {
    let r = h.get(&format!("/api/marketplace/agents/{id}")).await;
    assert_eq!(r.status, 200);
    int(&r.json()["agent"]["installCount"])
}
