//! The read endpoints: each one's defaults, browse's filters, sorts and
//! pages, the templates listing's filters and pages, bad parameters (400
//! naming the parameter), and unknown resources and methods.

use super::{agents, host, ids, int, non_increasing};
use serde_json::{Value, json};
use support::on_both_stacks;
use support::served::{Reply, Stack};

on_both_stacks!(
    every_read_endpoint_answers_with_its_defaults,
    browse_filters_sorts_and_pages,
    templates_filter_and_page,
    bad_parameters_are_400_naming_the_parameter,
    unknown_resources_and_methods,
);

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
