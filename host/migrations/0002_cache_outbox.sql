-- The invalidation outbox: the cache tags a write makes stale, recorded in
-- the write's own transaction, so that they are invalidated even if the
-- host that wrote dies before telling the cache. Every host's relay
-- delivers undelivered rows (bumps the tags in Redis and in its memory
-- tier), marks them delivered, and deletes them some time after.
CREATE TABLE cache_outbox (
    id           TEXT PRIMARY KEY,
    tags         TEXT NOT NULL,            -- JSON array of namespaced tags
    created_at   BIGINT NOT NULL,
    delivered_at BIGINT
);
CREATE INDEX cache_outbox_undelivered ON cache_outbox (created_at) WHERE delivered_at IS NULL;
