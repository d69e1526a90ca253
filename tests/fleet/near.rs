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
    assert_eq!(
        details(&b.app, id).await.1,
        before + 1,
        "host B reads afresh"
    );
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
