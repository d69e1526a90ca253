//! The deterministic demo dataset, generated on the first start of an empty
//! database: about a dozen categories and a few hundred agents with names,
//! tags, publishers, ratings and install counts drawn from a seeded PRNG, so
//! two generations with the same seed are identical.

use crate::db::{Database, DbError, Statement, Value};

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
const PUBLISHERS: &[&str] = &[
    "Acme Labs",
    "Northwind AI",
    "Initech",
    "Globex",
    "Hooli",
    "Umbrella Tools",
];

/// A small, seeded PRNG (SplitMix64): deterministic across platforms.
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
}

/// Fixed "now" of the dataset, so generations are identical whatever the
/// date: 2026-01-01T00:00:00Z in milliseconds.
const EPOCH_MS: i64 = 1_767_225_600_000;
const DAY_MS: i64 = 86_400_000;

/// Inserts the demo dataset if the database has no categories yet. Returns
/// whether it did.
pub async fn seed_if_empty(db: &dyn Database, agents: usize, seed: u64) -> Result<bool, DbError> {
    let existing = db
        .query("SELECT COUNT(*) AS n FROM categories", &[])
        .await?;
    if !matches!(
        existing.rows.first().and_then(|r| r.first()),
        Some(Value::Int(0))
    ) {
        return Ok(false);
    }
    let mut statements: Vec<Statement> = CATEGORIES
        .iter()
        .map(|(slug, name, description)| Statement {
            sql: "INSERT INTO categories (id, slug, name, description) VALUES ($1, $2, $3, $4)"
                .into(),
            params: vec![
                Value::Text(format!("cat-{slug}")),
                Value::Text(slug.to_string()),
                Value::Text(name.to_string()),
                Value::Text(description.to_string()),
            ],
        })
        .collect();
    let mut rng = SplitMix(seed);
    for i in 0..agents {
        let (cat_slug, cat_name, _) = CATEGORIES[rng.below(CATEGORIES.len())];
        let name = format!(
            "{} {} {}",
            ADJECTIVES[rng.below(ADJECTIVES.len())],
            cat_name,
            NOUNS[rng.below(NOUNS.len())]
        );
        let slug = format!("{}-{i}", name.to_lowercase().replace(' ', "-"));
        let created = EPOCH_MS - (rng.below(365) as i64) * DAY_MS;
        let tags =
            serde_json::json!([cat_slug, NOUNS[rng.below(NOUNS.len())].to_lowercase()]).to_string();
        statements.push(Statement {
            sql: "INSERT INTO agents (id, slug, name, description, category_id, tags, publisher, featured, \
                  install_count, rating, created_at, updated_at) \
                  VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11)"
                .into(),
            params: vec![
                Value::Text(format!("agent-{i:06}")),
                Value::Text(slug),
                Value::Text(name.clone()),
                Value::Text(format!("{name}: a {} agent for everyday work.", cat_name.to_lowercase())),
                Value::Text(format!("cat-{cat_slug}")),
                Value::Text(tags),
                Value::Text(PUBLISHERS[rng.below(PUBLISHERS.len())].to_string()),
                Value::Bool(rng.below(20) == 0),
                Value::Int(rng.below(5_000) as i64),
                Value::Float((30 + rng.below(21)) as f64 / 10.0),
                Value::Int(created),
            ],
        });
    }
    db.transaction(&statements).await?;
    Ok(true)
}
