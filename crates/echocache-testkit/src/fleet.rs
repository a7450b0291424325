//! Fleet scenarios every remote store runs: several caches, each on a client of its own
//! (separate "processes"), sharing one server. A cold key is loaded once across them; a
//! load in one process never lands over a newer `insert` or `invalidate` from another;
//! a waiting process is bounded by its load timeout when the lock holder died, and goes
//! on at once when the holder failed.
//!
//! Each takes a function that makes a store on a new client each call. Interleavings are
//! forced with gates (the loader signals that it runs and waits to be released), never by
//! sleeping and hoping. The time bounds are acceptance bounds on waits (a hang fails
//! them), not speed claims.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use echocache_core::{EchoCache, Entry, LazyEchoCache, Store};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::eventually;

/// What another process does while a load runs.
#[derive(Clone, Copy, Debug)]
enum Interloper {
    Invalidate,
    Insert,
}

impl Interloper {
    fn of_trial(trial: usize) -> Self {
        if trial.is_multiple_of(2) {
            Interloper::Invalidate
        } else {
            Interloper::Insert
        }
    }

    /// What the store must hold after the race: the interloper's state.
    fn expected(self) -> Option<String> {
        match self {
            Interloper::Invalidate => None,
            Interloper::Insert => Some("newer".to_owned()),
        }
    }
}

/// A loader gate: the loader says it started, then waits for the release.
struct Gate {
    started: oneshot::Receiver<()>,
    release: oneshot::Sender<()>,
}

/// What a gated loader returns.
type LoadFuture = std::pin::Pin<Box<dyn Future<Output = Result<String, std::io::Error>> + Send>>;

fn gated_loader(value: &'static str) -> (Gate, impl FnOnce() -> LoadFuture + Send + 'static) {
    let (started_tx, started) = oneshot::channel();
    let (release, release_rx) = oneshot::channel::<()>();
    let loader = move || -> LoadFuture {
        Box::pin(async move {
            let _ = started_tx.send(());
            let _ = release_rx.await;
            Ok(value.to_owned())
        })
    };
    (Gate { started, release }, loader)
}

/// Which cache a scenario runs: both must keep the fleet's guarantees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheKind {
    /// [`EchoCache`].
    Echo,
    /// [`LazyEchoCache`], foreground loads (missing entries).
    Lazy,
}

impl CacheKind {
    /// Both kinds, for a test to run a scenario on each.
    pub const ALL: [CacheKind; 2] = [CacheKind::Echo, CacheKind::Lazy];

    /// A prefix of this kind's own, so that the runs of a test never share keys.
    fn prefix(self, echo: &'static str, lazy: &'static str) -> &'static str {
        match self {
            CacheKind::Echo => echo,
            CacheKind::Lazy => lazy,
        }
    }
}

/// An [`EchoCache`] or a [`LazyEchoCache`] over a store.
enum Cache<S: Store<String>> {
    Echo(EchoCache<String, S>),
    Lazy(LazyEchoCache<String, S>),
}

impl<S: Store<String>> Clone for Cache<S> {
    fn clone(&self) -> Self {
        match self {
            Cache::Echo(c) => Cache::Echo(c.clone()),
            Cache::Lazy(c) => Cache::Lazy(c.clone()),
        }
    }
}

impl<S: Store<String>> Cache<S> {
    fn new(kind: CacheKind, store: S, load_timeout: Duration) -> Self {
        match kind {
            CacheKind::Echo => Cache::Echo(
                EchoCache::builder(store)
                    .load_timeout(load_timeout)
                    .build()
                    .unwrap(),
            ),
            CacheKind::Lazy => Cache::Lazy(
                LazyEchoCache::builder(store)
                    .refresh_after(Duration::from_secs(60))
                    .load_timeout(load_timeout)
                    .build()
                    .unwrap(),
            ),
        }
    }

