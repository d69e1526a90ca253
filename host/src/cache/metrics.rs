//! Cache counters (hits, misses and errors per endpoint and tier) and the
//! count of database statements, exposed in the Prometheus text format at
//! `/metrics`.
//!
//! The endpoint is read off the cache key: its first two `:`-separated
//! parts (`marketplace:agents:…` counts under `marketplace:agents`), which
//! the key patterns of the API make one per endpoint.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// Which tier answered.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)] // label values are lower-case
pub enum Tier {
    redis,
    memory,
}

/// What came of an operation.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)] // label values are lower-case
pub enum Outcome {
    hit,
    miss,
    error,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Labels {
    endpoint: String,
    tier: Tier,
    outcome: Outcome,
}

/// The counters and the registry that renders them.
pub struct CacheMetrics {
    /// Renders `/metrics`.
    registry: Registry,
    /// Counts by endpoint, tier and outcome.
    operations: Family<Labels, Counter>,
    /// Statements run against the database.
    db_statements: Counter,
}

impl Default for CacheMetrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let operations = Family::<Labels, Counter>::default();
        registry.register(
            "marketplace_cache_operations",
            "Cache operations by endpoint (key prefix), tier and outcome",
            operations.clone(),
        );
        let db_statements = Counter::default();
        registry.register(
            "marketplace_db_statements",
            "Statements run against the database, by components and by the host",
            db_statements.clone(),
        );
        Self {
            registry,
            operations,
            db_statements,
        }
    }
}

/// The endpoint a key belongs to: its first two `:`-separated parts, after
/// the component's cache namespace (up to the first `/`).
pub fn endpoint_of(key: &str) -> &str {
    let key = key.split_once('/').map_or(key, |(_, rest)| rest);
    match key.match_indices(':').nth(1) {
        Some((i, _)) => &key[..i],
        None => key,
    }
}

impl CacheMetrics {
    /// Counts one operation.
    pub fn record(&self, endpoint: &str, tier: Tier, outcome: Outcome) {
        self.operations
            .get_or_create(&Labels {
                endpoint: endpoint.to_string(),
                tier,
                outcome,
            })
            .inc();
    }

    /// The count so far.
    pub fn count(&self, endpoint: &str, tier: Tier, outcome: Outcome) -> u64 {
        self.operations
            .get_or_create(&Labels {
                endpoint: endpoint.to_string(),
                tier,
                outcome,
            })
            .get()
    }

    /// The database statement counter, to hand to `db::Counted`.
    pub fn db_statements(&self) -> Counter {
        self.db_statements.clone()
    }

    /// Every counter in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_is_the_first_two_parts_of_the_key() {
        assert_eq!(
            endpoint_of("marketplace:agents:q%3A:x:1"),
            "marketplace:agents"
        );
        assert_eq!(
            endpoint_of("marketplace:categories"),
            "marketplace:categories"
        );
        assert_eq!(endpoint_of("plain"), "plain");
        assert_eq!(
            endpoint_of("marketplace/marketplace:agents:q%3A:x:1"),
            "marketplace:agents"
        );
    }

    #[test]
    fn counters_render_in_prometheus_text_format() {
        let m = CacheMetrics::default();
        m.record("marketplace:categories", Tier::redis, Outcome::hit);
        m.record("marketplace:categories", Tier::redis, Outcome::hit);
        assert_eq!(
            m.count("marketplace:categories", Tier::redis, Outcome::hit),
            2
        );
        let text = m.render();
        assert!(
            text.contains(
                r#"marketplace_cache_operations_total{endpoint="marketplace:categories",tier="redis",outcome="hit"} 2"#
            ),
            "{text}"
        );
    }
}
