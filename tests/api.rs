//! The API of SPEC 3 end to end, over real HTTP, once on the embedded
//! defaults (SQLite, memory tier) and once on the machine's PostgreSQL and
//! Redis: every endpoint and parameter, the defaults, the error statuses,
//! caching (hits, shared and distinct keys, ETag and 304), invalidation on
//! install and template creation, and bad input changing nothing.

use serde_json::{Value, json};
use support::on_both_stacks;
use support::served::{Reply, Served, Stack, TOKEN, serve};

on_both_stacks!(
    every_read_endpoint_answers_with_its_defaults,
    browse_filters_sorts_and_pages,
    templates_filter_and_page,
    bad_parameters_are_400_naming_the_parameter,
    unknown_resources_and_methods,
    identical_and_default_equivalent_requests_share_an_entry,
    etag_and_if_none_match,
    install_authorizes_validates_and_is_idempotent,
    concurrent_installs_make_one_installation,
    concurrent_misses_on_one_key_query_the_database_once,
    an_install_shows_in_every_cached_read,
    template_creation_validates_every_field,
    bad_bodies_never_change_data,
    the_native_baseline_answers_the_components_bytes,
);

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

async fn every_read_endpoint_answers_with_its_defaults(stack: Stack) {
    let Some(h) = host(stack).await else { return };

    let browse = h.get("/api/marketplace").await;
    let page = browse.json();
    assert_eq!(int(&page["total"]), host::DEMO_AGENTS as i64);
    assert_eq!(int(&page["limit"]), 50);
    assert_eq!(int(&page["offset"]), 0);
    let list = agents(&browse);
    assert_eq!(list.len(), 50);
    for field in [
        "id",
        "slug",
        "name",
        "description",
        "category",
        "categoryName",
        "publisher",
        "createdAt",
        "updatedAt",
    ] {
        assert!(list[0][field].is_string(), "{field} in {}", list[0]);
    }
    assert!(list[0]["tags"].as_array().is_some_and(|t| !t.is_empty()));
    assert!(list[0]["featured"].is_boolean());
    assert!(list[0]["installCount"].is_i64());
    assert!(list[0]["rating"].is_f64());
    assert!(list[0]["createdAt"].as_str().unwrap().ends_with('Z'));
    // The default sort is trending: installs of the last 7 days.
    non_increasing(&list, "recentInstalls");
    assert!(int(&list[0]["recentInstalls"]) > 0);

    let trending = agents(&h.get("/api/marketplace/trending").await);
    assert_eq!(trending.len(), 10);
    non_increasing(&trending, "recentInstalls");
    assert_eq!(ids(&trending), ids(&list[..10]));

    let featured = agents(&h.get("/api/marketplace/featured").await);
    assert!(!featured.is_empty());
    assert!(featured.iter().all(|a| a["featured"] == json!(true)));
    non_increasing(&featured, "installCount");
    let all_featured = h.get("/api/marketplace?featured=true&limit=100").await;
    assert_eq!(
        int(&all_featured.json()["total"]),
        featured.len() as i64,
        "the featured list holds every featured agent of the demo data"
    );

    let categories = h.get("/api/marketplace/categories").await;
    assert_eq!(categories.status, 200);
    let categories = categories.json()["categories"].as_array().unwrap().clone();
    assert_eq!(categories.len(), 12);
    let agent_total: i64 = categories.iter().map(|c| int(&c["agentCount"])).sum();
    assert_eq!(agent_total, host::DEMO_AGENTS as i64);

    let id = list[3]["id"].as_str().unwrap();
    let details = h.get(&format!("/api/marketplace/agents/{id}")).await;
    assert_eq!(details.status, 200);
    let agent = &details.json()["agent"];
    assert_eq!(agent["id"], list[3]["id"]);
    assert_eq!(agent["installCount"], list[3]["installCount"]);
    assert_eq!(agent["recentInstalls"], list[3]["recentInstalls"]);

    let templates = h.get("/api/templates").await;
    assert_eq!(templates.status, 200);
    let t = templates.json();
    assert_eq!(int(&t["total"]), 100);
    assert_eq!(int(&t["limit"]), 50);
    assert_eq!(t["templates"].as_array().unwrap().len(), 50);
    let first = &t["templates"][0];
    assert!(first["steps"].as_array().is_some_and(|s| !s.is_empty()));
    assert!(
        ["beginner", "intermediate", "advanced"].contains(&first["complexity"].as_str().unwrap())
    );

    let spec = h.get("/openapi.json").await;
    assert_eq!(spec.status, 200);
    assert!(spec.json()["openapi"].as_str().unwrap().starts_with("3."));
}

