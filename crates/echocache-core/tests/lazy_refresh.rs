//! Stale-while-revalidate: fresh hits, stale hits with one refresh per key, the store's
//! lock, failures, the bounded queue, expiry and stale-if-error. Ages come from a
//! `ManualClock`; "still running" is forced with gates.

mod common;

use std::time::{Duration, SystemTime};

use common::{Calls, Gate, Upstream, until};
use echocache_core::test_util::TestStore;
use echocache_core::{BuildError, Entry, Error, LazyEchoCache, LazyEchoCacheBuilder, ManualClock};

const MIN: Duration = Duration::from_secs(60);

struct Fixture {
    clock: ManualClock,
    store: TestStore<String>,
}

impl Fixture {
    fn new() -> Self {
        Self {
            clock: ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
            store: TestStore::new(),
        }
    }

    fn builder(&self) -> LazyEchoCacheBuilder<String, TestStore<String>> {
        LazyEchoCache::builder(self.store.clone())
            .refresh_after(MIN)
            .clock(self.clock.clone())
    }

    /// Stores `value` written `age` ago.
    fn put_aged(&self, key: &str, value: &str, age: Duration) {
        self.store
            .put(key, Entry::new(value.to_string(), self.clock.now() - age));
    }
}

fn gated(
    calls: &Calls,
    gate: &Gate,
    value: &'static str,
) -> impl FnOnce() -> std::pin::Pin<Box<dyn Future<Output = Result<String, Upstream>> + Send>>
+ Send
+ 'static {
    let (calls, gate) = (calls.clone(), gate.clone());
    move || {
        Box::pin(async move {
            calls.hit();
            gate.pass().await;
            Ok(value.to_string())
        })
    }
}

fn ok(
    value: &'static str,
) -> impl FnOnce() -> std::future::Ready<Result<String, Upstream>> + Send + 'static {
    move || std::future::ready(Ok(value.to_string()))
}

fn failing(
    calls: &Calls,
) -> impl FnOnce() -> std::future::Ready<Result<String, Upstream>> + Send + 'static {
    let calls = calls.clone();
    move || {
        calls.hit();
        std::future::ready(Err(Upstream("refresh failed")))
    }
}

#[tokio::test]
async fn a_fresh_hit_does_not_load() {
    let fx = Fixture::new();
    fx.put_aged("k", "v", Duration::from_secs(59));
    let cache = fx.builder().build().unwrap();
    let calls = Calls::default();
    let v = cache.fetch("k", failing(&calls)).await.unwrap();
    assert_eq!(v, "v");
    assert_eq!(calls.get(), 0);
    assert_eq!(cache.stats().hits, 1);
    assert_eq!(cache.refreshes_pending(), 0);
}

#[tokio::test]
async fn stale_hits_return_at_once_and_schedule_one_refresh_per_key() {
    let fx = Fixture::new();
    fx.put_aged("k", "old", MIN);
    let cache = fx.builder().build().unwrap();
    let (calls, gate) = (Calls::default(), Gate::closed());
    for _ in 0..50 {
        assert_eq!(
            cache.fetch("k", gated(&calls, &gate, "new")).await.unwrap(),
            "old"
        );
    }
    assert_eq!(cache.stats().stale_hits, 50);
    assert_eq!(
        cache.refreshes_pending(),
        1,
        "one pending refresh, not fifty"
    );
    until("the refresh runs", || calls.get() == 1).await;
    assert!(
        fx.store.is_locked("k"),
        "the refresh holds the store's lock"
    );
    gate.open();
    until("the refresh is done", || cache.refreshes_pending() == 0).await;
    assert_eq!(calls.get(), 1);
    assert!(!fx.store.is_locked("k"), "the lock is released");
    let stats = cache.stats();
    assert_eq!(
        (stats.refreshes, stats.loads, stats.refresh_errors),
        (1, 1, 0)
    );
    assert_eq!(cache.fetch("k", ok("unused")).await.unwrap(), "new");
    assert_eq!(cache.stats().hits, 1, "the refreshed value is fresh");
}

