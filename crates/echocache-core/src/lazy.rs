//! [`LazyEchoCache`]: stale-while-revalidate. A stale value comes back at once and is
//! refreshed in the background, one refresh per key, fleet-wide through the store's lock.

mod builder;
mod scheduler;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

pub use builder::{
    DEFAULT_QUEUE_CAPACITY, DEFAULT_REFRESH_AFTER, DEFAULT_WORKERS, LazyEchoCacheBuilder,
};

use crate::core::Core;
use crate::fleet::{Accept, Fleet, WriteAs};
use crate::stats::incr;
use crate::{Entry, Error, Stats, Store, StoreError};
use scheduler::{Job, PendingMark, Scheduled, Scheduler};

/// How far in the future an entry's `written_at` may lie (hosts' clocks differ a little)
/// before [`LazyEchoCache`] distrusts it: such an entry is treated as expired (counted in
/// [`Stats::future_dated_entries`]) instead of being served as fresh for ever.
pub const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(10);

/// A stale-while-revalidate cache.
///
/// With `age` the time since an entry was written:
///
/// - `age < refresh_after`: a fresh hit, returned as is.
/// - stale (`age ≥ refresh_after`, and below `expire_after` when set): the stale value is
///   returned at once and one background refresh is queued for the key, unless one is
///   already queued or running. A full queue drops the request (counted), never blocks.
///   Before it runs, the refresh takes the store's lock for the key; if another process
///   holds it the refresh is skipped. A failed refresh keeps the old value and is retried
///   at a later stale hit.
/// - missing, or `age ≥ expire_after`: the caller waits for a single-flight load, shared
///   with any refresh of that key. If it fails and the old value is within
///   `stale_if_error` past `expire_after`, the old value is returned.
///
/// Without `expire_after` (the default) nothing is ever too old to serve: a value is
/// returned (and refreshed behind) however long ago it was written, for as long as the
/// store keeps it, e.g. after the loader has failed for hours. Set `expire_after` when an
/// old value is worse than waiting for a load.
///
/// Cheap to clone: clones share everything. Call [`shutdown`](Self::shutdown) to stop
/// background refreshes gracefully; dropping the last clone also stops them once the
/// running ones end.
///
/// # Examples
///
/// `MapStore`, hidden, is a `HashMap` behind a `Mutex`; the `echocache` facade's docs
/// show the same cache over its real stores.
///
/// ```
/// use std::time::Duration;
/// use echocache_core::{LazyEchoCache, ManualClock};
/// # use echocache_core::{Entry, LockToken, Store, StoreError};
/// # use std::{collections::HashMap, sync::Mutex};
/// # #[derive(Default)]
/// # struct MapStore(Mutex<HashMap<String, Entry<&'static str>>>);
/// # impl Store<&'static str> for MapStore {
/// #     async fn get(&self, key: &str) -> Result<Option<Entry<&'static str>>, StoreError> { Ok(self.0.lock().unwrap().get(key).cloned()) }
/// #     async fn set(&self, key: &str, entry: &Entry<&'static str>) -> Result<(), StoreError> { self.0.lock().unwrap().insert(key.into(), entry.clone()); Ok(()) }
/// #     async fn remove(&self, key: &str) -> Result<(), StoreError> { self.0.lock().unwrap().remove(key); Ok(()) }
/// #     async fn try_lock(&self, _: &str, _: Duration) -> Result<Option<LockToken>, StoreError> { Ok(Some(LockToken::generate())) }
/// #     async fn unlock(&self, _: &str, _: &LockToken) -> Result<(), StoreError> { Ok(()) }
/// # }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let clock = ManualClock::new(std::time::SystemTime::now());
/// let cache = LazyEchoCache::builder(MapStore::default())
///     .refresh_after(Duration::from_secs(60))
///     .clock(clock.clone())
///     .build()
///     .unwrap();
///
/// let v = cache.fetch("config", || async { Ok::<_, std::io::Error>("v1") }).await.unwrap();
/// assert_eq!(v, "v1");
///
/// clock.advance(Duration::from_secs(61)); // now stale
/// let v = cache.fetch("config", || async { Ok::<_, std::io::Error>("v2") }).await.unwrap();
/// assert_eq!(v, "v1", "the stale value comes back at once");
///
/// while cache.refreshes_pending() > 0 {
///     tokio::task::yield_now().await; // the refresh runs in the background
/// }
/// assert_eq!(cache.get("config").await.unwrap(), Some("v2"));
/// cache.shutdown().await;
/// # }
/// ```
pub struct LazyEchoCache<V, S> {
    inner: Arc<Inner<V, S>>,
}

struct Inner<V, S> {
    core: Arc<Core<V, S>>,
    refresh_after: Duration,
    expire_after: Option<Duration>,
    stale_if_error: Option<Duration>,
    scheduler: Scheduler,
}

impl<V, S> Clone for LazyEchoCache<V, S> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<V, S> fmt::Debug for LazyEchoCache<V, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LazyEchoCache")
            .field("refresh_after", &self.inner.refresh_after)
            .field("expire_after", &self.inner.expire_after)
            .field("stale_if_error", &self.inner.stale_if_error)
            .field("load_timeout", &self.inner.core.load_timeout)
            .finish_non_exhaustive()
    }
}

