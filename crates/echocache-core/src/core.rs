//! The machinery both caches share: the store, the flights, the counters, the clock, and
//! the load that runs as its own task.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;

use crate::fleet::{Accept, Fleet, HeldHere, Lead, WriteAs, lock_ttl};
use crate::flight::{Failure, Flights, Join, Leader, Outcome, panic_message};
use crate::guard::{GuardSettings, StoreGuard, StoreOp};
use crate::stats::{Counters, incr};
use crate::{Clock, Entry, Error, LockToken, Store, StoreError, recursion};

/// How many times a fetch tries again when the flight it waited on ended without an
/// outcome it can use (aborted, or an error of another caller's error type).
const MAX_ATTEMPTS: u8 = 4;

pub(crate) struct Core<V, S> {
    pub(crate) store: S,
    pub(crate) flights: Arc<Flights<V>>,
    pub(crate) stats: Counters,
    pub(crate) clock: Clock,
    pub(crate) load_timeout: Option<Duration>,
    pub(crate) guard: StoreGuard,
    /// The TTL of the store locks this cache takes (refreshes, fleet-wide misses).
    pub(crate) lock_ttl: Duration,
    /// Whether a miss takes the store's lock first (and the store shares its locks).
    pub(crate) fleet_single_flight: bool,
    pub(crate) held_here: HeldHere,
}

