//! Instance reuse (opt-in, per component version): the idle warm instances
//! of one `LoadedComponent`.
//!
//! A warm instance serves one request at a time: a request takes it out
//! of its pool and puts it back when it ends well (`Runtime::run` decides).
//! A pool belongs to one version of one component, so an instance never
//! serves another version or another component; a swap retires the old
//! version's pool. Idle instances across all pools are bounded
//! (`Budget`), and those idle for `IDLE_FOR` are dropped by the runtime's
//! sweep.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a warm instance may sit idle before it is dropped.
pub(crate) const IDLE_FOR: Duration = Duration::from_secs(30);

/// How many idle instances all pools together may hold, and how many they
/// hold now. Each holds an instance slot of the engine's pool, which is
/// sized for this many more.
#[derive(Debug)]
pub(crate) struct Budget {
    most: usize,
    held: AtomicUsize,
}

impl Budget {
    pub(crate) fn new(most: usize) -> Arc<Self> {
        Arc::new(Self {
            most,
            held: AtomicUsize::new(0),
        })
    }

    /// Takes one place, if one is free.
    fn claim(&self) -> bool {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                (held < self.most).then_some(held + 1)
            })
            .is_ok()
    }

    fn release(&self, places: usize) {
        self.held.fetch_sub(places, Ordering::AcqRel);
    }

    /// Idle instances held now.
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }
}

/// The idle instances of one component version, most recently used last.
pub(crate) struct Pool<T> {
    idle: Mutex<Vec<(T, Instant)>>,
    retired: AtomicBool,
    budget: Arc<Budget>,
}

impl<T> Pool<T> {
    pub(crate) fn new(budget: Arc<Budget>) -> Self {
        Self {
            idle: Mutex::new(Vec::new()),
            retired: AtomicBool::new(false),
            budget,
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<(T, Instant)>> {
        // Nothing panics while holding it; a poisoned pool is still whole.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The most recently used idle instance (its memory is likeliest to
    /// be resident), if any.
    pub(crate) fn take(&self) -> Option<T> {
        let (instance, _) = self.idle().pop()?;
        self.budget.release(1);
        Some(instance)
    }

    /// Keeps `instance` idle, unless the pool is retired or the budget is
    /// spent: then it is handed back, to be dropped.
    pub(crate) fn put(&self, instance: T, now: Instant) -> Result<(), T> {
        if self.retired.load(Ordering::Acquire) || !self.budget.claim() {
            return Err(instance);
        }
        let mut idle = self.idle();
        // Checked again under the lock: `retire` empties the pool under it.
        if self.retired.load(Ordering::Acquire) {
            drop(idle);
            self.budget.release(1);
            return Err(instance);
        }
        idle.push((instance, now));
        Ok(())
    }

    /// Drops the instances idle since before `now - IDLE_FOR`; how many.
    pub(crate) fn sweep(&self, now: Instant) -> usize {
        let mut idle = self.idle();
        let stale = idle
            .iter()
            .take_while(|(_, since)| now.saturating_duration_since(*since) >= IDLE_FOR)
            .count();
        let gone: Vec<(T, Instant)> = idle.drain(..stale).collect();
        drop(idle);
        self.drop_all(gone)
    }

    /// Retires the pool: its idle instances are dropped, and none is kept
    /// after (until `revive`); how many were dropped.
    pub(crate) fn retire(&self) -> usize {
        self.retired.store(true, Ordering::Release);
        let gone: Vec<(T, Instant)> = self.idle().drain(..).collect();
        self.drop_all(gone)
    }

    /// Drops `gone` (outside the lock), then gives back their places:
    /// never more instances alive than places and running requests.
    fn drop_all(&self, gone: Vec<(T, Instant)>) -> usize {
        let n = gone.len();
        drop(gone);
        self.budget.release(n);
        n
    }

    /// Undoes `retire`: the version serves again (a rollback to it).
    pub(crate) fn revive(&self) {
        self.retired.store(false, Ordering::Release);
    }

    /// Idle instances now.
    pub(crate) fn len(&self) -> usize {
        self.idle().len()
    }
}

impl<T> Drop for Pool<T> {
    fn drop(&mut self) {
        let gone: Vec<(T, Instant)> = self.idle().drain(..).collect();
        self.drop_all(gone);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_recently_used_instance_is_taken_first() {
        let pool = Pool::new(Budget::new(4));
        let now = Instant::now();
        pool.put(1, now).unwrap();
        pool.put(2, now).unwrap();
        assert_eq!(pool.take(), Some(2));
        assert_eq!(pool.take(), Some(1));
        assert_eq!(pool.take(), None);
    }

    #[test]
    fn idle_instances_are_bounded_across_pools() {
        let budget = Budget::new(2);
        let a = Pool::new(budget.clone());
        let b = Pool::new(budget.clone());
        let now = Instant::now();
        a.put(1, now).unwrap();
        b.put(2, now).unwrap();
        assert_eq!(a.put(3, now), Err(3), "the budget is spent");
        assert_eq!(b.take(), Some(2));
        a.put(3, now).unwrap();
        assert_eq!(budget.held(), 2);
        drop(a);
        assert_eq!(budget.held(), 0, "a dropped pool gives its places back");
    }

    #[test]
    fn instances_idle_too_long_are_swept() {
        let budget = Budget::new(4);
        let pool = Pool::new(budget.clone());
        let start = Instant::now();
        pool.put(1, start).unwrap();
        pool.put(2, start + IDLE_FOR / 2).unwrap();
        assert_eq!(pool.sweep(start + IDLE_FOR / 2), 0);
        assert_eq!(pool.sweep(start + IDLE_FOR), 1);
        assert_eq!(pool.take(), Some(2), "the newer one stays");
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn a_retired_pool_keeps_nothing() {
        let budget = Budget::new(4);
        let pool = Pool::new(budget.clone());
        let now = Instant::now();
        pool.put(1, now).unwrap();
        assert_eq!(pool.retire(), 1);
        assert_eq!(pool.put(2, now), Err(2));
        assert_eq!((pool.len(), budget.held()), (0, 0));
        pool.revive();
        pool.put(3, now).unwrap();
        assert_eq!(pool.take(), Some(3), "a revived pool keeps instances again");
    }
}
