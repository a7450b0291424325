//! A stalled, failing or slow store costs a request almost nothing: every store call is
//! bounded by the cache's store timeout, and the circuit breaker skips a store that keeps
//! failing until a probe finds it answering. Times are tokio's paused clock: exact, and
//! nothing sleeps for real.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use common::Upstream;
use echocache_core::test_util::TestStore;
use echocache_core::{
    CLOCK_SKEW_ALLOWANCE, DEFAULT_BREAKER_COOL_DOWN, DEFAULT_STORE_TIMEOUT, EchoCache, Entry,
    LazyEchoCache, ManualClock,
};
use tokio::time::Instant;

fn value(v: &str) -> impl Future<Output = Result<String, Upstream>> + Send + 'static {
    std::future::ready(Ok(v.to_owned()))
}

#[tokio::test(start_paused = true)]
async fn a_stalled_store_costs_two_store_timeouts_then_nothing() {
    let store = TestStore::<String>::new();
    store.set_stalled(true);
    let cache = EchoCache::new(store.clone());

    let started = Instant::now();
    let v = cache.fetch("k0", || value("v0")).await.unwrap();
    assert_eq!(v, "v0");
    assert_eq!(
        started.elapsed(),
        2 * DEFAULT_STORE_TIMEOUT,
        "the get and the lock each give up after the store timeout"
    );
    assert!(cache.is_circuit_open(), "two timeouts open the breaker");

    let started = Instant::now();
    for i in 1..=20 {
        let key = format!("k{i}");
        assert_eq!(cache.fetch(&key, || value("v")).await.unwrap(), "v");
    }
    assert_eq!(
        started.elapsed(),
        Duration::ZERO,
        "while the breaker is open a fetch costs the loader and nothing more"
    );
    let stats = cache.stats();
    assert_eq!(stats.store_timeouts, 2);
    assert_eq!(stats.store_errors, 2, "timeouts are store errors too");
    assert_eq!(stats.circuit_opens, 1);
    assert_eq!(
        stats.store_calls_skipped, 40,
        "the get and lock of twenty more (no write without a version)"
    );
    assert_eq!(stats.loads, 21);
    assert_eq!(
        store.gets.load(Ordering::SeqCst),
        1,
        "the store was skipped"
    );
}

#[tokio::test(start_paused = true)]
async fn the_store_is_used_again_on_its_own_once_it_answers() {
    let store = TestStore::<String>::new();
    store.set_stalled(true);
    let cache = EchoCache::new(store.clone());
    cache.fetch("a", || value("1")).await.unwrap();
    assert!(cache.is_circuit_open());

    store.set_stalled(false);
    // The lock call the first fetch gave up on gets its answer now: the lock it took is
    // given back (past the breaker), and that success closes the breaker at once.
    for _ in 0..1_000 {
        if !cache.is_circuit_open() {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(
        !cache.is_circuit_open(),
        "the late unlock closed the breaker"
    );
    assert!(!store.is_locked("a"), "and the late lock was given back");
    cache.fetch("b", || value("2")).await.unwrap();
    assert!(store.gets.load(Ordering::SeqCst) > 1, "b used the store");

    tokio::time::advance(DEFAULT_BREAKER_COOL_DOWN).await;
    // The probe (this fetch's get) finds the store answering and closes the breaker;
    // the load's value is then stored.
    assert_eq!(cache.fetch("c", || value("3")).await.unwrap(), "3");
    assert!(!cache.is_circuit_open());
    assert_eq!(store.peek("c").unwrap().value, "3");
    let loads = cache.stats().loads;
    assert_eq!(
        cache.fetch("c", || value("never")).await.unwrap(),
        "3",
        "a hit from the store again"
    );
    assert_eq!(cache.stats().loads, loads);
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_opens_the_breaker_for_another_cool_down() {
    let store = TestStore::<String>::new();
    store.set_failing(true);
    let cache = EchoCache::new(store.clone());
    cache.fetch("a", || value("1")).await.unwrap();
    assert_eq!(cache.stats().circuit_opens, 1);

    tokio::time::advance(DEFAULT_BREAKER_COOL_DOWN).await;
    cache.fetch("b", || value("2")).await.unwrap();
    assert_eq!(
        store.gets.load(Ordering::SeqCst),
        2,
        "one probe went through"
    );
    assert!(cache.is_circuit_open(), "the probe failed: open again");
    assert_eq!(
        store.sets.load(Ordering::SeqCst),
        0,
        "no write: the first fetch's get and lock opened the breaker, then the probe failed"
    );

    tokio::time::advance(DEFAULT_BREAKER_COOL_DOWN / 2).await;
    cache.fetch("c", || value("3")).await.unwrap();
    assert_eq!(
        store.gets.load(Ordering::SeqCst),
        2,
        "a new cool-down began"
    );
    assert_eq!(
        cache.stats().circuit_opens,
        1,
        "re-opening is not a new opening"
    );
}

#[tokio::test(start_paused = true)]
async fn only_one_probe_at_a_time() {
    let store = TestStore::<String>::new();
    store.set_stalled(true);
    let cache = EchoCache::new(store.clone());
    cache.fetch("a", || value("1")).await.unwrap();
    tokio::time::advance(DEFAULT_BREAKER_COOL_DOWN).await;
    let gets = store.gets.load(Ordering::SeqCst);

    // The first fetch probes (and hangs on the stalled store until its timeout); the
    // others, started meanwhile, skip the store.
    let fetches: Vec<_> = (0..10)
        .map(|i| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.fetch(&format!("p{i}"), || value("v")).await })
        })
        .collect();
    let started = Instant::now();
    for fetch in fetches {
        assert_eq!(fetch.await.unwrap().unwrap(), "v");
    }
    assert_eq!(store.gets.load(Ordering::SeqCst), gets + 1, "one probe");
    assert_eq!(
        started.elapsed(),
        DEFAULT_STORE_TIMEOUT,
        "the probe's timeout"
    );
    assert!(cache.is_circuit_open());
}

