//! The deterministic demo dataset, generated on the first start of an empty
//! database.
//!
//! What it holds: a dozen categories; `agents` agents with names, tags,
//! publishers, ratings and install counts; an install history spread over
//! the four weeks before `now` across community workspaces (so trending has
//! something to rank); a hundred workflow templates; a demo user who is a
//! member of the demo workspace, with the demo bearer token.
//!
//! Everything is drawn from a SplitMix64 PRNG seeded by `DemoSpec::seed`,
//! and times are offsets from `DemoSpec::now`: two generations with the same
//! spec are identical, row for row.
//!
//! Rows go in in batches (multi-row `INSERT`s, one transaction per batch),
//! logging progress; the demo token is written last and marks the dataset
//! complete.

use crate::auth::token_hash;
use crate::db::{Database, DbError, Statement, Value};
use std::time::Instant;

/// What to generate.
#[derive(Debug, Clone, Copy)]
pub struct DemoSpec {
    /// PRNG seed.
    pub seed: u64,
    /// Number of agents.
    pub agents: usize,
    /// "Now" of the dataset, in epoch milliseconds; install times fall in
    /// the four weeks before it.
    pub now_ms: i64,
}

/// The demo user's bearer token. It is public (printed at start and in the
/// README): it exists to try the write endpoints on demo data.
pub const DEMO_TOKEN: &str = "demo-token-0123456789abcdef";
/// The demo workspace, of which the demo user is a member.
pub const DEMO_WORKSPACE: &str = "ws-demo";
/// The demo user.
pub const DEMO_USER: &str = "user-demo";

/// Community users and workspaces that the install history is spread over.
const COMMUNITY_WORKSPACES: usize = 60;
/// Rows per multi-row INSERT: stays under SQLite's and Postgres's
/// parameter limits for every table here.
const BATCH_ROWS: usize = 400;
const DAY_MS: i64 = 86_400_000;
const TEMPLATES: usize = 100;

/// The categories: (slug, name, description).
const CATEGORIES: &[(&str, &str, &str)] = &[
    ("coding", "Coding", "Write, review and refactor code."),
    (
        "data-analysis",
        "Data Analysis",
        "Explore datasets and build reports.",
    ),
    ("writing", "Writing", "Draft, edit and summarize text."),
    (
        "research",
        "Research",
        "Search, read and synthesize sources.",
    ),
    (
        "customer-support",
        "Customer Support",
        "Answer and triage customer requests.",
    ),
    ("marketing", "Marketing", "Plan campaigns and write copy."),
    ("sales", "Sales", "Qualify leads and prepare outreach."),
    (
        "devops",
        "DevOps",
        "Operate deployments, pipelines and incidents.",
    ),
    (
        "security",
        "Security",
        "Audit code and configurations for risks.",
    ),
    ("finance", "Finance", "Reconcile, forecast and report."),
    (
        "design",
        "Design",
        "Critique interfaces and generate assets.",
    ),
    (
        "productivity",
        "Productivity",
        "Organize tasks, notes and calendars.",
    ),
];

const ADJECTIVES: &[&str] = &[
    "Swift", "Clever", "Reliable", "Focused", "Tireless", "Precise", "Friendly", "Bold", "Quiet",
    "Sharp",
];
const NOUNS: &[&str] = &[
    "Assistant",
    "Copilot",
    "Analyst",
    "Scribe",
    "Scout",
    "Reviewer",
    "Planner",
    "Helper",
    "Navigator",
    "Curator",
];
const TASKS: &[&str] = &[
    "triages incoming issues",
    "summarizes long threads",
    "drafts first versions",
    "checks work against a checklist",
    "answers routine questions",
    "keeps a running log",
    "flags anomalies early",
    "prepares weekly reports",
];
const PUBLISHERS: &[&str] = &[
    "Acme Labs",
    "Northwind AI",
    "Initech",
    "Globex",
    "Hooli",
    "Umbrella Tools",
];
const COMPLEXITIES: &[&str] = &["beginner", "intermediate", "advanced"];
const TEMPLATE_SUBJECTS: &[&str] = &[
    "Onboarding",
    "Incident response",
    "Release notes",
    "Lead qualification",
    "Invoice review",
    "Content calendar",
    "Bug triage",
    "Customer feedback digest",
    "Security audit",
    "Quarterly report",
];

