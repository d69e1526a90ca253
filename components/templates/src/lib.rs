//! The workflow template endpoints, under `/api/templates`:
//!
//! - `GET /api/templates`: search, filter and page, cached for the long TTL
//!   with the `templates` tag;
//! - `POST /api/templates`: create (bearer token), every field validated;
//!   invalidates `templates`.

use guest::{
    Filter, Handler, Key, Query, Request, Response, RowView, Ttl, Value, db, db_error,
    invalid_field, json, method_not_allowed, new_id, not_found, now_ms, or_db_error, page_json,
    with_cache, write_request,
};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

const COMPLEXITIES: &[&str] = &["beginner", "intermediate", "advanced"];
/// The largest `offset` the listing accepts.
const MAX_OFFSET: i64 = 1_000_000;
/// The longest `query` and `category` the listing accepts, in characters.
const MAX_TEXT: usize = 200;

struct Templates;

impl Handler for Templates {
    fn handle(req: Request) -> Response {
        let path = req.path().trim_end_matches('/');
        if path != "/api/templates" {
            return not_found("no such resource");
        }
        match req.method() {
            "GET" => list(&req),
            "POST" => create(&req),
            _ => method_not_allowed(&["GET", "POST"]),
        }
    }
}

guest::export_handler!(Templates);

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Template {
    id: String,
    name: String,
    description: String,
    category: String,
    complexity: String,
    steps: serde_json::Value,
    tags: serde_json::Value,
    featured: bool,
    created_by: Option<String>,
    created_at: String,
    updated_at: String,
}

const COLUMNS: &str = "id, name, description, category, complexity, steps, tags, featured, \
     created_by, created_at, updated_at";

fn template(r: &RowView) -> Template {
    Template {
        id: r.text("id"),
        name: r.text("name"),
        description: r.text("description"),
        category: r.text("category"),
        complexity: r.text("complexity"),
        steps: r.json("steps"),
        tags: r.json("tags"),
        featured: r.boolean("featured"),
        created_by: match r.get("created_by") {
            Value::Text(s) => Some(s.clone()),
            _ => None,
        },
        created_at: r.time("created_at"),
        updated_at: r.time("updated_at"),
    }
}

/// `GET /api/templates`: featured first, then newest.
fn list(req: &Request) -> Response {
    let params = match ListParams::parse(req) {
        Ok(p) => p,
        Err(r) => return r,
    };
    with_cache(&params.key(), Ttl::LONG, &["templates"], || {
        params.page().unwrap_or_else(|r| r)
    })
}

/// The parameters of the templates listing, validated, defaults applied.
struct ListParams<'a> {
    query: Option<Cow<'a, str>>,
    category: Option<Cow<'a, str>>,
    complexity: Option<&'static str>,
    featured: Option<bool>,
    limit: i64,
    offset: i64,
}

impl<'a> ListParams<'a> {
    fn parse(req: &'a Request) -> Result<Self, Response> {
        let [query, category, complexity, featured, limit, offset] = Query::new(req.query())
            .params([
                "query",
                "category",
                "complexity",
                "featured",
                "limit",
                "offset",
            ])?;
        Ok(Self {
            query: query.text(MAX_TEXT)?,
            category: category.text(MAX_TEXT)?,
            complexity: complexity.choice(COMPLEXITIES)?,
            featured: featured.boolean()?,
            limit: limit.int(50, 1, 100)?,
            offset: offset.int(0, 0, MAX_OFFSET)?,
        })
    }

    fn key(&self) -> String {
        Key::new("templates:workflows")
            .text(self.query.as_deref())
            .text(self.category.as_deref())
            .optional(self.complexity)
            .optional(self.featured)
            .int(self.limit)
            .int(self.offset)
            .build()
    }

    fn filter(&self) -> Filter {
        let text = |v: Option<&str>| v.map(|v| Value::Text(v.to_string()));
        Filter::default()
            .contains(&["name", "description", "tags"], self.query.as_deref())
            .equals("category", text(self.category.as_deref()))
            .equals("complexity", text(self.complexity))
            .equals("featured", self.featured.map(Value::Boolean))
    }

    /// The count, then the page.
    fn page(&self) -> Result<Response, Response> {
        let filter = self.filter();
        let total = or_db_error(filter.count("FROM workflow_templates"))?;
        let clause = filter.clause();
        let (page, params) = filter.page(self.limit, self.offset);
        let sql = format!(
            "SELECT {COLUMNS} FROM workflow_templates {clause} \
             ORDER BY featured DESC, created_at DESC, id {page}"
        );
        let rows = or_db_error(db::query(&sql, &params))?;
        let templates: Vec<Template> = RowView::all(&rows).map(|r| template(&r)).collect();
        Ok(page_json(
            "templates",
            serde_json::json!(templates),
            total,
            self.limit,
            self.offset,
        ))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTemplate {
    name: String,
    description: String,
    category: String,
    complexity: Complexity,
    steps: Vec<Step>,
    #[serde(default)]
    tags: Vec<String>,
}

#[derive(Deserialize, Serialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum Complexity {
    Beginner,
    Intermediate,
    Advanced,
}

impl Complexity {
    fn as_str(self) -> &'static str {
        match self {
            Complexity::Beginner => "beginner",
            Complexity::Intermediate => "intermediate",
            Complexity::Advanced => "advanced",
        }
    }
}

