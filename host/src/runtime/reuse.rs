//! Instance reuse (opt-in, per component version): the idle warm instances
//! of one `LoadedComponent`.
//!
//! A warm instance serves one request at a time: a request takes it out
//! of its pool and puts it back when it ends well (`Runtime::run` decides).
//! A pool belongs to one version of one component, so an instance never
//! serves another version or another component; a swap retires the old
//! version's pool. Reusable instances across all pools are bounded
//! (`Budget`): an instance holds its place while idle and while it serves
//! a request it was taken for (`Place`), so taking one out and putting it
//! back touch no counter the worker threads share. Those idle for
//! `IDLE_FOR` are dropped by the runtime's sweep.
//!
//! A pool keeps its idle instances per worker thread (`Shard`): a request
//! takes the instance its own thread put back last, and only looks at the
//! other threads' when its own has none, so the two workers of a loaded
//! host do not take turns on one lock (BENCHMARKS.md, "a twelfth run").

use crossbeam_utils::CachePadded;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use thread_local::ThreadLocal;

/// How long a warm instance may sit idle before it is dropped.
pub(crate) const IDLE_FOR: Duration = Duration::from_secs(30);

/// How many reusable instances all pools together may hold (idle, or
/// serving a request they were taken for), and how many they hold now.
/// Each holds an instance slot of the engine's pool, which is sized for
/// this many more than the requests that may run at once.
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
    fn claim(&self) -> Option<Place<'_>> {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                (held < self.most).then_some(held + 1)
            })
            .ok()
            .map(|_| Place(self))
    }

    fn release(&self, places: usize) {
        self.held.fetch_sub(places, Ordering::AcqRel);
    }

    /// Places held now.
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }
}

/// The place in the `Budget` of an instance taken out of its pool: given
/// back when this is dropped (the instance is retired, or the request's
/// future is dropped), kept when the instance goes back (`Pool::put`).
#[must_use]
pub(crate) struct Place<'a>(&'a Budget);

impl Drop for Place<'_> {
    fn drop(&mut self) {
        self.0.release(1);
    }
}

/// One worker thread's idle instances of a pool, most recently used last;
/// padded so that two threads' shards never share a cache line.
type Shard<T> = CachePadded<Mutex<Vec<(T, Instant)>>>;

/// The idle instances of one component version.
pub(crate) struct Pool<T: Send> {
    shards: ThreadLocal<Shard<T>>,
    retired: AtomicBool,
    budget: Arc<Budget>,
}

/// `shard` locked. Nothing panics while holding it; a poisoned shard is
/// still whole.
fn lock<T>(shard: &Shard<T>) -> MutexGuard<'_, Vec<(T, Instant)>> {
    shard.lock().unwrap_or_else(|p| p.into_inner())
}

impl<T: Send> Pool<T> {
    pub(crate) fn new(budget: Arc<Budget>) -> Self {
        Self {
            shards: ThreadLocal::new(),
            retired: AtomicBool::new(false),
            budget,
        }
    }

    /// This thread's shard.
    fn own(&self) -> &Shard<T> {
        self.shards.get_or_default()
    }

    /// The idle instance this thread put back last (its memory is
    /// likeliest to be resident and in this core's caches), else another
    /// thread's; with its place in the budget.
    pub(crate) fn take(&self) -> Option<(T, Place<'_>)> {
        let own = self.own();
        // Its own shard's lock is let go before another's is taken: two
        // threads looking in each other's shards must not wait on each
        // other.
        let mine = lock(own).pop();
        let taken = mine.or_else(|| {
            self.shards
                .iter()
                .filter(|shard| !std::ptr::eq(*shard, own))
                .find_map(|shard| lock(shard).pop())
        });
        taken.map(|(instance, _)| (instance, Place(&self.budget)))
    }

    /// Keeps `instance` idle, with the place it was taken with (`None`
    /// for a new instance: it claims one), unless the pool is retired or
    /// the budget is spent: then it is handed back, to be dropped, and
    /// its place given back.
    pub(crate) fn put(&self, instance: T, place: Option<Place<'_>>, now: Instant) -> Result<(), T> {
        if self.retired.load(Ordering::Acquire) {
            return Err(instance);
        }
        let place = match place {
            Some(place) => place,
            None => match self.budget.claim() {
                Some(place) => place,
                None => return Err(instance),
            },
        };
        debug_assert!(
            std::ptr::eq(place.0, &*self.budget),
            "a place of another budget"
        );
        let mut idle = lock(self.own());
        // Checked again under the lock: `retire` empties every shard
        // under its lock after setting the flag.
        if self.retired.load(Ordering::Acquire) {
            return Err(instance);
        }
        idle.push((instance, now));
        // The idle instance holds the place now.
        std::mem::forget(place);
        Ok(())
    }

    /// Drops the instances idle since before `now - IDLE_FOR`; how many.
    pub(crate) fn sweep(&self, now: Instant) -> usize {
        self.shards
            .iter()
            .map(|shard| {
                let mut idle = lock(shard);
                let stale = idle
                    .iter()
                    .take_while(|(_, since)| now.saturating_duration_since(*since) >= IDLE_FOR)
                    .count();
                let gone: Vec<(T, Instant)> = idle.drain(..stale).collect();
                drop(idle);
                self.drop_all(gone)
            })
            .sum()
    }

    /// Retires the pool: its idle instances are dropped, and none is kept
    /// after (until `revive`); how many were dropped.
    pub(crate) fn retire(&self) -> usize {
        self.retired.store(true, Ordering::Release);
        self.shards
            .iter()
            .map(|shard| {
                let gone: Vec<(T, Instant)> = lock(shard).drain(..).collect();
                self.drop_all(gone)
            })
            .sum()
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
        self.shards.iter().map(|shard| lock(shard).len()).sum()
    }
}