/// Where an entry stands at a given age.
enum Freshness {
    Fresh,
    Stale,
    Expired,
    /// Written further in the future than [`CLOCK_SKEW_ALLOWANCE`]: its age is unknown.
    FutureDated,
}

impl<V: Clone + Send + Sync + 'static, S: Store<V>> LazyEchoCache<V, S> {
    /// A builder; see [`LazyEchoCacheBuilder`] for the settings and their defaults.
    pub fn builder(store: S) -> LazyEchoCacheBuilder<V, S> {
        LazyEchoCacheBuilder::new(store)
    }

    fn freshness(&self, entry: &Entry<V>, refresh_after: Duration) -> Freshness {
        let now = self.inner.core.clock.now();
        if entry
            .written_at
            .duration_since(now)
            .is_ok_and(|ahead| ahead > CLOCK_SKEW_ALLOWANCE)
        {
            return Freshness::FutureDated;
        }
        let age = entry.age(now);
        if self.inner.expire_after.is_some_and(|expire| age >= expire) {
            Freshness::Expired
        } else if age < refresh_after {
            Freshness::Fresh
        } else {
            Freshness::Stale
        }
    }

    /// Returns the value for `key`: fresh or stale at once, loading only when it is
    /// missing or expired.
    ///
    /// A stale hit schedules one background refresh with `loader`; see the type's docs
    /// for the whole rule.
    ///
    /// # Errors
    ///
    /// As [`EchoCache::fetch`](crate::EchoCache::fetch), only when the caller had to wait
    /// for a load (missing or expired entry) and no old value within `stale_if_error`
    /// could stand in. Background refresh failures are never returned: they are counted.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future stops only this caller's wait; loads and refreshes go on.
    pub fn fetch<F, Fut, E>(
        &self,
        key: &str,
        loader: F,
    ) -> impl Future<Output = Result<V, Error<E>>> + Send
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
        E: Send + Sync + 'static,
    {
        // Not an `async fn` wrapping the other: that would move the inner future into an
        // outer one on every call.
        self.fetch_with_refresh_after(key, self.inner.refresh_after, loader)
    }

    /// As [`fetch`](Self::fetch), with this call's own `refresh_after` (like the Go
    /// original's per-call interval). `expire_after` still applies.
    ///
    /// # Errors
    ///
    /// As [`fetch`](Self::fetch).
    pub async fn fetch_with_refresh_after<F, Fut, E>(
        &self,
        key: &str,
        refresh_after: Duration,
        loader: F,
    ) -> Result<V, Error<E>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
        E: Send + Sync + 'static,
    {
        let core = &self.inner.core;
        let epoch = core.flights.epoch();
        let old = match core.get(key).await {
            Ok(Some(entry)) => match self.freshness(&entry, refresh_after) {
                Freshness::Fresh => {
                    core.stats.hits.incr();
                    return Ok(entry.value);
                }
                Freshness::Stale => {
                    core.stats.stale_hits.incr();
                    self.schedule(key, refresh_after, loader);
                    return Ok(entry.value);
                }
                Freshness::Expired => Some(entry),
                Freshness::FutureDated => {
                    crate::events::future_dated(key);
                    incr(&core.stats.future_dated_entries);
                    None
                }
            },
            Ok(None) => None,
            Err(e) => {
                core.stats.store_error("get", key, &e);
                None
            }
        };
        incr(&core.stats.misses);
        let accept = Accept::FresherThan(refresh_after);
        // Boxed to keep the hit path's future small (see `EchoCache::fetch`).
        match Box::pin(core.load(key, epoch, loader, accept, core.miss_fleet())).await {
            Ok(value) => Ok(value),
            Err(err) => match (old, self.inner.expire_after, self.inner.stale_if_error) {
                (Some(old), Some(expire), Some(grace))
                    if old.age(core.clock.now()) < expire.saturating_add(grace) =>
                {
                    incr(&core.stats.stale_if_error_served);
                    Ok(old.value)
                }
                _ => Err(err),
            },
        }
    }

    /// Counts and reports an entry written too far in the future to be trusted.
    fn distrust(&self, key: &str) {
        crate::events::future_dated(key);
        incr(&self.inner.core.stats.future_dated_entries);
    }

    fn schedule<F, Fut, E>(&self, key: &str, refresh_after: Duration, loader: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
        E: Send + Sync + 'static,
    {
        let core = &self.inner.core;
        let outcome = self.inner.scheduler.schedule(key, |mark| {
            let core = Arc::clone(core);
            let job: Job = Box::new(move || Box::pin(refresh(core, mark, refresh_after, loader)));
            job
        });
        match outcome {
            Scheduled::Queued | Scheduled::AlreadyPending | Scheduled::Closed => {}
            Scheduled::Restarted => {
                crate::events::dispatcher_restarted();
                incr(&core.stats.refresh_dispatcher_restarts);
            }
            Scheduled::QueueFull => {
                crate::events::refresh_dropped(key);
                incr(&core.stats.refreshes_dropped);
            }
            Scheduled::NoRuntime => {
                crate::events::refresh_unschedulable(key);
                incr(&core.stats.refreshes_dropped);
            }
        }
    }

    /// Reads the stored value for `key` without loading, whatever its age (an entry past
    /// `expire_after` reads as `None`).
    ///
    /// # Errors
    ///
    /// As [`EchoCache::get`](crate::EchoCache::get).
    pub async fn get(&self, key: &str) -> Result<Option<V>, StoreError> {
        let core = &self.inner.core;
        Ok(core.get(key).await?.and_then(|entry| {
            match self.freshness(&entry, self.inner.refresh_after) {
                Freshness::Expired => None,
                Freshness::FutureDated => {
                    self.distrust(key);
                    None
                }
                Freshness::Fresh | Freshness::Stale => Some(entry.value),
            }
        }))
    }

    /// Writes `value` for `key`, written now. A load of `key` running meanwhile will not
    /// overwrite it, and fetches that start after this returns do not get its value.
    ///
    /// # Errors
    ///
    /// As [`EchoCache::get`](crate::EchoCache::get).
    pub async fn insert(&self, key: &str, value: V) -> Result<(), StoreError> {
        self.inner.core.insert(key, value).await
    }

    /// Removes the entry for `key`. A load of `key` running meanwhile will not store its
    /// value, and fetches that start after this returns do not get it.
    ///
    /// # Errors
    ///
    /// As [`EchoCache::get`](crate::EchoCache::get).
    pub async fn invalidate(&self, key: &str) -> Result<(), StoreError> {
        self.inner.core.invalidate(key).await
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.inner.core.stats.snapshot()
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.inner.core.store
    }

    /// How many loads (foreground or background) are running now.
    pub fn loads_in_flight(&self) -> usize {
        self.inner.core.flights.len()
    }

    /// Whether the circuit breaker is open now (see
    /// [`EchoCache::is_circuit_open`](crate::EchoCache::is_circuit_open)).
    pub fn is_circuit_open(&self) -> bool {
        self.inner.core.guard.is_open()
    }

    /// How many keys have a refresh queued or running.
    pub fn refreshes_pending(&self) -> usize {
        self.inner.scheduler.pending_len()
    }

    /// Whether [`shutdown`](Self::shutdown) was called.
    pub fn is_shut_down(&self) -> bool {
        self.inner.scheduler.is_shut_down()
    }

    /// Stops background refreshes: no new refresh is scheduled, queued ones are dropped,
    /// and this waits for the running ones to end: at most `load_timeout` plus four store
    /// timeouts plus one second. A refresh still running then (a loader that blocks its
    /// thread cannot be stopped) is left to end alone; a `tracing` event says so.
    ///
    /// Idempotent. Afterwards `fetch` still serves: stale values are returned (without a
    /// refresh) and misses load in the foreground.
    pub async fn shutdown(&self) {
        self.inner.scheduler.shutdown().await;
    }
}

