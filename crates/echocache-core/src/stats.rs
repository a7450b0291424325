//! [`Stats`]: a snapshot of a cache's counters, and the counters themselves.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// A snapshot of a cache's counters, taken by `stats()`.
///
/// Counters only grow; subtract two snapshots to get a rate. Taking a snapshot is cheap
/// (a few atomic loads) and never blocks the cache.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
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
}

/// Cache-line aligned counter, so that hot counters on different threads don't share a
/// line.
#[repr(align(128))]
#[derive(Default)]
struct Padded(AtomicU64);

const STRIPES: usize = 16;

/// A counter for hot paths: increments from different threads land on different cache
/// lines; reads add up the stripes.
#[derive(Default)]
pub(crate) struct StripedCounter([Padded; STRIPES]);

fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    STRIPE.with(|s| {
        let mut i = s.get();
        if i == usize::MAX {
            i = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
            s.set(i);
        }
        i
    })
}

impl StripedCounter {
    #[inline]
    pub(crate) fn incr(&self) {
        self.0[stripe()].0.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> u64 {
        self.0.iter().map(|p| p.0.load(Ordering::Relaxed)).sum()
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
}

/// Adds one to a plain counter.
#[inline]
pub(crate) fn incr(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    /// Counts a failed store operation by its kind (and reports it with `tracing`).
    pub(crate) fn store_error(&self, op: &'static str, key: &str, err: &crate::StoreError) {
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
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
