-- The fleet's hosts: each host writes its row every few seconds (its
-- heartbeat) with what it serves, so that any host's admin API shows, per
-- component, which digest each live host serves and since when. Rows not
-- written for an hour are deleted.
CREATE TABLE fleet_hosts (
    id         TEXT PRIMARY KEY,
    started_at BIGINT NOT NULL,         -- epoch milliseconds
    seen_at    BIGINT NOT NULL,         -- epoch milliseconds
    serving    TEXT NOT NULL            -- JSON: {component: {"digest": …, "since": epoch ms}}
);
