//! The sandbox's boundaries as an attacker meets them: what a component
//! can do through its `db` and `cache` imports (`sql`, `cache_namespaces`),
//! and what slow or hostile clients can do to the HTTP front
//! (`http_front`).
//! One test binary for all of them, so that CI links one more, not several.

mod cache_namespaces;
mod http_front;
mod sql;
