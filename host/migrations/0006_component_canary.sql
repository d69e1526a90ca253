-- Canaries (see host/src/versions.rs): per component, at most one version
-- served to a share of requests beside the active one. The row stays when
-- the canary ends (promoted, aborted, superseded by another change), with
-- why, for the fleet view; only a running canary's bytes are kept.
CREATE TABLE component_canary (
    component  TEXT PRIMARY KEY,
    digest     TEXT NOT NULL,            -- hex SHA-256 of its bytes
    share      BIGINT NOT NULL,          -- percent of requests, 1 to 99
    started_at BIGINT NOT NULL,          -- epoch milliseconds
    state      TEXT NOT NULL,            -- running, promoted, aborted, superseded
    reason     TEXT NOT NULL,            -- why it ended ('' while running)
    ended_at   BIGINT                    -- epoch milliseconds; NULL while running
);
