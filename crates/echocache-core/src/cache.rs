//! [`EchoCache`]: callers wait for the value; concurrent misses share one load.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use crate::core::Core;
use crate::fleet::Accept;
use crate::guard::GuardSettings;
use crate::stats::incr;
use crate::{BuildError, Clock, Error, Stats, Store, StoreError};

/// The load timeout used when none is set: 30 seconds.
pub const DEFAULT_LOAD_TIMEOUT: Duration = Duration::from_secs(30);

/// A read-through cache: a hit returns the stored value, a miss runs the loader once for
/// all concurrent callers of that key and stores its value.
///
/// `EchoCache` is cheap to clone (an `Arc` inside); clones share the store, the loads in
/// flight and the counters.
///
/// Errors are never cached; to cache "not found", load an `Option<V>` (negative caching).
///
/// # Examples
///
/// `MapStore`, hidden, is a `HashMap` behind a `Mutex`; the `echocache` facade's docs
/// show the same cache over its real stores.
///
/// ```
/// use echocache_core::{EchoCache, Entry, LockToken, Store, StoreError};
/// # use std::{collections::HashMap, sync::Mutex, time::Duration};
/// # #[derive(Default)]
/// # struct MapStore(Mutex<HashMap<String, Entry<String>>>);
/// # impl Store<String> for MapStore {
/// #     async fn get(&self, key: &str) -> Result<Option<Entry<String>>, StoreError> { Ok(self.0.lock().unwrap().get(key).cloned()) }
/// #     async fn set(&self, key: &str, entry: &Entry<String>) -> Result<(), StoreError> { self.0.lock().unwrap().insert(key.into(), entry.clone()); Ok(()) }
/// #     async fn remove(&self, key: &str) -> Result<(), StoreError> { self.0.lock().unwrap().remove(key); Ok(()) }
/// #     async fn try_lock(&self, _: &str, _: Duration) -> Result<Option<LockToken>, StoreError> { Ok(Some(LockToken::generate())) }
/// #     async fn unlock(&self, _: &str, _: &LockToken) -> Result<(), StoreError> { Ok(()) }
/// # }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// // Any `Store`; echocache-memory's `LruStore` is the usual one.
/// let cache = EchoCache::new(MapStore::default());
///
/// let user = cache
///     .fetch("user:42", || async { Ok::<_, std::io::Error>("Ada".to_string()) })
///     .await
///     .unwrap();
/// assert_eq!(user, "Ada");
///
/// // A hit: the loader is not called.
/// let again = cache
///     .fetch("user:42", || async { unreachable!("cached") as Result<String, std::io::Error> })
///     .await
///     .unwrap();
/// assert_eq!(again, "Ada");
/// assert_eq!(cache.stats().hits, 1);
/// # }
/// ```
pub struct EchoCache<V, S> {
    core: Arc<Core<V, S>>,
}

// By hand: a derive would demand `S: Clone` and `V: Clone` of the handle.
impl<V, S> Clone for EchoCache<V, S> {
    fn clone(&self) -> Self {
        Self {
            core: Arc::clone(&self.core),
        }
    }
}

impl<V, S> fmt::Debug for EchoCache<V, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EchoCache")
            .field("load_timeout", &self.core.load_timeout)
            .field("store_timeout", &self.core.guard.timeout())
            .finish_non_exhaustive()
    }
}

