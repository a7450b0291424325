//! The single-flight: at most one load per key at a time, its outcome shared by every
//! caller that waits for it.
//!
//! The map from key to running flight is sharded so that distinct keys never wait on each
//! other's lock. A flight's entry is removed by its [`Leader`] (also when the leader is
//! dropped), so the map is empty whenever no load runs. Outcomes go through the flight's
//! own cell (a mutex over the outcome, a closed flag and the waiters' wakers): each waiter
//! may give up alone, and a waiter that gives up takes its waker with it.
//!
//! Unlike Go's `x/sync/singleflight` (Go bugs 4, 12, 13), the leader's cancellation is not
//! shared, a panic is not re-raised in the waiters, and the store write happens inside the
//! flight.

use std::any::Any;
use std::collections::HashMap;
use std::future::poll_fn;
use std::hash::BuildHasher;
use std::task::{Context, Poll, Waker};

use crate::sync::{Arc, AtomicBool, AtomicU64, HashState, Mutex, Ordering, lock};

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
type Shard<V> = Mutex<HashMap<Box<str>, Running<V>, HashState>>;

struct Running<V> {
    id: u64,
    flight: Arc<Flight<V>>,
}

/// What the leader and the waiters of one flight share.
struct Flight<V> {
    /// Set by `insert` / `invalidate` while the flight runs: it must not store its value.
    superseded: AtomicBool,
    /// Set by the leader just before its store write. With `superseded` it forms a
    /// handshake (both `SeqCst`): either the leader sees the supersede and does not
    /// write, or the superseder sees the write under way and waits for the flight to end
    /// (and clean up) before it writes or removes.
    writing: AtomicBool,
    /// Set by the leader when the store refused its conditional write: another process
    /// wrote or invalidated the key since the load read it, so the value is older than
    /// what the store holds. Callers that joined the flight read the store again.
    refused: AtomicBool,
    state: Mutex<FlightState<V>>,
}

struct FlightState<V> {
    /// The leader's outcome, once published.
    outcome: Option<Outcome<V>>,
    /// The leader is gone (finished or dropped): nothing more will be published.
    closed: bool,
    /// The wakers of the pending waits. A wait owns its slot from its first pending poll
    /// until it ends or is dropped, so the list is as long as the most waits pending at
    /// once, however many come and go.
    wakers: Vec<Option<Waker>>,
    /// Slots of `wakers` owned by no wait.
    free: Vec<usize>,
}

impl<V> Flight<V> {
    fn new() -> Self {
        Self {
            superseded: AtomicBool::new(false),
            writing: AtomicBool::new(false),
            refused: AtomicBool::new(false),
            state: Mutex::new(FlightState {
                outcome: None,
                closed: false,
                wakers: Vec::new(),
                free: Vec::new(),
            }),
        }
    }

    /// Updates the state and wakes every pending wait (each polls again and re-registers
    /// if it is not done).
    fn update(&self, f: impl FnOnce(&mut FlightState<V>)) {
        let wakers: Vec<Waker> = {
            let mut state = lock(&self.state);
            f(&mut state);
            state.wakers.iter_mut().filter_map(Option::take).collect()
        };
        wakers.into_iter().for_each(Waker::wake);
    }
}

/// One wait on a flight; gives its waker slot back when it ends or is dropped.
struct Wait<'a, V> {
    flight: &'a Flight<V>,
    slot: Option<usize>,
}

impl<V> Wait<'_, V> {
    /// `Ready(t)` once `done` returns `Some(t)`; otherwise registers the task's waker.
    fn poll<T>(
        &mut self,
        cx: &mut Context<'_>,
        done: impl FnOnce(&FlightState<V>) -> Option<T>,
    ) -> Poll<T> {
        let mut state = lock(&self.flight.state);
        if let Some(t) = done(&state) {
            if let Some(slot) = self.slot.take() {
                state.wakers[slot] = None;
                state.free.push(slot);
            }
            return Poll::Ready(t);
        }
        match self.slot {
            Some(slot) => match &mut state.wakers[slot] {
                Some(waker) if waker.will_wake(cx.waker()) => {}
                other => *other = Some(cx.waker().clone()),
            },
            None => {
                let waker = Some(cx.waker().clone());
                let slot = match state.free.pop() {
                    Some(slot) => {
                        state.wakers[slot] = waker;
                        slot
                    }
                    None => {
                        state.wakers.push(waker);
                        state.wakers.len() - 1
                    }
                };
                self.slot = Some(slot);
            }
        }
        Poll::Pending
    }
}

impl<V> Drop for Wait<'_, V> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            let mut state = lock(&self.flight.state);
            state.wakers[slot] = None;
            state.free.push(slot);
        }
    }
}

/// The flights of one cache.
pub(crate) struct Flights<V> {
    shards: Box<[Shard<V>]>,
    hasher: HashState,
    /// Bumped after every store write by a flight: a caller that read the store before a
    /// bump and finds no flight reads the store again instead of loading twice.
    epoch: AtomicU64,
}

