//! [`Stats`]: a snapshot of a cache's counters, and the counters themselves.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

/// A snapshot of a cache's counters, taken by `stats()`.
///
/// Counters only grow; subtract two snapshots to get a rate. Taking a snapshot is cheap
/// (a few atomic loads) and never blocks the cache.
///
/// With the `serde` feature it implements `serde::Serialize` and `Deserialize`, field by
/// field under the names below (e.g. `{"hits":3,"misses":1,…}` in JSON); a field missing
/// when deserializing (from an older version) reads as 0.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(default)
)]
pub struct Stats {
    /// Fetches answered from the store with a fresh value, without a load.
    pub hits: u64,
    /// Fetches that found no usable entry (missing, expired or unreadable) and loaded.
    pub misses: u64,
    /// `LazyEchoCache` fetches answered with a stale value (a refresh was scheduled or
    /// already pending).
    pub stale_hits: u64,
    /// Loader runs started (foreground and background).
    pub loads: u64,
    /// Loader runs that returned an error.
    pub load_errors: u64,
    /// Loader runs that panicked.
    pub loader_panics: u64,
    /// Loader runs stopped by `load_timeout`.
    pub load_timeouts: u64,
    /// Fetches that joined a load already running for their key instead of starting one.
    pub coalesced: u64,
    /// Background refreshes that stored a new value.
    pub refreshes: u64,
    /// Background refreshes that failed (error, panic or timeout); the old value was kept.
    pub refresh_errors: u64,
    /// Refresh requests dropped because the refresh queue was full.
    pub refreshes_dropped: u64,
    /// Background refreshes skipped because another process held the key's refresh lock.
    pub refreshes_locked_out: u64,
    /// Fetches past `expire_after` whose load failed and that were answered with the old
    /// value because it was still within `stale_if_error`.
    pub stale_if_error_served: u64,
    /// Store operations that failed in the backend (the cache carried on, failing open).
    pub store_errors: u64,
    /// Store reads whose bytes could not be decoded (the entry was reloaded).
    pub decode_errors: u64,
    /// Store calls given up after the cache's `store_timeout` (also counted in
    /// `store_errors` where the cache failed open).
    pub store_timeouts: u64,
    /// Times the circuit breaker opened after consecutive store failures.
    pub circuit_opens: u64,
    /// Store calls skipped because the circuit breaker was open.
    pub store_calls_skipped: u64,
    /// Entries whose `written_at` lay further in the future than
    /// [`CLOCK_SKEW_ALLOWANCE`](crate::CLOCK_SKEW_ALLOWANCE): `LazyEchoCache` treated them
    /// as expired instead of fresh for ever.
    pub future_dated_entries: u64,
    /// Background refreshes whose store lock could not be extended while the load ran
    /// (lost to expiry or another owner, or a store that cannot extend locks): another
    /// process may have refreshed the key at the same time.
    pub refresh_locks_lost: u64,
    /// Times `LazyEchoCache` restarted its refresh dispatcher on the current runtime
    /// because the runtime it was built in had shut down.
    pub refresh_dispatcher_restarts: u64,
    /// Loads that found another process loading the key (its store lock taken) and got
    /// that process's value from the store instead of loading (the fleet-wide
    /// single-flight).
    pub fleet_waits: u64,
    /// Loads that waited for another process's value past `load_timeout` (the holder
    /// died, failed or is slow) and loaded themselves.
    pub fleet_wait_timeouts: u64,
    /// Loaded values not stored because the key was written or invalidated in the store,
    /// by any process, while they loaded (the store's conditional write refused them).
    pub stale_writes_refused: u64,
}

/// Cache-line aligned counter, so that hot counters on different threads don't share a
/// line.
#[repr(align(128))]
#[derive(Default)]
struct Padded(AtomicU64);

const STRIPES: usize = 32;

/// A counter for hot paths, exact and without a locked instruction on the hot path.
///
/// Each live thread owns a slot index (taken from a process-wide free list the first
/// time it counts, returned when it exits). The thread that owns slot `i` is the only
/// writer of stripe `i` in every counter, so it can add with a plain load and store.
/// Threads beyond the first [`STRIPES`] live ones share one overflow stripe and add with
/// an atomic read-modify-write. Reads add up the stripes.
#[derive(Default)]
pub(crate) struct StripedCounter {
    stripes: [Padded; STRIPES],
    overflow: AtomicU64,
}

/// This thread's slot, returned to the free list when the thread exits.
struct Slot(usize);

static FREE_SLOTS: Mutex<Vec<usize>> = Mutex::new(Vec::new());
static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);

impl Slot {
    fn take() -> Self {
        let reused = FREE_SLOTS
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        Slot(reused.unwrap_or_else(|| NEXT_SLOT.fetch_add(1, Ordering::Relaxed)))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        // The mutex orders this thread's last writes before the next owner's first read.
        FREE_SLOTS
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(self.0);
    }
}

thread_local! {
    static SLOT: Slot = Slot::take();
}

