//! The response cache: identical and default-equivalent requests sharing an
//! entry (and distinct ones never), ETag and `If-None-Match`, concurrent
//! misses on one key computing it once, and an install showing in every
//! cached read it touches.

use super::{agents, host, install_path, int};
use serde_json::json;
use support::on_both_stacks;
use support::served::{Reply, Served, Stack, TOKEN};

on_both_stacks!(
    identical_and_default_equivalent_requests_share_an_entry,
    etag_and_if_none_match,
    concurrent_misses_on_one_key_query_the_database_once,
    an_install_shows_in_every_cached_read,
);

async fn identical_and_default_equivalent_requests_share_an_entry(stack: Stack) {
    let Some(h) = host(stack).await else { return };
    let first = h.get("/api/marketplace").await;
    assert_eq!(first.x_cache(), "MISS");
    let second = h.get("/api/marketplace").await;
    assert_eq!(second.x_cache(), "HIT");
    assert_eq!(first.body, second.body);

    // Stating the defaults, in any order, is the same request.
    for path in [
        "/api/marketplace?limit=50",
        "/api/marketplace?sortBy=trending&limit=50",
        "/api/marketplace?offset=0&limit=50&sortBy=trending",
        "/api/marketplace?query=&category=",
    ] {
        let r = h.get(path).await;
        assert_eq!(r.x_cache(), "HIT", "{path}");
        assert_eq!(r.body, first.body, "{path}");
    }
    let r = h.get("/api/marketplace/trending").await;
    assert_eq!(r.x_cache(), "MISS");
    assert_eq!(
        h.get("/api/marketplace/trending?limit=10").await.x_cache(),
        "HIT"
    );
    assert_eq!(h.get("/api/templates").await.x_cache(), "MISS");
    assert_eq!(
        h.get("/api/templates?limit=50&offset=0").await.x_cache(),
        "HIT"
    );
    for path in [
        "/api/marketplace/featured",
        "/api/marketplace/categories",
        "/api/marketplace/agents/agent-000007",
    ] {
        assert_eq!(h.get(path).await.x_cache(), "MISS", "{path}");
        assert_eq!(h.get(path).await.x_cache(), "HIT", "{path}");
    }

    // Parameter sets that would run together in a naive key never share one:
    // each of these is a miss the first time, even after all the others.
    let distinct = [
        "/api/marketplace?query=a:b",
        "/api/marketplace?query=a&category=b",
        "/api/marketplace?query=a:b:true",
        "/api/marketplace?query=a&featured=true",
        "/api/marketplace?category=a:b",
        "/api/marketplace?query=-",
        "/api/marketplace?query=a%253Ab",
        "/api/marketplace?limit=5&offset=10",
        "/api/marketplace?limit=51",
        "/api/marketplace?query=trending:50:0",
        "/api/marketplace?sortBy=name",
        "/api/templates?query=a:b",
        "/api/templates?query=a&category=b",
        "/api/templates?category=a:beginner",
        "/api/templates?category=a&complexity=beginner",
    ];
    for path in distinct {
        let r = h.get(path).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(
            r.x_cache(),
            "MISS",
            "{path} shared an entry with an earlier request"
        );
    }
    // The same parameters, spelt differently, are the same entry.
    for path in [
        "/api/marketplace?query=a%3Ab",
        "/api/marketplace?category=&query=a%3Ab",
        "/api/marketplace?query=%2D",
        "/api/marketplace?offset=10&limit=5",
        "/api/templates?complexity=beginner&category=a",
    ] {
        assert_eq!(h.get(path).await.x_cache(), "HIT", "{path}");
    }
}

async fn etag_and_if_none_match(stack: Stack) {
    let Some(h) = host(stack).await else { return };
    for path in [
        "/api/marketplace?limit=3",
        "/api/marketplace/trending",
        "/api/marketplace/featured",
        "/api/marketplace/categories",
        "/api/marketplace/agents/agent-000002",
        "/api/templates?limit=2",
    ] {
        let miss = h.get(path).await;
        let etag = miss.header("etag").expect("an ETag on a miss").to_string();
        let hit = h.get(path).await;
        assert_eq!(hit.x_cache(), "HIT");
        assert_eq!(hit.header("etag"), Some(etag.as_str()), "{path}");

        let not_modified = h.get_if_none_match(path, &etag).await;
        assert_eq!(not_modified.status, 304, "{path}");
        assert!(not_modified.body.is_empty());
        assert_eq!(not_modified.header("etag"), Some(etag.as_str()));
        let weak_in_list = h
            .get_if_none_match(path, &format!("\"0000000000000000\", W/{etag}"))
            .await;
        assert_eq!(weak_in_list.status, 304, "{path}");

        let changed = h.get_if_none_match(path, "\"0000000000000000\"").await;
        assert_eq!(changed.status, 200);
        assert_eq!(changed.body, hit.body);
    }
    // A new body has a new ETag: the old one no longer matches.
    let path = "/api/marketplace/agents/agent-000002";
    let etag = h.get(path).await.header("etag").unwrap().to_string();
    let r = h
        .post(
            "/api/marketplace/agents/agent-000002/install",
            Some(TOKEN),
            r#"{"workspaceId":"ws-demo"}"#,
        )
        .await;
    assert_eq!(r.status, 201);
    let after = h.get_if_none_match(path, &etag).await;
    assert_eq!(after.status, 200);
    assert_ne!(after.header("etag"), Some(etag.as_str()));
}

