//! The one Prometheus registry every capability reports to, rendered at
//! `/metrics`: the cache's counters (`cache::CacheMetrics`), the
//! database's statement count (`db::Counted`), the invalidation relay's
//! (`relay`), and the requests each component version served
//! (`RequestMetrics`).

mod per_thread;

use per_thread::{Counter, Histogram};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::exponential_buckets;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
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
/// latency, counted per worker thread (`per_thread`). Versions are few (the registry keeps six per component), so
/// the label sets are bounded.
pub struct RequestMetrics {
    /// Which `RequestMetrics` this is, so that a `VersionSlot` filled by
    /// another (a test's second app) is not trusted.
    id: usize,
    answered: Family<Answered, Counter>,
    latency: Family<Version, Histogram, fn() -> Histogram>,
    /// Each version's metrics, by component then digest, so that a request
    /// finds them by its names without building its label sets. Hashed
    /// with foldhash: the names are the operator's, not a client's, so
    /// SipHash's resistance to chosen collisions buys nothing, and it
    /// costs about as much as the rest of `record`.
    handles: RwLock<ByVersion>,
}

/// `RequestMetrics::handles`: by component, then by digest.
type ByVersion = HashMap<String, HashMap<String, Arc<Handles>, Fast>, Fast>;
type Fast = foldhash::fast::RandomState;

/// Where one component version keeps its metrics once found (see
/// `RequestMetrics::record_in`), with the id of the `RequestMetrics` they
/// belong to.
#[derive(Default)]
pub struct VersionSlot(OnceLock<(usize, Arc<Handles>)>);

/// One version's metrics: its counters of the status classes 1xx to 5xx
/// (each made on its first use, so that a class never seen is not shown)
/// and its latency.
struct Handles {
    component: String,
    digest: String,
    answered: [OnceLock<Counter>; 5],
    latency: Histogram,
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
        static IDS: AtomicUsize = AtomicUsize::new(0);
        Self {
            id: IDS.fetch_add(1, Ordering::Relaxed),
            answered,
            latency,
            handles: RwLock::default(),
        }
    }

    /// Records one request to `component` at `digest` answered with
    /// `status` after `took`.
    pub fn record(&self, component: &str, digest: &str, status: u16, took: Duration) {
        let handles = self.handles(component, digest);
        self.count(&handles, status, took);
    }

    /// `record`, the version's metrics kept in `slot` (one per version,
    /// `LoadedComponent::metrics`) after its first request, so that later
    /// ones skip finding them by name.
    pub fn record_in(
        &self,
        slot: &VersionSlot,
        component: &str,
        digest: &str,
        status: u16,
        took: Duration,
    ) {
        let (id, handles) = slot
            .0
            .get_or_init(|| (self.id, self.handles(component, digest)));
        if *id == self.id {
            self.count(handles, status, took);
        } else {
            self.record(component, digest, status, took);
        }
    }

    fn count(&self, handles: &Handles, status: u16, took: Duration) {
        // Statuses are 100 to 599 (the runtime refuses others).
        let class = usize::from(status / 100).clamp(1, 5);
        handles.answered[class - 1]
            .get_or_init(|| {
                self.answered.get_or_create_owned(&Answered {
                    component: handles.component.clone(),
                    digest: handles.digest.clone(),
                    class: format!("{class}xx"),
                })
            })
            .inc();
        handles.latency.observe(took.as_secs_f64());
    }

    /// The metrics of `component` at `digest`, made on its first request.
    fn handles(&self, component: &str, digest: &str) -> Arc<Handles> {
        let known = self.handles.read().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = known.get(component).and_then(|v| v.get(digest)) {
            return h.clone();
        }
        drop(known);
        let version = Version {
            component: component.to_string(),
            digest: digest.to_string(),
        };
        let made = Arc::new(Handles {
            component: component.to_string(),
            digest: digest.to_string(),
            answered: Default::default(),
            latency: self.latency.get_or_create_owned(&version),
        });
        self.handles
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(version.component)
            .or_default()
            .entry(version.digest)
            .or_insert(made)
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_per_version_and_class_and_unseen_classes_are_not_shown() {
        let metrics = Metrics::new(Registry::default());
        let ms = Duration::from_millis(1);
        metrics.requests.record("a", "d1", 200, ms);
        metrics.requests.record("a", "d1", 204, ms);
        metrics.requests.record("a", "d2", 503, ms);
        metrics.requests.record("b", "d1", 404, ms);
        let text = metrics.render();
        let count = |labels: &str| {
            text.lines()
                .find(|l| l.starts_with("marketplace_requests_total{") && l.contains(labels))
                .map(|l| l.rsplit(' ').next().unwrap().to_string())
        };
        let d1 = r#"component="a",digest="d1",class="2xx""#;
        assert_eq!(count(d1).as_deref(), Some("2"), "{text}");
        let d2 = r#"component="a",digest="d2",class="5xx""#;
        assert_eq!(count(d2).as_deref(), Some("1"), "{text}");
        let b = r#"component="b",digest="d1",class="4xx""#;
        assert_eq!(count(b).as_deref(), Some("1"), "{text}");
        assert_eq!(count(r#"component="a",digest="d1",class="5xx""#), None);
        assert_eq!(
            text.matches("marketplace_request_duration_seconds_count{")
                .count(),
            3
        );
    }

    #[test]
    fn a_version_slot_counts_where_lookups_by_name_count_and_only_for_its_own_metrics() {
        let ms = Duration::from_millis(1);
        let slot = VersionSlot::default();
        let first = Metrics::new(Registry::default());
        let second = Metrics::new(Registry::default());
        first.requests.record_in(&slot, "a", "d1", 200, ms);
        first.requests.record("a", "d1", 200, ms);
        first.requests.record_in(&slot, "a", "d1", 503, ms);
        // The slot holds the first's metrics: the second still counts in its own.
        second.requests.record_in(&slot, "a", "d1", 200, ms);
        let count = |metrics: &Metrics, class: &str| {
            let labels = format!(r#"component="a",digest="d1",class="{class}""#);
            metrics
                .render()
                .lines()
                .find(|l| l.starts_with("marketplace_requests_total{") && l.contains(&labels))
                .map(|l| l.rsplit(' ').next().unwrap().to_string())
        };
        assert_eq!(count(&first, "2xx").as_deref(), Some("2"));
        assert_eq!(count(&first, "5xx").as_deref(), Some("1"));
        assert_eq!(count(&second, "2xx").as_deref(), Some("1"));
        assert_eq!(count(&second, "5xx"), None);
    }
}
