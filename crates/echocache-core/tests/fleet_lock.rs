//! The fleet-wide single-flight's store lock, taken by a miss's leader over a store whose
//! locks are shared (`TestStore` says they are): held while the load runs, released on
//! every path (value, error, panic, timeout, every caller gone).

use std::time::Duration;

use echocache_core::test_util::TestStore;
use echocache_core::{EchoCache, Error};

fn cache(store: &TestStore<String>) -> EchoCache<String, TestStore<String>> {
    cache_timing_out_after(store, Duration::from_secs(30))
}

fn cache_timing_out_after(
    store: &TestStore<String>,
    load_timeout: Duration,
) -> EchoCache<String, TestStore<String>> {
    EchoCache::builder(store.clone())
        .load_timeout(load_timeout)
        .build()
        .unwrap()
}

type Fetch = tokio::task::JoinHandle<Result<String, Error<std::io::Error>>>;

/// A fetch of `k` on a task of its own, returned once its loader runs; the loader returns
/// `"v"` when the sender is used (or dropped).
async fn gated_fetch(
    cache: &EchoCache<String, TestStore<String>>,
) -> (Fetch, tokio::sync::oneshot::Sender<()>) {
    let (started_tx, started) = tokio::sync::oneshot::channel();
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let fetch = tokio::spawn({
        let cache = cache.clone();
        async move {
            cache
                .fetch("k", move || async move {
                    let _ = started_tx.send(());
                    let _ = released.await;
                    Ok::<_, std::io::Error>("v".to_owned())
                })
                .await
        }
    });
    started.await.expect("the loader runs");
    (fetch, release)
}

#[tokio::test]
async fn the_lock_is_held_while_the_load_runs_and_released_with_its_value() {
    let store = TestStore::<String>::new();
    let cache = cache(&store);
    let (load, release) = gated_fetch(&cache).await;
    assert!(store.is_locked("k"), "the leader holds the store lock");
    release.send(()).unwrap();
    assert_eq!(load.await.unwrap().unwrap(), "v");
    assert!(!store.is_locked("k"));
}

async fn loader_bug() -> Result<String, std::io::Error> {
    panic!("loader bug")
}

#[tokio::test]
async fn the_lock_is_released_after_an_error_a_panic_and_a_timeout() {
    let store = TestStore::<String>::new();
    let cache = cache(&store);
    let failed = cache
        .fetch("error", || async {
            Err::<String, _>(std::io::Error::other("database down"))
        })
        .await;
    assert!(matches!(failed, Err(Error::Load(_))));
    assert!(!store.is_locked("error"));

    let panicked = cache.fetch("panic", loader_bug).await;
    assert!(
        matches!(panicked, Err(Error::LoaderPanicked(_))),
        "{panicked:?}"
    );
    assert!(!store.is_locked("panic"));

    // A short timeout here only: a panic's backtrace, printed by the panic hook, can take
    // longer than 100 ms.
    let timed_out = cache_timing_out_after(&store, Duration::from_millis(100))
        .fetch("slow", || {
            std::future::pending::<Result<String, std::io::Error>>()
        })
        .await;
    assert!(matches!(timed_out, Err(Error::Timeout)));
    assert!(!store.is_locked("slow"));
    // Errors are not cached: the next fetch loads.
    let v = cache
        .fetch("error", || async {
            Ok::<_, std::io::Error>("back".to_owned())
        })
        .await
        .unwrap();
    assert_eq!(v, "back");
}

