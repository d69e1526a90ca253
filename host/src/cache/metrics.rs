//! Cache counters: hits, misses and errors per endpoint and tier, reported
//! to the host's one registry (`crate::metrics`) and rendered at `/metrics`.
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
    /// Redis hits kept in this host's memory (see `tiered`).
    near,
    redis,
    memory,
}

/// What came of an operation.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)] // label values are lower-case
pub enum Outcome {
    hit,
    miss,
    /// Served past its TTL, within its grace (stale-if-error).
    stale,
    error,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Labels {
    endpoint: String,
    tier: Tier,
    outcome: Outcome,
}

/// The cache's counters.
#[derive(Default)]
pub struct CacheMetrics {
    /// Counts by endpoint, tier and outcome.
    operations: Family<Labels, Counter>,
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

    /// Reports these counters to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "marketplace_cache_operations",
            "Cache operations by endpoint (key prefix), tier and outcome",
            self.operations.clone(),
        );
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
        let mut registry = Registry::default();
        m.register(&mut registry);
        m.record("marketplace:categories", Tier::redis, Outcome::hit);
        m.record("marketplace:categories", Tier::redis, Outcome::hit);
        assert_eq!(
            m.count("marketplace:categories", Tier::redis, Outcome::hit),
            2
        );
        let text = crate::metrics::Metrics::new(registry).render();
        assert!(
            text.contains(
                r#"marketplace_cache_operations_total{endpoint="marketplace:categories",tier="redis",outcome="hit"} 2"#
            ),
            "{text}"
        );
    }
}
