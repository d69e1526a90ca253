//! A counter and a histogram that each worker thread adds to on cache
//! lines of its own, read as the sum of every thread's: a loaded host's
//! workers count every request, and on one shared counter (or behind one
//! lock, as `prometheus_client`'s histogram is) they take turns for it
//! (BENCHMARKS.md, "a twelfth run"). Rendered as a counter and a histogram
//! are, so `/metrics` reads the same.

use crossbeam_utils::CachePadded;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use thread_local::ThreadLocal;

/// A counter (clones count into the same one).
#[derive(Clone, Debug, Default)]
pub(super) struct Counter(Arc<ThreadLocal<CachePadded<AtomicU64>>>);

impl Counter {
    pub(super) fn inc(&self) {
        // Only this thread adds to its own: no other writer to wait for.
        self.0.get_or_default().fetch_add(1, Ordering::Relaxed);
    }

    /// Every thread's counts added up.
    pub(super) fn get(&self) -> u64 {
        self.0.iter().map(|n| n.load(Ordering::Relaxed)).sum()
    }
}

impl TypedMetric for Counter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for Counter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&self.get(), None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// A histogram over fixed buckets (clones observe into the same one).
#[derive(Clone, Debug)]
pub(super) struct Histogram(Arc<Observed>);

#[derive(Debug)]
struct Observed {
    /// The buckets' upper bounds, the last one infinite.
    bounds: Box<[f64]>,
    threads: ThreadLocal<CachePadded<Shard>>,
}

/// One thread's observations. Only that thread writes them, so a plain
/// load and store add to them; `Relaxed` is enough, as a reader may see
/// one thread's sum, count and buckets a request apart (as it may see a
/// request counted in one thread and not yet in another).
#[derive(Debug)]
struct Shard {
    /// The sum, as the bits of an `f64`.
    sum: AtomicU64,
    count: AtomicU64,
    /// Per bucket (not cumulative), as `bounds`.
    buckets: Box<[AtomicU64]>,
}

impl Histogram {
    /// A histogram of the finite `bounds` (ascending), and one more bucket
    /// past the last.
    pub(super) fn new(bounds: impl IntoIterator<Item = f64>) -> Self {
        let bounds = bounds
            .into_iter()
            .filter(|b| b.is_finite())
            .chain(std::iter::once(f64::INFINITY))
            .collect();
        Self(Arc::new(Observed {
            bounds,
            threads: ThreadLocal::new(),
        }))
    }

    pub(super) fn observe(&self, v: f64) {
        let observed = &*self.0;
        let shard = observed.threads.get_or(|| {
            CachePadded::new(Shard {
                sum: AtomicU64::new(0f64.to_bits()),
                count: AtomicU64::new(0),
                buckets: observed.bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            })
        });
        let sum = f64::from_bits(shard.sum.load(Ordering::Relaxed)) + v;
        shard.sum.store(sum.to_bits(), Ordering::Relaxed);
        shard
            .count
            .store(shard.count.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        // NaN goes to the last bucket, as `prometheus_client` puts it.
        let bucket = observed
            .bounds
            .iter()
            .position(|b| v <= *b)
            .unwrap_or(observed.bounds.len() - 1);
        let n = &shard.buckets[bucket];
        n.store(n.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    /// The sum, the count and the buckets (upper bound, observations in
    /// it) of every thread's observations.
    fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let observed = &*self.0;
        let mut buckets: Vec<(f64, u64)> = observed.bounds.iter().map(|b| (*b, 0)).collect();
        let (mut sum, mut count) = (0.0, 0);
        for shard in observed.threads.iter() {
            sum += f64::from_bits(shard.sum.load(Ordering::Relaxed));
            count += shard.count.load(Ordering::Relaxed);
            for ((_, n), m) in buckets.iter_mut().zip(shard.buckets.iter()) {
                *n += m.load(Ordering::Relaxed);
            }
        }
        (sum, count, buckets)
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = self.snapshot();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;

    /// `/metrics` of a registry holding `ours` and `theirs`
    /// (`prometheus_client`'s), named "ours" and "theirs".
    fn rendered(
        ours: impl prometheus_client::registry::Metric,
        theirs: impl prometheus_client::registry::Metric,
    ) -> String {
        let mut registry = Registry::default();
        registry.register("ours", "", ours);
        registry.register("theirs", "", theirs);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        out
    }

    #[test]
    fn a_counter_reads_as_every_threads_counts_and_renders_as_theirs() {
        let ours = Counter::default();
        let theirs = prometheus_client::metrics::counter::Counter::<u64>::default();
        let threads: Vec<_> = (0..3)
            .map(|_| {
                let (ours, theirs) = (ours.clone(), theirs.clone());
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        ours.inc();
                        theirs.inc();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        ours.inc();
        theirs.inc();
        assert_eq!(ours.get(), 301);
        let out = rendered(ours, theirs);
        assert!(out.contains("ours_total 301\n"), "{out}");
        assert_eq!(
            out.replace("ours", "theirs")
                .matches("theirs_total 301\n")
                .count(),
            2,
            "{out}"
        );
    }

    #[test]
    fn a_histogram_adds_up_every_threads_observations_as_theirs_would() {
        let bounds = [0.001, 0.01, 0.1];
        let ours = Histogram::new(bounds);
        let theirs = prometheus_client::metrics::histogram::Histogram::new(bounds);
        let values = [0.0005, 0.001, 0.002, 0.05, 3.0, f64::NAN];
        let threads: Vec<_> = values
            .iter()
            .map(|v| {
                let (ours, theirs, v) = (ours.clone(), theirs.clone(), *v);
                std::thread::spawn(move || {
                    ours.observe(v);
                    theirs.observe(v);
                    ours.observe(0.02);
                    theirs.observe(0.02);
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let (_, count, buckets) = ours.snapshot();
        assert_eq!(count, 12);
        assert_eq!(
            buckets.iter().map(|(_, n)| *n).collect::<Vec<_>>(),
            [2, 1, 7, 2],
            "NaN and 3.0 in the last"
        );
        // The sum is NaN (one observation was): compare the rest.
        let out = rendered(ours, theirs);
        let lines = |name: &str| -> Vec<String> {
            out.lines()
                .filter(|l| l.starts_with(name) && !l.contains("_sum"))
                .map(|l| l.replacen(name, "", 1))
                .collect()
        };
        assert_eq!(lines("ours"), lines("theirs"), "{out}");
        assert_eq!(lines("ours").len(), 5, "{out}");
    }
}
