//! [`LazyEchoCacheBuilder`]: settings, their defaults, and their validation.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use super::scheduler::Scheduler;
use super::{Inner, LazyEchoCache};
use crate::cache::DEFAULT_LOAD_TIMEOUT;
use crate::core::Core;
use crate::guard::GuardSettings;
use crate::{BuildError, Clock, Store};

/// Default age at which a hit becomes stale: 1 minute.
pub const DEFAULT_REFRESH_AFTER: Duration = Duration::from_secs(60);
/// Default capacity of the refresh queue: 1000 requests.
pub const DEFAULT_QUEUE_CAPACITY: usize = 1000;
/// Default number of refreshes running at once: 4.
pub const DEFAULT_WORKERS: usize = 4;

/// Builds a [`LazyEchoCache`]. Setters only record; [`build`](Self::build) checks every
/// setting at once and names the first one that cannot work.
///
/// # Examples
///
/// ```
/// # use echocache_core::{Entry, LockToken, Store, StoreError, LazyEchoCache};
/// # use std::time::Duration;
/// # struct NoStore;
/// # impl Store<u8> for NoStore {
/// #     async fn get(&self, _: &str) -> Result<Option<Entry<u8>>, StoreError> { Ok(None) }
/// #     async fn set(&self, _: &str, _: &Entry<u8>) -> Result<(), StoreError> { Ok(()) }
/// #     async fn remove(&self, _: &str) -> Result<(), StoreError> { Ok(()) }
/// #     async fn try_lock(&self, _: &str, _: Duration) -> Result<Option<LockToken>, StoreError> { Ok(Some(LockToken::generate())) }
/// #     async fn unlock(&self, _: &str, _: &LockToken) -> Result<(), StoreError> { Ok(()) }
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let cache = LazyEchoCache::builder(NoStore)
///     .refresh_after(Duration::from_secs(30))
///     .expire_after(Duration::from_secs(600))
///     .stale_if_error(Duration::from_secs(3600))
///     .load_timeout(Duration::from_secs(5))
///     .queue_capacity(10_000)
///     .workers(8)
///     .build()
///     .expect("valid settings");
/// # drop(cache);
///
/// let err = LazyEchoCache::builder(NoStore)
///     .refresh_after(Duration::from_secs(600))
///     .expire_after(Duration::from_secs(60))
///     .build()
///     .unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     "invalid setting `refresh_after`: must be below expire_after"
/// );
/// # }
/// ```
#[must_use]
pub struct LazyEchoCacheBuilder<V, S> {
    store: S,
    refresh_after: Duration,
    expire_after: Option<Duration>,
    stale_if_error: Option<Duration>,
    load_timeout: Duration,
    guard: GuardSettings,
    fleet_single_flight: bool,
    queue_capacity: usize,
    workers: usize,
    clock: Clock,
    #[cfg(feature = "metrics")]
    metrics: Option<Arc<str>>,
    _value: PhantomData<fn() -> V>,
}

impl<V, S> fmt::Debug for LazyEchoCacheBuilder<V, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LazyEchoCacheBuilder")
            .field("refresh_after", &self.refresh_after)
            .field("expire_after", &self.expire_after)
            .field("stale_if_error", &self.stale_if_error)
            .field("load_timeout", &self.load_timeout)
            .field("guard", &self.guard)
            .field("fleet_single_flight", &self.fleet_single_flight)
            .field("queue_capacity", &self.queue_capacity)
            .field("workers", &self.workers)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

fn invalid(setting: &'static str, reason: &'static str) -> BuildError {
    BuildError::InvalidSetting { setting, reason }
}