async fn browse_filters_sorts_and_pages(stack: Stack) {
    let Some(h) = host(stack).await else { return };
    let all = agents(&h.get("/api/marketplace?limit=100&sortBy=popular").await);

    // query: case-insensitive, in name, description or tags.
    let word = all[0]["name"]
        .as_str()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .to_uppercase();
    let found = h
        .get(&format!("/api/marketplace?query={word}&limit=100"))
        .await;
    let total = int(&found.json()["total"]);
    let found = agents(&found);
    assert!(
        total > 0 && total < host::DEMO_AGENTS as i64,
        "{word}: {total}"
    );
    let needle = word.to_lowercase();
    for a in &found {
        let haystack = format!("{} {} {}", a["name"], a["description"], a["tags"]).to_lowercase();
        assert!(haystack.contains(&needle), "{needle} not in {a}");
    }
    // LIKE wildcards in the query are literal.
    let wildcard = h.get("/api/marketplace?query=%25").await;
    assert_eq!(int(&wildcard.json()["total"]), 0);
    let underscore = h.get("/api/marketplace?query=_").await;
    assert_eq!(int(&underscore.json()["total"]), 0);

    // category: every agent of the category, as counted by /categories.
    let categories = h.get("/api/marketplace/categories").await.json();
    let category = &categories["categories"][2];
    let slug = category["slug"].as_str().unwrap();
    let in_category = h
        .get(&format!("/api/marketplace?category={slug}&limit=100"))
        .await;
    assert_eq!(in_category.json()["total"], category["agentCount"]);
    assert!(
        agents(&in_category)
            .iter()
            .all(|a| a["category"] == json!(slug))
    );
    let none = h.get("/api/marketplace?category=no-such-category").await;
    assert_eq!(int(&none.json()["total"]), 0);

    // featured, both ways, partition the agents.
    let yes = h.get("/api/marketplace?featured=true&limit=100").await;
    let no = h.get("/api/marketplace?featured=false&limit=1").await;
    assert!(agents(&yes).iter().all(|a| a["featured"] == json!(true)));
    assert!(agents(&no).iter().all(|a| a["featured"] == json!(false)));
    assert_eq!(
        int(&yes.json()["total"]) + int(&no.json()["total"]),
        host::DEMO_AGENTS as i64
    );

    // Filters combine.
    let both = h
        .get(&format!(
            "/api/marketplace?category={slug}&featured=true&limit=100"
        ))
        .await;
    assert!(
        agents(&both)
            .iter()
            .all(|a| a["category"] == json!(slug) && a["featured"] == json!(true))
    );

    // Each sort.
    non_increasing(&all, "installCount");
    let newest = agents(&h.get("/api/marketplace?sortBy=newest&limit=100").await);
    for pair in newest.windows(2) {
        assert!(pair[0]["createdAt"].as_str() >= pair[1]["createdAt"].as_str());
    }
    let rated = agents(&h.get("/api/marketplace?sortBy=rating&limit=100").await);
    non_increasing(&rated, "rating");
    let named = agents(&h.get("/api/marketplace?sortBy=name&limit=100").await);
    // Collations differ between engines; the first letter orders the same.
    for pair in named.windows(2) {
        let first = |a: &Value| a["name"].as_str().unwrap().to_lowercase().chars().next();
        assert!(
            first(&pair[0]) <= first(&pair[1]),
            "{} before {}",
            pair[0]["name"],
            pair[1]["name"]
        );
    }
    let trending = agents(&h.get("/api/marketplace?sortBy=trending&limit=100").await);
    non_increasing(&trending, "recentInstalls");

    // Pages follow each other without overlap, and limit bounds them.
    let first = agents(&h.get("/api/marketplace?sortBy=popular&limit=30").await);
    let second = agents(
        &h.get("/api/marketplace?sortBy=popular&limit=30&offset=30")
            .await,
    );
    assert_eq!(first.len(), 30);
    assert_eq!(ids(&first), ids(&all[..30]));
    assert_eq!(ids(&second), ids(&all[30..60]));
    let one = agents(&h.get("/api/marketplace?limit=1").await);
    assert_eq!(one.len(), 1);
    let past = h.get("/api/marketplace?offset=1000").await;
    assert!(agents(&past).is_empty());
    assert_eq!(int(&past.json()["total"]), host::DEMO_AGENTS as i64);

    // trending's own limit.
    assert_eq!(
        agents(&h.get("/api/marketplace/trending?limit=50").await).len(),
        50
    );
    assert_eq!(
        agents(&h.get("/api/marketplace/trending?limit=1").await).len(),
        1
    );
}