impl<V: Clone + Send + Sync + 'static, S: Store<V>> Core<V, S> {
    pub(crate) fn new(
        store: S,
        clock: Clock,
        load_timeout: Option<Duration>,
        guard: GuardSettings,
        fleet_single_flight: bool,
    ) -> Self {
        let fleet_single_flight = fleet_single_flight && store.shares_locks();
        Self {
            store,
            flights: Arc::new(Flights::new()),
            stats: Counters::default(),
            clock,
            load_timeout,
            guard: StoreGuard::new(guard),
            lock_ttl: lock_ttl(load_timeout.unwrap_or(crate::DEFAULT_LOAD_TIMEOUT)),
            fleet_single_flight,
            held_here: HeldHere::default(),
        }
    }

    /// How a foreground miss deals with the store's lock.
    pub(crate) fn miss_fleet(&self) -> Fleet {
        if self.fleet_single_flight {
            Fleet::Wait
        } else {
            Fleet::Off
        }
    }

    /// The store's `get`, bounded and behind the circuit breaker (see `guard.rs`); the
    /// other store calls below likewise. Every store call of the caches goes through them.
    pub(crate) async fn get(&self, key: &str) -> Result<Option<Entry<V>>, StoreError> {
        self.guard
            .call(&self.stats, StoreOp::Get, self.store.get(key))
            .await
    }

    pub(crate) async fn set(&self, key: &str, entry: &Entry<V>) -> Result<(), StoreError> {
        self.guard
            .call(&self.stats, StoreOp::Set, self.store.set(key, entry))
            .await
    }

    pub(crate) async fn remove(&self, key: &str) -> Result<(), StoreError> {
        self.guard
            .call(&self.stats, StoreOp::Remove, self.store.remove(key))
            .await
    }

    /// A lock call that outlives the store timeout is not dropped: the store may still
    /// take the lock (a client that sends a queued command once it has reconnected), and
    /// nobody would give it back, so every process's misses of the key would wait for it
    /// to expire (measured after a Redis restart: waits of the whole load timeout). It
    /// runs on in a task of its own, for at most `ttl`, and a lock it gets is released.
    pub(crate) async fn try_lock(
        self: &Arc<Self>,
        key: &str,
        ttl: Duration,
    ) -> Result<Option<LockToken>, StoreError> {
        let mut call = Box::pin({
            let core = Arc::clone(self);
            let key: Box<str> = key.into();
            async move { core.store.try_lock(&key, ttl).await }
        });
        let taken = self
            .guard
            .call(&self.stats, StoreOp::TryLock, call.as_mut())
            .await;
        if let Err(e) = &taken
            && e.is_timeout()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let core = Arc::clone(self);
            let key: Box<str> = key.into();
            runtime.spawn(async move {
                if let Ok(Ok(Some(token))) = tokio::time::timeout(ttl, call).await {
                    core.release(&key, &token).await;
                }
            });
        }
        taken
    }

    /// Past the circuit breaker (see `StoreGuard::call_past_breaker`): a lock this cache
    /// took is always given back when the store answers.
    pub(crate) async fn unlock(&self, key: &str, token: &LockToken) -> Result<(), StoreError> {
        self.guard
            .call_past_breaker(&self.stats, StoreOp::Unlock, self.store.unlock(key, token))
            .await
    }

    pub(crate) async fn extend_lock(
        &self,
        key: &str,
        token: &LockToken,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.guard
            .call(
                &self.stats,
                StoreOp::ExtendLock,
                self.store.extend_lock(key, token, ttl),
            )
            .await
    }

    /// Writes `value` for `key` now, as `insert` does: after any load of the key that is
    /// writing its (older) value has undone that write.
    pub(crate) async fn insert(&self, key: &str, value: V) -> Result<(), StoreError> {
        if let Some(writing) = self.flights.supersede(key) {
            writing.wait_done().await;
        }
        self.set(key, &Entry::new(value, self.clock.stamp())).await
    }

    /// Removes `key`, as `invalidate` does.
    pub(crate) async fn invalidate(&self, key: &str) -> Result<(), StoreError> {
        if let Some(writing) = self.flights.supersede(key) {
            writing.wait_done().await;
        }
        self.remove(key).await
    }

    /// Loads `key` through the single-flight: joins the running load for the key or starts
    /// one as its own task, then waits for the shared outcome.
    ///
    /// `seen_epoch` is the flights' epoch read before the caller's store read; `accept`
    /// says whether an entry found in the store (on a re-read, or stored by another
    /// process) may be returned as is; `fleet` how the leader deals with the store's lock
    /// (see `fleet.rs`).
    ///
    /// Returns once the flight has ended, store write included (bounded by the store
    /// timeout, skipped while the circuit breaker is open): a `get` after it sees the
    /// value (read-your-writes, docs/ARCHITECTURE.md).
    pub(crate) async fn load<F, Fut, E>(
        self: &Arc<Self>,
        key: &str,
        seen_epoch: u64,
        loader: F,
        accept: Accept,
        fleet: Fleet,
    ) -> Result<V, Error<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
        E: Send + Sync + 'static,
    {
        let mut loader = Some(loader);
        let mut seen = Some(seen_epoch);
        let mut attempts = 0u8;
        loop {
            attempts += 1;
            let mut joined = false;
            let waiter = match self.flights.join(key, seen.take()) {
                Join::Recheck => match self.reread(key, accept).await {
                    Some(value) => return Ok(value),
                    None => continue,
                },
                Join::Settle(waiter) => {
                    waiter.wait_done().await;
                    seen = Some(self.flights.epoch());
                    match self.reread(key, accept).await {
                        Some(value) => return Ok(value),
                        None => continue,
                    }
                }
                Join::Wait(waiter) => {
                    incr(&self.stats.coalesced);
                    joined = true;
                    waiter
                }
                Join::Lead(leader, waiter) => {
                    let Some(loader) = loader.take() else {
                        // Our own load was aborted and no other is running.
                        return Err(Error::Aborted);
                    };
                    // Calling the loader runs user code: a panic here is the loader's too.
                    match std::panic::catch_unwind(AssertUnwindSafe(loader)) {
                        Ok(fut) => self.start(leader, fut, accept, fleet.clone()).await,
                        Err(payload) => {
                            incr(&self.stats.loads);
                            incr(&self.stats.loader_panics);
                            let message = panic_message(&*payload);
                            crate::events::loader_panicked(key, &message);
                            leader.publish(Err(Failure::Panicked(message.into())));
                            leader.finish(false);
                        }
                    }
                    waiter
                }
            };
            // A loader waiting on a flight that waits on it would never wake.
            let _edge = match recursion::current() {
                Some(me) => match recursion::enter_wait(me, waiter.id()) {
                    Some(edge) => Some(edge),
                    None => return Err(Error::RecursiveLoad),
                },
                None => None,
            };
            let outcome = waiter.wait_done().await;
            match outcome {
                // The store refused the flight's write: another process wrote or
                // invalidated the key while it loaded, maybe before this caller joined.
                // Read the store again (and load anew if the key is gone) rather than
                // return a value older than a write that returned before this call
                // began. The leader's own caller started before the flight read the
                // key's version, so the loaded value is a valid answer for it.
                Some(Ok(_)) if joined && waiter.was_refused() && attempts < MAX_ATTEMPTS => {
                    seen = Some(self.flights.epoch());
                    match self.reread(key, accept).await {
                        Some(value) => return Ok(value),
                        None => continue,
                    }
                }
                Some(Ok(value)) => return Ok(value),
                Some(Err(Failure::Panicked(msg))) => {
                    return Err(Error::LoaderPanicked(msg.to_string()));
                }
                Some(Err(Failure::Timeout)) => return Err(Error::Timeout),
                Some(Err(Failure::Load(any))) => match any.downcast::<E>() {
                    Ok(e) => return Err(Error::Load(e)),
                    // Another call site's error type: it can't be ours; load again.
                    Err(_) if loader.is_some() && attempts < MAX_ATTEMPTS => continue,
                    Err(_) => return Err(Error::Aborted),
                },
                None if attempts < MAX_ATTEMPTS => {
                    // The flight ended without an outcome (its leader was aborted).
                    // Another waiter may have loaded and stored the value since: read the
                    // store again, with a fresh epoch, before leading a load.
                    seen = Some(self.flights.epoch());
                    match self.reread(key, accept).await {
                        Some(value) => return Ok(value),
                        None => continue,
                    }
                }
                None => return Err(Error::Aborted),
            }
        }
    }

    /// Reads the store again (a flight may have written the key): the value when the
    /// entry is there and `accept`able, else `None` (a store error counts as a miss).
    async fn reread(&self, key: &str, accept: Accept) -> Option<V> {
        match self.get(key).await {
            Ok(Some(entry)) if self.accepts(accept, &entry) => Some(entry.value),
            Ok(_) => None,
            Err(e) => {
                self.stats.store_error("get", key, &e);
                None
            }
        }
    }

    /// Starts the load as its own task, or runs it here when there is no tokio runtime.
    async fn start<Fut, E>(
        self: &Arc<Self>,
        leader: Leader<V>,
        fut: Fut,
        accept: Accept,
        fleet: Fleet,
    ) where
        Fut: Future<Output = Result<V, E>> + Send + 'static,
        E: Send + Sync + 'static,
    {
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                let core = Arc::clone(self);
                handle.spawn(core.run(leader, fut, accept, fleet, true));
            }
            // Without a runtime nothing can run the load on its own: the caller drives it,
            // with no timeout (tokio's timer needs a runtime).
            Err(_) => {
                Arc::clone(self)
                    .run(leader, fut, accept, fleet, false)
                    .await
            }
        }
    }

    /// Runs one load to its end: the store's lock (or another process's value), the
    /// loader (bounded by `load_timeout`, panics caught, the lock kept alive), the outcome
    /// to the waiters, the conditional store write, the unlock.
    async fn run<Fut, E>(
        self: Arc<Self>,
        leader: Leader<V>,
        fut: Fut,
        accept: Accept,
        fleet: Fleet,
        timed: bool,
    ) where
        Fut: Future<Output = Result<V, E>> + Send + 'static,
        E: Send + Sync + 'static,
    {
        let (token, write) = match self.lead(leader.key(), accept, fleet, timed).await {
            Lead::Found(value) => {
                leader.publish(Outcome::Ok(value));
                leader.finish(true);
                return;
            }
            Lead::Load { token, write } => (token, write),
        };
        let result = match &token {
            Some(token) if timed => {
                let load = self.call_loader(&leader, fut, timed);
                tokio::select! {
                    result = load => result,
                    never = self.keep_lock(leader.key(), token) => match never {},
                }
            }
            _ => self.call_loader(&leader, fut, timed).await,
        };
        let key: Box<str> = leader.key().into();
        match result {
            Ok(value) => self.store_value(leader, value, write).await,
            Err(failure) => {
                leader.publish(Err(failure));
                leader.finish(false);
            }
        }
        if let Some(token) = token {
            // Taken in `lead` (which registered it as held here).
            self.held_here.remove(&key);
            self.release(&key, &token).await;
        }
    }

    /// Runs the loader: bounded by `load_timeout`, panics caught, counted.
    async fn call_loader<Fut, E>(
        &self,
        leader: &Leader<V>,
        fut: Fut,
        timed: bool,
    ) -> Result<V, Failure>
    where
        Fut: Future<Output = Result<V, E>> + Send + 'static,
        E: Send + Sync + 'static,
    {
        incr(&self.stats.loads);
        #[cfg(feature = "metrics")]
        let _timed = self
            .stats
            .timings
            .as_ref()
            .map(crate::metrics::Timings::time_load);
        let guarded = recursion::scope(leader.id(), AssertUnwindSafe(fut).catch_unwind());
        let result = match self.load_timeout {
            Some(limit) if timed => {
                let started = tokio::time::Instant::now();
                // A loader that blocks its thread cannot be stopped, and tokio's timeout
                // takes a value that is ready when it is finally polled, however late:
                // a value that comes after the limit is refused as a timeout, so that
                // `load_timeout` bounds every load (and the lock sized on it).
                tokio::time::timeout(limit, guarded)
                    .await
                    .ok()
                    .filter(|_| started.elapsed() <= limit)
            }
            _ => Some(guarded.await),
        };
        Err(match result {
            Some(Ok(Ok(value))) => return Ok(value),
            Some(Ok(Err(e))) => {
                incr(&self.stats.load_errors);
                Failure::Load(Arc::new(e))
            }
            Some(Err(payload)) => {
                incr(&self.stats.loader_panics);
                let message = panic_message(&*payload);
                crate::events::loader_panicked(leader.key(), &message);
                Failure::Panicked(message.into())
            }
            None => {
                incr(&self.stats.load_timeouts);
                crate::events::load_timed_out(leader.key(), self.load_timeout);
                Failure::Timeout
            }
        })
    }

    /// Hands a loaded value to the waiters, then writes it to the store, unless the key
    /// was written or invalidated meanwhile: in this process (the flight was superseded)
    /// or in any (the store refuses the write conditional on the version read), or its
    /// version could not be read (`WriteAs::Not`).
    async fn store_value(&self, leader: Leader<V>, value: V, write: WriteAs) {
        let written_at = self.clock.stamp();
        leader.publish(Outcome::Ok(value.clone()));
        let mut stored = false;
        if !matches!(write, WriteAs::Not) && leader.begin_write() {
            let entry = Entry::new(value, written_at);
            let written = if let WriteAs::IfVersion(version) = &write {
                self.set_if_version(leader.key(), &entry, version).await
            } else {
                self.set(leader.key(), &entry).await.map(|()| true)
            };
            match written {
                Ok(true) => stored = true,
                Ok(false) => {
                    incr(&self.stats.stale_writes_refused);
                    leader.refused();
                }
                Err(e) => self.stats.store_error("set", leader.key(), &e),
            }
        }
        if stored && leader.is_superseded() {
            // An insert or invalidate came during this write and is waiting for this
            // flight to end: remove our (older) value first, so that it is gone before
            // the invalidate returns or the insert writes.
            if let Err(e) = self.remove(leader.key()).await {
                self.stats.store_error("remove", leader.key(), &e);
            }
        }
        leader.finish(stored);
    }
}
