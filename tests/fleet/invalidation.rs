//! Invalidation across hosts: a write on one host is never lost to the
//! others, whichever host or channel fails after its commit.

use super::{Fleet, details, eventually, install};
use std::time::{Duration, Instant};
use support::counter;

// Host A cannot reach Redis when it writes, so its invalidation cannot be
// told to Redis; then A dies. B and C must still stop serving the old
// answer from Redis, without anything more from A.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_host_cannot_reach_redis_and_then_dies_still_reaches_the_others() {
    let Some(fleet) = Fleet::new().await else {
        return;
    };
    let (a, a_redis) = fleet.host_behind_proxy().await;
    let b = fleet.host().await;
    let c = fleet.host().await;
    let id = "agent-000007";
    let (_, before) = details(&b.app, id).await;
    assert_eq!(details(&b.app, id).await, ("HIT".into(), before));
    assert_eq!(details(&c.app, id).await, ("HIT".into(), before));

    a_redis.cut().await;
    assert_eq!(install(&a.app, id).await, 201);
    drop(a);

    for (name, host) in [("B", &b), ("C", &c)] {
        eventually(&format!("host {name} sees the install"), || async {
            details(&host.app, id).await.1 == before + 1
        })
        .await;
    }
}

// Nothing fails: B and C read Redis, which A's request told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_one_host_is_seen_on_the_others() {
    let Some(fleet) = Fleet::new().await else {
        return;
    };
    let a = fleet.host().await;
    let b = fleet.host().await;
    let c = fleet.host().await;
    let id = "agent-000011";
    let (_, before) = details(&b.app, id).await;
    assert_eq!(details(&c.app, id).await, ("HIT".into(), before));

    assert_eq!(install(&a.app, id).await, 201);
    assert_eq!(details(&a.app, id).await.1, before + 1, "on the writer");
    for (name, host) in [("B", &b), ("C", &c)] {
        eventually(&format!("host {name} sees the install"), || async {
            details(&host.app, id).await.1 == before + 1
        })
        .await;
    }
}

// Redis is down for every host: each serves from its memory tier, which
// only its own relay can tell.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_is_seen_on_every_host_while_redis_is_down_for_all() {
    let Some(fleet) = Fleet::new().await else {
        return;
    };
    let (a, a_redis) = fleet.host_behind_proxy().await;
    let (b, b_redis) = fleet.host_behind_proxy().await;
    let (c, c_redis) = fleet.host_behind_proxy().await;
    for proxy in [&a_redis, &b_redis, &c_redis] {
        proxy.cut().await;
    }
    let id = "agent-000012";
    // Each host now caches the details in its memory tier.
    let (_, before) = details(&b.app, id).await;
    assert_eq!(details(&b.app, id).await, ("HIT".into(), before));
    assert_eq!(details(&c.app, id).await.1, before);
    assert_eq!(details(&c.app, id).await, ("HIT".into(), before));

    assert_eq!(install(&a.app, id).await, 201);
    assert_eq!(details(&a.app, id).await.1, before + 1, "on the writer");
    for (name, host) in [("B", &b), ("C", &c)] {
        eventually(&format!("host {name} sees the install"), || async {
            details(&host.app, id).await.1 == before + 1
        })
        .await;
    }
}

// Only B cannot reach Redis, so B serves from its memory tier, which the
// writer's request and relay (both on Redis) never touch: B hears of the
// write from PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_is_seen_on_a_host_whose_redis_alone_is_down() {
    let Some(fleet) = Fleet::new().await else {
        return;
    };
    let a = fleet.host().await;
    let (b, b_redis) = fleet.host_behind_proxy().await;
    let c = fleet.host().await;
    b_redis.cut().await;
    let id = "agent-000013";
    let (_, before) = details(&c.app, id).await;
    eventually("host B caches the details in memory", || async {
        details(&b.app, id).await == ("HIT".into(), before)
    })
    .await;

    assert_eq!(install(&a.app, id).await, 201);
    for (name, host) in [("B", &b), ("C", &c)] {
        eventually(&format!("host {name} sees the install"), || async {
            details(&host.app, id).await.1 == before + 1
        })
        .await;
    }
}

