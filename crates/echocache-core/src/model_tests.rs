//! Model checks of the single-flight with [shuttle](https://docs.rs/shuttle): each test runs
//! its scenario under many schedules of shuttle's tasks, with the flight map's locks, the
//! epoch, the superseded flag and each flight's outcome cell all shuttle primitives (see
//! `sync.rs`), so every lock and atomic operation is a point where another task may run.
//! The pending set's and the scheduler's checks are in `lazy/scheduler.rs`.
//!
//! Run with
//! `RUSTFLAGS="--cfg echocache_shuttle" CARGO_TARGET_DIR=target/shuttle cargo test -p echocache-core --lib model_tests::`
//! (`cargo xtask test` does). A failure prints shuttle's failing schedule (the last one
//! printed is the whole schedule) and seed. Replay it with that test's name as the filter
//! and `ECHOCACHE_SHUTTLE_SCHEDULE='<schedule>'`, or `SEED=<seed>` (the random schedules
//! of that seed). `ECHOCACHE_SHUTTLE_ITERATIONS=<n>` multiplies the number of schedules
//! (default 1: the CI budget).
//!
//! Shuttle explores schedules, not weak memory: its atomics are sequentially consistent,
//! so these checks say nothing about the `Acquire`/`Release` orderings (loom would). The
//! ones that matter are ordered by locks too: the epoch bump and the superseded flag are
//! written before the shard lock that removes the flight is released, and read after it
//! is taken.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::sync::atomic::AtomicUsize as StdAtomicUsize;
use std::time::Duration;

use shuttle::future::{self, JoinHandle};
use shuttle::rand::{Rng, thread_rng};
use shuttle::sync::atomic::AtomicUsize;

use crate::flight::{Failure, Flights, Join, Leader, Outcome, Waiter};
use crate::sync::{Arc, Mutex, Ordering, lock};
use crate::{Entry, LockToken, Store, StoreError};