async fn templates_filter_and_page(stack: Stack) {
    let Some(h) = host(stack).await else { return };
    let list = |r: &Reply| -> Vec<Value> {
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        r.json()["templates"].as_array().unwrap().clone()
    };
    let all = list(&h.get("/api/templates?limit=100").await);
    assert_eq!(all.len(), 100);
    // Featured first, then newest.
    let featured = all
        .iter()
        .take_while(|t| t["featured"] == json!(true))
        .count();
    assert!(featured > 0);
    assert!(
        all[featured..]
            .iter()
            .all(|t| t["featured"] == json!(false))
    );

    let mut sum = 0;
    for complexity in ["beginner", "intermediate", "advanced"] {
        let r = h
            .get(&format!("/api/templates?complexity={complexity}&limit=100"))
            .await;
        assert!(
            list(&r)
                .iter()
                .all(|t| t["complexity"] == json!(complexity))
        );
        sum += int(&r.json()["total"]);
    }
    assert_eq!(sum, 100);

    let category = all[0]["category"].as_str().unwrap();
    let r = h
        .get(&format!("/api/templates?category={category}&limit=100"))
        .await;
    assert!(list(&r).iter().all(|t| t["category"] == json!(category)));
    assert_eq!(
        int(&r.json()["total"]) as usize,
        all.iter()
            .filter(|t| t["category"] == json!(category))
            .count()
    );

    let r = h.get("/api/templates?featured=true").await;
    assert_eq!(int(&r.json()["total"]) as usize, featured);
    let r = h.get("/api/templates?featured=false&limit=1").await;
    assert_eq!(int(&r.json()["total"]) as usize, 100 - featured);

    let word = all[0]["name"].as_str().unwrap().split(' ').next().unwrap();
    let r = h
        .get(&format!(
            "/api/templates?query={}&limit=100",
            word.to_lowercase()
        ))
        .await;
    assert!(int(&r.json()["total"]) > 0);
    for t in list(&r) {
        let haystack = format!("{} {} {}", t["name"], t["description"], t["tags"]).to_lowercase();
        assert!(haystack.contains(&word.to_lowercase()));
    }

    let page = list(&h.get("/api/templates?limit=10&offset=20").await);
    assert_eq!(ids(&page), ids(&all[20..30]));
}