// Redis is down for every host when A writes, and A dies before Redis is
// back: only the outbox knows that Redis still holds the old answer. When
// Redis returns, B must not serve that answer from it, not even for the
// moment between its breaker closing and a relay delivering the backlog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_outage_redis_serves_nothing_invalidated_during_it() {
    let Some(fleet) = Fleet::new().await else {
        return;
    };
    let (a, a_redis) = fleet.host_behind_proxy().await;
    let (b, b_redis) = fleet.host_behind_proxy().await;
    let id = "agent-000014";
    let (_, before) = details(&b.app, id).await;
    assert_eq!(details(&b.app, id).await, ("HIT".into(), before));

    a_redis.cut().await;
    b_redis.cut().await;
    assert_eq!(install(&a.app, id).await, 201);
    drop(a);
    eventually("host B sees the install during the outage", || async {
        details(&b.app, id).await.1 == before + 1
    })
    .await;

    let on_redis = || async {
        let mut served = 0;
        for tier in ["redis", "near"] {
            for outcome in ["hit", "miss"] {
                served += counter(&b.app, "marketplace:agent", tier, outcome).await;
            }
        }
        served
    };
    let before_return = on_redis().await;
    b_redis.restore();
    // Until B is back on Redis and a while after: every answer is new.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        assert_eq!(
            details(&b.app, id).await.1,
            before + 1,
            "an answer from before the write, {:?} after Redis came back",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(on_redis().await > before_return, "B is back on Redis");
}

// B cannot reach Redis, so only PostgreSQL's notices tell its memory tier
// of other hosts' writes; then B's connections to PostgreSQL go silent
// without being closed (a partition). B must notice that it hears nothing
// and stop serving what it cached, rather than serve it until
// `DEGRADED_TTL`; once the partition heals it serves the write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_whose_listener_goes_silent_stops_serving_what_it_cached() {
    let Some(fleet) = Fleet::new().await else {
        return;
    };
    let a = fleet.host().await;
    let (b, b_redis, b_pg) = fleet.host_behind_proxies().await;
    b_redis.cut().await;
    let id = "agent-000016";
    let (_, before) = details(&a.app, id).await;
    eventually("host B caches the details in memory", || async {
        details(&b.app, id).await == ("HIT".into(), before)
    })
    .await;

    b_pg.partition();
    assert_eq!(install(&a.app, id).await, 201);
    eventually("host B stops serving the old answer", || async {
        install_count(&b.app, id).await != Some(before)
    })
    .await;

    b_pg.restore();
    eventually("host B serves the install", || async {
        install_count(&b.app, id).await == Some(before + 1)
    })
    .await;
}

/// The install count `app` answers for agent `id`, `None` if it cannot
/// answer.
async fn install_count(app: &axum::Router, id: &str) -> Option<i64> {
    let (response, body) = support::get(app, &format!("/api/marketplace/agents/{id}")).await;
    if response.status() != 200 {
        return None;
    }
    support::json(&body)["agent"]["installCount"].as_i64()
}

// Without Redis no row is ever marked delivered, so each host's relay and
// its listener both apply every write: the lag histogram must still count
// each write once per host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_host_observes_the_lag_of_a_write_once() {
    let Some(fleet) = Fleet::new().await else {
        return;
    };
    let a = fleet.host_without_redis().await;
    let b = fleet.host_without_redis().await;
    let id = "agent-000017";
    let (_, before) = details(&b.app, id).await;
    assert_eq!(install(&a.app, id).await, 201);
    eventually("host B sees the install", || async {
        details(&b.app, id).await.1 == before + 1
    })
    .await;
    // Several relay passes, each reading the undelivered row again.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for (name, host) in [("A", &a), ("B", &b)] {
        assert_eq!(lag_observations(&host.app).await, 1, "on host {name}");
    }
}

/// How many invalidations `app` observed the lag of.
async fn lag_observations(app: &axum::Router) -> u64 {
    let (_, body) = support::get(app, "/metrics").await;
    String::from_utf8(body)
        .expect("metrics are text")
        .lines()
        .find_map(|l| l.strip_prefix("marketplace_invalidation_lag_seconds_count "))
        .map(|v| v.trim().parse().expect("a count"))
        .unwrap_or(0)
}