#[tokio::test]
async fn a_refresh_is_skipped_while_another_process_holds_the_lock() {
    let fx = Fixture::new();
    fx.put_aged("k", "old", MIN);
    let other = fx.store.hold_lock("k");
    let cache = fx.builder().build().unwrap();
    let calls = Calls::default();
    assert_eq!(cache.fetch("k", failing(&calls)).await.unwrap(), "old");
    until("the refresh gave up", || cache.refreshes_pending() == 0).await;
    assert_eq!(calls.get(), 0, "the loader never ran");
    assert_eq!(cache.stats().refreshes_locked_out, 1);
    assert!(
        fx.store.is_locked("k"),
        "the other owner's lock is untouched"
    );
    let _ = other;
}

#[tokio::test]
async fn a_failed_refresh_keeps_the_old_value_and_retries_at_a_later_stale_hit() {
    let fx = Fixture::new();
    fx.put_aged("k", "old", MIN);
    let cache = fx.builder().build().unwrap();
    let calls = Calls::default();
    assert_eq!(cache.fetch("k", failing(&calls)).await.unwrap(), "old");
    until("the refresh failed", || cache.refreshes_pending() == 0).await;
    assert_eq!(cache.stats().refresh_errors, 1);
    assert!(
        !fx.store.is_locked("k"),
        "the lock is released after an error"
    );
    // No retry loop: nothing runs until the next stale hit.
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert_eq!(calls.get(), 1);
    assert_eq!(cache.fetch("k", failing(&calls)).await.unwrap(), "old");
    until("the second refresh failed", || {
        cache.refreshes_pending() == 0
    })
    .await;
    assert_eq!(calls.get(), 2);
    assert_eq!(fx.store.peek("k").unwrap().value, "old");
}

#[tokio::test]
async fn a_panicking_refresh_is_contained_and_releases_the_lock() {
    let fx = Fixture::new();
    fx.put_aged("k", "old", MIN);
    let cache = fx.builder().build().unwrap();
    let v = cache
        .fetch("k", || async {
            if true {
                panic!("refresh panicked");
            }
            Ok::<String, Upstream>(String::new())
        })
        .await;
    assert_eq!(v.unwrap(), "old");
    until("the refresh ended", || cache.refreshes_pending() == 0).await;
    let stats = cache.stats();
    assert_eq!((stats.loader_panics, stats.refresh_errors), (1, 1));
    assert!(!fx.store.is_locked("k"));
    assert_eq!(
        cache.fetch("k", ok("x")).await.unwrap(),
        "old",
        "the cache still serves"
    );
}

#[tokio::test(start_paused = true)]
async fn a_timed_out_refresh_releases_the_lock() {
    let fx = Fixture::new();
    fx.put_aged("k", "old", MIN);
    let cache = fx
        .builder()
        .load_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let v = cache
        .fetch("k", || async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok::<_, Upstream>("late".to_string())
        })
        .await;
    assert_eq!(v.unwrap(), "old");
    until("the refresh started", || cache.loads_in_flight() == 1).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    until("the refresh ended", || cache.refreshes_pending() == 0).await;
    assert_eq!(cache.stats().load_timeouts, 1);
    assert!(!fx.store.is_locked("k"));
}

