//! The categories endpoint: `GET /api/marketplace/categories`.
//!
//! Lists every category with the number of agents in it, ordered by name,
//! cached under `marketplace:categories` for the long TTL with the
//! `categories` tag (invalidated by installs and agent writes).

use guest::{Handler, Request, Response, RowView, Ttl, db, error, json, with_cache};
use serde::Serialize;

struct Categories;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Category {
    id: String,
    slug: String,
    name: String,
    description: String,
    agent_count: i64,
}

const SQL: &str = "SELECT c.id, c.slug, c.name, c.description, \
     (SELECT COUNT(*) FROM agents a WHERE a.category_id = c.id) AS agent_count \
     FROM categories c ORDER BY c.name";

impl Handler for Categories {
    fn handle(req: Request) -> Response {
        if req.method != "GET" {
            return error(405, "method_not_allowed", "only GET is allowed here");
        }
        if req.path.trim_end_matches('/') != "/api/marketplace/categories" {
            return error(404, "not_found", "no such resource");
        }
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
                        })
                        .collect();
                    json(200, &serde_json::json!({ "categories": categories }))
                }
                Err(e) => guest::db_error(&e),
            },
        )
    }
}

guest::export_handler!(Categories);