#[tokio::test(start_paused = true)]
async fn direct_calls_time_out_then_fail_at_once_while_open() {
    let store = TestStore::<String>::new();
    store.set_stalled(true);
    let cache = EchoCache::builder(store)
        .store_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let started = Instant::now();
    let err = cache.get("k").await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert_eq!(err.to_string(), "store call timed out");
    let err = cache.insert("k", "v".into()).await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert_eq!(started.elapsed(), Duration::from_millis(200));

    let started = Instant::now();
    let err = cache.invalidate("k").await.unwrap_err();
    assert!(err.is_circuit_open(), "{err:?}");
    assert!(cache.get("k").await.unwrap_err().is_circuit_open());
    assert_eq!(
        started.elapsed(),
        Duration::ZERO,
        "skipped calls cost nothing"
    );
}

#[tokio::test(start_paused = true)]
async fn without_a_breaker_every_call_is_still_bounded() {
    let store = TestStore::<String>::new();
    store.set_stalled(true);
    let cache = EchoCache::builder(store)
        .store_timeout(Duration::from_millis(50))
        .no_circuit_breaker()
        .build()
        .unwrap();
    let started = Instant::now();
    for i in 0..5 {
        cache.fetch(&format!("k{i}"), || value("v")).await.unwrap();
    }
    assert_eq!(
        started.elapsed(),
        Duration::from_millis(500),
        "get and lock: 50 ms each (no write: the key's version could not be read)"
    );
    assert_eq!(cache.stats().store_timeouts, 10);
    assert_eq!(cache.stats().store_calls_skipped, 0);
}

#[tokio::test]
async fn invalid_guard_settings_are_refused() {
    let err = EchoCache::builder(TestStore::<String>::new())
        .store_timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid setting `store_timeout`: must be greater than zero"
    );
    let err = LazyEchoCache::builder(TestStore::<String>::new())
        .circuit_breaker(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid setting `circuit_breaker`: must be greater than zero"
    );
    let err = EchoCache::builder(TestStore::<String>::new())
        .circuit_breaker_threshold(0)
        .build()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid setting `circuit_breaker_threshold`: must be at least 1"
    );
}