/// Runs `f` under `iterations` random schedules and `iterations / 2` PCT schedules (PCT
/// favours the few-preemption bugs random walks miss), or replays one schedule.
pub(crate) fn check(iterations: usize, f: impl Fn() + Send + Sync + 'static) {
    let f = Arc::new(f);
    let run = move || {
        let f = Arc::clone(&f);
        move || f()
    };
    if let Ok(schedule) = std::env::var("ECHOCACHE_SHUTTLE_SCHEDULE") {
        shuttle::replay(run(), &schedule);
        return;
    }
    let scale: usize = std::env::var("ECHOCACHE_SHUTTLE_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let iterations = iterations.saturating_mul(scale);
    if let Some(seed) = std::env::var("SEED").ok().and_then(|s| s.parse().ok()) {
        shuttle::check_random_with_seed(run(), seed, iterations);
        return;
    }
    shuttle::check_random(run(), iterations);
    shuttle::check_pct(run(), iterations / 2, 3);
}

const KEY: &str = "k";

/// Spawns `task(0)`, …, `task(n - 1)` as shuttle tasks.
fn spawn_all<T>(n: usize, task: impl Fn(usize) -> T) -> Vec<JoinHandle<T::Output>>
where
    T: Future + Send + 'static,
    T::Output: Send + 'static,
{
    (0..n).map(|i| future::spawn(task(i))).collect()
}

/// Waits for every task, in order; a task's panic fails the schedule.
fn join_all<T>(handles: Vec<JoinHandle<T>>) -> Vec<T> {
    future::block_on(async move {
        let mut out = Vec::with_capacity(handles.len());
        for handle in handles {
            out.push(handle.await.expect("a model task failed"));
        }
        out
    })
}

/// Counts the leaders of one key alive at once; must never pass one.
#[derive(Default)]
struct LeaderCount(AtomicUsize);

impl LeaderCount {
    fn enter(&self) {
        let before = self.0.fetch_add(1, Ordering::SeqCst);
        assert_eq!(before, 0, "two leaders for one key at once");
    }

    /// Called just before the leader ends (finish or drop), while its flight is still in
    /// the map: a caller can lead the key only after that.
    fn leave(&self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The value a flight publishes: its own id, so a waiter can tell whose outcome it got.
fn value_of<V>(leader: &Leader<V>) -> u64
where
    V: Clone + Send + Sync + 'static,
{
    leader.id()
}

fn assert_idle(flights: &Flights<u64>) {
    assert_eq!(flights.len(), 0, "a flight outlived its leader");
}

/// N callers join one key; every leader publishes its id and finishes. Every caller gets
/// the outcome of the flight it joined (by `wait` or, after the store write, by
/// `wait_done`), there is never a second leader while one runs, and nothing is left.
#[test]
fn model_join_wait_publish_finish() {
    check(6000, || {
        let flights = Arc::new(Flights::<u64>::new());
        let leaders = Arc::new(LeaderCount::default());
        let store: Cell = Arc::new(Mutex::new(None));
        let handles = spawn_all(3, |i| {
            let flights = Arc::clone(&flights);
            let leaders = Arc::clone(&leaders);
            let store = Arc::clone(&store);
            async move {
                let waiter = match flights.join(KEY, None) {
                    Join::Lead(leader, waiter) => {
                        leaders.enter();
                        let value = value_of(&leader);
                        leader.publish(Ok(value));
                        future::yield_now().await;
                        // The store write, after the publish and before the finish.
                        *lock(&store) = Some(value);
                        leaders.leave();
                        assert!(!leader.finish(true), "nothing superseded this flight");
                        waiter
                    }
                    Join::Wait(waiter) => waiter,
                    Join::Recheck => unreachable!("no epoch was given"),
                    Join::Settle(_) => unreachable!("nothing supersedes here"),
                };
                let id = waiter.id();
                let outcome = if i % 2 == 1 {
                    let outcome = waiter.wait_done().await;
                    // `wait_done` returns only once the flight ended: its value (or a
                    // later flight's, with a larger id) is in the store.
                    let stored = *lock(&store);
                    assert!(
                        stored.is_some_and(|v| v >= id),
                        "wait_done returned before the store write"
                    );
                    outcome
                } else {
                    waiter.wait().await
                };
                match outcome {
                    Some(Ok(value)) => assert_eq!(value, id, "a waiter got another flight's value"),
                    other => panic!("a waiter got {:?}", other.map(|o| o.is_ok())),
                }
            }
        });
        join_all(handles);
        assert_idle(&flights);
    });
}

/// What a leader does: the ends a load task can come to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// Loaded, published, stored, finished.
    Finish,
    /// Published an error (the loader failed or panicked: core catches the panic and
    /// publishes it), then finished.
    Fail,
    /// Aborted after publishing (the task was dropped during the store write).
    DropAfterPublish,
    /// Aborted before publishing (the task was dropped, or the runtime shut down, while
    /// the loader ran; also what an uncaught unwind through the task leaves).
    DropBeforePublish,
}

impl End {
    fn pick() -> Self {
        match thread_rng().gen_range(0..4) {
            0 => End::Finish,
            1 => End::Fail,
            2 => End::DropAfterPublish,
            _ => End::DropBeforePublish,
        }
    }

    fn publishes(self) -> bool {
        self != End::DropBeforePublish
    }
}

/// Ends the leader as `end` says; returns what the waiters of this flight should get.
async fn end_flight(leader: Leader<u64>, end: End, leaders: &LeaderCount) -> Option<Outcome<u64>> {
    let outcome: Outcome<u64> = match end {
        End::Fail => Err(Failure::Panicked("boom".into())),
        _ => Ok(value_of(&leader)),
    };
    if end.publishes() {
        leader.publish(outcome.clone());
    }
    future::yield_now().await;
    leaders.leave();
    match end {
        End::Finish => {
            leader.finish(true);
        }
        End::Fail => {
            leader.finish(false);
        }
        End::DropAfterPublish | End::DropBeforePublish => drop(leader),
    }
    end.publishes().then_some(outcome)
}

fn same(a: &Option<Outcome<u64>>, b: &Option<Outcome<u64>>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(Ok(a)), Some(Ok(b))) => a == b,
        (Some(Err(Failure::Panicked(a))), Some(Err(Failure::Panicked(b)))) => a == b,
        _ => false,
    }
}

