-- Cache warming: how often each anonymous GET a component answered from or
-- into the cache was requested, added up by every host of the fleet. On
-- start and after a deploy a host runs the most requested again to refill
-- the cache. Flushes keep the 1000 most requested targets per component.
CREATE TABLE cache_warm (
    component TEXT NOT NULL,
    target    TEXT NOT NULL,            -- path and query
    hits      BIGINT NOT NULL,
    seen_at   BIGINT NOT NULL,          -- epoch milliseconds
    PRIMARY KEY (component, target)
);
CREATE INDEX cache_warm_top ON cache_warm (hits);