impl<V: Clone + Send + Sync + 'static, S: Store<V>> LazyEchoCacheBuilder<V, S> {
    pub(super) fn new(store: S) -> Self {
        Self {
            store,
            refresh_after: DEFAULT_REFRESH_AFTER,
            expire_after: None,
            stale_if_error: None,
            load_timeout: DEFAULT_LOAD_TIMEOUT,
            guard: GuardSettings::default(),
            fleet_single_flight: true,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            workers: DEFAULT_WORKERS,
            clock: Clock::system(),
            #[cfg(feature = "metrics")]
            metrics: None,
            _value: PhantomData,
        }
    }

    /// The age at which a hit becomes stale and schedules a background refresh. Zero makes
    /// every hit stale (always revalidate).
    ///
    /// # Default
    ///
    /// [`DEFAULT_REFRESH_AFTER`] (1 minute).
    pub fn refresh_after(self, age: Duration) -> Self {
        Self {
            refresh_after: age,
            ..self
        }
    }

    /// A hard bound: entries this old are never served; `fetch` waits for a load.
    ///
    /// # Default
    ///
    /// None: entries are served until the store drops them.
    pub fn expire_after(self, age: Duration) -> Self {
        Self {
            expire_after: Some(age),
            ..self
        }
    }

    /// Past `expire_after`, when the blocking load fails, serve the old value for up to
    /// `window` more instead of the error. Needs `expire_after`.
    ///
    /// # Default
    ///
    /// None: the error is returned.
    pub fn stale_if_error(self, window: Duration) -> Self {
        Self {
            stale_if_error: Some(window),
            ..self
        }
    }

    /// Bounds every load, foreground or background.
    ///
    /// # Default
    ///
    /// 30 seconds.
    pub fn load_timeout(self, timeout: Duration) -> Self {
        Self {
            load_timeout: timeout,
            ..self
        }
    }

    /// Bounds every store call, in fetches and in background refreshes; as
    /// [`EchoCacheBuilder::store_timeout`](crate::EchoCacheBuilder::store_timeout).
    ///
    /// # Default
    ///
    /// [`DEFAULT_STORE_TIMEOUT`](crate::DEFAULT_STORE_TIMEOUT) (250 ms).
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

    /// Skips the store for `cool_down` after consecutive failures; as
    /// [`EchoCacheBuilder::circuit_breaker`](crate::EchoCacheBuilder::circuit_breaker).
    /// While it is open, stale hits still return at once but their refreshes fail
    /// (counted), and misses load without the store.
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

    /// Calls the store however often it fails.
    pub fn no_circuit_breaker(self) -> Self {
        Self {
            guard: self.guard.without_breaker(),
            ..self
        }
    }

    /// Whether a foreground load (a missing or expired entry) takes the store's lock
    /// first; as
    /// [`EchoCacheBuilder::fleet_single_flight`](crate::EchoCacheBuilder::fleet_single_flight).
    /// Background refreshes always take it.
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

    /// How many refresh requests may wait; beyond it they are dropped and counted.
    ///
    /// # Default
    ///
    /// [`DEFAULT_QUEUE_CAPACITY`] (1000).
    pub fn queue_capacity(self, capacity: usize) -> Self {
        Self {
            queue_capacity: capacity,
            ..self
        }
    }

    /// How many background refreshes may run at once.
    ///
    /// # Default
    ///
    /// [`DEFAULT_WORKERS`] (4).
    pub fn workers(self, workers: usize) -> Self {
        Self { workers, ..self }
    }

    /// The clock for ages and `written_at`.
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
    /// labelled `cache = name`: a counter per [`Stats`](crate::Stats) field
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

    /// Builds the cache and starts its refresh dispatcher on the current tokio runtime.
    ///
    /// # Errors
    ///
    /// - [`BuildError::InvalidSetting`]: zero `queue_capacity`, `workers`, `load_timeout`,
    ///   `store_timeout`, `circuit_breaker`, `expire_after` or `stale_if_error`; `refresh_after` not below `expire_after`;
    ///   `stale_if_error` without `expire_after`; a capacity or worker count too large; an
    ///   empty `metrics` name.
    /// - [`BuildError::NoRuntime`]: called outside a tokio runtime.
    pub fn build(self) -> Result<LazyEchoCache<V, S>, BuildError> {
        if self.queue_capacity == 0 {
            return Err(invalid("queue_capacity", "must be at least 1"));
        }
        if self.queue_capacity > Semaphore::MAX_PERMITS {
            return Err(invalid("queue_capacity", "too large"));
        }
        if self.workers == 0 {
            return Err(invalid("workers", "must be at least 1"));
        }
        let workers = u32::try_from(self.workers)
            .ok()
            .filter(|&w| (w as usize) <= Semaphore::MAX_PERMITS)
            .ok_or_else(|| invalid("workers", "too large"))?;
        if self.load_timeout.is_zero() {
            return Err(invalid("load_timeout", "must be greater than zero"));
        }
        if let Some(expire) = self.expire_after {
            if expire.is_zero() {
                return Err(invalid("expire_after", "must be greater than zero"));
            }
            if self.refresh_after >= expire {
                return Err(invalid("refresh_after", "must be below expire_after"));
            }
        }
        match (self.stale_if_error, self.expire_after) {
            (Some(window), _) if window.is_zero() => {
                return Err(invalid("stale_if_error", "must be greater than zero"));
            }
            (Some(_), None) => {
                return Err(invalid("stale_if_error", "needs expire_after"));
            }
            _ => {}
        }
        self.guard.validate()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| BuildError::NoRuntime)?;
        // A running refresh makes at most four store calls besides its load (lock, read,
        // write, unlock); `shutdown` waits that long and a second more, then gives up.
        let store_calls = self
            .guard
            .timeout
            .map_or(Duration::ZERO, |t| t.saturating_mul(4));
        let shutdown_bound = self
            .load_timeout
            .saturating_add(store_calls)
            .saturating_add(Duration::from_secs(1));
        #[cfg(feature = "metrics")]
        let metrics = crate::metrics::Setup::new(self.metrics)?;
        #[allow(unused_mut)] // mutated with the `metrics` feature only
        let mut core = Core::new(
            self.store,
            self.clock,
            Some(self.load_timeout),
            self.guard,
            self.fleet_single_flight,
        );
        #[cfg(feature = "metrics")]
        {
            core.stats.timings = metrics.as_ref().map(crate::metrics::Setup::timings);
        }
        let inner = Arc::new(Inner {
            core: Arc::new(core),
            refresh_after: self.refresh_after,
            expire_after: self.expire_after,
            stale_if_error: self.stale_if_error,
            scheduler: Scheduler::start(&runtime, self.queue_capacity, workers, shutdown_bound),
        });
        #[cfg(feature = "metrics")]
        if let Some(metrics) = metrics {
            let inner = Arc::downgrade(&inner);
            metrics.start(move || {
                inner.upgrade().map(|inner| crate::metrics::Sample {
                    stats: inner.core.stats.snapshot(),
                    loads_in_flight: inner.core.flights.len(),
                    refreshes_pending: inner.scheduler.pending_len(),
                })
            });
        }
        Ok(LazyEchoCache { inner })
    }
}