/// One step of a workflow.
#[derive(Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Step {
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    agent_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    config: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Limits on a new template's fields.
const NAME_MAX: usize = 120;
const DESCRIPTION_MAX: usize = 2000;
const STEPS_MAX: usize = 50;
const TAGS_MAX: usize = 20;
const TAG_MAX: usize = 40;

/// `text` trimmed, if it has 1 to `max` characters and no control
/// characters; otherwise the 400 naming `field`.
fn bounded<'a>(field: &str, text: &'a str, max: usize) -> Result<&'a str, Response> {
    let t = text.trim();
    // The length counts the surrounding spaces, as the OpenAPI document's
    // `maxLength` does.
    if t.is_empty() || text.chars().count() > max {
        Err(invalid_field(
            field,
            &format!("must be 1 to {max} characters long (not counting surrounding spaces)"),
        ))
    } else if t.chars().any(char::is_control) && field != "description" {
        Err(invalid_field(field, "must not contain control characters"))
    } else {
        Ok(t)
    }
}

impl NewTemplate {
    fn validate(&self) -> Result<(), Response> {
        bounded("name", &self.name, NAME_MAX)?;
        bounded("description", &self.description, DESCRIPTION_MAX)?;
        bounded("category", &self.category, MAX_TEXT)?;
        if self.steps.is_empty() || self.steps.len() > STEPS_MAX {
            return Err(invalid_field(
                "steps",
                &format!("must hold 1 to {STEPS_MAX} steps"),
            ));
        }
        for (i, step) in self.steps.iter().enumerate() {
            bounded(&format!("steps[{i}].name"), &step.name, NAME_MAX)?;
            if let Some(action) = &step.action {
                bounded(&format!("steps[{i}].action"), action, DESCRIPTION_MAX)?;
            }
            if let Some(agent) = &step.agent_id {
                bounded(&format!("steps[{i}].agentId"), agent, MAX_TEXT)?;
            }
        }
        if self.tags.len() > TAGS_MAX {
            return Err(invalid_field(
                "tags",
                &format!("must hold at most {TAGS_MAX} tags"),
            ));
        }
        for (i, tag) in self.tags.iter().enumerate() {
            bounded(&format!("tags[{i}]"), tag, TAG_MAX)?;
        }
        Ok(())
    }
}

/// `POST /api/templates`.
fn create(req: &Request) -> Response {
    let (principal, new) = match write_request::<NewTemplate>(req) {
        Ok(parsed) => parsed,
        Err(r) => return r,
    };
    if let Err(r) = new.validate() {
        return r;
    }
    let category = new.category.trim();
    match db::query(
        "SELECT slug FROM categories WHERE slug = $1",
        &[Value::Text(category.to_string())],
    ) {
        Ok(rows) if rows.rows.is_empty() => {
            return invalid_field(
                "category",
                &format!("no category `{category}`: use a slug from /api/marketplace/categories"),
            );
        }
        Ok(_) => {}
        Err(e) => return db_error(&e),
    }

    let id = new_id("tpl");
    let now = now_ms();
    let steps = serde_json::to_string(&new.steps).unwrap_or_else(|_| "[]".into());
    let tags: Vec<&str> = new.tags.iter().map(|t| t.trim()).collect();
    let tags = serde_json::to_string(&tags).unwrap_or_else(|_| "[]".into());
    let insert = db::Statement {
        sql: format!(
            "INSERT INTO workflow_templates ({COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10) RETURNING {COLUMNS}"
        ),
        params: vec![
            Value::Text(id),
            Value::Text(new.name.trim().to_string()),
            Value::Text(new.description.trim().to_string()),
            Value::Text(category.to_string()),
            Value::Text(new.complexity.as_str().to_string()),
            Value::Text(steps),
            Value::Text(tags),
            Value::Boolean(false),
            Value::Text(principal.user_id.clone()),
            Value::Int(now),
        ],
    };
    // The host invalidates every listing once the insert commits.
    match db::transaction(&[insert], &["templates".to_string()]) {
        Ok(results) => match results.first().and_then(|rows| RowView::all(rows).next()) {
            Some(r) => json(201, &serde_json::json!({ "template": template(&r) })),
            None => guest::error(500, "internal", "internal error"),
        },
        Err(e) => db_error(&e),
    }
}
