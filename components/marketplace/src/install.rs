//! `POST /api/marketplace/agents/{id}/install`.
//!
//! The caller must be a member of the workspace. The installation row and
//! the agent's install count change in one transaction, and only when the
//! row is new: a second install of the same agent into the same workspace,
//! even a concurrent one, finds the unique `(agent_id, workspace_id)` pair
//! taken, inserts nothing and increments nothing, and answers 200 with the
//! existing installation. The tags of every cached read that shows install
//! counts are invalidated after the commit, on a repeat too, so that a
//! client retrying after a lost response also repairs a lost invalidation.

use guest::{
    Request, Response, RowView, Value, db, db_error, invalid_field, json, new_id, not_found,
    now_ms, rfc3339, write_request,
};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct InstallBody {
    workspace_id: String,
}

/// Inserts the installation unless the pair exists or the agent does not.
const INSERT: &str = "INSERT INTO installations (id, agent_id, workspace_id, installed_by, created_at) \
     SELECT $1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM agents WHERE id = $2) \
     ON CONFLICT (agent_id, workspace_id) DO NOTHING RETURNING id";
/// Counts the install if, and only if, this transaction's row went in.
const COUNT: &str = "UPDATE agents SET install_count = install_count + 1 \
     WHERE id = $1 AND EXISTS (SELECT 1 FROM installations WHERE id = $2)";
/// The installation of the pair, new or existing, and the agent's count.
const READ: &str = "SELECT i.id, i.agent_id, i.workspace_id, i.installed_by, i.created_at, \
     a.install_count FROM installations i JOIN agents a ON a.id = i.agent_id \
     WHERE i.agent_id = $1 AND i.workspace_id = $2";

pub fn install(req: &Request, agent_id: &str) -> Response {
    let (principal, body) = match write_request::<InstallBody>(req) {
        Ok(parsed) => parsed,
        Err(r) => return r,
    };
    let workspace = body.workspace_id.as_str();
    if workspace.is_empty() || workspace.chars().count() > 200 {
        return invalid_field("workspaceId", "must be 1 to 200 characters long");
    }
    if !principal.workspace_ids.iter().any(|w| w == workspace) {
        return guest::error(
            403,
            "forbidden",
            &format!("you are not a member of workspace `{workspace}`"),
        );
    }
    if agent_id.is_empty() || agent_id.len() > 200 {
        return not_found("no such agent");
    }

    let id = new_id("inst");
    let agent = Value::Text(agent_id.to_string());
    let pair = vec![agent.clone(), Value::Text(workspace.to_string())];
    let statements = [
        db::Statement {
            sql: INSERT.to_string(),
            params: vec![
                Value::Text(id.clone()),
                agent.clone(),
                Value::Text(workspace.to_string()),
                Value::Text(principal.user_id.clone()),
                Value::Int(now_ms()),
            ],
        },
        db::Statement {
            sql: COUNT.to_string(),
            params: vec![agent, Value::Text(id)],
        },
        db::Statement {
            sql: READ.to_string(),
            params: pair,
        },
    ];
    // Everything an install changes that a read may have cached; the host
    // invalidates them once the transaction commits, on a repeat install
    // too (nothing changed then, but a retry so repairs an invalidation a
    // crash may have lost).
    let tags = [
        "agents".to_string(),
        format!("agent:{agent_id}"),
        "trending".to_string(),
        "featured".to_string(),
        "categories".to_string(),
    ];
    let results = match db::transaction(&statements, &tags) {
        Ok(r) => r,
        Err(e) => return db_error(&e),
    };
    let created = results.first().is_some_and(|r| !r.rows.is_empty());
    let Some(row) = results.get(2).and_then(|rows| {
        RowView::all(rows).next().map(|r| {
            serde_json::json!({
                "installation": {
                    "id": r.text("id"),
                    "agentId": r.text("agent_id"),
                    "workspaceId": r.text("workspace_id"),
                    "installedBy": r.text("installed_by"),
                    "createdAt": rfc3339(r.int("created_at")),
                },
                "agent": { "id": r.text("agent_id"), "installCount": r.int("install_count") },
                "created": created,
            })
        })
    }) else {
        return not_found(&format!("no agent with id `{agent_id}`"));
    };

    json(if created { 201 } else { 200 }, &row)
}
