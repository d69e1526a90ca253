-- Cache warming: how often each anonymous GET a component answered from or
-- into the cache was requested, per hour, added up by every host of the
-- fleet. On start and after a deploy a host runs the most requested of the
-- last 24 hours again to refill the cache; older hours are deleted.
CREATE TABLE cache_warm (
    component TEXT NOT NULL,
    target    TEXT NOT NULL,            -- path and query
    bucket    BIGINT NOT NULL,          -- the hour: epoch milliseconds / 3,600,000
    hits      BIGINT NOT NULL,
    PRIMARY KEY (component, target, bucket)
);
CREATE INDEX cache_warm_bucket ON cache_warm (bucket);