/// The leader comes to any of its ends (chosen per schedule) while callers join, and some
/// callers give up mid-wait (their task aborted at a random point). Every caller that
/// waits to the end gets its flight's outcome, `None` only when the leader was dropped
/// without publishing; no waker slot stays taken; the map ends empty.
#[test]
fn model_leader_ends_and_waiters_leave() {
    check(6000, || {
        let flights = Arc::new(Flights::<u64>::new());
        let leaders = Arc::new(LeaderCount::default());
        // What each flight gave its waiters, by flight id.
        let outcomes = Arc::new(std::sync::Mutex::new(
            Vec::<(u64, Option<Outcome<u64>>)>::new(),
        ));
        // A waiter of each flight kept for inspection after every task ended.
        let kept = Arc::new(std::sync::Mutex::new(Vec::<Waiter<u64>>::new()));
        let ends: Vec<End> = (0..3).map(|_| End::pick()).collect();
        let handles = spawn_all(3, |i| {
            let flights = Arc::clone(&flights);
            let leaders = Arc::clone(&leaders);
            let outcomes = Arc::clone(&outcomes);
            let kept = Arc::clone(&kept);
            let end = ends[i];
            async move {
                let waiter = match flights.join(KEY, None) {
                    Join::Lead(leader, waiter) => {
                        leaders.enter();
                        kept.lock().unwrap().push(waiter.clone_for_test());
                        let id = leader.id();
                        // The leader's own caller goes away: the load goes on (core runs
                        // it as its own task).
                        let task = future::spawn({
                            let leaders = Arc::clone(&leaders);
                            async move { end_flight(leader, end, &leaders).await }
                        });
                        let expected = task.await.expect("leader task");
                        outcomes.lock().unwrap().push((id, expected));
                        waiter
                    }
                    Join::Wait(waiter) => waiter,
                    Join::Recheck => unreachable!("no epoch was given"),
                    Join::Settle(_) => unreachable!("nothing supersedes here"),
                };
                let id = waiter.id();
                let got = if i == 2 {
                    waiter.wait_done().await
                } else {
                    waiter.wait().await
                };
                if got.is_none() {
                    // The flight is over without an outcome (core then tries again): it
                    // must be out of the map by now, or the retry would find it again.
                    match flights.join(KEY, None) {
                        Join::Wait(again) => assert_ne!(again.id(), id, "an ended flight joined"),
                        Join::Lead(leader, _) => {
                            leaders.enter();
                            outcomes.lock().unwrap().push((leader.id(), None));
                            leaders.leave();
                            drop(leader);
                        }
                        Join::Recheck => unreachable!("no epoch was given"),
                        Join::Settle(_) => unreachable!("nothing supersedes here"),
                    }
                }
                (id, got)
            }
        });
        // A waiter that gives up: joins, then is aborted at whatever point the scheduler
        // picks, possibly while registered for a wake.
        let quitter = future::spawn({
            let flights = Arc::clone(&flights);
            let leaders = Arc::clone(&leaders);
            let outcomes = Arc::clone(&outcomes);
            async move {
                match flights.join(KEY, None) {
                    Join::Wait(waiter) => {
                        let _ = waiter.wait().await;
                    }
                    // Leading, it drops its `Leader` at once: a load aborted at its start.
                    Join::Lead(leader, _) => {
                        leaders.enter();
                        outcomes.lock().unwrap().push((leader.id(), None));
                        leaders.leave();
                        drop(leader);
                    }
                    Join::Recheck => unreachable!("no epoch was given"),
                    Join::Settle(_) => unreachable!("nothing supersedes here"),
                }
            }
        });
        quitter.abort();
        let results = join_all(handles);
        future::block_on(async {
            let _ = quitter.await;
        });
        let outcomes = outcomes.lock().unwrap();
        for (id, got) in results {
            let (_, expected) = outcomes
                .iter()
                .find(|(flight, _)| *flight == id)
                .expect("each joined flight had a leader");
            assert!(same(&got, expected), "a waiter got the wrong outcome");
        }
        for waiter in kept.lock().unwrap().iter() {
            let (taken, slots) = waiter.waker_slots();
            assert_eq!(taken, 0, "a waker slot outlived its wait ({slots} slots)");
            assert!(
                slots <= 4,
                "the waker list grew past the waits ({slots} slots)"
            );
        }
        assert_idle(&flights);
    });
}