async fn bad_parameters_are_400_naming_the_parameter(stack: Stack) {
    let Some(h) = host(stack).await else { return };
    let long = "x".repeat(201);
    let cases: Vec<(String, &str)> = vec![
        ("/api/marketplace?limit=0".into(), "limit"),
        ("/api/marketplace?limit=101".into(), "limit"),
        ("/api/marketplace?limit=ten".into(), "limit"),
        ("/api/marketplace?limit=5&limit=6".into(), "limit"),
        ("/api/marketplace?offset=-1".into(), "offset"),
        ("/api/marketplace?offset=1000001".into(), "offset"),
        (
            "/api/marketplace?offset=99999999999999999999".into(),
            "offset",
        ),
        ("/api/marketplace?sortBy=best".into(), "sortBy"),
        ("/api/marketplace?sortBy=TRENDING".into(), "sortBy"),
        ("/api/marketplace?featured=yes".into(), "featured"),
        (format!("/api/marketplace?query={long}"), "query"),
        (format!("/api/marketplace?category={long}"), "category"),
        ("/api/marketplace?query=a%00b".into(), "query"),
        ("/api/marketplace?sort=name".into(), "sort"),
        ("/api/marketplace/trending?limit=51".into(), "limit"),
        ("/api/marketplace/trending?limit=0".into(), "limit"),
        ("/api/marketplace/trending?offset=1".into(), "offset"),
        ("/api/marketplace/featured?limit=1".into(), "limit"),
        ("/api/marketplace/categories?x=1".into(), "x"),
        ("/api/marketplace/agents/agent-000001?full=1".into(), "full"),
        ("/api/templates?complexity=expert".into(), "complexity"),
        ("/api/templates?limit=0".into(), "limit"),
        ("/api/templates?offset=-5".into(), "offset"),
        ("/api/templates?featured=1".into(), "featured"),
        ("/api/templates?sortBy=name".into(), "sortBy"),
        // An empty typed value is not the default: the schema says
        // `limit=` is not an integer.
        ("/api/marketplace?limit=".into(), "limit"),
        ("/api/marketplace?sortBy=".into(), "sortBy"),
        ("/api/marketplace?featured=".into(), "featured"),
        ("/api/templates?complexity=".into(), "complexity"),
        ("/api/templates?offset=".into(), "offset"),
    ];
    for (path, name) in cases {
        let r = h.get(&path).await;
        let message = r.expect_error(400, "invalid_parameter");
        assert!(message.contains(&format!("`{name}`")), "{path}: {message}");
    }
}

async fn unknown_resources_and_methods(stack: Stack) {
    let Some(h) = host(stack).await else { return };
    for path in [
        "/api/marketplace/agents/agent-999999",
        "/api/marketplace/agents/nope%20nope",
        "/api/marketplace/nope",
        "/api/marketplace/agents/agent-000001/nope",
        "/api/templates/tpl-0001",
        "/api/nothing",
    ] {
        h.get(path).await.expect_error(404, "not_found");
    }
    let r = h
        .send(
            h.client
                .delete(h.url("/api/marketplace/agents/agent-000001")),
        )
        .await;
    r.expect_error(405, "method_not_allowed");
    assert_eq!(r.header("allow"), Some("GET"));
    let r = h.get("/api/marketplace/agents/agent-000001/install").await;
    r.expect_error(405, "method_not_allowed");
    assert_eq!(r.header("allow"), Some("POST"));
    let r = h.send(h.client.put(h.url("/api/templates"))).await;
    r.expect_error(405, "method_not_allowed");
}

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

fn install_path(id: &str) -> String {
    format!("/api/marketplace/agents/{id}/install")
}

async fn install_count(h: &Served, id: &str) -> i64 {
    let r = h.get(&format!("/api/marketplace/agents/{id}")).await;
    assert_eq!(r.status, 200);
    int(&r.json()["agent"]["installCount"])
}

