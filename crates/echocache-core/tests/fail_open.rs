//! A store outage or corrupt bytes never become an application outage: `fetch` fails open
//! and counts; the direct store calls return the store's error.

mod common;

use std::time::{Duration, SystemTime};

use common::Upstream;
use echocache_core::test_util::TestStore;
use echocache_core::{EchoCache, Entry, LazyEchoCache};

#[tokio::test]
async fn fetch_serves_loaded_values_while_the_store_fails() {
    let store = TestStore::<String>::new();
    store.set_failing(true);
    let cache = EchoCache::builder(store)
        .no_circuit_breaker()
        .build()
        .unwrap();
    for _ in 0..3 {
        let v = cache
            .fetch("k", || async { Ok::<_, Upstream>("v".to_string()) })
            .await;
        assert_eq!(v.unwrap(), "v");
    }
    let stats = cache.stats();
    assert_eq!(
        stats.loads, 3,
        "nothing could be stored, so every fetch loads"
    );
    assert_eq!(
        stats.store_errors, 6,
        "a failed get and lock (the fleet-wide single-flight) per fetch; no write: the \
         key's version could not be read, and a plain write could land over another \
         process's newer write"
    );
    assert_eq!(stats.decode_errors, 0);
}

#[tokio::test]
async fn the_circuit_breaker_skips_a_failing_store_after_two_failures() {
    let store = TestStore::<String>::new();
    store.set_failing(true);
    let cache = EchoCache::new(store);
    for _ in 0..3 {
        let v = cache
            .fetch("k", || async { Ok::<_, Upstream>("v".to_string()) })
            .await;
        assert_eq!(v.unwrap(), "v");
    }
    let stats = cache.stats();
    assert_eq!(stats.loads, 3);
    assert_eq!(
        stats.store_errors, 2,
        "the first fetch's get and lock (the fleet-wide single-flight) failed"
    );
    assert_eq!(stats.circuit_opens, 1);
    assert_eq!(
        stats.store_calls_skipped, 4,
        "the get and lock of two more fetches (no write without a version)"
    );
    assert_eq!(
        cache.store().gets.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    assert!(cache.is_circuit_open());
}

#[tokio::test]
async fn undecodable_entries_are_counted_and_overwritten() {
    let store = TestStore::<String>::new();
    store.put("k", Entry::new("garbled".into(), SystemTime::now()));
    store.set_corrupt(true);
    let cache = EchoCache::new(store);
    let v = cache
        .fetch("k", || async { Ok::<_, Upstream>("fresh".to_string()) })
        .await;
    assert_eq!(v.unwrap(), "fresh");
    assert_eq!(
        cache.stats().decode_errors,
        2,
        "the fetch's read and the leader's read after taking the lock"
    );
    assert_eq!(cache.stats().store_errors, 0);
    assert_eq!(
        cache.store().peek("k").unwrap().value,
        "fresh",
        "the good value overwrote the bad one"
    );
}

#[tokio::test]
async fn direct_store_calls_return_the_store_error() {
    let store = TestStore::<String>::new();
    store.set_failing(true);
    let cache = EchoCache::builder(store)
        .no_circuit_breaker()
        .build()
        .unwrap();
    assert!(!cache.get("k").await.unwrap_err().is_decode());
    assert!(cache.insert("k", "v".into()).await.is_err());
    assert!(cache.invalidate("k").await.is_err());
}

#[tokio::test]
async fn lazy_fetch_fails_open_too() {
    let store = TestStore::<String>::new();
    store.set_failing(true);
    let cache = LazyEchoCache::builder(store)
        .refresh_after(Duration::from_secs(10))
        .build()
        .unwrap();
    let v = cache
        .fetch("k", || async { Ok::<_, Upstream>("v".to_string()) })
        .await;
    assert_eq!(v.unwrap(), "v");
    assert_eq!(cache.stats().store_errors, 2);
    cache.shutdown().await;
}