#[tokio::test]
async fn the_lock_is_released_when_every_caller_is_gone() {
    let store = TestStore::<String>::new();
    let cache = cache(&store);
    let (caller, release) = gated_fetch(&cache).await;
    caller.abort();
    assert!(caller.await.unwrap_err().is_cancelled());
    assert!(store.is_locked("k"), "the load goes on without its caller");
    release.send(()).unwrap();
    for _ in 0..1_000 {
        if cache.loads_in_flight() == 0 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(cache.loads_in_flight(), 0);
    assert!(!store.is_locked("k"), "released when the load ended");
    assert_eq!(
        cache.get("k").await.unwrap().as_deref(),
        Some("v"),
        "and stored"
    );
}

#[tokio::test(start_paused = true)]
async fn a_lock_the_store_grants_after_the_store_timeout_is_given_back() {
    // The store takes the lock at once but its answer comes after the cache's store
    // timeout (a client that sent a queued command after the caller gave up): the miss
    // loads without it, and when the late answer comes the lock is released, instead of
    // holding off every process's misses of the key until it expires.
    let store = TestStore::<String>::new();
    let cache = EchoCache::builder(store.clone())
        .store_timeout(Duration::from_millis(250))
        .no_circuit_breaker()
        .build()
        .unwrap();
    store.set_reply_latency(Duration::from_secs(1));
    let value = cache
        .fetch("k", || async { Ok::<_, std::io::Error>("v".to_owned()) })
        .await
        .unwrap();
    assert_eq!(value, "v", "loaded without the lock");
    assert_eq!(cache.stats().store_timeouts, 1, "{:?}", cache.stats());
    assert!(store.is_locked("k"), "the store took the lock meanwhile");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !store.is_locked("k"),
        "the late answer's lock was given back, long before its TTL"
    );
}

#[tokio::test]
async fn the_lock_is_released_even_while_the_circuit_breaker_is_open() {
    // The store failed during the load and the breaker opened; it answers again when the
    // load ends. The write is skipped (the breaker), the unlock is not: skipped, it would
    // leave the lock to hold off every process's misses of the key until it expires.
    let store = TestStore::<String>::new();
    let cache = cache(&store);
    let (load, release) = gated_fetch(&cache).await;
    store.set_failing(true);
    for _ in 0..2 {
        assert!(cache.get("other").await.is_err());
    }
    assert!(cache.is_circuit_open());
    store.set_failing(false);
    release.send(()).unwrap();
    assert_eq!(load.await.unwrap().unwrap(), "v");
    assert!(!store.is_locked("k"), "the lock was given back");
    assert!(
        !cache.is_circuit_open(),
        "and its success closed the breaker"
    );
}

#[tokio::test(start_paused = true)]
async fn a_release_that_fails_is_tried_again_until_the_store_answers() {
    // The store fails when the load ends (a server restarting): the unlock fails. The
    // lock would outlive its holder (a NATS bucket on disk keeps it across the restart)
    // and hold off every process's misses of the key; the release is tried again in the
    // background and succeeds once the store answers.
    let store = TestStore::<String>::new();
    let cache = EchoCache::builder(store.clone())
        .no_circuit_breaker()
        .build()
        .unwrap();
    let (load, release) = gated_fetch(&cache).await;
    store.set_failing(true);
    release.send(()).unwrap();
    assert_eq!(load.await.unwrap().unwrap(), "v");
    assert!(store.is_locked("k"), "the unlock failed");
    store.set_failing(false);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!store.is_locked("k"), "given back without user action");
}

#[tokio::test]
async fn a_load_whose_version_could_not_be_read_never_writes_over_another_process() {
    // Process B's miss found the store failing (no lock, no version) and loads "old".
    // Meanwhile the store comes back and process A writes "new". B's value answers B's
    // fetch but is not written: a plain write would land over A's newer one (found by the
    // chaos run through a tiered store, whose cache B is never invalidated directly).
    let store = TestStore::<String>::new();
    let a = cache(&store);
    let b = EchoCache::builder(store.clone())
        .no_circuit_breaker()
        .build()
        .unwrap();
    store.set_failing(true);
    let (started_tx, started) = tokio::sync::oneshot::channel();
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let load = tokio::spawn({
        let b = b.clone();
        async move {
            b.fetch("k", move || async move {
                let _ = started_tx.send(());
                let _ = released.await;
                Ok::<_, std::io::Error>("old".to_owned())
            })
            .await
        }
    });
    started.await.unwrap();
    store.set_failing(false);
    a.insert("k", "new".to_owned()).await.unwrap();
    release.send(()).unwrap();
    assert_eq!(
        load.await.unwrap().unwrap(),
        "old",
        "B's fetch gets its load"
    );
    assert_eq!(store.peek("k").unwrap().value, "new", "A's write stands");
    assert_eq!(b.get("k").await.unwrap().as_deref(), Some("new"));
}
