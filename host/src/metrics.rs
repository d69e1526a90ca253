//! The one Prometheus registry every capability reports to, rendered at
//! `/metrics`: the cache's counters (`cache::CacheMetrics`) and the
//! database's statement count (`db::Counted`).

use prometheus_client::registry::Registry;

/// Every metric of the host, ready to render.
pub struct Metrics {
    /// What each capability registered at start.
    registry: Registry,
}

impl Metrics {
    /// Renders what was registered in `registry`.
    pub fn new(registry: Registry) -> Self {
        Self { registry }
    }

    /// Every metric in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
