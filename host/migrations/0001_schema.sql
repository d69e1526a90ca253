-- The marketplace schema, in SQL common to PostgreSQL and SQLite.
-- Times are BIGINT milliseconds since the Unix epoch (UTC) so that the same
-- statements compare and sort them on both engines. JSON is stored as TEXT.

CREATE TABLE categories (
    id          TEXT PRIMARY KEY,
    slug        TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    description TEXT NOT NULL
);

CREATE TABLE agents (
    id            TEXT PRIMARY KEY,
    slug          TEXT NOT NULL UNIQUE,
    name          TEXT NOT NULL,
    description   TEXT NOT NULL,
    category_id   TEXT NOT NULL REFERENCES categories (id),
    tags          TEXT NOT NULL,            -- JSON array of strings
    publisher     TEXT NOT NULL,
    featured      BOOLEAN NOT NULL DEFAULT FALSE,
    install_count BIGINT NOT NULL DEFAULT 0,
    rating        DOUBLE PRECISION NOT NULL DEFAULT 0,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);
CREATE INDEX agents_category ON agents (category_id);
CREATE INDEX agents_installs ON agents (install_count DESC);
CREATE INDEX agents_created ON agents (created_at DESC);
CREATE INDEX agents_rating ON agents (rating DESC);
CREATE INDEX agents_name ON agents (name);
CREATE INDEX agents_featured ON agents (featured);

CREATE TABLE users (
    id         TEXT PRIMARY KEY,
    email      TEXT NOT NULL UNIQUE,
    name       TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE workspaces (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE workspace_members (
    workspace_id TEXT NOT NULL REFERENCES workspaces (id),
    user_id      TEXT NOT NULL REFERENCES users (id),
    role         TEXT NOT NULL,
    PRIMARY KEY (workspace_id, user_id)
);
CREATE INDEX workspace_members_user ON workspace_members (user_id);

-- Bearer tokens are stored as the hex SHA-256 of the token, never in clear.
CREATE TABLE api_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (id),
    name       TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE installations (
    id           TEXT PRIMARY KEY,
    agent_id     TEXT NOT NULL REFERENCES agents (id),
    workspace_id TEXT NOT NULL REFERENCES workspaces (id),
    installed_by TEXT NOT NULL REFERENCES users (id),
    created_at   BIGINT NOT NULL,
    UNIQUE (agent_id, workspace_id)
);
-- Trending ranks by installs in the last 7 days.
CREATE INDEX installations_recent ON installations (created_at, agent_id);

CREATE TABLE workflow_templates (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    description TEXT NOT NULL,
    category    TEXT NOT NULL,
    complexity  TEXT NOT NULL,
    steps       TEXT NOT NULL,             -- JSON array of steps
    tags        TEXT NOT NULL,             -- JSON array of strings
    featured    BOOLEAN NOT NULL DEFAULT FALSE,
    created_by  TEXT REFERENCES users (id),
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX workflow_templates_category ON workflow_templates (category);
CREATE INDEX workflow_templates_created ON workflow_templates (created_at DESC);