impl<V: Clone + Send + Sync + 'static, S: Store<V>> EchoCache<V, S> {
    /// A cache over `store` with the default settings: load timeout 30 s, store timeout
    /// 250 ms, circuit breaker on (2 failures, 1 s cool-down), system clock.
    pub fn new(store: S) -> Self {
        Self {
            core: Arc::new(Core::new(
                store,
                Clock::system(),
                Some(DEFAULT_LOAD_TIMEOUT),
                GuardSettings::default(),
                true,
            )),
        }
    }

    /// A builder, to set the timeouts, the circuit breaker or the clock.
    pub fn builder(store: S) -> EchoCacheBuilder<V, S> {
        EchoCacheBuilder {
            store,
            load_timeout: Some(DEFAULT_LOAD_TIMEOUT),
            guard: GuardSettings::default(),
            fleet_single_flight: true,
            clock: Clock::system(),
            #[cfg(feature = "metrics")]
            metrics: None,
            _value: PhantomData,
        }
    }

    /// Returns the value for `key`, loading it once on a miss.
    ///
    /// On a hit the stored value is returned and `loader` is not called. On a miss the
    /// loader of the first caller runs as its own task; every concurrent caller for the
    /// same key waits for that one load and gets a clone of its value (or the same error).
    /// Errors are not cached: the next fetch loads again.
    ///
    /// A loaded value is returned once it has been written to the store (read-your-writes:
    /// a [`get`](Self::get) after `fetch` returned sees it, and so does any process
    /// reading the same store). The write is bounded by the store timeout and skipped
    /// while the circuit breaker is open; then the value is returned unstored.
    ///
    /// A store that fails, times out or holds undecodable bytes counts the error in
    /// [`Stats`] and is treated as a miss (the cache fails open). While the circuit breaker
    /// is open the store is not called at all: a fetch costs the loader and nothing more.
    ///
    /// # Errors
    ///
    /// - [`Error::Load`]: the loader's error, the same `Arc` for every waiter.
    /// - [`Error::LoaderPanicked`]: the loader panicked (the cache stays usable).
    /// - [`Error::Timeout`]: the load outlived the load timeout.
    /// - [`Error::RecursiveLoad`]: the loader fetched its own key.
    /// - [`Error::Aborted`]: the load's task was stopped (its runtime shut down).
    ///
    /// # Cancel safety
    ///
    /// Dropping the returned future (a client went away, a `tokio::time::timeout` fired)
    /// stops only this caller's wait: the load goes on for the others and its value is
    /// stored.
    ///
    /// # Panics
    ///
    /// Never because of the loader. When a load timeout is set (the default) the tokio
    /// runtime must have its timer enabled, as `#[tokio::main]` does.
    pub async fn fetch<F, Fut, E>(&self, key: &str, loader: F) -> Result<V, Error<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
        E: Send + Sync + 'static,
    {
        let core = &self.core;
        let epoch = core.flights.epoch();
        match core.get(key).await {
            Ok(Some(entry)) => {
                core.stats.hits.incr();
                return Ok(entry.value);
            }
            Ok(None) => {}
            Err(e) => core.stats.store_error("get", key, &e),
        }
        incr(&core.stats.misses);
        // Boxed: the load's state machine is large, and keeping it out of this future
        // keeps the hit path from moving hundreds of bytes. A miss allocates anyway.
        Box::pin(core.load(key, epoch, loader, Accept::Any, core.miss_fleet())).await
    }

    /// Reads the stored value for `key` without loading.
    ///
    /// # Errors
    ///
    /// The store's error, as is; [`StoreError::is_timeout`] when the store did not answer
    /// within the store timeout; [`StoreError::is_circuit_open`] at once while the
    /// circuit breaker is open.
    pub async fn get(&self, key: &str) -> Result<Option<V>, StoreError> {
        Ok(self.core.get(key).await?.map(|entry| entry.value))
    }

    /// Writes `value` for `key`, written now.
    ///
    /// A load of `key` running meanwhile will not overwrite it (if that load is writing
    /// its value at this moment, this waits for that write to be undone first), and
    /// fetches that start after this returns do not get that load's value.
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get).
    pub async fn insert(&self, key: &str, value: V) -> Result<(), StoreError> {
        self.core.insert(key, value).await
    }

    /// Removes the entry for `key`; the next fetch loads.
    ///
    /// A load of `key` running meanwhile will not store its (possibly older) value (if it
    /// is writing it at this moment, this waits for that write to be undone first), and
    /// fetches that start after this returns do not get that load's value.
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get).
    pub async fn invalidate(&self, key: &str) -> Result<(), StoreError> {
        self.core.invalidate(key).await
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.core.stats.snapshot()
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.core.store
    }

    /// How many loads are running now. Zero whenever no load runs: finished, failed,
    /// panicked and abandoned loads leave nothing behind.
    pub fn loads_in_flight(&self) -> usize {
        self.core.flights.len()
    }

    /// Whether the circuit breaker is open now: the store is being skipped after
    /// consecutive failures, until a probe finds it answering again.
    pub fn is_circuit_open(&self) -> bool {
        self.core.guard.is_open()
    }
}