/// A small, seeded PRNG (SplitMix64): the same numbers on every platform.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

/// The state of the demo dataset in a database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeedOutcome {
    /// It was generated now.
    Generated,
    /// It was already complete.
    Present,
    /// The database holds other data (or a partial, interrupted seed); it
    /// was left alone.
    Skipped,
    /// Another host started generating it at the same moment (its first
    /// rows collided with this host's); that host goes on.
    Concurrent,
}

/// Generates the demo dataset if the database is empty.
pub async fn seed_if_empty(db: &dyn Database, spec: &DemoSpec) -> Result<SeedOutcome, DbError> {
    let demo_token = [Value::Text(token_hash(DEMO_TOKEN))];
    if count(
        db,
        "SELECT COUNT(*) FROM api_tokens WHERE token_hash = $1",
        &demo_token,
    )
    .await?
        > 0
    {
        return Ok(SeedOutcome::Present);
    }
    if count(db, "SELECT COUNT(*) FROM categories", &[]).await? > 0 {
        return Ok(SeedOutcome::Skipped);
    }
    match generate(db, spec).await {
        Ok(()) => Ok(SeedOutcome::Generated),
        // Every table's rows have keys, and the first table is inserted
        // first: a host that collides there stops, and only one goes on.
        Err(DbError::Constraint(_)) => Ok(SeedOutcome::Concurrent),
        Err(e) => Err(e),
    }
}

async fn count(db: &dyn Database, sql: &str, params: &[Value]) -> Result<i64, DbError> {
    let rows = db.query(sql, params).await?;
    match rows.rows.first().and_then(|r| r.first()) {
        Some(Value::Int(n)) => Ok(*n),
        other => Err(DbError::Other(format!("COUNT returned {other:?}"))),
    }
}

/// Inserts `rows` into `table` in multi-row statements, one transaction per
/// batch.
async fn insert_all(
    db: &dyn Database,
    table: &str,
    columns: &[&str],
    rows: Vec<Vec<Value>>,
) -> Result<(), DbError> {
    let started = Instant::now();
    let total = rows.len();
    let mut done = 0;
    let mut last_report = Instant::now();
    for chunk in rows.chunks(BATCH_ROWS) {
        let mut sql = format!("INSERT INTO {table} ({}) VALUES ", columns.join(", "));
        let mut params = Vec::with_capacity(chunk.len() * columns.len());
        for (r, row) in chunk.iter().enumerate() {
            if r > 0 {
                sql.push_str(", ");
            }
            sql.push('(');
            for c in 0..columns.len() {
                if c > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!("${}", params.len() + c + 1));
            }
            sql.push(')');
            params.extend(row.iter().cloned());
        }
        db.transaction(&[Statement { sql, params }]).await?;
        done += chunk.len();
        if last_report.elapsed().as_secs() >= 2 {
            tracing::info!(table, done, total, "generating demo data");
            last_report = Instant::now();
        }
    }
    tracing::debug!(table, total, elapsed = ?started.elapsed(), "demo rows inserted");
    Ok(())
}

fn text(s: impl Into<String>) -> Value {
    Value::Text(s.into())
}

/// One table's demo rows.
pub struct Table {
    pub name: &'static str,
    pub columns: &'static [&'static str],
    /// Values in `columns` order.
    pub rows: Vec<Vec<Value>>,
}

/// Builds the whole dataset in memory (deterministic in `spec`), table by
/// table in insertion order. The steps draw from one PRNG in a fixed order.
pub fn build(spec: &DemoSpec) -> Vec<Table> {
    let mut rng = SplitMix(spec.seed);
    let now = spec.now_ms;
    let [users, workspaces, workspace_members] = people(&mut rng, now);
    let [agents, installations] = agents(&mut rng, spec.agents, now);
    let templates = templates(&mut rng, now);
    vec![
        categories(),
        users,
        workspaces,
        workspace_members,
        agents,
        installations,
        templates,
        // Last: its presence marks the dataset complete.
        demo_token(now),
    ]
}

