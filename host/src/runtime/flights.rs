//! Request coalescing on cache misses ("single flight").
//!
//! When several requests miss the same key at once, only the first (the
//! *filler*) goes on to compute the value; the others wait until the filler
//! stores it (or its request ends), then read it from the cache. So N
//! concurrent misses on one key cost one computation, one set of database
//! queries, instead of N. This is invisible to components: `cache.get`
//! simply takes longer to answer for a waiter, and answers with the value.
//!
//! A waiter gives up after [`MAX_WAIT`], or half of what is left of its
//! deadline if that is sooner, and computes the value itself, so a slow or
//! failed filler only delays the others, never makes them miss their
//! deadline.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::watch;

/// Longest a waiter waits for a filler.
pub const MAX_WAIT: Duration = Duration::from_secs(5);

/// The keys being computed now, by the filler that computes each.
#[derive(Default)]
pub struct Flights {
    /// A receiver per key in flight; its sender is held by the filler, and
    /// closing it (the filler stored the value, or its request ended) wakes
    /// every waiter.
    in_flight: Mutex<HashMap<String, watch::Receiver<()>>>,
    /// Fills ended so far, of any key: a request that missed before a fill
    /// ended and claims the key after it reads again first (see
    /// `completed`).
    completed: AtomicU64,
}

/// What a miss on a key means for the request that had it.
pub enum Miss {
    /// No one else computes this key: compute it, and keep the guard until
    /// the value is stored (dropping it releases the waiters).
    Fill(FillGuard),
    /// Another request computes this key: wait on this, then read again.
    Wait(watch::Receiver<()>),
}

/// Held by the filler of a key; dropping it wakes the key's waiters.
pub struct FillGuard {
    flights: Arc<Flights>,
    key: String,
    /// Kept only to be dropped: that closes the channel.
    _sender: watch::Sender<()>,
}

impl FillGuard {
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl Drop for FillGuard {
    fn drop(&mut self) {
        // Remove first, so a request arriving after the wake-up fills
        // afresh rather than waiting on a closed flight.
        self.flights.lock().remove(&self.key);
        self.flights.completed.fetch_add(1, Ordering::Release);
    }
}

impl Flights {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, watch::Receiver<()>>> {
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a miss on `key`: the caller fills it, or waits for the
    /// request that already does.
    pub fn miss(self: &Arc<Self>, key: &str) -> Miss {
        let mut in_flight = self.lock();
        if let Some(rx) = in_flight.get(key)
            && rx.has_changed().is_ok()
        {
            return Miss::Wait(rx.clone());
        }
        let (sender, receiver) = watch::channel(());
        in_flight.insert(key.to_string(), receiver);
        Miss::Fill(FillGuard {
            flights: self.clone(),
            key: key.to_string(),
            _sender: sender,
        })
    }

    /// Fills ended so far. A request reads this before its cache read; if
    /// it changed by the time the request claims the key, a fill may have
    /// stored the value in between, so the request reads once more rather
    /// than compute it again.
    pub fn completed(&self) -> u64 {
        self.completed.load(Ordering::Acquire)
    }

    /// How many keys are being filled now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Waits until the filler is done (its sender closed), at most `wait`.
pub async fn wait(mut receiver: watch::Receiver<()>, wait: Duration) {
    // `changed` fails once the sender is gone; no value is ever sent.
    let _ = tokio::time::timeout(wait, receiver.changed()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_miss_fills_and_the_others_wait_until_it_is_dropped() {
        let flights = Arc::new(Flights::default());
        let Miss::Fill(guard) = flights.miss("k") else {
            panic!("the first miss must fill")
        };
        let Miss::Wait(rx) = flights.miss("k") else {
            panic!("a second miss must wait")
        };
        assert!(matches!(flights.miss("other"), Miss::Fill(_)));
        let waiter = tokio::spawn(wait(rx, Duration::from_secs(60)));
        drop(guard);
        // Returns long before its 60 s bound: the drop woke it.
        tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("the waiter woke when the filler was dropped")
            .unwrap();
        assert!(flights.is_empty());
        assert!(matches!(flights.miss("k"), Miss::Fill(_)));
    }
}