/// Globally unique flight ids (also across caches, for the recursion check). A `std`
/// atomic also in the model: a static outlives shuttle's executions, and only uniqueness
/// matters.
static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// What a caller must do for its key.
pub(crate) enum Join<V> {
    /// A load is running: wait for it.
    Wait(Waiter<V>),
    /// No load is running: the caller leads; it must run the load and finish the leader.
    Lead(Leader<V>, Waiter<V>),
    /// A flight stored a value since the caller read the store: read it again.
    Recheck,
    /// The running flight was superseded while writing its (older) value: wait for it to
    /// end (it removes what it wrote), then read the store again.
    Settle(Waiter<V>),
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
                .map(|_| Mutex::new(HashMap::with_hasher(HashState::default())))
                .collect(),
            hasher: HashState::default(),
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
        // A flight superseded by an `insert` or `invalidate` holds a value from before it:
        // callers arriving now must not get it. They start a new flight, which replaces
        // the old one in the map (the old leader removes only its own id).
        if let Some(running) = map.get(key) {
            let waiter = Waiter {
                id: running.id,
                flight: Arc::clone(&running.flight),
            };
            if !running.flight.superseded.load(Ordering::SeqCst) {
                return Join::Wait(waiter);
            }
            if running.flight.writing.load(Ordering::SeqCst) {
                return Join::Settle(waiter);
            }
            // Superseded before its write: it will never write, so it can be displaced.
        }
        if seen_epoch.is_some_and(|seen| seen != self.epoch()) {
            return Join::Recheck;
        }
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let flight = Arc::new(Flight::new());
        map.insert(
            key.into(),
            Running {
                id,
                flight: Arc::clone(&flight),
            },
        );
        Join::Lead(
            Leader {
                flights: Arc::clone(self),
                key: key.into(),
                shard,
                id,
                flight: Arc::clone(&flight),
                finished: false,
            },
            Waiter { id, flight },
        )
    }

    /// Marks the running flight for `key`, if any, so that it does not store its value:
    /// the key is being written or invalidated. When that flight's write is already under
    /// way, returns a waiter: the caller must wait for the flight to end (it removes what
    /// it wrote) before its own write or remove.
    pub(crate) fn supersede(&self, key: &str) -> Option<Waiter<V>> {
        let map = lock(&self.shards[self.shard(key)]);
        let running = map.get(key)?;
        running.flight.superseded.store(true, Ordering::SeqCst);
        running
            .flight
            .writing
            .load(Ordering::SeqCst)
            .then(|| Waiter {
                id: running.id,
                flight: Arc::clone(&running.flight),
            })
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
    flight: Arc<Flight<V>>,
}

impl<V: Clone> Waiter<V> {
    /// The flight's id, unique in the process.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Waits for the outcome; `None` when the flight was dropped before it finished.
    ///
    /// Cancel safety: dropping this future leaves the flight running for the others.
    #[cfg(all(test, echocache_shuttle))]
    pub(crate) async fn wait(self) -> Option<Outcome<V>> {
        let mut wait = Wait {
            flight: &self.flight,
            slot: None,
        };
        poll_fn(|cx| {
            wait.poll(cx, |state| match &state.outcome {
                Some(outcome) => Some(Some(outcome.clone())),
                None if state.closed => Some(None),
                None => None,
            })
        })
        .await
    }

    /// Waits until the flight has ended (its value stored), then returns its outcome.
    pub(crate) async fn wait_done(&self) -> Option<Outcome<V>> {
        // The flight is closed once the leader is gone, i.e. after `finish` or an abort.
        let mut wait = Wait {
            flight: &self.flight,
            slot: None,
        };
        poll_fn(|cx| wait.poll(cx, |state| state.closed.then(|| state.outcome.clone()))).await
    }
}

impl<V> Waiter<V> {
    /// Whether the store refused the flight's write (see [`Leader::refused`]): its value
    /// is older than a write or invalidation another process made while it loaded.
    pub(crate) fn was_refused(&self) -> bool {
        self.flight.refused.load(Ordering::SeqCst)
    }
}

#[cfg(all(test, echocache_shuttle))]
impl<V> Waiter<V> {
    /// Another handle on the same flight, for the model checks to inspect.
    pub(crate) fn clone_for_test(&self) -> Self {
        Self {
            id: self.id,
            flight: Arc::clone(&self.flight),
        }
    }

    /// How many waker slots are owned by a wait now, and how many there are.
    pub(crate) fn waker_slots(&self) -> (usize, usize) {
        let state = lock(&self.flight.state);
        (state.wakers.len() - state.free.len(), state.wakers.len())
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
    flight: Arc<Flight<V>>,
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
        self.flight.superseded.load(Ordering::SeqCst)
    }

    /// Announces the store write; returns whether to go ahead (false: superseded).
    pub(crate) fn begin_write(&self) -> bool {
        self.flight.writing.store(true, Ordering::SeqCst);
        !self.is_superseded()
    }

    /// Records that the store refused this flight's conditional write (before
    /// [`finish`](Self::finish), so that every waiter sees it when the flight ends).
    pub(crate) fn refused(&self) {
        self.flight.refused.store(true, Ordering::SeqCst);
    }

    /// Hands the outcome to every waiter; the flight stays visible, so callers arriving now
    /// get this outcome too, until [`finish`](Self::finish).
    pub(crate) fn publish(&self, outcome: Outcome<V>) {
        self.flight.update(|state| state.outcome = Some(outcome));
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
        // Out of the map first, then closed: a waiter woken by the close that joins again
        // finds no flight and leads the next one.
        self.flight.update(|state| state.closed = true);
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