/// Builds an [`EchoCache`] with non-default settings.
///
/// # Examples
///
/// ```
/// # use echocache_core::{EchoCache, Entry, LockToken, Store, StoreError};
/// # use std::time::Duration;
/// # struct NoStore;
/// # impl Store<u8> for NoStore {
/// #     async fn get(&self, _: &str) -> Result<Option<Entry<u8>>, StoreError> { Ok(None) }
/// #     async fn set(&self, _: &str, _: &Entry<u8>) -> Result<(), StoreError> { Ok(()) }
/// #     async fn remove(&self, _: &str) -> Result<(), StoreError> { Ok(()) }
/// #     async fn try_lock(&self, _: &str, _: Duration) -> Result<Option<LockToken>, StoreError> { Ok(Some(LockToken::generate())) }
/// #     async fn unlock(&self, _: &str, _: &LockToken) -> Result<(), StoreError> { Ok(()) }
/// # }
/// let cache = EchoCache::builder(NoStore)
///     .load_timeout(Duration::from_secs(2))
///     .build()
///     .expect("valid settings");
/// # let _ = cache;
/// let err = EchoCache::builder(NoStore).load_timeout(Duration::ZERO).build().unwrap_err();
/// assert_eq!(err.to_string(), "invalid setting `load_timeout`: must be greater than zero");
/// ```
#[must_use]
pub struct EchoCacheBuilder<V, S> {
    store: S,
    load_timeout: Option<Duration>,
    guard: GuardSettings,
    fleet_single_flight: bool,
    clock: Clock,
    #[cfg(feature = "metrics")]
    metrics: Option<Arc<str>>,
    _value: PhantomData<fn() -> V>,
}