/// The fixed categories.
fn categories() -> Table {
    Table {
        name: "categories",
        columns: &["id", "slug", "name", "description"],
        rows: CATEGORIES
            .iter()
            .map(|(slug, name, description)| {
                vec![
                    text(format!("cat-{slug}")),
                    text(*slug),
                    text(*name),
                    text(*description),
                ]
            })
            .collect(),
    }
}

/// The demo user in the demo workspace, and one user owning one workspace
/// per community workspace: the `users`, `workspaces` and
/// `workspace_members` tables.
fn people(rng: &mut SplitMix, now: i64) -> [Table; 3] {
    let mut users = vec![vec![
        text(DEMO_USER),
        text("demo@example.com"),
        text("Demo User"),
        Value::Int(now - 60 * DAY_MS),
    ]];
    let mut workspaces = vec![vec![
        text(DEMO_WORKSPACE),
        text("Demo Workspace"),
        Value::Int(now - 60 * DAY_MS),
    ]];
    let mut members = vec![vec![text(DEMO_WORKSPACE), text(DEMO_USER), text("owner")]];
    for w in 0..COMMUNITY_WORKSPACES {
        let user = format!("user-{w:03}");
        let ws = format!("ws-{w:03}");
        let joined = now - (30 + rng.below(300) as i64) * DAY_MS;
        users.push(vec![
            text(&user),
            text(format!("{user}@example.com")),
            text(format!("Community member {w}")),
            Value::Int(joined),
        ]);
        workspaces.push(vec![
            text(&ws),
            text(format!("Community workspace {w}")),
            Value::Int(joined),
        ]);
        members.push(vec![text(&ws), text(&user), text("owner")]);
    }
    [
        Table {
            name: "users",
            columns: &["id", "email", "name", "created_at"],
            rows: users,
        },
        Table {
            name: "workspaces",
            columns: &["id", "name", "created_at"],
            rows: workspaces,
        },
        Table {
            name: "workspace_members",
            columns: &["workspace_id", "user_id", "role"],
            rows: members,
        },
    ]
}

/// `count` agents and their recent installs: the `agents` and
/// `installations` tables.
fn agents(rng: &mut SplitMix, count: usize, now: i64) -> [Table; 2] {
    let mut agents = Vec::with_capacity(count);
    let mut installations = Vec::new();
    for i in 0..count {
        agents.push(agent(rng, i, now, &mut installations));
    }
    [
        Table {
            name: "agents",
            columns: &[
                "id",
                "slug",
                "name",
                "description",
                "category_id",
                "tags",
                "publisher",
                "featured",
                "install_count",
                "rating",
                "created_at",
                "updated_at",
            ],
            rows: agents,
        },
        Table {
            name: "installations",
            columns: &[
                "id",
                "agent_id",
                "workspace_id",
                "installed_by",
                "created_at",
            ],
            rows: installations,
        },
    ]
}

/// Agent number `i`'s row; its installs of the last four weeks go to
/// `installations`.
fn agent(
    rng: &mut SplitMix,
    i: usize,
    now: i64,
    installations: &mut Vec<Vec<Value>>,
) -> Vec<Value> {
    let (cat_slug, cat_name, _) = CATEGORIES[rng.below(CATEGORIES.len())];
    let noun = rng.pick(NOUNS);
    let name = format!("{} {cat_name} {noun}", rng.pick(ADJECTIVES));
    let id = format!("agent-{i:06}");
    let slug = format!("{}-{i}", name.to_lowercase().replace(' ', "-"));
    let created = now - (28 + rng.below(700) as i64) * DAY_MS;
    let updated = created + rng.below(20) as i64 * DAY_MS;
    let tags = serde_json::json!([
        cat_slug,
        noun.to_lowercase(),
        rng.pick(&["free", "pro", "beta", "verified"])
    ])
    .to_string();
    let description = format!(
        "{name} {} for {} teams.",
        rng.pick(TASKS),
        cat_name.to_lowercase()
    );
    let mut recent = std::collections::BTreeSet::new();
    for _ in 0..popularity(rng) {
        recent.insert(rng.below(COMMUNITY_WORKSPACES));
    }
    for w in &recent {
        let at = now - rng.below(28 * 24) as i64 * 3_600_000 - rng.below(3_600_000) as i64;
        installations.push(vec![
            text(format!("inst-{i:06}-{w:03}")),
            text(&id),
            text(format!("ws-{w:03}")),
            text(format!("user-{w:03}")),
            Value::Int(at),
        ]);
    }
    let historical = rng.below(5_000) as i64;
    vec![
        text(&id),
        text(slug),
        text(name),
        text(description),
        text(format!("cat-{cat_slug}")),
        text(tags),
        text(rng.pick(PUBLISHERS)),
        Value::Bool(rng.below(25) == 0),
        Value::Int(historical + recent.len() as i64),
        Value::Float((30 + rng.below(21)) as f64 / 10.0),
        Value::Int(created),
        Value::Int(updated),
    ]
}