/// Every caller goes away: the waits of all callers are dropped (mid-poll or before), and
/// the leader still publishes and finishes; then a new caller leads a new flight.
#[test]
fn model_all_waiters_dropped() {
    check(4000, || {
        let flights = Arc::new(Flights::<u64>::new());
        let Join::Lead(leader, first) = flights.join(KEY, None) else {
            unreachable!("the map starts empty")
        };
        let probe = first.clone_for_test();
        let mut waits = vec![future::spawn(async move {
            let _ = first.wait().await;
        })];
        for _ in 0..2 {
            let flights = Arc::clone(&flights);
            waits.push(future::spawn(async move {
                match flights.join(KEY, None) {
                    Join::Wait(waiter) => {
                        let _ = waiter.wait().await;
                    }
                    // Came after the flight: a load of its own, aborted at once.
                    Join::Lead(leader, _) => drop(leader),
                    Join::Recheck => unreachable!("no epoch was given"),
                    Join::Settle(_) => unreachable!("nothing supersedes here"),
                }
            }));
        }
        let load = future::spawn(async move {
            future::yield_now().await;
            leader.publish(Ok(1));
            leader.finish(true);
        });
        for wait in &waits {
            wait.abort();
        }
        future::block_on(async move {
            load.await.expect("load");
            for wait in waits {
                let _ = wait.await;
            }
        });
        let (taken, _) = probe.waker_slots();
        assert_eq!(taken, 0, "a dropped wait left its waker");
        assert_idle(&flights);
        match flights.join(KEY, None) {
            Join::Lead(leader, waiter) => {
                assert_ne!(waiter.id(), probe.id());
                drop(leader);
            }
            _ => panic!("a finished flight was joined"),
        }
        assert_idle(&flights);
    });
}

/// The store of the flight models: one key's value.
type Cell = Arc<Mutex<Option<u64>>>;

/// The epoch rule, with the protocol `Core::load` follows: read the epoch, read the store,
/// on a miss join with the epoch read; a leader publishes, writes the store, then
/// finishes (which bumps the epoch before leaving the map). However the callers
/// interleave, the key is loaded once: a caller that missed the store before the write
/// and finds no flight after it is told to re-read, and the re-read hits.
#[test]
fn model_epoch_recheck_loads_once() {
    check(6000, || {
        let flights = Arc::new(Flights::<u64>::new());
        let store: Cell = Arc::new(Mutex::new(None));
        let loads = Arc::new(StdAtomicUsize::new(0));
        let handles = spawn_all(3, |_| {
            let flights = Arc::clone(&flights);
            let store = Arc::clone(&store);
            let loads = Arc::clone(&loads);
            async move {
                let seen = flights.epoch();
                if let Some(value) = *lock(&store) {
                    return value;
                }
                match flights.join(KEY, Some(seen)) {
                    Join::Recheck => lock(&store).expect("a re-read after a store write missed"),
                    Join::Settle(_) => unreachable!("nothing supersedes here"),
                    Join::Wait(waiter) => match waiter.wait().await {
                        Some(Ok(value)) => value,
                        _ => panic!("the load failed"),
                    },
                    Join::Lead(leader, waiter) => {
                        loads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        leader.publish(Ok(7));
                        *lock(&store) = Some(7);
                        leader.finish(true);
                        match waiter.wait().await {
                            Some(Ok(value)) => value,
                            _ => panic!("the load failed"),
                        }
                    }
                }
            }
        });
        let values = join_all(handles);
        assert!(values.iter().all(|&v| v == 7));
        assert_eq!(
            loads.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "the key was loaded twice"
        );
        assert_idle(&flights);
    });
}