impl<V, S> fmt::Debug for EchoCacheBuilder<V, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EchoCacheBuilder")
            .field("load_timeout", &self.load_timeout)
            .field("guard", &self.guard)
            .field("fleet_single_flight", &self.fleet_single_flight)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl<V: Clone + Send + Sync + 'static, S: Store<V>> EchoCacheBuilder<V, S> {
    /// Bounds every load: past it the load is stopped and its waiters get
    /// [`Error::Timeout`].
    ///
    /// # Default
    ///
    /// [`DEFAULT_LOAD_TIMEOUT`] (30 s).
    pub fn load_timeout(self, timeout: Duration) -> Self {
        Self {
            load_timeout: Some(timeout),
            ..self
        }
    }

    /// Lets loads run as long as they take.
    pub fn no_load_timeout(self) -> Self {
        Self {
            load_timeout: None,
            ..self
        }
    }

    /// Bounds every store call the cache makes (`get`, `set`, `remove`, locks), whatever
    /// the client's own settings: a call that has not answered by then is given up,
    /// counted in [`Stats::store_timeouts`], and the cache fails open (a fetch loads).
    ///
    /// Direct [`get`](EchoCache::get), [`insert`](EchoCache::insert) and
    /// [`invalidate`](EchoCache::invalidate) return [`StoreError::is_timeout`] instead.
    ///
    /// # Default
    ///
    /// [`DEFAULT_STORE_TIMEOUT`](crate::DEFAULT_STORE_TIMEOUT) (250 ms): well above a
    /// healthy Redis or NATS round trip, and what a fetch pays at most per store call
    /// while the store stalls (until the circuit breaker opens).
    pub fn store_timeout(self, timeout: Duration) -> Self {
        Self {
            guard: self.guard.with_timeout(Some(timeout)),
            ..self
        }
    }

    /// Lets store calls take as long as the client lets them.
    pub fn no_store_timeout(self) -> Self {
        Self {
            guard: self.guard.with_timeout(None),
            ..self
        }
    }

    /// After consecutive store failures or timeouts (see
    /// [`circuit_breaker_threshold`](Self::circuit_breaker_threshold)) the store is
    /// skipped for `cool_down`: fetches load without calling it, direct calls fail at
    /// once with [`StoreError::is_circuit_open`]. Then one call at a time probes it; the
    /// first that succeeds closes the breaker. Opening is counted in
    /// [`Stats::circuit_opens`], skipped calls in [`Stats::store_calls_skipped`].
    ///
    /// # Default
    ///
    /// On, [`DEFAULT_BREAKER_COOL_DOWN`](crate::DEFAULT_BREAKER_COOL_DOWN) (1 s).
    pub fn circuit_breaker(self, cool_down: Duration) -> Self {
        Self {
            guard: self.guard.with_cool_down(cool_down),
            ..self
        }
    }

    /// How many consecutive store failures open the circuit breaker.
    ///
    /// # Default
    ///
    /// [`DEFAULT_BREAKER_THRESHOLD`](crate::DEFAULT_BREAKER_THRESHOLD) (2).
    pub fn circuit_breaker_threshold(self, failures: u32) -> Self {
        Self {
            guard: self.guard.with_threshold(failures),
            ..self
        }
    }

    /// Calls the store however often it fails (each call still bounded by the store
    /// timeout).
    pub fn no_circuit_breaker(self) -> Self {
        Self {
            guard: self.guard.without_breaker(),
            ..self
        }
    }

    /// Whether a miss takes the store's lock for the key before loading, so that of all
    /// the processes sharing the store one loads a cold key and the others wait for its
    /// value (polling the store, bounded by the load timeout; counted in
    /// [`Stats::fleet_waits`] and [`Stats::fleet_wait_timeouts`]). It costs a miss a lock
    /// and an unlock call. Stores whose locks are not shared ([`Store::shares_locks`]:
    /// the memory stores) never take it.
    ///
    /// # Default
    ///
    /// `true`.
    pub fn fleet_single_flight(self, enabled: bool) -> Self {
        Self {
            fleet_single_flight: enabled,
            ..self
        }
    }

    /// The clock that stamps entries' `written_at`.
    ///
    /// # Default
    ///
    /// [`Clock::system`].
    pub fn clock(self, clock: impl Into<Clock>) -> Self {
        Self {
            clock: clock.into(),
            ..self
        }
    }

    /// Reports this cache through the [`metrics`](https://docs.rs/metrics) crate,
    /// labelled `cache = name`: a counter per [`Stats`] field
    /// (`echocache_<field>_total`, set every [`METRICS_INTERVAL`](crate::METRICS_INTERVAL)
    /// by a task of the cache), gauges `echocache_loads_in_flight` and
    /// `echocache_refreshes_pending`, histograms `echocache_load_duration_seconds` and
    /// `echocache_store_call_duration_seconds` (label `op`). Install the recorder (e.g.
    /// `metrics-exporter-prometheus`) before building the cache.
    ///
    /// Timing each store call costs two clock reads, which a memory store's hit notices;
    /// without this setting nothing is timed or reported.
    ///
    /// # Default
    ///
    /// Off.
    #[cfg(feature = "metrics")]
    #[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
    pub fn metrics(self, cache_name: impl Into<String>) -> Self {
        Self {
            metrics: Some(cache_name.into().into()),
            ..self
        }
    }

    /// Builds the cache.
    ///
    /// # Errors
    ///
    /// - [`BuildError::InvalidSetting`] for a zero load timeout, store timeout or circuit
    ///   breaker cool-down, a zero breaker threshold, or an empty `metrics` name.
    /// - [`BuildError::NoRuntime`]: `metrics` was set and `build` was called outside a
    ///   tokio runtime (the reporting task needs one).
    pub fn build(self) -> Result<EchoCache<V, S>, BuildError> {
        if self.load_timeout == Some(Duration::ZERO) {
            return Err(BuildError::InvalidSetting {
                setting: "load_timeout",
                reason: "must be greater than zero",
            });
        }
        self.guard.validate()?;
        #[cfg(feature = "metrics")]
        let metrics = crate::metrics::Setup::new(self.metrics)?;
        #[allow(unused_mut)] // mutated with the `metrics` feature only
        let mut core = Core::new(
            self.store,
            self.clock,
            self.load_timeout,
            self.guard,
            self.fleet_single_flight,
        );
        #[cfg(feature = "metrics")]
        {
            core.stats.timings = metrics.as_ref().map(crate::metrics::Setup::timings);
        }
        let core = Arc::new(core);
        #[cfg(feature = "metrics")]
        if let Some(metrics) = metrics {
            let core = Arc::downgrade(&core);
            metrics.start(move || {
                core.upgrade().map(|core| crate::metrics::Sample {
                    stats: core.stats.snapshot(),
                    loads_in_flight: core.flights.len(),
                    refreshes_pending: 0,
                })
            });
        }
        Ok(EchoCache { core })
    }
}
