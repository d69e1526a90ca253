//! The read endpoints: browse, trending, featured, categories and details.

use guest::{
    Filter, Key, Query, Request, Response, RowView, Ttl, Value, cache_fill, cache_hit, db,
    db_error, json, not_found, now_ms, or_db_error, page_json, with_cache,
};
use serde::Serialize;
use std::borrow::Cow;

/// The columns of an agent, from `agents a JOIN categories c`.
const COLUMNS: &str = "a.id, a.slug, a.name, a.description, c.slug AS category, \
     c.name AS category_name, a.tags, a.publisher, a.featured, a.install_count, a.rating, \
     a.created_at, a.updated_at";
const FROM: &str = "FROM agents a JOIN categories c ON c.id = a.category_id";
/// Installs per agent since `$1`: the trending window.
const RECENT: &str = "LEFT JOIN (SELECT agent_id, COUNT(*) AS n FROM installations \
     WHERE created_at >= $1 GROUP BY agent_id) r ON r.agent_id = a.id";

/// The trending window.
const WEEK_MS: i64 = 7 * 24 * 3600 * 1000;
/// How many featured agents the featured list shows at most.
const FEATURED_MAX: i64 = 50;
/// The largest `offset` a listing accepts.
pub const MAX_OFFSET: i64 = 1_000_000;
/// The longest `query` and `category` a listing accepts, in characters.
const MAX_TEXT: usize = 200;

const SORTS: &[&str] = &["trending", "popular", "newest", "rating", "name"];

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Agent {
    id: String,
    slug: String,
    name: String,
    description: String,
    category: String,
    category_name: String,
    tags: serde_json::Value,
    publisher: String,
    featured: bool,
    install_count: i64,
    rating: f64,
    created_at: String,
    updated_at: String,
    /// Installs in the last 7 days, where the query computed them.
    #[serde(skip_serializing_if = "Option::is_none")]
    recent_installs: Option<i64>,
}

fn agent(r: &RowView) -> Agent {
    let has_recent = !matches!(r.get("recent_installs"), Value::Null);
    Agent {
        id: r.text("id"),
        slug: r.text("slug"),
        name: r.text("name"),
        description: r.text("description"),
        category: r.text("category"),
        category_name: r.text("category_name"),
        tags: r.json("tags"),
        publisher: r.text("publisher"),
        featured: r.boolean("featured"),
        install_count: r.int("install_count"),
        rating: r.float("rating"),
        created_at: r.time("created_at"),
        updated_at: r.time("updated_at"),
        recent_installs: has_recent.then(|| r.int("recent_installs")),
    }
}

fn agents(rows: &db::Rows) -> Vec<Agent> {
    RowView::all(rows).map(|r| agent(&r)).collect()
}

/// The parameters of a browse, defaults applied.
struct Browse<'a> {
    query: Option<Cow<'a, str>>,
    category: Option<Cow<'a, str>>,
    featured: Option<bool>,
    sort: &'static str,
    limit: i64,
    offset: i64,
}

impl<'a> Browse<'a> {
    fn parse(req: &'a Request) -> Result<Self, Response> {
        let [query, category, featured, sort, limit, offset] = Query::new(req.query())
            .params(["query", "category", "featured", "sortBy", "limit", "offset"])?;
        Ok(Browse {
            query: query.text(MAX_TEXT)?,
            category: category.text(MAX_TEXT)?,
            featured: featured.boolean()?,
            sort: sort.choice(SORTS)?.unwrap_or("trending"),
            limit: limit.int(50, 1, 100)?,
            offset: offset.int(0, 0, MAX_OFFSET)?,
        })
    }

    fn key(&self) -> String {
        Key::new("marketplace:agents")
            .text(self.query.as_deref())
            .text(self.category.as_deref())
            .text(self.featured.map(|f| if f { "true" } else { "false" }))
            .text(Some(self.sort))
            .int(self.limit)
            .int(self.offset)
            .build()
    }

    /// The filters, their placeholders numbered after `first`.
    fn filter(&self, first: Vec<Value>) -> Filter {
        Filter::after(first)
            .contains(
                &["a.name", "a.description", "a.tags"],
                self.query.as_deref(),
            )
            .equals(
                "c.slug",
                self.category.as_deref().map(|c| Value::Text(c.to_string())),
            )
            .equals("a.featured", self.featured.map(Value::Boolean))
    }

    fn run(&self) -> Result<Response, Response> {
        let total = or_db_error(self.filter(Vec::new()).count(FROM))?;
        let (select, join, order, first) = match self.sort {
            "trending" => (
                ", COALESCE(r.n, 0) AS recent_installs",
                RECENT,
                "COALESCE(r.n, 0) DESC, a.install_count DESC, a.id",
                vec![Value::Int(now_ms() - WEEK_MS)],
            ),
            "popular" => ("", "", "a.install_count DESC, a.id", vec![]),
            "newest" => ("", "", "a.created_at DESC, a.id", vec![]),
            "rating" => ("", "", "a.rating DESC, a.install_count DESC, a.id", vec![]),
            _ => ("", "", "a.name, a.id", vec![]),
        };
        let filter = self.filter(first);
        let clause = filter.clause();
        let (page, params) = filter.page(self.limit, self.offset);
        let sql =
            format!("SELECT {COLUMNS}{select} {FROM} {join} {clause} ORDER BY {order} {page}");
        let rows = or_db_error(db::query(&sql, &params))?;
        Ok(page_json(
            "agents",
            serde_json::json!(agents(&rows)),
            total,
            self.limit,
            self.offset,
        ))
    }
}