/// `insert` / `invalidate` (supersede, wait for a write under way, then write or remove the
/// store) racing a flight's store write and `finish`, as `Core::store_value` and the caches
/// do them. When the supersede comes after the flight started, the flight's (older) value
/// never stays in the store: after an invalidate the store ends empty, after an insert it
/// holds the inserted value.
#[test]
fn model_supersede_races_finish() {
    check(6000, || {
        const OLD: u64 = 1;
        const NEW: u64 = 2;
        let flights = Arc::new(Flights::<u64>::new());
        let store: Cell = Arc::new(Mutex::new(None));
        // Orders the join against the supersede (both take the key's shard lock whole, so
        // this hides no interleaving): whether the writer's supersede came after the join.
        let joined = Arc::new(Mutex::new(false));
        let insert = thread_rng().gen_bool(0.5);
        let load = future::spawn({
            let (flights, store, joined) = (
                Arc::clone(&flights),
                Arc::clone(&store),
                Arc::clone(&joined),
            );
            async move {
                let leader = {
                    let mut joined = lock(&joined);
                    let Join::Lead(leader, _) = flights.join(KEY, None) else {
                        unreachable!("no one else joins")
                    };
                    *joined = true;
                    leader
                };
                leader.publish(Ok(OLD));
                let mut stored = false;
                if leader.begin_write() {
                    *lock(&store) = Some(OLD);
                    stored = true;
                }
                if stored && leader.is_superseded() {
                    *lock(&store) = None;
                }
                leader.finish(stored);
            }
        });
        let write = future::spawn({
            let (flights, store, joined) = (
                Arc::clone(&flights),
                Arc::clone(&store),
                Arc::clone(&joined),
            );
            async move {
                let (after_join, writing) = {
                    let joined = lock(&joined);
                    (*joined, flights.supersede(KEY))
                };
                if let Some(writing) = writing {
                    writing.wait_done().await;
                }
                *lock(&store) = insert.then_some(NEW);
                after_join
            }
        });
        let after_join = future::block_on(async move {
            load.await.expect("load");
            write.await.expect("write")
        });
        let last = *lock(&store);
        if after_join {
            assert_ne!(
                last,
                Some(OLD),
                "a superseded flight's value stayed in the store"
            );
            if insert {
                assert_eq!(last, Some(NEW), "an insert was undone");
            } else {
                assert_eq!(last, None, "an invalidate was undone");
            }
        }
        assert_idle(&flights);
    });
}

/// A key's flights, seen together: different keys never share a flight, and the waker
/// slots of one flight are reused, not piled up, by waits that come and go.
#[test]
fn model_keys_are_independent_and_slots_reused() {
    check(3000, || {
        let flights = Arc::new(Flights::<u64>::new());
        let Join::Lead(a, wa) = flights.join("a", None) else {
            unreachable!()
        };
        let Join::Lead(b, wb) = flights.join("b", None) else {
            unreachable!("another key's flight was joined")
        };
        assert_ne!(wa.id(), wb.id());
        let probe = wa.clone_for_test();
        // Waits that poll once and go away, one after another and side by side.
        let handles = spawn_all(2, |_| {
            let flights = Arc::clone(&flights);
            async move {
                let mut seen = HashSet::new();
                for _ in 0..3 {
                    let Join::Wait(waiter) = flights.join("a", None) else {
                        unreachable!("the flight runs")
                    };
                    seen.insert(waiter.id());
                    use futures::FutureExt;
                    assert!(
                        waiter.wait().now_or_never().is_none(),
                        "nothing was published"
                    );
                }
                seen.len()
            }
        });
        assert!(join_all(handles).into_iter().all(|n| n == 1));
        let (taken, slots) = probe.waker_slots();
        assert_eq!(taken, 0);
        assert!(
            slots <= 2,
            "{slots} waker slots for at most 2 waits at once"
        );
        a.publish(Ok(1));
        b.publish(Ok(2));
        drop(a);
        b.finish(true);
        future::block_on(async move {
            assert!(same(&wa.wait().await, &Some(Ok(1))));
            assert!(same(&wb.wait_done().await, &Some(Ok(2))));
        });
        assert_idle(&flights);
    });
}

/// A store for the models of whole fetches: a shuttle mutex over a map, and a yield before
/// each operation (a remote store's round trip), so other tasks run between a caller's
/// steps.
#[derive(Clone, Default)]
struct ModelStore {
    map: Arc<Mutex<HashMap<String, Entry<u64>>>>,
}

impl Store<u64> for ModelStore {
    async fn get(&self, key: &str) -> Result<Option<Entry<u64>>, StoreError> {
        future::yield_now().await;
        Ok(lock(&self.map).get(key).cloned())
    }