/// How many recent installs an agent draws: skewed, so most agents are
/// installed rarely and a few often.
fn popularity(rng: &mut SplitMix) -> usize {
    let r = rng.below(1000);
    if r < 10 {
        12
    } else if r < 100 {
        5
    } else if r < 400 {
        2
    } else {
        rng.below(2)
    }
}

/// The workflow templates.
fn templates(rng: &mut SplitMix, now: i64) -> Table {
    let rows = (0..TEMPLATES)
        .map(|t| {
            let subject = rng.pick(TEMPLATE_SUBJECTS);
            let (cat_slug, _, _) = CATEGORIES[rng.below(CATEGORIES.len())];
            let complexity = rng.pick(COMPLEXITIES);
            let step_count = 2 + rng.below(5);
            let steps: Vec<_> = (0..step_count)
                .map(|s| serde_json::json!({ "name": format!("Step {}", s + 1), "action": rng.pick(TASKS) }))
                .collect();
            let created = now - rng.below(200) as i64 * DAY_MS;
            vec![
                text(format!("tpl-{t:04}")),
                text(format!("{subject} workflow #{t}")),
                text(format!("A {complexity} workflow: {} in {step_count} steps.", subject.to_lowercase())),
                text(cat_slug),
                text(complexity),
                text(serde_json::Value::Array(steps).to_string()),
                text(serde_json::json!([cat_slug, complexity]).to_string()),
                Value::Bool(rng.below(10) == 0),
                Value::Null,
                Value::Int(created),
                Value::Int(created),
            ]
        })
        .collect();
    Table {
        name: "workflow_templates",
        columns: &[
            "id",
            "name",
            "description",
            "category",
            "complexity",
            "steps",
            "tags",
            "featured",
            "created_by",
            "created_at",
            "updated_at",
        ],
        rows,
    }
}

/// The demo user's token.
fn demo_token(now: i64) -> Table {
    Table {
        name: "api_tokens",
        columns: &["token_hash", "user_id", "name", "created_at"],
        rows: vec![vec![
            text(token_hash(DEMO_TOKEN)),
            text(DEMO_USER),
            text("demo token"),
            Value::Int(now),
        ]],
    }
}

/// Inserts the dataset of `spec`.
pub async fn generate(db: &dyn Database, spec: &DemoSpec) -> Result<(), DbError> {
    let started = Instant::now();
    for table in build(spec) {
        insert_all(db, table.name, table.columns, table.rows).await?;
    }
    tracing::info!(agents = spec.agents, elapsed = ?started.elapsed(), "demo dataset generated");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::CATEGORIES;

    #[test]
    fn the_openapi_document_lists_exactly_the_categories_of_the_taxonomy() {
        let spec: serde_json::Value =
            serde_json::from_str(crate::http::OPENAPI).expect("openapi.json is JSON");
        let listed: Vec<&str> =
            spec["components"]["schemas"]["NewTemplate"]["properties"]["category"]["enum"]
                .as_array()
                .expect("an enum of categories")
                .iter()
                .map(|v| v.as_str().expect("slugs are strings"))
                .collect();
        let taxonomy: Vec<&str> = CATEGORIES.iter().map(|(slug, _, _)| *slug).collect();
        assert_eq!(listed, taxonomy);
    }
}
