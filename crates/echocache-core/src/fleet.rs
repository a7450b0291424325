//! The fleet-wide single-flight: a miss's leader takes the store's lock for the key
//! before loading, so that of all the processes sharing the store one loads a cold key
//! and the others wait for its value; and the version a load's conditional write is
//! checked against.
//!
//! A node that finds the lock taken polls the store for the value (pausing a quarter of
//! the time waited so far, 2 ms to 50 ms, or until the store hears the key changed:
//! `Store::changed`), trying the lock again at each round; it loads
//! anyway once `load_timeout` has
//! passed (a holder that died costs a waiting fetch about the load timeout, never the
//! lock's TTL). Store failures fail open: the leader loads without the lock.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::core::Core;
use crate::guard::StoreOp;
use crate::stats::incr;
use crate::{Entry, LockToken, Store, StoreError, Version};

/// The shortest and the longest pause between two looks at the store while another
/// process loads the key. In between, a pause is a quarter of the time waited so far: a
/// waiter sees the value at most about a quarter of the load's time after it landed (at
/// least 2 ms, at most 50 ms), with a number of reads that grows with the logarithm of
/// the load's time (about 20 for a 200 ms load) and then one per 50 ms.
const FIRST_POLL: Duration = Duration::from_millis(2);
const LONGEST_POLL: Duration = Duration::from_millis(50);

/// Which stored entries a load may return instead of loading.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Accept {
    /// Any entry (`EchoCache`).
    Any,
    /// An entry younger than this, not dated in the future (`LazyEchoCache`).
    FresherThan(Duration),
}

/// How a load deals with the store's lock for its key.
#[derive(Clone, Debug)]
pub(crate) enum Fleet {
    /// No lock. With a store that shares locks, the load still reads the key's version
    /// just before it starts, for its conditional write.
    Off,
    /// Take the lock; while another process holds it, wait (bounded) for its value.
    Wait,
    /// The caller (a background refresh) holds the lock and read this version after
    /// taking it.
    Held(WriteAs),
}

/// How a loaded value is written to the store.
#[derive(Debug, Clone)]
pub(crate) enum WriteAs {
    /// Plainly: the store's locks are not shared (it keeps no versions for others).
    Plain,
    /// Conditionally on the version read before the load.
    IfVersion(Version),
    /// Not at all: the key's version could not be read (store trouble). A plain write
    /// could land over another process's newer write or invalidation (found by the chaos
    /// run: a value invalidated everywhere came back from such a write); the value still
    /// answers the fetch.
    Not,
}

impl WriteAs {
    /// After a failed version read: undecodable bytes are an answer (the store works, and
    /// the load must heal them: a plain write), anything else is store trouble.
    pub(crate) fn after(read_error: &StoreError) -> Self {
        if read_error.is_decode() {
            WriteAs::Plain
        } else {
            WriteAs::Not
        }
    }
}

/// What the leader does after dealing with the lock.
pub(crate) enum Lead<V> {
    /// Load, then write as `write` says, then release `token` if it holds one.
    Load {
        token: Option<LockToken>,
        write: WriteAs,
    },
    /// Another process stored the value meanwhile: no load.
    Found(V),
}

/// The keys whose store lock this process holds (a background refresh, or a flight
/// superseded by `insert` / `invalidate` that still runs), with how many holders. A
/// leader that finds such a key's lock taken does not wait for its own process: it loads
/// (a refresh then joins its flight; a superseded flight's write is refused).
#[derive(Default)]
pub(crate) struct HeldHere(Mutex<HashMap<Box<str>, usize>>);

impl HeldHere {
    fn keys(&self) -> MutexGuard<'_, HashMap<Box<str>, usize>> {
        // Nothing that can panic runs under this lock.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn insert(&self, key: &str) {
        *self.keys().entry(key.into()).or_default() += 1;
    }

    pub(crate) fn remove(&self, key: &str) {
        let mut keys = self.keys();
        if let Some(count) = keys.get_mut(key) {
            *count -= 1;
            if *count == 0 {
                keys.remove(key);
            }
        }
    }

    fn contains(&self, key: &str) -> bool {
        self.keys().contains_key(key)
    }
}

