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

/// `trials` races, half `invalidate`, half `insert`: cache B (its own client) misses a
/// key and its loader starts; cache A (another client) invalidates or inserts the key;
/// then B's loader returns. B's caller gets the loaded value, but the store keeps A's
/// state: no trial leaves B's older value, and B counts every refused write.
pub async fn a_load_never_lands_over_another_process_write<S, F, Fut>(store: F, trials: usize)
where
    S: Store<String>,
    F: Fn(&'static str) -> Fut,
    Fut: Future<Output = S>,
{
    let a = EchoCache::new(store("race").await);
    let b = EchoCache::new(store("race").await);
    let reader = store("race").await;
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
        let _ = gate.release.send(());
        assert_eq!(load.await.unwrap().unwrap(), "loaded-before", "{key}");
        let held = reader.get(&key).await.unwrap().map(|e| e.value);
        if held != interloper.expected() {
            stale.push((key, interloper, held));
        }
    }
    assert!(
        stale.is_empty(),
        "{} of {trials} races left B's older value, e.g. {:?}",
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
    store: F,
    caches: usize,
    keys: usize,
    callers: usize,
) where
    S: Store<String>,
    F: Fn(&'static str) -> Fut,
    Fut: Future<Output = S>,
{
    let mut fleet = Vec::new();
    for _ in 0..caches {
        fleet.push(EchoCache::new(store("cold").await));
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
                                Ok::<_, std::io::Error>(format!("value of {key}"))
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
    let stats: Vec<_> = fleet.iter().map(EchoCache::stats).collect();
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
pub async fn a_dead_lock_holder_costs_a_waiter_its_load_timeout<S, F, Fut>(store: F)
where
    S: Store<String>,
    F: Fn(&'static str) -> Fut,
    Fut: Future<Output = S>,
{
    let dead = store("dead-holder").await;
    let token = dead
        .try_lock("k", Duration::from_secs(60))
        .await
        .unwrap()
        .expect("the lock is free");
    drop(dead);
    let cache = EchoCache::builder(store("dead-holder").await)
        .load_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let started = Instant::now();
    let value = cache
        .fetch("k", || async { Ok::<_, std::io::Error>("mine".to_owned()) })
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
    let _ = store("dead-holder").await.unlock("k", &token).await;
}

/// The lock holder's load fails: it releases the lock, and a process waiting for its
/// value takes the lock and loads the key itself, without waiting out its load timeout.
pub async fn a_failed_holder_hands_the_key_to_a_waiter<S, F, Fut>(store: F)
where
    S: Store<String>,
    F: Fn(&'static str) -> Fut,
    Fut: Future<Output = S>,
{
    let holder = EchoCache::new(store("failed-holder").await);
    let waiter = EchoCache::builder(store("failed-holder").await)
        .load_timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let (started_tx, started) = oneshot::channel();
    let (fail, fail_rx) = oneshot::channel::<()>();
    let failing = tokio::spawn({
        let holder = holder.clone();
        async move {
            holder
                .fetch("k", move || async move {
                    let _ = started_tx.send(());
                    let _ = fail_rx.await;
                    Err::<String, _>(std::io::Error::other("database down"))
                })
                .await
        }
    });
    started.await.expect("the holder loads");
    let waiting = tokio::spawn({
        let waiter = waiter.clone();
        async move {
            waiter
                .fetch("k", || async { Ok::<_, std::io::Error>("mine".to_owned()) })
                .await
        }
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