/// Read-your-writes: `fetch` returns after the store write, so the value is in the store
/// (for this cache's `get` and for every other process) even when the store is slow.
#[tokio::test(start_paused = true)]
async fn a_get_after_fetch_sees_the_loaded_value() {
    let store = TestStore::<String>::new();
    store.set_latency(Duration::from_millis(5));
    let cache = EchoCache::new(store.clone());
    for i in 0..200 {
        let key = format!("k{i}");
        let v = cache.fetch(&key, || value("v")).await.unwrap();
        assert_eq!(store.peek(&key).map(|e| e.value), Some(v.clone()), "{key}");
        assert_eq!(cache.get(&key).await.unwrap(), Some(v), "{key}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_lazy_get_after_fetch_sees_the_loaded_value_from_every_waiter() {
    let store = TestStore::<String>::new();
    store.set_latency(Duration::from_millis(5));
    let cache = LazyEchoCache::builder(store.clone()).build().unwrap();
    let waiters: Vec<_> = (0..5)
        .map(|_| {
            let (cache, store) = (cache.clone(), store.clone());
            tokio::spawn(async move {
                let v = cache.fetch("k", || value("v")).await.unwrap();
                (v, store.peek("k").map(|e| e.value))
            })
        })
        .collect();
    for waiter in waiters {
        let (v, stored) = waiter.await.unwrap();
        assert_eq!(stored, Some(v));
    }
    cache.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_refresh_on_a_stalled_store_is_bounded_and_so_is_shutdown() {
    let store = TestStore::<String>::new();
    let clock = ManualClock::new(SystemTime::now());
    store.put("k", Entry::new("old".into(), clock.now()));
    let cache = LazyEchoCache::builder(store.clone())
        .refresh_after(Duration::from_secs(1))
        .clock(clock.clone())
        .no_circuit_breaker()
        .build()
        .unwrap();
    clock.advance(Duration::from_secs(2));
    assert_eq!(cache.fetch("k", || value("new")).await.unwrap(), "old");
    store.set_stalled(true);
    // The refresh starts; its lock call hangs on the stalled store (paused time moves
    // only once every task waits).
    tokio::time::sleep(Duration::from_millis(1)).await;
    let started = Instant::now();
    cache.shutdown().await;
    assert!(
        started.elapsed() < DEFAULT_STORE_TIMEOUT,
        "shutdown waited {:?}",
        started.elapsed()
    );
    assert_eq!(cache.refreshes_pending(), 0);
    assert_eq!(cache.stats().refresh_errors, 1);
    assert_eq!(cache.stats().store_timeouts, 1);
}

/// A loader that blocks its thread cannot be stopped: `shutdown` waits at most
/// `load_timeout` + 4 store timeouts + 1 s, then returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_returns_though_a_loader_blocks_its_thread() {
    let store = TestStore::<String>::new();
    let clock = ManualClock::new(SystemTime::now());
    store.put("k", Entry::new("old".into(), clock.now()));
    let cache = LazyEchoCache::builder(store)
        .refresh_after(Duration::from_secs(1))
        .load_timeout(Duration::from_millis(100))
        .store_timeout(Duration::from_millis(100))
        .clock(clock.clone())
        .build()
        .unwrap();
    clock.advance(Duration::from_secs(2));
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    cache
        .fetch("k", move || async move {
            started_tx.send(()).unwrap();
            std::thread::sleep(Duration::from_secs(3));
            Ok::<_, Upstream>("new".to_owned())
        })
        .await
        .unwrap();
    tokio::task::spawn_blocking(move || started_rx.recv().unwrap())
        .await
        .unwrap();
    let bound = Duration::from_millis(100 + 4 * 100 + 1000);
    let started = std::time::Instant::now();
    cache.shutdown().await;
    let waited = started.elapsed();
    assert!(
        waited >= bound && waited < Duration::from_millis(2900),
        "shutdown waited {waited:?}, bound {bound:?}, the loader blocks 3 s"
    );
}

/// A value that comes after `load_timeout` (the loader blocked its thread, so tokio's
/// timer could not stop it) is refused as a timeout and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_after_the_load_timeout_is_a_timeout() {
    let cache = EchoCache::builder(TestStore::<String>::new())
        .load_timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    let err = cache
        .fetch("k", || async {
            std::thread::sleep(Duration::from_millis(300));
            Ok::<_, Upstream>("late".to_owned())
        })
        .await
        .unwrap_err();
    assert!(matches!(err, echocache_core::Error::Timeout), "{err:?}");
    assert_eq!(cache.stats().load_timeouts, 1);
    assert!(
        cache.store().peek("k").is_none(),
        "the late value is not stored"
    );
}

/// Two "processes" (caches over one store with expiring locks): A's refresh has a loader
/// that blocks its thread far past the lock's TTL; A keeps its lock alive meanwhile, so
/// B's refresh of the same key is locked out instead of running at the same time.
#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn a_refresh_keeps_its_lock_while_its_loader_blocks() {
    let store = TestStore::<String>::new();
    let clock = ManualClock::new(SystemTime::now());
    store.put("k", Entry::new("old".into(), clock.now()));
    // load_timeout 200 ms: lock TTL 300 ms, extended every 100 ms.
    let build = || {
        LazyEchoCache::builder(store.clone())
            .refresh_after(Duration::from_secs(1))
            .load_timeout(Duration::from_millis(200))
            .clock(clock.clone())
            .build()
            .unwrap()
    };
    let (a, b) = (build(), build());
    clock.advance(Duration::from_secs(2));
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    a.fetch("k", move || async move {
        started_tx.send(()).unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        Ok::<_, Upstream>("from a".to_owned())
    })
    .await
    .unwrap();
    tokio::task::spawn_blocking(move || started_rx.recv().unwrap())
        .await
        .unwrap();
    // Three lock TTLs later A's loader still blocks.
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(store.is_locked("k"), "A's lock lapsed");
    b.fetch("k", || value("from b")).await.unwrap();
    common::until("B's refresh ended", || b.refreshes_pending() == 0).await;
    assert_eq!(
        b.stats().refreshes_locked_out,
        1,
        "B must not refresh meanwhile"
    );
    assert_eq!(b.stats().loads, 0);
    assert!(store.extends.load(Ordering::SeqCst) >= 3);
    a.shutdown().await;
    assert_eq!(a.stats().refresh_locks_lost, 0);
}