    async fn set(&self, key: &str, entry: &Entry<u64>) -> Result<(), StoreError> {
        future::yield_now().await;
        lock(&self.map).insert(key.to_owned(), entry.clone());
        Ok(())
    }

    async fn remove(&self, key: &str) -> Result<(), StoreError> {
        future::yield_now().await;
        lock(&self.map).remove(key);
        Ok(())
    }

    async fn try_lock(&self, _: &str, _: Duration) -> Result<Option<LockToken>, StoreError> {
        Ok(Some(LockToken::generate()))
    }

    async fn unlock(&self, _: &str, _: &LockToken) -> Result<(), StoreError> {
        Ok(())
    }
}

/// What `fetch_from` returns: the surviving fetches' results, the loader calls, the cache.
type Fetched = (
    Vec<Result<u64, crate::Error<Infallible>>>,
    usize,
    crate::EchoCache<u64, ModelStore>,
);

/// A running load of the key, counted while its future lives (to its end or its drop).
struct Loading(Arc<StdAtomicUsize>);

impl Loading {
    fn new(count: Arc<StdAtomicUsize>) -> Self {
        let before = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(before, 0, "two loads of one key at once");
        Self(count)
    }
}

impl Drop for Loading {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// `EchoCache::fetch` from `n` tasks, the `abort`-th of them (if any) aborted at a point
/// the scheduler picks. Without a tokio runtime the leading caller drives the load itself,
/// so aborting it is what aborting a load task is with one. Returns the surviving
/// fetches' results, the loader calls and the cache.
fn fetch_from(n: usize, abort: Option<usize>) -> Fetched {
    let cache = crate::EchoCache::builder(ModelStore::default())
        .no_load_timeout()
        .build()
        .expect("a valid cache");
    let loads = Arc::new(StdAtomicUsize::new(0));
    let loading = Arc::new(StdAtomicUsize::new(0));
    let handles = spawn_all(n, |_| {
        let cache = cache.clone();
        let loads = Arc::clone(&loads);
        let loading = Arc::clone(&loading);
        async move {
            cache
                .fetch(KEY, move || {
                    loads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    async move {
                        let _loading = Loading::new(loading);
                        future::yield_now().await;
                        Ok::<u64, Infallible>(7)
                    }
                })
                .await
        }
    });
    let mut kept = Vec::new();
    let mut aborted = None;
    for (i, handle) in handles.into_iter().enumerate() {
        if Some(i) == abort {
            handle.abort();
            aborted = Some(handle);
        } else {
            kept.push(handle);
        }
    }
    let results = join_all(kept);
    if let Some(handle) = aborted {
        let _ = future::block_on(handle);
    }
    let loads = loads.load(std::sync::atomic::Ordering::SeqCst);
    (results, loads, cache)
}

/// The whole fetch path (`EchoCache::fetch` → `Core::load`: epoch, store read, join,
/// re-check, inline load, publish, store write, finish) from three callers: one load, one
/// value for all, nothing left in flight.
#[test]
fn model_fetch_stampede_loads_once() {
    check(3000, || {
        let (results, loads, cache) = fetch_from(3, None);
        assert!(results.iter().all(|r| matches!(r, Ok(7))), "a fetch failed");
        assert_eq!(loads, 1, "a stampede loaded twice");
        assert_eq!(cache.loads_in_flight(), 0);
    });
}

/// The same with one caller (perhaps the leading one, perhaps mid-load or mid-write)
/// going away: the others still get the value (a waiter whose flight ended without one
/// loads again), loads never overlap, nothing is left in flight.
///
/// At most 2 loads: the aborted caller's, and one retry. A waiter whose flight ended
/// without an outcome reads the epoch and the store again before it joins, so it finds a
/// value another waiter's retry stored (this model found the version without that
/// re-read loading 3 times).
#[test]
fn model_fetch_survives_a_caller_gone() {
    check(3000, || {
        let (results, loads, cache) = fetch_from(3, Some(0));
        assert!(results.iter().all(|r| matches!(r, Ok(7))), "a fetch failed");
        assert!(loads <= 2, "{loads} loads for one aborted caller");
        assert_eq!(cache.loads_in_flight(), 0);
    });
}