/// How often a failed lock release is tried again (see `Core::release`).
const RELEASE_RETRY: Duration = Duration::from_millis(500);

/// The lock TTL for loads bounded by `load_timeout`: the load and the write after it must
/// fit, with a margin of half the timeout (100 ms to 10 s). Extended while a load runs.
pub(crate) fn lock_ttl(load_timeout: Duration) -> Duration {
    let margin = (load_timeout / 2).clamp(Duration::from_millis(100), Duration::from_secs(10));
    load_timeout.saturating_add(margin)
}

impl<V: Clone + Send + Sync + 'static, S: Store<V>> Core<V, S> {
    /// Whether `entry` may be returned instead of loading.
    pub(crate) fn accepts(&self, accept: Accept, entry: &Entry<V>) -> bool {
        match accept {
            Accept::Any => true,
            Accept::FresherThan(limit) => {
                let now = self.clock.now();
                let future_dated = entry
                    .written_at
                    .duration_since(now)
                    .is_ok_and(|ahead| ahead > crate::CLOCK_SKEW_ALLOWANCE);
                !future_dated && entry.age(now) < limit
            }
        }
    }

    /// The lock step of a flight's leader (see the module docs). `timed`: a runtime
    /// with a timer drives the load; without one the leader never waits.
    pub(crate) async fn lead(
        self: &Arc<Self>,
        key: &str,
        accept: Accept,
        fleet: Fleet,
        timed: bool,
    ) -> Lead<V> {
        match fleet {
            Fleet::Held(write) => Lead::Load { token: None, write },
            Fleet::Off if !self.store.shares_locks() => Lead::Load {
                token: None,
                write: WriteAs::Plain,
            },
            Fleet::Off => Lead::Load {
                token: None,
                write: self.version_of(key).await,
            },
            Fleet::Wait => self.take_or_wait(key, accept, timed).await,
        }
    }

    /// How to write a value loaded from now: conditionally on the key's version now, or
    /// not at all when the store fails to tell it.
    async fn version_of(&self, key: &str) -> WriteAs {
        match self.get_versioned(key).await {
            Ok((_, version)) => WriteAs::IfVersion(version),
            Err(e) => {
                self.stats.store_error("get", key, &e);
                WriteAs::after(&e)
            }
        }
    }

    async fn take_or_wait(self: &Arc<Self>, key: &str, accept: Accept, timed: bool) -> Lead<V> {
        let started = tokio::time::Instant::now();
        let bound = self.load_timeout.unwrap_or(crate::DEFAULT_LOAD_TIMEOUT);
        let mut waited = false;
        loop {
            match self.try_lock(key, self.lock_ttl).await {
                Ok(Some(token)) => {
                    // Read after taking the lock: the previous holder may have stored the
                    // value, and the version must be what the load starts from.
                    return match self.get_versioned(key).await {
                        Ok((Some(entry), _)) if self.accepts(accept, &entry) => {
                            self.release(key, &token).await;
                            if waited {
                                incr(&self.stats.fleet_waits);
                            }
                            Lead::Found(entry.value)
                        }
                        Ok((_, version)) => {
                            if waited {
                                incr(&self.stats.fleet_waits);
                            }
                            self.held_here.insert(key);
                            Lead::Load {
                                token: Some(token),
                                write: WriteAs::IfVersion(version),
                            }
                        }
                        Err(e) => {
                            self.stats.store_error("get", key, &e);
                            self.held_here.insert(key);
                            Lead::Load {
                                token: Some(token),
                                write: WriteAs::after(&e),
                            }
                        }
                    };
                }
                Ok(None) if self.held_here.contains(key) || !timed => {
                    // Held by this process's refresh (which joins this flight), or no
                    // timer to wait with: load.
                    return Lead::Load {
                        token: None,
                        write: self.version_of(key).await,
                    };
                }
                Ok(None) => {}
                Err(e) => {
                    // Fail open: load without the lock (the breaker bounds what the store
                    // costs from now on).
                    self.stats.store_error("try_lock", key, &e);
                    return Lead::Load {
                        token: None,
                        write: WriteAs::Not,
                    };
                }
            }
            // Another process loads the key: wait for its value.
            waited = true;
            if started.elapsed() >= bound {
                crate::events::fleet_wait_gave_up(key, bound);
                incr(&self.stats.fleet_wait_timeouts);
                return Lead::Load {
                    token: None,
                    write: self.version_of(key).await,
                };
            }
            let pause = (started.elapsed() / 4).clamp(FIRST_POLL, LONGEST_POLL);
            // Ends early when the store hears the key may have changed (a tiered store's
            // backplane announces the holder's write).
            self.store
                .changed(key, pause.min(bound.saturating_sub(started.elapsed())))
                .await;
            match self.get_versioned(key).await {
                Ok((Some(entry), _)) if self.accepts(accept, &entry) => {
                    incr(&self.stats.fleet_waits);
                    return Lead::Found(entry.value);
                }
                Ok(_) => {}
                Err(e) => {
                    self.stats.store_error("get", key, &e);
                    return Lead::Load {
                        token: None,
                        write: WriteAs::after(&e),
                    };
                }
            }
        }
    }

    /// Releases the lock. A failure is counted, and the release is tried again in the
    /// background (every [`RELEASE_RETRY`], past the breaker) until the store answers or
    /// the lock would have expired anyway: a lock that survives its holder's release (a
    /// NATS bucket kept on disk across a restart, a Redis that took the unlock's timeout)
    /// would otherwise hold off every process's misses of the key until it expires.
    pub(crate) async fn release(self: &Arc<Self>, key: &str, token: &LockToken) {
        let Err(e) = self.unlock(key, token).await else {
            return;
        };
        self.stats.store_error("unlock", key, &e);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (core, key, token) = (Arc::clone(self), Box::<str>::from(key), token.clone());
        runtime.spawn(async move {
            let give_up = tokio::time::Instant::now() + core.lock_ttl;
            while tokio::time::Instant::now() + RELEASE_RETRY < give_up {
                tokio::time::sleep(RELEASE_RETRY).await;
                if core.unlock(&key, &token).await.is_ok() {
                    return;
                }
            }
        });
    }

    /// Extends the lock every third of its TTL, for as long as it is polled (the caller
    /// drops it when the load ends). A loader that blocks its thread past `load_timeout`
    /// keeps the lock this way, on a multi-threaded runtime, so no other process loads
    /// the key at the same time. Stops extending once an extension fails (counted in
    /// `refresh_locks_lost`).
    pub(crate) async fn keep_lock(&self, key: &str, token: &LockToken) -> std::convert::Infallible {
        let period = self.lock_ttl / 3;
        loop {
            tokio::time::sleep(period).await;
            match self.extend_lock(key, token, self.lock_ttl).await {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    self.stats.store_error("extend_lock", key, &e);
                    break;
                }
            }
        }
        crate::events::refresh_lock_lost(key);
        incr(&self.stats.refresh_locks_lost);
        std::future::pending().await
    }

    /// The store's `get_versioned`, guarded like every store call.
    pub(crate) async fn get_versioned(
        &self,
        key: &str,
    ) -> Result<(Option<Entry<V>>, Version), StoreError> {
        self.guard
            .call(
                &self.stats,
                StoreOp::GetVersioned,
                self.store.get_versioned(key),
            )
            .await
    }

    /// The store's `set_if_version`, guarded like every store call.
    pub(crate) async fn set_if_version(
        &self,
        key: &str,
        entry: &Entry<V>,
        version: &Version,
    ) -> Result<bool, StoreError> {
        self.guard
            .call(
                &self.stats,
                StoreOp::SetIfVersion,
                self.store.set_if_version(key, entry, version),
            )
            .await
    }
}