#[tokio::test]
async fn a_full_queue_drops_the_request_without_blocking() {
    let fx = Fixture::new();
    for key in ["a", "b", "c"] {
        fx.put_aged(key, "old", MIN);
    }
    let cache = fx.builder().workers(1).queue_capacity(1).build().unwrap();
    let (calls, gate) = (Calls::default(), Gate::closed());
    cache.fetch("a", gated(&calls, &gate, "new")).await.unwrap();
    until("a's refresh occupies the only worker", || calls.get() == 1).await;
    cache.fetch("b", gated(&calls, &gate, "new")).await.unwrap(); // queued
    assert_eq!(
        cache.fetch("c", gated(&calls, &gate, "new")).await.unwrap(),
        "old"
    ); // dropped
    assert_eq!(cache.stats().refreshes_dropped, 1);
    assert_eq!(
        cache.refreshes_pending(),
        2,
        "the dropped key is not left pending"
    );
    gate.open();
    until("a and b refreshed", || cache.refreshes_pending() == 0).await;
    assert_eq!(calls.get(), 2);
    assert_eq!(fx.store.peek("c").unwrap().value, "old");
    // c is retried at its next stale hit.
    cache.fetch("c", ok("new")).await.unwrap();
    until("c refreshed", || cache.refreshes_pending() == 0).await;
    assert_eq!(fx.store.peek("c").unwrap().value, "new");
}

#[tokio::test]
async fn a_slow_refresh_does_not_stall_other_keys() {
    let fx = Fixture::new();
    fx.put_aged("slow", "old", MIN);
    fx.put_aged("fast", "old", MIN);
    let cache = fx.builder().workers(2).build().unwrap();
    let (calls, never) = (Calls::default(), Gate::closed());
    cache
        .fetch("slow", gated(&calls, &never, "new"))
        .await
        .unwrap();
    until("the slow refresh runs", || calls.get() == 1).await;
    cache.fetch("fast", ok("new")).await.unwrap();
    until("the fast key refreshed", || {
        fx.store.peek("fast").unwrap().value == "new"
    })
    .await;
    assert_eq!(fx.store.peek("slow").unwrap().value, "old");
    never.open();
}

#[tokio::test]
async fn missing_entries_load_in_the_foreground() {
    let fx = Fixture::new();
    let cache = fx.builder().build().unwrap();
    assert_eq!(cache.fetch("k", ok("v")).await.unwrap(), "v");
    assert_eq!(cache.stats().misses, 1);
    assert_eq!(fx.store.peek("k").unwrap().written_at, fx.clock.now());
}

#[tokio::test]
async fn expired_entries_load_and_a_foreground_load_joins_a_running_refresh() {
    let fx = Fixture::new();
    fx.put_aged("k", "old", MIN);
    let cache = fx.builder().expire_after(2 * MIN).build().unwrap();
    let (calls, gate) = (Calls::default(), Gate::closed());
    assert_eq!(
        cache.fetch("k", gated(&calls, &gate, "new")).await.unwrap(),
        "old"
    );
    until("the refresh runs", || calls.get() == 1).await;
    fx.clock.advance(2 * MIN); // now expired
    let foreground = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.fetch("k", ok("second load")).await })
    };
    until("the foreground fetch joined the refresh", || {
        cache.stats().coalesced == 1
    })
    .await;
    gate.open();
    assert_eq!(foreground.await.unwrap().unwrap(), "new");
    assert_eq!(calls.get(), 1, "never two loads of one key in one process");
    assert_eq!(cache.stats().loads, 1);
}

#[tokio::test]
async fn stale_if_error_serves_the_old_value_within_its_window_only() {
    let fx = Fixture::new();
    let cache = fx
        .builder()
        .expire_after(2 * MIN)
        .stale_if_error(MIN)
        .build()
        .unwrap();
    let calls = Calls::default();
    fx.put_aged("k", "old", 2 * MIN + Duration::from_secs(30));
    assert_eq!(cache.fetch("k", failing(&calls)).await.unwrap(), "old");
    assert_eq!(cache.stats().stale_if_error_served, 1);
    fx.put_aged("k", "old", 3 * MIN);
    let err = cache.fetch("k", failing(&calls)).await.unwrap_err();
    assert!(
        matches!(err, Error::Load(ref e) if **e == Upstream("refresh failed")),
        "{err:?}"
    );
    assert_eq!(calls.get(), 2);
}