/// The statements the host has run against its database so far.
async fn db_statements(h: &Served) -> u64 {
    let metrics = String::from_utf8(h.get("/metrics").await.body).unwrap();
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("marketplace_db_statements_total "))
        .unwrap_or_else(|| panic!("no statement counter in {metrics}"))
        .trim()
        .parse()
        .unwrap()
}

async fn concurrent_misses_on_one_key_query_the_database_once(stack: Stack) {
    let Some(h) = host(stack).await else { return };
    // One computation of a listing is two statements: the count and the page.
    let before = db_statements(&h).await;
    let single = h.get("/api/marketplace?query=bot&limit=7").await;
    assert_eq!(single.status, 200);
    assert_eq!(db_statements(&h).await - before, 2);

    let path = "/api/marketplace?query=agent&sortBy=rating&limit=9";
    let before = db_statements(&h).await;
    let replies = futures::future::join_all((0..16).map(|_| h.get(path))).await;
    assert_eq!(
        db_statements(&h).await - before,
        2,
        "16 concurrent misses on one key computed it more than once"
    );
    assert!(
        replies
            .iter()
            .all(|r| r.status == 200 && r.body == replies[0].body)
    );
}

async fn an_install_shows_in_every_cached_read(stack: Stack) {
    let Some(h) = host(stack).await else { return };
    // The most installed featured agent: first in the featured list and in
    // every page filtered to its category or to featured agents.
    let featured = agents(&h.get("/api/marketplace/featured").await);
    let agent = featured[0].clone();
    let id = agent["id"].as_str().unwrap().to_string();
    let category = agent["category"].as_str().unwrap().to_string();
    let word = agent["name"]
        .as_str()
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_lowercase();
    let before = int(&agent["installCount"]);

    let mut pages = Vec::new();
    for sort in ["trending", "popular", "newest", "rating", "name"] {
        for filter in [
            format!("category={category}"),
            "featured=true".to_string(),
            format!("category={category}&featured=true"),
            format!("query={word}&category={category}"),
            String::new(),
        ] {
            for (limit, offset) in [(100, 0), (100, 100), (7, 0)] {
                pages.push(format!(
                    "/api/marketplace?{filter}&sortBy={sort}&limit={limit}&offset={offset}"
                ));
            }
        }
    }
    assert!(pages.len() >= 50);
    let others = [
        "/api/marketplace/trending?limit=50".to_string(),
        "/api/marketplace/featured".to_string(),
        "/api/marketplace/categories".to_string(),
        format!("/api/marketplace/agents/{id}"),
    ];
    let category_before = category_installs(&h.get("/api/marketplace/categories").await, &category);
    let mut holding = 0;
    for path in pages.iter().chain(&others) {
        h.get(path).await;
        let warm = h.get(path).await;
        assert_eq!(warm.x_cache(), "HIT", "{path} was not cached");
    }

    let r = h
        .post(
            &install_path(&id),
            Some(TOKEN),
            r#"{"workspaceId":"ws-demo"}"#,
        )
        .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let after = before + 1;

    for path in pages.iter().chain(&others[..2]) {
        let r = h.get(path).await;
        assert_eq!(
            r.x_cache(),
            "MISS",
            "{path} was served from before the install"
        );
        for a in agents(&r).iter().filter(|a| a["id"] == json!(id)) {
            assert_eq!(int(&a["installCount"]), after, "{path}");
            holding += 1;
        }
    }
    assert!(holding >= 20, "only {holding} pages hold the agent");
    let featured = agents(&h.get("/api/marketplace/featured").await);
    assert_eq!(featured[0]["id"], json!(id));
    assert_eq!(int(&featured[0]["installCount"]), after);

    let categories = h.get("/api/marketplace/categories").await;
    assert_eq!(categories.x_cache(), "MISS");
    assert_eq!(
        category_installs(&categories, &category),
        category_before + 1
    );
    let details = h.get(&format!("/api/marketplace/agents/{id}")).await;
    assert_eq!(details.x_cache(), "MISS");
    assert_eq!(int(&details.json()["agent"]["installCount"]), after);
}

/// The installs of the category `slug` in a `/categories` reply.
fn category_installs(reply: &Reply, slug: &str) -> i64 {
    let categories = reply.json()["categories"].as_array().unwrap().clone();
    let category = categories
        .iter()
        .find(|c| c["slug"] == json!(slug))
        .unwrap_or_else(|| panic!("no category {slug}"));
    int(&category["installCount"])
}