/// Built in one runtime, used from another after the first shut down: refreshes go on
/// (the dispatcher is started again, and counted).
#[test]
fn refreshes_survive_the_runtime_the_cache_was_built_in() {
    let store = TestStore::<String>::new();
    let clock = ManualClock::new(SystemTime::now());
    let first = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cache = first.block_on(async {
        LazyEchoCache::builder(store.clone())
            .refresh_after(Duration::from_secs(1))
            .clock(clock.clone())
            .build()
            .unwrap()
    });
    first.block_on(async { cache.fetch("k", || value("v1")).await.unwrap() });
    drop(first);

    let second = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    second.block_on(async {
        clock.advance(Duration::from_secs(2));
        assert_eq!(cache.fetch("k", || value("v2")).await.unwrap(), "v1");
        common::until("the refresh ran", || cache.refreshes_pending() == 0).await;
        assert_eq!(cache.get("k").await.unwrap().as_deref(), Some("v2"));
        let stats = cache.stats();
        assert_eq!(stats.refreshes, 1);
        assert_eq!(stats.refresh_dispatcher_restarts, 1);
        cache.shutdown().await;
    });
}

#[tokio::test]
async fn an_entry_from_the_far_future_is_expired_not_fresh_for_ever() {
    let store = TestStore::<String>::new();
    let clock = ManualClock::new(SystemTime::now());
    let year_2554 = SystemTime::UNIX_EPOCH + Duration::from_secs(18_446_744_073);
    store.put("far", Entry::new("from 2554".into(), year_2554));
    store.put(
        "near",
        Entry::new("skewed".into(), clock.now() + CLOCK_SKEW_ALLOWANCE / 2),
    );
    let cache = LazyEchoCache::builder(store)
        .refresh_after(Duration::from_secs(60))
        .clock(clock.clone())
        .build()
        .unwrap();
    assert_eq!(cache.get("far").await.unwrap(), None);
    assert_eq!(cache.fetch("far", || value("now")).await.unwrap(), "now");
    assert_eq!(
        cache.fetch("near", || value("unused")).await.unwrap(),
        "skewed",
        "within the allowance: a fresh hit"
    );
    let stats = cache.stats();
    assert_eq!(stats.future_dated_entries, 2, "the get and the fetch");
    assert_eq!(stats.loads, 1);
    assert_eq!(cache.get("far").await.unwrap().as_deref(), Some("now"));
    cache.shutdown().await;
}