    async fn fetch<F, Fut>(&self, key: &str, loader: F) -> Result<String, String>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<String, std::io::Error>> + Send + 'static,
    {
        match self {
            Cache::Echo(c) => c.fetch(key, loader).await.map_err(|e| e.to_string()),
            Cache::Lazy(c) => c.fetch(key, loader).await.map_err(|e| e.to_string()),
        }
    }

    fn stats(&self) -> echocache_core::Stats {
        match self {
            Cache::Echo(c) => c.stats(),
            Cache::Lazy(c) => c.stats(),
        }
    }

    fn loads_in_flight(&self) -> usize {
        match self {
            Cache::Echo(c) => c.loads_in_flight(),
            Cache::Lazy(c) => c.loads_in_flight(),
        }
    }
}

/// The default load timeout of both caches.
const LOAD_TIMEOUT: Duration = Duration::from_secs(30);

/// `trials` races, half `invalidate`, half `insert`: cache B (its own client) misses a
/// key and its loader starts; cache A (another client) invalidates or inserts the key;
/// another fetch on B joins B's load; then B's loader returns. B's first caller gets the
/// loaded value (its call began before A's), but the store keeps A's state, and the
/// fetch that began after A's call returned gets A's value or a load of its own: no trial
/// leaves or returns B's older value, and B counts every refused write.
pub async fn a_load_never_lands_over_another_process_write<S, F, Fut>(
    kind: CacheKind,
    store: F,
    trials: usize,
) where
    S: Store<String>,
    F: Fn(&'static str) -> Fut,
    Fut: Future<Output = S>,
{
    let prefix = kind.prefix("race", "race-lazy");
    let a = EchoCache::new(store(prefix).await);
    let b = Cache::new(kind, store(prefix).await, LOAD_TIMEOUT);
    let reader = store(prefix).await;
    let mut stale = Vec::new();
    for trial in 0..trials {
        let key = format!("race-{trial}");
        let interloper = Interloper::of_trial(trial);
        let (gate, loader) = gated_loader("loaded-before");
        let load = tokio::spawn({
            let (b, key) = (b.clone(), key.clone());
            async move { b.fetch(&key, loader).await }
        });
        gate.started.await.expect("B's loader runs");
        match interloper {
            Interloper::Invalidate => a.invalidate(&key).await.unwrap(),
            Interloper::Insert => a.insert(&key, "newer".to_owned()).await.unwrap(),
        }
        // A fetch that B begins after A's call returned joins B's running load; it must
        // not get that load's older value.
        let coalesced = b.stats().coalesced;
        let joiner = tokio::spawn({
            let (b, key) = (b.clone(), key.clone());
            async move {
                b.fetch(&key, || async { Ok("loaded-after".to_owned()) })
                    .await
            }
        });
        // After an insert it reads A's value at once; after an invalidate it misses and
        // joins B's load.
        eventually(
            "the fetch joins B's load or returns",
            Duration::from_secs(5),
            || {
                let joined = b.stats().coalesced > coalesced || joiner.is_finished();
                async move { joined.then_some(()) }
            },
        )
        .await;
        let _ = gate.release.send(());
        assert_eq!(load.await.unwrap().unwrap(), "loaded-before", "{key}");
        let late = joiner.await.unwrap().unwrap();
        let late_ok = match interloper {
            Interloper::Invalidate => late == "loaded-after",
            Interloper::Insert => late == "newer",
        };
        let held = reader.get(&key).await.unwrap().map(|e| e.value);
        let held_ok = match interloper {
            // The store holds A's state, or the value of a load begun after A's call.
            Interloper::Invalidate => held.is_none() || held.as_deref() == Some("loaded-after"),
            Interloper::Insert => held.as_deref() == Some("newer"),
        };
        if !late_ok || !held_ok {
            stale.push((key, interloper, held, late));
        }
    }
    assert!(
        stale.is_empty(),
        "{} of {trials} races left or returned B's older value, e.g. {:?}",
        stale.len(),
        &stale[..stale.len().min(3)]
    );
    assert_eq!(
        b.stats().stale_writes_refused,
        trials as u64,
        "{:?}",
        b.stats()
    );
}

/// The same race against a background refresh: cache B (its own client) serves a stale
/// entry and refreshes it; while the refresh's loader runs, cache A (another client)
/// invalidates or inserts; the refresh's value never lands over A's.
pub async fn a_refresh_never_lands_over_another_process_write<S, F, Fut>(store: F, trials: usize)
where
    S: Store<String>,
    F: Fn(&'static str) -> Fut,
    Fut: Future<Output = S>,
{
    let a = EchoCache::new(store("refresh-race").await);
    let b = LazyEchoCache::builder(store("refresh-race").await)
        .refresh_after(Duration::from_secs(60))
        .build()
        .unwrap();
    let reader = store("refresh-race").await;
    let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
    let mut stale = Vec::new();
    for trial in 0..trials {
        let key = format!("refresh-race-{trial}");
        let interloper = Interloper::of_trial(trial);
        reader
            .set(&key, &Entry::new("old".to_owned(), an_hour_ago))
            .await
            .unwrap();
        let (gate, loader) = gated_loader("refreshed-before");
        assert_eq!(b.fetch(&key, loader).await.unwrap(), "old", "a stale hit");
        gate.started.await.expect("B's refresh runs");
        match interloper {
            Interloper::Invalidate => a.invalidate(&key).await.unwrap(),
            Interloper::Insert => a.insert(&key, "newer".to_owned()).await.unwrap(),
        }
        let _ = gate.release.send(());
        eventually("B's refresh ends", Duration::from_secs(5), || {
            let done = b.loads_in_flight() == 0 && b.refreshes_pending() == 0;
            async move { done.then_some(()) }
        })
        .await;
        let held = reader.get(&key).await.unwrap().map(|e| e.value);
        if held != interloper.expected() {
            stale.push((key, interloper, held));
        }
    }
    assert!(
        stale.is_empty(),
        "{} of {trials} races left the refresh's older value, e.g. {:?}",
        stale.len(),
        &stale[..stale.len().min(3)]
    );
    let stats = b.stats();
    assert_eq!(stats.stale_writes_refused, trials as u64, "{stats:?}");
    b.shutdown().await;
}

/// `caches` caches on clients of their own, `keys` cold keys, `callers` concurrent
/// fetches per key per cache, a 200 ms loader: each key is loaded once across all of
/// them, and every caller gets the one loaded value.
pub async fn a_cold_key_is_loaded_once_across_processes<S, F, Fut>(
    kind: CacheKind,
    store: F,
    caches: usize,
    keys: usize,
    callers: usize,
) where
    S: Store<String>,
    F: Fn(&'static str) -> Fut,
    Fut: Future<Output = S>,
{
    let prefix = kind.prefix("cold", "cold-lazy");
    let mut fleet = Vec::new();
    for _ in 0..caches {
        fleet.push(Cache::new(kind, store(prefix).await, LOAD_TIMEOUT));
    }
    let loads = Arc::new(AtomicUsize::new(0));
    let mut fetches = tokio::task::JoinSet::new();
    for cache in &fleet {
        for key in 0..keys {
            for _ in 0..callers {
                let (cache, loads) = (cache.clone(), Arc::clone(&loads));
                fetches.spawn(async move {
                    let key = format!("cold-{key}");
                    let value = cache
                        .fetch(&key, {
                            let key = key.clone();
                            move || async move {
                                loads.fetch_add(1, Ordering::SeqCst);
                                tokio::time::sleep(Duration::from_millis(200)).await;
                                Ok(format!("value of {key}"))
                            }
                        })
                        .await
                        .unwrap();
                    assert_eq!(value, format!("value of {key}"));
                });
            }
        }
    }
    while let Some(done) = fetches.join_next().await {
        done.unwrap();
    }
    let stats: Vec<_> = fleet.iter().map(Cache::stats).collect();
    assert_eq!(
        loads.load(Ordering::SeqCst),
        keys,
        "one load per key fleet-wide: {stats:?}"
    );
    // The other processes waited for the leader's value (a process whose first read
    // came after the value was stored had a plain hit instead).
    let waits: u64 = stats.iter().map(|s| s.fleet_waits).sum();
    assert!(waits >= 1, "{stats:?}");
}

/// A process took the lock for a key and died (it never releases it; the lock's TTL is
/// a minute): another process, with a 1 s load timeout, waits at most about that long,
/// then loads the key itself.
pub async fn a_dead_lock_holder_costs_a_waiter_its_load_timeout<S, F, Fut>(
    kind: CacheKind,
    store: F,
) where
    S: Store<String>,
    F: Fn(&'static str) -> Fut,
    Fut: Future<Output = S>,
{
    let prefix = kind.prefix("dead-holder", "dead-holder-lazy");
    let dead = store(prefix).await;
    let token = dead
        .try_lock("k", Duration::from_secs(60))
        .await
        .unwrap()
        .expect("the lock is free");
    drop(dead);
    let cache = Cache::new(kind, store(prefix).await, Duration::from_secs(1));
    let started = Instant::now();
    let value = cache
        .fetch("k", || async { Ok("mine".to_owned()) })
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(value, "mine");
    assert!(
        took >= Duration::from_secs(1),
        "waited for the holder first: {took:?}"
    );
    assert!(took < Duration::from_secs(4), "bounded wait: {took:?}");
    let stats = cache.stats();
    assert_eq!(stats.fleet_wait_timeouts, 1, "{stats:?}");
    assert_eq!(stats.loads, 1, "{stats:?}");
    // Clean up the dead holder's lock (the test made it).
    let _ = store(prefix).await.unlock("k", &token).await;
}

/// The lock holder's load fails: it releases the lock, and a process waiting for its
/// value takes the lock and loads the key itself, without waiting out its load timeout.
pub async fn a_failed_holder_hands_the_key_to_a_waiter<S, F, Fut>(kind: CacheKind, store: F)
where
    S: Store<String>,
    F: Fn(&'static str) -> Fut,
    Fut: Future<Output = S>,
{
    let prefix = kind.prefix("failed-holder", "failed-holder-lazy");
    let holder = Cache::new(kind, store(prefix).await, LOAD_TIMEOUT);
    let waiter = Cache::new(kind, store(prefix).await, Duration::from_secs(20));
    let (started_tx, started) = oneshot::channel();
    let (fail, fail_rx) = oneshot::channel::<()>();
    let failing = tokio::spawn({
        let holder = holder.clone();
        async move {
            holder
                .fetch("k", move || async move {
                    let _ = started_tx.send(());
                    let _ = fail_rx.await;
                    Err(std::io::Error::other("database down"))
                })
                .await
        }
    });
    started.await.expect("the holder loads");
    let waiting = tokio::spawn({
        let waiter = waiter.clone();
        async move { waiter.fetch("k", || async { Ok("mine".to_owned()) }).await }
    });
    // The waiter's flight runs and has not loaded: it finds the lock held and polls
    // for the holder's value (whichever step it is at, the outcome must be the same).
    eventually("the waiter waits", Duration::from_secs(5), || {
        let waiting = waiter.loads_in_flight() == 1 && waiter.stats().loads == 0;
        async move { waiting.then_some(()) }
    })
    .await;
    let started = Instant::now();
    let _ = fail.send(());
    assert!(failing.await.unwrap().is_err(), "the holder's load failed");
    assert_eq!(waiting.await.unwrap().unwrap(), "mine");
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "the waiter went on after the holder released: {took:?}"
    );
    let stats = waiter.stats();
    assert_eq!(stats.fleet_wait_timeouts, 0, "{stats:?}");
    assert_eq!(stats.loads, 1, "{stats:?}");
}