#[tokio::test]
async fn without_stale_if_error_an_expired_entry_is_never_served() {
    let fx = Fixture::new();
    fx.put_aged("k", "old", 2 * MIN);
    let cache = fx.builder().expire_after(2 * MIN).build().unwrap();
    assert!(cache.fetch("k", failing(&Calls::default())).await.is_err());
    assert_eq!(
        cache.get("k").await.unwrap(),
        None,
        "get does not serve it either"
    );
}

#[tokio::test]
async fn a_per_call_refresh_after_overrides_the_default() {
    let fx = Fixture::new();
    fx.put_aged("k", "old", Duration::from_secs(10));
    let cache = fx.builder().build().unwrap();
    let v = cache
        .fetch_with_refresh_after("k", Duration::from_secs(5), ok("new"))
        .await
        .unwrap();
    assert_eq!(v, "old");
    assert_eq!(cache.stats().stale_hits, 1);
    until("refreshed", || cache.refreshes_pending() == 0).await;
    assert_eq!(fx.store.peek("k").unwrap().value, "new");
}

#[tokio::test]
async fn build_rejects_settings_that_cannot_work() {
    let fx = Fixture::new();
    let setting = |b: LazyEchoCacheBuilder<String, TestStore<String>>| match b.build() {
        Err(BuildError::InvalidSetting { setting, .. }) => setting,
        other => panic!("expected an invalid setting, got {other:?}"),
    };
    assert_eq!(setting(fx.builder().queue_capacity(0)), "queue_capacity");
    assert_eq!(setting(fx.builder().workers(0)), "workers");
    assert_eq!(
        setting(fx.builder().load_timeout(Duration::ZERO)),
        "load_timeout"
    );
    assert_eq!(setting(fx.builder().expire_after(MIN)), "refresh_after");
    assert_eq!(
        setting(fx.builder().expire_after(Duration::ZERO)),
        "expire_after"
    );
    assert_eq!(setting(fx.builder().stale_if_error(MIN)), "stale_if_error");
    assert_eq!(
        setting(
            fx.builder()
                .expire_after(2 * MIN)
                .stale_if_error(Duration::ZERO)
        ),
        "stale_if_error"
    );
}

#[test]
fn build_outside_a_runtime_is_a_clear_error() {
    let err = LazyEchoCache::builder(TestStore::<String>::new())
        .build()
        .unwrap_err();
    assert_eq!(err, BuildError::NoRuntime);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_stale_hits_make_one_refresh() {
    let fx = Fixture::new();
    fx.put_aged("k", "old", MIN);
    let cache = fx.builder().build().unwrap();
    let (calls, gate) = (Calls::default(), Gate::closed());
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let (cache, loader) = (cache.clone(), gated(&calls, &gate, "new"));
            tokio::spawn(async move { cache.fetch("k", loader).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(
            task.await.unwrap().unwrap(),
            "old",
            "never waits for the refresh"
        );
    }
    assert_eq!(cache.stats().stale_hits, 1000);
    assert_eq!(cache.refreshes_pending(), 1);
    gate.open();
    until("refreshed", || cache.refreshes_pending() == 0).await;
    assert_eq!(calls.get(), 1);
    assert_eq!(fx.store.peek("k").unwrap().value, "new");
}

#[tokio::test]
async fn an_invalidate_during_a_refresh_wins() {
    let fx = Fixture::new();
    fx.put_aged("k", "old", MIN);
    let cache = fx.builder().build().unwrap();
    let (calls, gate) = (Calls::default(), Gate::closed());
    assert_eq!(
        cache
            .fetch("k", gated(&calls, &gate, "from before"))
            .await
            .unwrap(),
        "old"
    );
    until("the refresh runs", || calls.get() == 1).await;
    cache.invalidate("k").await.unwrap();
    gate.open();
    until("the refresh ended", || cache.refreshes_pending() == 0).await;
    assert!(
        fx.store.peek("k").is_none(),
        "the refresh did not write back over the invalidation"
    );
    assert!(!fx.store.is_locked("k"));
}
