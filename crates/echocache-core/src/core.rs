//! The machinery both caches share: the store, the flights, the counters, the clock, and
//! the load that runs as its own task.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;

use crate::flight::{Failure, Flights, Join, Leader, Outcome, panic_message};
use crate::stats::{Counters, incr};
use crate::{Clock, Entry, Error, Store, recursion};

/// How many times a fetch tries again when the flight it waited on ended without an
/// outcome it can use (aborted, or an error of another caller's error type).
const MAX_ATTEMPTS: u8 = 4;

pub(crate) struct Core<V, S> {
    pub(crate) store: S,
    pub(crate) flights: Arc<Flights<V>>,
    pub(crate) stats: Counters,
    pub(crate) clock: Clock,
    pub(crate) load_timeout: Option<Duration>,
}

/// When a load call returns to its caller.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Until {
    /// As soon as the value is known (foreground fetches).
    Published,
    /// Once the flight has also written the store (background refreshes, which hold the
    /// cross-process lock until then).
    Stored,
}

impl<V: Clone + Send + Sync + 'static, S: Store<V>> Core<V, S> {
    pub(crate) fn new(store: S, clock: Clock, load_timeout: Option<Duration>) -> Self {
        Self {
            store,
            flights: Arc::new(Flights::new()),
            stats: Counters::default(),
            clock,
            load_timeout,
        }
    }

    /// Loads `key` through the single-flight: joins the running load for the key or starts
    /// one as its own task, then waits for the shared outcome.
    ///
    /// `seen_epoch` is the flights' epoch read before the caller's store read; `accept`
    /// says whether an entry found on a re-read of the store may be returned as is.
    pub(crate) async fn load<F, Fut, E>(
        self: &Arc<Self>,
        key: &str,
        seen_epoch: u64,
        loader: F,
        accept: impl Fn(&Entry<V>) -> bool,
        until: Until,
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
            let waiter = match self.flights.join(key, seen.take()) {
                Join::Recheck => match self.reread(key, &accept).await {
                    Some(value) => return Ok(value),
                    None => continue,
                },
                Join::Settle(waiter) => {
                    waiter.wait_done().await;
                    seen = Some(self.flights.epoch());
                    match self.reread(key, &accept).await {
                        Some(value) => return Ok(value),
                        None => continue,
                    }
                }
                Join::Wait(waiter) => {
                    incr(&self.stats.coalesced);
                    waiter
                }
                Join::Lead(leader, waiter) => {
                    let Some(loader) = loader.take() else {
                        // Our own load was aborted and no other is running.
                        return Err(Error::Aborted);
                    };
                    // Calling the loader runs user code: a panic here is the loader's too.
                    match std::panic::catch_unwind(AssertUnwindSafe(loader)) {
                        Ok(fut) => self.start(leader, fut).await,
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
            let outcome = match until {
                Until::Published => waiter.wait().await,
                Until::Stored => waiter.wait_done().await,
            };
            match outcome {
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
                    match self.reread(key, &accept).await {
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
    async fn reread(&self, key: &str, accept: &impl Fn(&Entry<V>) -> bool) -> Option<V> {
        match self.store.get(key).await {
            Ok(Some(entry)) if accept(&entry) => Some(entry.value),
            Ok(_) => None,
            Err(e) => {
                self.stats.store_error("get", key, &e);
                None
            }
        }
    }

    /// Starts the load as its own task, or runs it here when there is no tokio runtime.
    async fn start<Fut, E>(self: &Arc<Self>, leader: Leader<V>, fut: Fut)
    where
        Fut: Future<Output = Result<V, E>> + Send + 'static,
        E: Send + Sync + 'static,
    {
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                let core = Arc::clone(self);
                handle.spawn(core.run(leader, fut, true));
            }
            // Without a runtime nothing can run the load on its own: the caller drives it,
            // with no timeout (tokio's timer needs a runtime).
            Err(_) => Arc::clone(self).run(leader, fut, false).await,
        }
    }

    /// Runs one load to its end: loader (bounded by `load_timeout`, panics caught), then
    /// the outcome to the waiters, then the store write.
    async fn run<Fut, E>(self: Arc<Self>, leader: Leader<V>, fut: Fut, timed: bool)
    where
        Fut: Future<Output = Result<V, E>> + Send + 'static,
        E: Send + Sync + 'static,
    {
        incr(&self.stats.loads);
        let guarded = recursion::scope(leader.id(), AssertUnwindSafe(fut).catch_unwind());
        let result = match self.load_timeout {
            Some(limit) if timed => tokio::time::timeout(limit, guarded).await.ok(),
            _ => Some(guarded.await),
        };
        let failure = match result {
            Some(Ok(Ok(value))) => return self.store_value(leader, value).await,
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
        };
        leader.publish(Err(failure));
        leader.finish(false);
    }

    /// Hands a loaded value to the waiters, then writes it to the store (unless the key
    /// was written or invalidated meanwhile).
    async fn store_value(&self, leader: Leader<V>, value: V) {
        let written_at = self.clock.now();
        leader.publish(Outcome::Ok(value.clone()));
        let mut stored = false;
        if leader.begin_write() {
            match self
                .store
                .set(leader.key(), &Entry::new(value, written_at))
                .await
            {
                Ok(()) => stored = true,
                Err(e) => self.stats.store_error("set", leader.key(), &e),
            }
        }
        if stored && leader.is_superseded() {
            // An insert or invalidate came during this write and is waiting for this
            // flight to end: remove our (older) value first, so that it is gone before
            // the invalidate returns or the insert writes.
            if let Err(e) = self.store.remove(leader.key()).await {
                self.stats.store_error("remove", leader.key(), &e);
            }
        }
        leader.finish(stored);
    }
}