/// `GET /api/marketplace`.
pub fn browse(req: &Request) -> Response {
    let browse = match Browse::parse(req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    with_cache(&browse.key(), Ttl::MEDIUM, &["agents"], || {
        browse.run().unwrap_or_else(|r| r)
    })
}

/// `GET /api/marketplace/trending`: installs in the last 7 days, then
/// installs of all time.
pub fn trending(req: &Request) -> Response {
    let params = Query::new(req.query()).params(["limit"]);
    let limit = match params.and_then(|[limit]| limit.int(10, 1, 50)) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let key = Key::new("marketplace:trending").int(limit).build();
    with_cache(&key, Ttl::MEDIUM, &["agents", "trending"], || {
        let sql = format!(
            "SELECT {COLUMNS}, COALESCE(r.n, 0) AS recent_installs {FROM} {RECENT} \
             ORDER BY COALESCE(r.n, 0) DESC, a.install_count DESC, a.id LIMIT $2"
        );
        match db::query(&sql, &[Value::Int(now_ms() - WEEK_MS), Value::Int(limit)]) {
            Ok(rows) => json(200, &serde_json::json!({ "agents": agents(&rows) })),
            Err(e) => db_error(&e),
        }
    })
}

/// `GET /api/marketplace/featured`: featured agents, most installed first.
pub fn featured(req: &Request) -> Response {
    if let Err(r) = Query::new(req.query()).only(&[]) {
        return r;
    }
    with_cache(
        "marketplace:featured",
        Ttl::MEDIUM,
        &["agents", "featured"],
        || {
            let sql = format!(
                "SELECT {COLUMNS} {FROM} WHERE a.featured = $1 \
                 ORDER BY a.install_count DESC, a.id LIMIT $2"
            );
            match db::query(&sql, &[Value::Boolean(true), Value::Int(FEATURED_MAX)]) {
                Ok(rows) => json(200, &serde_json::json!({ "agents": agents(&rows) })),
                Err(e) => db_error(&e),
            }
        },
    )
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Category {
    id: String,
    slug: String,
    name: String,
    description: String,
    agent_count: i64,
    install_count: i64,
}

/// `GET /api/marketplace/categories`: every category, by name, with the
/// number of agents in it and their installs.
pub fn categories(req: &Request) -> Response {
    if let Err(r) = Query::new(req.query()).only(&[]) {
        return r;
    }
    const SQL: &str = "SELECT c.id, c.slug, c.name, c.description, COUNT(a.id) AS agent_count, \
         CAST(COALESCE(SUM(a.install_count), 0) AS BIGINT) AS install_count \
         FROM categories c LEFT JOIN agents a ON a.category_id = c.id \
         GROUP BY c.id, c.slug, c.name, c.description ORDER BY c.name";
    with_cache(
        "marketplace:categories",
        Ttl::LONG,
        &["categories"],
        || match db::query(SQL, &[]) {
            Ok(rows) => {
                let categories: Vec<Category> = RowView::all(&rows)
                    .map(|r| Category {
                        id: r.text("id"),
                        slug: r.text("slug"),
                        name: r.text("name"),
                        description: r.text("description"),
                        agent_count: r.int("agent_count"),
                        install_count: r.int("install_count"),
                    })
                    .collect();
                json(200, &serde_json::json!({ "categories": categories }))
            }
            Err(e) => db_error(&e),
        },
    )
}

/// `GET /api/marketplace/agents/{id}`.
pub fn details(req: &Request, id: &str) -> Response {
    if let Err(r) = Query::new(req.query()).only(&[]) {
        return r;
    }
    if id.is_empty() || id.len() > 200 {
        return not_found("no such agent");
    }
    let key = Key::new("marketplace:agent").text(Some(id)).build();
    if let Some(hit) = cache_hit(&key) {
        return hit;
    }
    let computed = {
        let sql = format!(
            "SELECT {COLUMNS}, (SELECT COUNT(*) FROM installations i \
             WHERE i.agent_id = a.id AND i.created_at >= $2) AS recent_installs \
             {FROM} WHERE a.id = $1"
        );
        let params = [Value::Text(id.to_string()), Value::Int(now_ms() - WEEK_MS)];
        match db::query(&sql, &params) {
            Ok(rows) => match RowView::all(&rows).next() {
                Some(r) => json(200, &serde_json::json!({ "agent": agent(&r) })),
                None => not_found(&format!("no agent with id `{id}`")),
            },
            Err(e) => db_error(&e),
        }
    };
    // Made on a miss only.
    let tag = ["agent:", id].concat();
    cache_fill(&key, Ttl::LONG, &[&tag], computed)
}