/// One background refresh: the store's lock, a second look (with the key's version), the
/// shared load (with the lock kept alive while it runs), the unlock.
async fn refresh<V, S, F, Fut, E>(
    core: Arc<Core<V, S>>,
    mark: PendingMark,
    refresh_after: Duration,
    loader: F,
) where
    V: Clone + Send + Sync + 'static,
    S: Store<V>,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<V, E>> + Send + 'static,
    E: Send + Sync + 'static,
{
    let key = mark.key();
    let token = match core.try_lock(key, core.lock_ttl).await {
        Ok(Some(token)) => token,
        Ok(None) => {
            crate::events::refresh_locked_out(key);
            incr(&core.stats.refreshes_locked_out);
            return;
        }
        Err(e) => {
            core.stats.store_error("try_lock", key, &e);
            crate::events::refresh_failed(key);
            incr(&core.stats.refresh_errors);
            return;
        }
    };
    // A foreground miss of this process that finds the lock taken must not wait for it.
    core.held_here.insert(key);
    // Another process may have refreshed the key while this one waited in the queue.
    let epoch = core.flights.epoch();
    let accept = Accept::FresherThan(refresh_after);
    let write = match core.get_versioned(key).await {
        Ok((Some(entry), _)) if core.accepts(accept, &entry) => None,
        Ok((_, version)) => Some(WriteAs::IfVersion(version)),
        Err(e) => {
            core.stats.store_error("get", key, &e);
            Some(WriteAs::after(&e))
        }
    };
    if let Some(write) = write {
        let load = core.load(key, epoch, loader, accept, Fleet::Held(write));
        let outcome = tokio::select! {
            outcome = load => outcome,
            never = core.keep_lock(key, &token) => match never {},
        };
        match outcome {
            Ok(_) => incr(&core.stats.refreshes),
            Err(_) => {
                crate::events::refresh_failed(key);
                incr(&core.stats.refresh_errors);
            }
        }
    }
    core.held_here.remove(key);
    core.release(key, &token).await;
    drop(mark);
}
