//! The single-flight: at most one load per key at a time, its outcome shared by every
//! caller that waits for it.
//!
//! The map from key to running flight is sharded so that distinct keys never wait on each
//! other's lock. A flight's entry is removed by its [`Leader`] (also when the leader is
//! dropped), so the map is empty whenever no load runs. Outcomes go through a
//! `tokio::sync::watch` channel: each waiter holds a receiver and may give up alone.
//!
//! Unlike Go's `x/sync/singleflight` (Go bugs 4, 12, 13), the leader's cancellation is not
//! shared, a panic is not re-raised in the waiters, and the store write happens inside the
//! flight.

use std::any::Any;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use foldhash::fast::RandomState;
use tokio::sync::watch;

/// Why a flight produced no value, type-erased so that one map serves every error type.
#[derive(Clone)]
pub(crate) enum Failure {
    /// The loader's error, an `Arc<E>` behind `dyn Any`.
    Load(Arc<dyn Any + Send + Sync>),
    /// The loader panicked with this message.
    Panicked(Arc<str>),
    /// The load ran past `load_timeout`.
    Timeout,
}

pub(crate) type Outcome<V> = Result<V, Failure>;
type Slot<V> = Option<Outcome<V>>;
type Shard<V> = Mutex<HashMap<Box<str>, Running<V>, RandomState>>;

struct Running<V> {
    id: u64,
    rx: watch::Receiver<Slot<V>>,
    superseded: Arc<AtomicBool>,
}

/// The flights of one cache.
pub(crate) struct Flights<V> {
    shards: Box<[Shard<V>]>,
    hasher: RandomState,
    /// Bumped after every store write by a flight: a caller that read the store before a
    /// bump and finds no flight reads the store again instead of loading twice.
    epoch: AtomicU64,
}

/// Globally unique flight ids (also across caches, for the recursion check).
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// What a caller must do for its key.
pub(crate) enum Join<V> {
    /// A load is running: wait for it.
    Wait(Waiter<V>),
    /// No load is running: the caller leads; it must run the load and finish the leader.
    Lead(Leader<V>, Waiter<V>),
    /// A flight stored a value since the caller read the store: read it again.
    Recheck,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // No user code runs under these locks; a poisoned lock still holds a consistent map.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<V: Clone + Send + Sync + 'static> Flights<V> {
    pub(crate) fn new() -> Self {
        let shards = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(4)
            .saturating_mul(4)
            .next_power_of_two()
            .clamp(8, 256);
        Self {
            shards: (0..shards)
                .map(|_| Mutex::new(HashMap::with_hasher(RandomState::default())))
                .collect(),
            hasher: RandomState::default(),
            epoch: AtomicU64::new(0),
        }
    }

    /// Read this before reading the store; hand it to [`join`](Self::join).
    #[inline]
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    fn shard(&self, key: &str) -> usize {
        (self.hasher.hash_one(key) as usize) & (self.shards.len() - 1)
    }

    /// Joins the running flight for `key`, or makes the caller its leader.
    ///
    /// `seen_epoch` is `Some(epoch)` read before the caller's store read; when a flight has
    /// stored a value since, the caller is told to [`Join::Recheck`].
    pub(crate) fn join(self: &Arc<Self>, key: &str, seen_epoch: Option<u64>) -> Join<V> {
        let shard = self.shard(key);
        let mut map = lock(&self.shards[shard]);
        if let Some(running) = map.get(key) {
            return Join::Wait(Waiter {
                id: running.id,
                rx: running.rx.clone(),
            });
        }
        if seen_epoch.is_some_and(|seen| seen != self.epoch()) {
            return Join::Recheck;
        }
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = watch::channel(None);
        let superseded = Arc::new(AtomicBool::new(false));
        map.insert(
            key.into(),
            Running {
                id,
                rx: rx.clone(),
                superseded: Arc::clone(&superseded),
            },
        );
        Join::Lead(
            Leader {
                flights: Arc::clone(self),
                key: key.into(),
                shard,
                id,
                tx,
                superseded,
                finished: false,
            },
            Waiter { id, rx },
        )
    }

    /// Marks the running flight for `key`, if any, so that it does not store its value:
    /// the key was written or invalidated while it loaded.
    pub(crate) fn supersede(&self, key: &str) {
        let map = lock(&self.shards[self.shard(key)]);
        if let Some(running) = map.get(key) {
            running.superseded.store(true, Ordering::Release);
        }
    }

    /// How many flights are running (for tests and stats).
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }

    fn remove(&self, shard: usize, key: &str, id: u64) {
        let mut map = lock(&self.shards[shard]);
        if map.get(key).is_some_and(|r| r.id == id) {
            map.remove(key);
        }
    }
}

/// A caller's handle on a flight's outcome.
pub(crate) struct Waiter<V> {
    id: u64,
    rx: watch::Receiver<Slot<V>>,
}

impl<V: Clone> Waiter<V> {
    /// The flight's id, unique in the process.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Waits for the outcome; `None` when the flight was dropped before it finished.
    ///
    /// Cancel safety: dropping this future leaves the flight running for the others.
    pub(crate) async fn wait(mut self) -> Option<Outcome<V>> {
        match self.rx.wait_for(Option::is_some).await {
            Ok(slot) => slot.clone(),
            Err(_) => None,
        }
    }

    /// Waits until the flight has ended (its value stored), then returns its outcome.
    pub(crate) async fn wait_done(mut self) -> Option<Outcome<V>> {
        // `changed` fails once the leader is gone, i.e. after `finish` or an abort.
        while self.rx.changed().await.is_ok() {}
        self.rx.borrow().clone()
    }
}

/// The one caller that runs a flight's load.
///
/// Dropping it without [`finish`](Leader::finish) (its task was aborted) removes the flight,
/// and the waiters see the flight end without an outcome.
pub(crate) struct Leader<V> {
    flights: Arc<Flights<V>>,
    key: Box<str>,
    shard: usize,
    id: u64,
    tx: watch::Sender<Slot<V>>,
    superseded: Arc<AtomicBool>,
    finished: bool,
}

impl<V: Clone + Send + Sync + 'static> Leader<V> {
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    /// Whether the key was written or invalidated since this flight started.
    pub(crate) fn is_superseded(&self) -> bool {
        self.superseded.load(Ordering::Acquire)
    }

    /// Hands the outcome to every waiter; the flight stays visible, so callers arriving now
    /// get this outcome too, until [`finish`](Self::finish).
    pub(crate) fn publish(&self, outcome: Outcome<V>) {
        self.tx.send_replace(Some(outcome));
    }

    /// Ends the flight. `stored` says whether its value was written to the store.
    ///
    /// Returns whether the key was superseded while the flight ran: a value written then
    /// may have overwritten a newer write or an invalidation, and must be removed.
    pub(crate) fn finish(mut self, stored: bool) -> bool {
        if stored {
            self.flights.epoch.fetch_add(1, Ordering::AcqRel);
        }
        self.flights.remove(self.shard, &self.key, self.id);
        self.finished = true;
        self.is_superseded()
    }
}

impl<V> Drop for Leader<V> {
    fn drop(&mut self) {
        if !self.finished {
            let mut map = lock(&self.flights.shards[self.shard]);
            if map.get(&*self.key).is_some_and(|r| r.id == self.id) {
                map.remove(&*self.key);
            }
        }
    }
}

/// Turns a panic payload into its message.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}