async fn install_authorizes_validates_and_is_idempotent(stack: Stack) {
    let Some(h) = host(stack).await else { return };
    let id = "agent-000010";
    let path = install_path(id);
    let before = install_count(&h, id).await;
    let body = r#"{"workspaceId":"ws-demo"}"#;

    let r = h.post(&path, None, body).await;
    r.expect_error(401, "unauthorized");
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    h.post(&path, Some("not-a-real-token-000000000"), body)
        .await
        .expect_error(401, "unauthorized");
    // A valid token, but for a workspace its user is not a member of.
    let message = h
        .post(&path, Some(TOKEN), r#"{"workspaceId":"ws-001"}"#)
        .await
        .expect_error(403, "forbidden");
    assert!(message.contains("ws-001"), "{message}");
    h.post(&install_path("agent-999999"), Some(TOKEN), body)
        .await
        .expect_error(404, "not_found");
    assert_eq!(install_count(&h, id).await, before);

    let first = h.post(&path, Some(TOKEN), body).await;
    assert_eq!(
        first.status,
        201,
        "{}",
        String::from_utf8_lossy(&first.body)
    );
    let first = first.json();
    assert_eq!(first["created"], json!(true));
    assert_eq!(first["installation"]["agentId"], json!(id));
    assert_eq!(first["installation"]["workspaceId"], json!("ws-demo"));
    assert_eq!(
        first["installation"]["installedBy"],
        json!(host::seed::DEMO_USER)
    );
    assert_eq!(int(&first["agent"]["installCount"]), before + 1);
    assert_eq!(install_count(&h, id).await, before + 1);

    let again = h.post(&path, Some(TOKEN), body).await;
    assert_eq!(again.status, 200);
    let again = again.json();
    assert_eq!(again["created"], json!(false));
    assert_eq!(again["installation"], first["installation"]);
    assert_eq!(int(&again["agent"]["installCount"]), before + 1);
    assert_eq!(install_count(&h, id).await, before + 1);
}

async fn concurrent_installs_make_one_installation(stack: Stack) {
    let Some(h) = host(stack).await else { return };
    let id = "agent-000011";
    let before = install_count(&h, id).await;
    let path = install_path(id);
    let replies = futures::future::join_all(
        (0..8).map(|_| h.post(&path, Some(TOKEN), r#"{"workspaceId":"ws-demo"}"#)),
    )
    .await;
    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        7,
        "{statuses:?}"
    );
    let installation = replies[0].json()["installation"]["id"].clone();
    assert!(
        replies
            .iter()
            .all(|r| r.json()["installation"]["id"] == installation)
    );
    assert_eq!(install_count(&h, id).await, before + 1);
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

async fn template_creation_validates_every_field(stack: Stack) {
    let Some(h) = host(stack).await else { return };
    let valid = json!({
        "name": "Nightly report",
        "description": "Collects the day's numbers and mails them.",
        "category": "data-analysis",
        "complexity": "intermediate",
        "steps": [
            {"name": "Collect", "action": "query the warehouse", "agentId": "agent-000001"},
            {"name": "Send", "config": {"to": "team@example.com"}}
        ],
        "tags": ["reports", "nightly"]
    });
    let warm = h.get("/api/templates?query=nightly%20report").await;
    assert_eq!(int(&warm.json()["total"]), 0);
    assert_eq!(
        h.get("/api/templates?query=nightly%20report")
            .await
            .x_cache(),
        "HIT"
    );

    h.post("/api/templates", None, valid.to_string())
        .await
        .expect_error(401, "unauthorized");

    let with = |field: &str, value: Value| {
        let mut body = valid.clone();
        body[field] = value;
        body.to_string()
    };
    let without = |field: &str| {
        let mut body = valid.clone();
        body.as_object_mut().unwrap().remove(field);
        body.to_string()
    };
    let cases: Vec<(String, &str)> = vec![
        (without("name"), "name"),
        (with("name", json!("")), "name"),
        (with("name", json!("   ")), "name"),
        (with("name", json!("x".repeat(121))), "name"),
        (with("name", json!(42)), "name"),
        (with("name", json!("tab\there")), "name"),
        (without("description"), "description"),
        (with("description", json!(null)), "description"),
        (with("description", json!("d".repeat(2001))), "description"),
        (without("category"), "category"),
        (with("category", json!("no-such-category")), "category"),
        (with("category", json!(["data-analysis"])), "category"),
        (without("complexity"), "complexity"),
        (with("complexity", json!("expert")), "complexity"),
        (without("steps"), "steps"),
        (with("steps", json!([])), "steps"),
        (with("steps", json!("collect, send")), "steps"),
        (with("steps", json!([{"action": "no name"}])), "steps[0]"),
        (
            with("steps", json!([{"name": "a"}, {"name": "b", "extra": 1}])),
            "steps[1]",
        ),
        (
            with("steps", json!(vec![json!({"name": "s"}); 51])),
            "steps",
        ),
        (with("tags", json!("reports")), "tags"),
        (with("tags", json!([1, 2])), "tags[0]"),
        (with("tags", json!([""])), "tags[0]"),
        (with("tags", json!(vec!["t"; 21])), "tags"),
        (with("featured", json!(true)), "featured"),
    ];
    for (body, field) in cases {
        let r = h.post("/api/templates", Some(TOKEN), body.clone()).await;
        let message = r.expect_error(400, "invalid_body");
        assert!(message.contains(field), "{body}: {message}");
    }
    assert_eq!(
        h.get("/api/templates?query=nightly%20report")
            .await
            .x_cache(),
        "HIT",
        "a rejected template invalidated the cache"
    );

    let created = h
        .post("/api/templates", Some(TOKEN), valid.to_string())
        .await;
    assert_eq!(
        created.status,
        201,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    let template = created.json()["template"].clone();
    assert!(template["id"].as_str().unwrap().starts_with("tpl-"));
    assert_eq!(template["name"], valid["name"]);
    assert_eq!(template["steps"], valid["steps"]);
    assert_eq!(template["tags"], valid["tags"]);
    assert_eq!(template["featured"], json!(false));
    assert_eq!(template["createdBy"], json!(host::seed::DEMO_USER));

    let listed = h.get("/api/templates?query=nightly%20report").await;
    assert_eq!(listed.x_cache(), "MISS");
    assert_eq!(listed.json()["templates"][0], template);
    let all = h.get("/api/templates").await;
    assert_eq!(int(&all.json()["total"]), 101);
}

async fn bad_bodies_never_change_data(stack: Stack) {
    let Some(h) = host(stack).await else { return };
    let id = "agent-000012";
    let path = install_path(id);
    let before = install_count(&h, id).await;
    let categories_before = h.get("/api/marketplace/categories").await.body;
    let templates_before = int(&h.get("/api/templates").await.json()["total"]);

    let install_bodies: Vec<(Vec<u8>, u16, &str)> = vec![
        (b"".to_vec(), 400, "invalid_body"),
        (b"{".to_vec(), 400, "invalid_body"),
        (b"not json".to_vec(), 400, "invalid_body"),
        (b"[]".to_vec(), 400, "invalid_body"),
        (b"null".to_vec(), 400, "invalid_body"),
        (b"{}".to_vec(), 400, "invalid_body"),
        (br#"{"workspaceId": 7}"#.to_vec(), 400, "invalid_body"),
        (
            br#"{"workspaceId": ["ws-demo"]}"#.to_vec(),
            400,
            "invalid_body",
        ),
        (br#"{"workspaceId": ""}"#.to_vec(), 400, "invalid_body"),
        (
            br#"{"workspaceId": "ws-demo", "x": 1}"#.to_vec(),
            400,
            "invalid_body",
        ),
        (
            br#"{"workspaceId": "ws-demo"} {}"#.to_vec(),
            400,
            "invalid_body",
        ),
        (vec![0xff, 0xfe, 0x00], 400, "invalid_body"),
        (
            br#"{"workspaceId": "ws-demo' OR '1'='1"}"#.to_vec(),
            403,
            "forbidden",
        ),
        (
            br#"{"workspaceId": "'; DROP TABLE installations; --"}"#.to_vec(),
            403,
            "forbidden",
        ),
        (
            format!(r#"{{"workspaceId": "{}"}}"#, "w".repeat(20_000)).into_bytes(),
            413,
            "payload_too_large",
        ),
    ];
    for (body, status, code) in install_bodies {
        let r = h.post(&path, Some(TOKEN), body.clone()).await;
        let message = r.expect_error(status, code);
        if status == 400 && body.starts_with(b"{\"workspaceId\"") {
            assert!(
                message.contains("workspaceId") || message.contains("body"),
                "{message}"
            );
        }
    }
    // An id that looks like SQL is just an unknown id.
    h.post(
        &install_path("agent-000012'%20OR%20'1'='1"),
        Some(TOKEN),
        r#"{"workspaceId":"ws-demo"}"#,
    )
    .await
    .expect_error(404, "not_found");
    let r = h
        .get("/api/marketplace?query=%27%3B%20DROP%20TABLE%20agents%3B%20--")
        .await;
    assert_eq!(int(&r.json()["total"]), 0);

    let template_bodies: Vec<Vec<u8>> = vec![
        b"{".to_vec(),
        b"[]".to_vec(),
        br#"{"name": "x"}"#.to_vec(),
        br#"{"name": "x'); DROP TABLE workflow_templates; --", "description": "d", "category": "x' OR '1'='1", "complexity": "beginner", "steps": [{"name": "s"}]}"#.to_vec(),
        format!(r#"{{"name": "{}"}}"#, "n".repeat(20_000)).into_bytes(),
    ];
    for body in template_bodies {
        let r = h.post("/api/templates", Some(TOKEN), body).await;
        assert!(
            matches!(r.status, 400 | 413),
            "{}",
            String::from_utf8_lossy(&r.body)
        );
    }

    assert_eq!(install_count(&h, id).await, before);
    assert_eq!(
        h.get("/api/marketplace/categories").await.body,
        categories_before
    );
    assert_eq!(
        int(&h.get("/api/templates").await.json()["total"]),
        templates_before
    );
    // The tables the SQL-looking strings name are still there.
    assert_eq!(
        int(&h.get("/api/marketplace").await.json()["total"]),
        host::DEMO_AGENTS as i64
    );
}

/// The database going down: what is cached is still served; what is not is
/// 503 with `Retry-After`; nothing is corrupted, and service resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_is_503_for_what_the_cache_cannot_answer() {
    let Some(h) = serve(Stack::Real, true).await else {
        return;
    };
    let proxy = h.db_proxy.as_ref().expect("a database proxy");
    let cached = h.get("/api/marketplace/categories").await;
    assert_eq!(cached.status, 200);

    proxy.cut().await;
    let still = h.get("/api/marketplace/categories").await;
    assert_eq!(still.status, 200);
    assert_eq!(still.x_cache(), "HIT");
    for path in [
        "/api/marketplace/agents/agent-000003",
        "/api/templates?limit=3",
    ] {
        let r = h.get(path).await;
        r.expect_error(503, "database_unavailable");
        assert!(r.header("retry-after").is_some(), "{path}: no Retry-After");
    }
    let r = h
        .post(
            &install_path("agent-000003"),
            Some(TOKEN),
            r#"{"workspaceId":"ws-demo"}"#,
        )
        .await;
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.header("retry-after").is_some());

    proxy.restore();
    let mut details = h.get("/api/marketplace/agents/agent-000003").await;
    for _ in 0..50 {
        if details.status == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        details = h.get("/api/marketplace/agents/agent-000003").await;
    }
    assert_eq!(details.status, 200, "service did not resume");
}

/// The benchmarks compare the component with a native handler of its hit
/// path: that comparison is fair only if both answer the same bytes.
async fn the_native_baseline_answers_the_components_bytes(stack: Stack) {
    let Some(h) = host(stack).await else { return };
    for path in [
        "/api/marketplace",
        "/api/marketplace?query=a:b&limit=7&featured=true&sortBy=name",
        "/api/marketplace?category=coding&offset=3",
        "/api/marketplace/agents/agent-000005",
    ] {
        let native = format!("/native{path}");
        // A miss on the native path is the component's answer.
        let first = h.get(&native).await;
        assert_eq!(first.status, 200, "{native}");
        assert_eq!(first.x_cache(), "MISS", "{native}");
        let component = h.get(path).await;
        let hit = h.get(&native).await;
        assert_eq!(hit.x_cache(), "HIT", "{native}");
        assert_eq!(hit.body, component.body, "{native}");
        assert_eq!(hit.header("etag"), component.header("etag"), "{native}");
        assert_eq!(hit.header("content-type"), component.header("content-type"));
        let etag = hit.header("etag").unwrap();
        assert_eq!(h.get_if_none_match(&native, etag).await.status, 304);
    }
    // Bad parameters get the component's own 400.
    let bad = h.get("/native/api/marketplace?limit=0").await;
    bad.expect_error(400, "invalid_parameter");
}
