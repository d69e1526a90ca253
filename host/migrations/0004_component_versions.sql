-- Component versions: the fleet's truth about what serves (see
-- host/src/versions.rs). Each kept version's bytes, and each component's
-- history in deploy order, the highest seq active; a deploy appends, a
-- rollback deletes the newest, and both delete bytes no history row names.
CREATE TABLE component_versions (
    component   TEXT NOT NULL,
    digest      TEXT NOT NULL,            -- hex SHA-256 of bytes
    bytes       BYTEA NOT NULL,
    size        BIGINT NOT NULL,
    note        TEXT NOT NULL,            -- the uploader's note
    uploaded_at BIGINT NOT NULL,          -- epoch milliseconds
    PRIMARY KEY (component, digest)
);
CREATE TABLE component_history (
    component TEXT NOT NULL,
    seq       BIGINT NOT NULL,
    digest    TEXT NOT NULL,
    PRIMARY KEY (component, seq)
);