impl StripedCounter {
    #[inline]
    pub(crate) fn incr(&self) {
        // `try_with` fails only while the thread is being torn down.
        let index = SLOT.try_with(|slot| slot.0).unwrap_or(usize::MAX);
        match self.stripes.get(index) {
            Some(stripe) => {
                // Single writer: only the owner of this slot writes this stripe.
                let n = stripe.0.load(Ordering::Relaxed);
                stripe.0.store(n.wrapping_add(1), Ordering::Relaxed);
            }
            None => {
                self.overflow.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub(crate) fn get(&self) -> u64 {
        let stripes: u64 = self
            .stripes
            .iter()
            .map(|p| p.0.load(Ordering::Relaxed))
            .sum();
        stripes.wrapping_add(self.overflow.load(Ordering::Relaxed))
    }
}

/// The live counters behind [`Stats`].
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) hits: StripedCounter,
    pub(crate) stale_hits: StripedCounter,
    pub(crate) misses: AtomicU64,
    pub(crate) loads: AtomicU64,
    pub(crate) load_errors: AtomicU64,
    pub(crate) loader_panics: AtomicU64,
    pub(crate) load_timeouts: AtomicU64,
    pub(crate) coalesced: AtomicU64,
    pub(crate) refreshes: AtomicU64,
    pub(crate) refresh_errors: AtomicU64,
    pub(crate) refreshes_dropped: AtomicU64,
    pub(crate) refreshes_locked_out: AtomicU64,
    pub(crate) stale_if_error_served: AtomicU64,
    pub(crate) store_errors: AtomicU64,
    pub(crate) decode_errors: AtomicU64,
    pub(crate) store_timeouts: AtomicU64,
    pub(crate) circuit_opens: AtomicU64,
    pub(crate) store_calls_skipped: AtomicU64,
    pub(crate) future_dated_entries: AtomicU64,
    pub(crate) refresh_locks_lost: AtomicU64,
    pub(crate) refresh_dispatcher_restarts: AtomicU64,
    pub(crate) fleet_waits: AtomicU64,
    pub(crate) fleet_wait_timeouts: AtomicU64,
    pub(crate) stale_writes_refused: AtomicU64,
    /// The histograms of the `metrics` feature, when the builder's `metrics` was called.
    #[cfg(feature = "metrics")]
    pub(crate) timings: Option<crate::metrics::Timings>,
}

/// Adds one to a plain counter.
#[inline]
pub(crate) fn incr(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    /// Counts a failed store operation by its kind (and reports it with `tracing`). A call
    /// skipped by the open circuit breaker was counted when it was skipped.
    pub(crate) fn store_error(&self, op: &'static str, key: &str, err: &crate::StoreError) {
        if err.is_circuit_open() {
            return;
        }
        crate::events::store_failed(op, key, err);
        if err.is_decode() {
            incr(&self.decode_errors);
        } else {
            incr(&self.store_errors);
        }
    }

    pub(crate) fn snapshot(&self) -> Stats {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            hits: self.hits.get(),
            misses: load(&self.misses),
            stale_hits: self.stale_hits.get(),
            loads: load(&self.loads),
            load_errors: load(&self.load_errors),
            loader_panics: load(&self.loader_panics),
            load_timeouts: load(&self.load_timeouts),
            coalesced: load(&self.coalesced),
            refreshes: load(&self.refreshes),
            refresh_errors: load(&self.refresh_errors),
            refreshes_dropped: load(&self.refreshes_dropped),
            refreshes_locked_out: load(&self.refreshes_locked_out),
            stale_if_error_served: load(&self.stale_if_error_served),
            store_errors: load(&self.store_errors),
            decode_errors: load(&self.decode_errors),
            store_timeouts: load(&self.store_timeouts),
            circuit_opens: load(&self.circuit_opens),
            store_calls_skipped: load(&self.store_calls_skipped),
            future_dated_entries: load(&self.future_dated_entries),
            refresh_locks_lost: load(&self.refresh_locks_lost),
            refresh_dispatcher_restarts: load(&self.refresh_dispatcher_restarts),
            fleet_waits: load(&self.fleet_waits),
            fleet_wait_timeouts: load(&self.fleet_wait_timeouts),
            stale_writes_refused: load(&self.stale_writes_refused),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "serde")]
    #[test]
    fn stats_round_trip_through_serde_field_by_field() {
        let stats = Stats {
            hits: 3,
            misses: 1,
            stale_writes_refused: 2,
            ..Stats::default()
        };
        let json = serde_json::to_value(stats).unwrap();
        assert_eq!(json["hits"], 3);
        assert_eq!(json["misses"], 1);
        assert_eq!(json["stale_writes_refused"], 2);
        assert_eq!(json["loads"], 0);
        let fields = json.as_object().unwrap().len();
        assert!(fields >= 24, "every counter is a field: {json}");
        let back: Stats = serde_json::from_value(json).unwrap();
        assert_eq!(back, stats, "a round trip");
        let old: Stats = serde_json::from_str(r#"{"hits":7}"#).unwrap();
        assert_eq!((old.hits, old.misses), (7, 0), "missing fields read as 0");
    }

    #[test]
    fn striped_counter_is_exact_with_more_threads_than_stripes() {
        let counter = std::sync::Arc::new(StripedCounter::default());
        // Many short-lived threads (slots are reused) and many live ones at once
        // (beyond STRIPES, the overflow stripe takes the rest).
        for _ in 0..3 {
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(STRIPES + 8));
            let threads: Vec<_> = (0..STRIPES + 8)
                .map(|_| {
                    let (c, b) = (counter.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        b.wait();
                        (0..1000).for_each(|_| c.incr());
                    })
                })
                .collect();
            threads.into_iter().for_each(|t| t.join().unwrap());
        }
        assert_eq!(counter.get(), 3 * (STRIPES as u64 + 8) * 1000);
    }

    #[test]
    fn striped_counter_sums_increments_from_many_threads() {
        let counter = std::sync::Arc::new(StripedCounter::default());
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let c = counter.clone();
                std::thread::spawn(move || (0..1000).for_each(|_| c.incr()))
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(counter.get(), 8000);
    }
}
