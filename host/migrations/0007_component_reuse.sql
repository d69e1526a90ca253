-- Instance reuse per component version (see host/src/versions.rs): how
-- many requests one instance of it may serve, as its upload said
-- (`?instance_reuse=N`); NULL: as the manifest or the host's default says.
ALTER TABLE component_versions ADD COLUMN instance_reuse BIGINT;
