//! The one Prometheus registry every capability reports to, rendered at
//! `/metrics`: the cache's counters (`cache::CacheMetrics`), the
//! database's statement count (`db::Counted`), the invalidation relay's
//! (`relay`), and the requests each component version served
//! (`RequestMetrics`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::time::Duration;

/// Every metric of the host, ready to render.
pub struct Metrics {
    /// What each capability registered at start.
    registry: Registry,
    /// Requests per component version.
    pub requests: RequestMetrics,
}

impl Metrics {
    /// Renders what was registered in `registry`, and the request metrics.
    pub fn new(mut registry: Registry) -> Self {
        let requests = RequestMetrics::register(&mut registry);
        Self { registry, requests }
    }

    /// Every metric in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// A component version: its name and the digest of its bytes.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Version {
    component: String,
    digest: String,
}

/// A version and the class of a status (`2xx` … `5xx`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Answered {
    component: String,
    digest: String,
    class: String,
}

/// Requests answered per component version, by status class, and their
/// latency. Versions are few (the registry keeps six per component), so
/// the label sets are bounded.
pub struct RequestMetrics {
    answered: Family<Answered, Counter>,
    latency: Family<Version, Histogram, fn() -> Histogram>,
}

impl RequestMetrics {
    fn register(registry: &mut Registry) -> Self {
        let answered = Family::<Answered, Counter>::default();
        registry.register(
            "marketplace_requests",
            "Requests a component version answered (or the host answered for it), by status class",
            answered.clone(),
        );
        let latency = Family::<Version, Histogram, fn() -> Histogram>::new_with_constructor(|| {
            // 0.5 ms to about 8 s.
            Histogram::new(exponential_buckets(0.0005, 2.0, 15))
        });
        registry.register(
            "marketplace_request_duration_seconds",
            "From a request's routing to its answer (its body read included), per component version",
            latency.clone(),
        );
        Self { answered, latency }
    }

    /// Records one request to `component` at `digest` answered with
    /// `status` after `took`.
    pub fn record(&self, component: &str, digest: &str, status: u16, took: Duration) {
        let class = format!("{}xx", status / 100);
        self.answered
            .get_or_create(&Answered {
                component: component.to_string(),
                digest: digest.to_string(),
                class,
            })
            .inc();
        self.latency
            .get_or_create(&Version {
                component: component.to_string(),
                digest: digest.to_string(),
            })
            .observe(took.as_secs_f64());
    }
}
