//! The near cache: Redis hits kept in a host's memory, served only while
//! the host hears every invalidation (its subscription to the channel).

use super::{Fleet, details, eventually, install};
use support::counter;

async fn near_hits(app: &axum::Router) -> u64 {
    counter(app, "marketplace:agent", "near", "hit").await
}

// B's subscription (with the rest of its Redis) is cut: B stops serving
// its near cache, sees a write made meanwhile on A, and serves the near
// cache again once the subscription is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_whose_subscription_is_cut_serves_no_near_cache_entry_until_it_is_back() {
    let Some(fleet) = Fleet::new().await else {
        return;
    };
    let a = fleet.host().await;
    let (b, b_redis) = fleet.host_behind_proxy().await;
    let id = "agent-000014";
    let (_, before) = details(&b.app, id).await;
    eventually("host B serves the details from its near cache", || async {
        let seen = near_hits(&b.app).await;
        details(&b.app, id).await;
        near_hits(&b.app).await > seen
    })
    .await;

    b_redis.cut().await;
    eventually("host B stops serving its near cache", || async {
        let seen = near_hits(&b.app).await;
        details(&b.app, id).await;
        near_hits(&b.app).await == seen
    })
    .await;
    assert_eq!(install(&a.app, id).await, 201);
    let seen = near_hits(&b.app).await;
    // B hears the write on the database's notice, which may lag the write
    // by the propagation delay (its Redis is cut, so nothing else tells
    // it); its memory tier holds what it computed while cut.
    eventually("host B reads afresh", || async {
        details(&b.app, id).await.1 == before + 1
    })
    .await;
    assert_eq!(details(&b.app, id).await.1, before + 1);
    assert_eq!(near_hits(&b.app).await, seen, "no near cache while cut");

    b_redis.restore();
    eventually("host B serves its near cache again", || async {
        let seen = near_hits(&b.app).await;
        let (_, count) = details(&b.app, id).await;
        assert_eq!(count, before + 1);
        near_hits(&b.app).await > seen
    })
    .await;
}

// A write on A reaches what B keeps in its near cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_one_host_reaches_the_near_cache_of_another() {
    let Some(fleet) = Fleet::new().await else {
        return;
    };
    let a = fleet.host().await;
    let b = fleet.host().await;
    let id = "agent-000015";
    let (_, before) = details(&b.app, id).await;
    eventually("host B serves the details from its near cache", || async {
        let seen = near_hits(&b.app).await;
        details(&b.app, id).await;
        near_hits(&b.app).await > seen
    })
    .await;
    assert_eq!(install(&a.app, id).await, 201);
    eventually("host B sees the install", || async {
        details(&b.app, id).await.1 == before + 1
    })
    .await;
}

/// What the fixture component reads under `key` on `app`.
async fn fixture_value(app: &axum::Router, key: &str) -> Option<String> {
    let (response, body) = support::get(app, &format!("/fixture/cache-get?key={key}")).await;
    assert_eq!(response.status(), 200);
    support::json(&body)["value"].as_str().map(str::to_string)
}

async fn fixture(app: &axum::Router, path: &str) {
    let (response, body) = support::get(app, path).await;
    assert_eq!(response.status(), 200, "{}", String::from_utf8_lossy(&body));
}

// An entry overwritten or deleted on A, with no tag invalidated, is not
// served from B's near cache, nor from A's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_set_or_deleted_on_one_host_leaves_every_near_cache() {
    let Some(fleet) = Fleet::new().await else {
        return;
    };
    let a = fleet.host().await;
    let b = fleet.host().await;
    fixture(&a.app, "/fixture/cache-set?key=k&value=one").await;
    for host in [&a, &b] {
        eventually("the entry is served from the near cache", || async {
            let seen = counter(&host.app, "k", "near", "hit").await;
            assert_eq!(fixture_value(&host.app, "k").await.as_deref(), Some("one"));
            counter(&host.app, "k", "near", "hit").await > seen
        })
        .await;
    }

    fixture(&a.app, "/fixture/cache-set?key=k&value=two").await;
    assert_eq!(
        fixture_value(&a.app, "k").await.as_deref(),
        Some("two"),
        "on A"
    );
    eventually("B sees the new value", || async {
        fixture_value(&b.app, "k").await.as_deref() == Some("two")
    })
    .await;

    fixture(&a.app, "/fixture/cache-delete?key=k").await;
    assert_eq!(fixture_value(&a.app, "k").await, None, "on A");
    eventually("B sees the entry gone", || async {
        fixture_value(&b.app, "k").await.is_none()
    })
    .await;
}
