//! Graceful shutdown of `LazyEchoCache`, and no task left behind when it is dropped.

mod common;

use std::time::{Duration, SystemTime};

use common::{Calls, Gate, Upstream, until};
use echocache_core::test_util::TestStore;
use echocache_core::{Entry, LazyEchoCache, ManualClock};

const MIN: Duration = Duration::from_secs(60);

fn setup() -> (
    ManualClock,
    TestStore<String>,
    LazyEchoCache<String, TestStore<String>>,
) {
    let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    let store = TestStore::new();
    let cache = LazyEchoCache::builder(store.clone())
        .refresh_after(MIN)
        .clock(clock.clone())
        .build()
        .unwrap();
    (clock, store, cache)
}

#[tokio::test(start_paused = true)]
async fn shutdown_waits_for_running_refreshes_and_is_idempotent() {
    let (clock, store, cache) = setup();
    store.put("k", Entry::new("old".into(), clock.now() - MIN));
    let (calls, gate) = (Calls::default(), Gate::closed());
    let loader = {
        let (calls, gate) = (calls.clone(), gate.clone());
        move || async move {
            calls.hit();
            gate.pass().await;
            Ok::<_, Upstream>("new".to_string())
        }
    };
    assert_eq!(cache.fetch("k", loader).await.unwrap(), "old");
    until("the refresh runs", || calls.get() == 1).await;
    let first = tokio::spawn({
        let cache = cache.clone();
        async move { cache.shutdown().await }
    });
    let second = tokio::spawn({
        let cache = cache.clone();
        async move { cache.shutdown().await }
    });
    // Paused time: the clock moves only once every task waits, so a shutdown that did not
    // wait for the refresh has returned by the time this sleep ends (1 s, well within the
    // shutdown's own bound of the load timeout and more).
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !first.is_finished() && !second.is_finished(),
        "shutdown waits for the running refresh"
    );
    gate.open();
    first.await.unwrap();
    second.await.unwrap();
    assert_eq!(
        store.peek("k").unwrap().value,
        "new",
        "the running refresh completed"
    );
    assert!(!store.is_locked("k"));
    cache.shutdown().await; // a third time, after the fact
    assert!(cache.is_shut_down());
}

#[tokio::test]
async fn after_shutdown_fetch_serves_stale_values_and_loads_misses() {
    let (clock, store, cache) = setup();
    cache.shutdown().await;
    store.put("stale", Entry::new("old".into(), clock.now() - MIN));
    let calls = Calls::default();
    let counting = |calls: &Calls, v: &'static str| {
        let calls = calls.clone();
        move || async move {
            calls.hit();
            Ok::<_, Upstream>(v.to_string())
        }
    };
    assert_eq!(
        cache.fetch("stale", counting(&calls, "new")).await.unwrap(),
        "old"
    );
    assert_eq!(
        cache.refreshes_pending(),
        0,
        "no refresh is scheduled after shutdown"
    );
    assert_eq!(calls.get(), 0);
    assert_eq!(
        cache
            .fetch("missing", counting(&calls, "loaded"))
            .await
            .unwrap(),
        "loaded"
    );
    assert_eq!(calls.get(), 1, "misses still load in the foreground");
}

#[tokio::test]
async fn shutdown_drops_queued_refreshes_and_leaves_nothing_pending() {
    let (clock, store, _) = setup();
    let cache = LazyEchoCache::builder(store.clone())
        .refresh_after(MIN)
        .clock(clock.clone())
        .workers(1)
        .build()
        .unwrap();
    for key in ["a", "b", "c"] {
        store.put(key, Entry::new("old".into(), clock.now() - MIN));
    }
    let (calls, gate) = (Calls::default(), Gate::closed());
    for key in ["a", "b", "c"] {
        let (calls, gate) = (calls.clone(), gate.clone());
        cache
            .fetch(key, move || async move {
                calls.hit();
                gate.pass().await;
                Ok::<_, Upstream>("new".to_string())
            })
            .await
            .unwrap();
    }
    until("one refresh runs, two wait", || calls.get() == 1).await;
    let shutdown = tokio::spawn({
        let cache = cache.clone();
        async move { cache.shutdown().await }
    });
    until("shutdown has begun", || cache.is_shut_down()).await;
    gate.open();
    shutdown.await.unwrap();
    assert_eq!(calls.get(), 1, "queued refreshes were dropped, not run");
    assert_eq!(cache.refreshes_pending(), 0);
    assert_eq!(cache.loads_in_flight(), 0);
}

#[test]
fn dropping_the_cache_without_shutdown_leaves_no_task() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let metrics = tokio::runtime::Handle::current().metrics();
        let before = metrics.num_alive_tasks();
        let (clock, store, cache) = setup();
        store.put("k", Entry::new("old".into(), clock.now() - MIN));
        cache
            .fetch("k", || async { Ok::<_, Upstream>("new".to_string()) })
            .await
            .unwrap();
        assert!(metrics.num_alive_tasks() > before, "the dispatcher runs");
        drop(cache);
        until("every task of the cache ended", || {
            metrics.num_alive_tasks() == before
        })
        .await;
    });
}