impl<T: Send> Drop for Pool<T> {
    fn drop(&mut self) {
        let gone: Vec<(T, Instant)> = self
            .shards
            .iter_mut()
            .flat_map(|shard| shard.get_mut().unwrap_or_else(|p| p.into_inner()).drain(..))
            .collect();
        self.drop_all(gone);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The instance `pool.take()` gives, its place given back.
    fn taken<T: Send>(pool: &Pool<T>) -> Option<T> {
        pool.take().map(|(instance, _place)| instance)
    }

    #[test]
    fn the_most_recently_used_instance_is_taken_first() {
        let pool = Pool::new(Budget::new(4));
        let now = Instant::now();
        pool.put(1, None, now).unwrap();
        pool.put(2, None, now).unwrap();
        assert_eq!(taken(&pool), Some(2));
        assert_eq!(taken(&pool), Some(1));
        assert_eq!(taken(&pool), None);
    }

    #[test]
    fn reusable_instances_are_bounded_across_pools() {
        let budget = Budget::new(2);
        let a = Pool::new(budget.clone());
        let b = Pool::new(budget.clone());
        let now = Instant::now();
        a.put(1, None, now).unwrap();
        b.put(2, None, now).unwrap();
        assert_eq!(a.put(3, None, now), Err(3), "the budget is spent");
        assert_eq!(taken(&b), Some(2));
        a.put(3, None, now).unwrap();
        assert_eq!(budget.held(), 2);
        drop(a);
        assert_eq!(budget.held(), 0, "a dropped pool gives its places back");
    }

    #[test]
    fn a_taken_instance_holds_its_place_until_it_is_retired() {
        let budget = Budget::new(1);
        let pool = Pool::new(budget.clone());
        let now = Instant::now();
        pool.put(1, None, now).unwrap();
        let (one, place) = pool.take().unwrap();
        assert_eq!(budget.held(), 1, "serving, it keeps its place");
        assert_eq!(pool.put(2, None, now), Err(2), "so a new one finds none");
        pool.put(one, Some(place), now).unwrap();
        assert_eq!(
            (pool.len(), budget.held()),
            (1, 1),
            "back idle, on the same place"
        );
        let (_, place) = pool.take().unwrap();
        drop(place);
        assert_eq!(budget.held(), 0, "retired, its place is free");
        pool.put(2, None, now).unwrap();
        let (two, place) = pool.take().unwrap();
        assert_eq!(pool.retire(), 0);
        assert_eq!(pool.put(two, Some(place), now), Err(2));
        assert_eq!(
            budget.held(),
            0,
            "a retired pool gives back the place it is handed"
        );
    }

    #[test]
    fn a_thread_with_no_idle_instance_takes_another_threads() {
        let budget = Budget::new(4);
        let pool = Arc::new(Pool::new(budget.clone()));
        let now = Instant::now();
        pool.put(1, None, now).unwrap();
        let other = pool.clone();
        let (got, held) = std::thread::spawn(move || (taken(&other), other.len()))
            .join()
            .unwrap();
        assert_eq!((got, held), (Some(1), 0));
        let other = pool.clone();
        std::thread::spawn(move || other.put(2, None, now).unwrap())
            .join()
            .unwrap();
        pool.put(3, None, now).unwrap();
        assert_eq!(taken(&pool), Some(3), "its own first");
        assert_eq!(taken(&pool), Some(2), "then the other thread's");
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn threads_taking_from_each_others_shards_never_wait_on_each_other() {
        // One instance passed between threads: each often finds its own
        // shard empty and looks in the others' while they look in its.
        let pool = Arc::new(Pool::new(Budget::new(1)));
        pool.put(0u64, None, Instant::now()).unwrap();
        let (done, finished) = std::sync::mpsc::channel();
        for _ in 0..3 {
            let (pool, done) = (pool.clone(), done.clone());
            std::thread::spawn(move || {
                for _ in 0..20_000 {
                    if let Some((n, place)) = pool.take() {
                        pool.put(n + 1, Some(place), Instant::now()).unwrap();
                    }
                }
                done.send(()).unwrap();
            });
        }
        for _ in 0..3 {
            finished
                .recv_timeout(Duration::from_secs(60))
                .expect("a thread is stuck taking an instance");
        }
        assert_eq!(pool.len(), 1);
    }

    #[test]
    fn instances_idle_too_long_are_swept() {
        let budget = Budget::new(4);
        let pool = Pool::new(budget.clone());
        let start = Instant::now();
        pool.put(1, None, start).unwrap();
        pool.put(2, None, start + IDLE_FOR / 2).unwrap();
        assert_eq!(pool.sweep(start + IDLE_FOR / 2), 0);
        assert_eq!(pool.sweep(start + IDLE_FOR), 1);
        assert_eq!(taken(&pool), Some(2), "the newer one stays");
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn a_retired_pool_keeps_nothing() {
        let budget = Budget::new(4);
        let pool = Pool::new(budget.clone());
        let now = Instant::now();
        pool.put(1, None, now).unwrap();
        assert_eq!(pool.retire(), 1);
        assert_eq!(pool.put(2, None, now), Err(2));
        assert_eq!((pool.len(), budget.held()), (0, 0));
        pool.revive();
        pool.put(3, None, now).unwrap();
        assert_eq!(
            taken(&pool),
            Some(3),
            "a revived pool keeps instances again"
        );
    }
}
