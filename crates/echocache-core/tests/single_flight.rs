//! The single-flight of `EchoCache`: one load per key, shared outcome, cancellation- and
//! panic-safety, recursion detection. Interleavings are forced with gates, never sleeps.

mod common;

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use common::{Calls, Gate, Upstream, until};
use echocache_core::test_util::TestStore;
use echocache_core::{EchoCache, Error};

fn cache() -> EchoCache<String, TestStore<String>> {
    EchoCache::new(TestStore::new())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_share_one_load() {
    let cache = cache();
    let calls = Calls::default();
    let gate = Gate::closed();
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (cache, calls, gate) = (cache.clone(), calls.clone(), gate.clone());
            tokio::spawn(async move {
                cache
                    .fetch("k", move || async move {
                        calls.hit();
                        gate.pass().await;
                        Ok::<_, Upstream>("v".to_string())
                    })
                    .await
            })
        })
        .collect();
    until("all 100 callers joined the flight", || {
        cache.stats().coalesced == 99
    })
    .await;
    gate.open();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), "v");
    }
    assert_eq!(calls.get(), 1);
    let stats = cache.stats();
    assert_eq!((stats.loads, stats.misses, stats.coalesced), (1, 100, 99));
    assert_eq!(cache.store().peek("k").unwrap().value, "v");
    assert_eq!(cache.loads_in_flight(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_fetches_of_one_cold_key_load_once() {
    let cache = cache();
    let calls = Calls::default();
    let tasks: Vec<_> = (0..10_000)
        .map(|_| {
            let (cache, calls) = (cache.clone(), calls.clone());
            tokio::spawn(async move {
                cache
                    .fetch("cold", move || async move {
                        calls.hit();
                        tokio::task::yield_now().await;
                        Ok::<_, Upstream>("v".to_string())
                    })
                    .await
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), "v");
    }
    assert_eq!(calls.get(), 1, "exactly one loader call");
    assert_eq!(cache.loads_in_flight(), 0);
}

#[tokio::test]
async fn waiters_share_the_same_error_and_errors_are_not_cached() {
    let cache = cache();
    let gate = Gate::closed();
    let calls = Calls::default();
    let fetch = |cache: EchoCache<String, TestStore<String>>| {
        let (gate, calls) = (gate.clone(), calls.clone());
        tokio::spawn(async move {
            cache
                .fetch("k", move || async move {
                    calls.hit();
                    gate.pass().await;
                    Err::<String, _>(Upstream("db down"))
                })
                .await
        })
    };
    let (a, b) = (fetch(cache.clone()), fetch(cache.clone()));
    until("both callers are in the flight", || {
        cache.stats().coalesced == 1
    })
    .await;
    gate.open();
    let (a, b) = (a.await.unwrap().unwrap_err(), b.await.unwrap().unwrap_err());
    let (Error::Load(a), Error::Load(b)) = (a, b) else {
        panic!("expected load errors");
    };
    assert!(Arc::ptr_eq(&a, &b), "one attempt, one shared error");
    assert_eq!(*a, Upstream("db down"));
    assert!(cache.store().peek("k").is_none(), "errors are not stored");
    // The next fetch loads again.
    let v = cache
        .fetch("k", || async { Ok::<_, Upstream>("ok".to_string()) })
        .await;
    assert_eq!(v.unwrap(), "ok");
    assert_eq!(calls.get(), 1);
    assert_eq!(cache.stats().load_errors, 1);
    assert_eq!(cache.stats().loads, 2);
}

#[tokio::test]
async fn a_panicking_loader_fails_every_waiter_and_the_cache_lives_on() {
    let cache = cache();
    let gate = Gate::closed();
    let tasks: Vec<_> = (0..3)
        .map(|_| {
            let (cache, gate) = (cache.clone(), gate.clone());
            tokio::spawn(async move {
                cache
                    .fetch("k", move || async move {
                        gate.pass().await;
                        if true {
                            panic!("boom at the loader");
                        }
                        Ok::<String, Upstream>(String::new())
                    })
                    .await
            })
        })
        .collect();
    until("three callers in one flight", || {
        cache.stats().coalesced == 2
    })
    .await;
    gate.open();
    for task in tasks {
        match task.await.expect("the caller's task does not panic") {
            Err(Error::LoaderPanicked(msg)) => assert_eq!(msg, "boom at the loader"),
            other => panic!("expected LoaderPanicked, got {other:?}"),
        }
    }
    assert_eq!(cache.stats().loader_panics, 1);
    assert_eq!(cache.loads_in_flight(), 0);
    let v = cache
        .fetch("k", || async { Ok::<_, Upstream>("fine".to_string()) })
        .await;
    assert_eq!(v.unwrap(), "fine");
}

#[tokio::test]
async fn a_loader_that_panics_before_its_future_is_made_is_caught_too() {
    let cache = cache();
    let result = cache
        .fetch("k", || -> std::future::Ready<Result<String, Upstream>> {
            panic!("sync panic")
        })
        .await;
    assert!(
        matches!(result, Err(Error::LoaderPanicked(ref m)) if m == "sync panic"),
        "{result:?}"
    );
    assert_eq!(cache.loads_in_flight(), 0);
}

#[tokio::test]
async fn dropped_callers_do_not_cancel_the_load() {
    let cache = cache();
    let gate = Gate::closed();
    let calls = Calls::default();
    let caller = {
        let (cache, gate, calls) = (cache.clone(), gate.clone(), calls.clone());
        tokio::spawn(async move {
            cache
                .fetch("k", move || async move {
                    calls.hit();
                    gate.pass().await;
                    Ok::<_, Upstream>("stored anyway".to_string())
                })
                .await
        })
    };
    until("the load started", || calls.get() == 1).await;
    caller.abort();
    assert!(caller.await.unwrap_err().is_cancelled());
    assert_eq!(
        cache.loads_in_flight(),
        1,
        "the load outlives its only caller"
    );
    gate.open();
    until("the load finished", || cache.loads_in_flight() == 0).await;
    assert_eq!(cache.store().peek("k").unwrap().value, "stored anyway");
    assert_eq!(calls.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_caller_may_give_up_alone() {
    let cache = cache();
    let gate = Gate::closed();
    let patient = {
        let (cache, gate) = (cache.clone(), gate.clone());
        tokio::spawn(async move {
            cache
                .fetch("k", move || async move {
                    gate.pass().await;
                    Ok::<_, Upstream>("v".to_string())
                })
                .await
        })
    };
    until("the first caller leads", || cache.loads_in_flight() == 1).await;
    let impatient = tokio::time::timeout(
        Duration::from_millis(10),
        cache.fetch("k", || async { Ok::<_, Upstream>("other".to_string()) }),
    )
    .await;
    assert!(
        impatient.is_err(),
        "the impatient caller timed out on its own"
    );
    gate.open();
    assert_eq!(patient.await.unwrap().unwrap(), "v");
}

#[tokio::test(start_paused = true)]
async fn load_timeout_stops_the_load_for_every_waiter() {
    let cache = EchoCache::builder(TestStore::new())
        .load_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let slow = || async {
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok::<_, Upstream>("late".to_string())
    };
    let (a, b) = tokio::join!(cache.fetch("k", slow), cache.fetch("k", slow));
    assert!(matches!(a, Err(Error::Timeout)), "{a:?}");
    assert!(matches!(b, Err(Error::Timeout)), "{b:?}");
    let stats = cache.stats();
    assert_eq!((stats.loads, stats.load_timeouts), (1, 1));
    assert_eq!(cache.loads_in_flight(), 0);
    assert!(cache.store().peek("k").is_none());
}

#[tokio::test]
async fn distinct_keys_never_wait_on_each_other() {
    let cache = cache();
    let gate = Gate::closed();
    let blocked = {
        let (cache, gate) = (cache.clone(), gate.clone());
        tokio::spawn(async move {
            cache
                .fetch("slow", move || async move {
                    gate.pass().await;
                    Ok::<_, Upstream>("s".to_string())
                })
                .await
        })
    };
    until("the slow load runs", || cache.loads_in_flight() == 1).await;
    let fast = cache
        .fetch("fast", || async { Ok::<_, Upstream>("f".to_string()) })
        .await;
    assert_eq!(fast.unwrap(), "f");
    assert!(!blocked.is_finished());
    gate.open();
    assert_eq!(blocked.await.unwrap().unwrap(), "s");
}

#[tokio::test(start_paused = true)]
async fn a_loader_fetching_its_own_key_gets_recursive_load() {
    let cache = cache();
    let inner = cache.clone();
    let result = tokio::time::timeout(
        Duration::from_secs(5),
        cache.fetch("self", move || async move {
            match inner
                .fetch("self", || async { Ok::<_, Upstream>("x".to_string()) })
                .await
            {
                Err(Error::RecursiveLoad) => Ok("saw RecursiveLoad".to_string()),
                other => Err(Upstream(if other.is_ok() {
                    "inner ok"
                } else {
                    "inner other error"
                })),
            }
        }),
    )
    .await
    .expect("no deadlock");
    assert_eq!(result.unwrap(), "saw RecursiveLoad");
    assert_eq!(cache.loads_in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_cycle_through_another_key_gets_recursive_load() {
    let cache = cache();
    let (c1, c2) = (cache.clone(), cache.clone());
    let result = tokio::time::timeout(
        Duration::from_secs(5),
        cache.fetch("a", move || async move {
            // a -> b -> a
            let b = c1
                .fetch("b", move || async move {
                    match c2
                        .fetch("a", || async { Ok::<_, Upstream>("never".to_string()) })
                        .await
                    {
                        Err(Error::RecursiveLoad) => Ok("b saw RecursiveLoad".to_string()),
                        _ => Err(Upstream("b expected RecursiveLoad")),
                    }
                })
                .await;
            b.map_err(|_| Upstream("b failed"))
        }),
    )
    .await
    .expect("no deadlock");
    assert_eq!(result.unwrap(), "b saw RecursiveLoad");
}

#[tokio::test]
async fn nested_fetches_of_other_keys_are_fine() {
    let cache = cache();
    let inner = cache.clone();
    let v = cache
        .fetch("outer", move || async move {
            let x = inner
                .fetch("inner", || async { Ok::<_, Upstream>("in".to_string()) })
                .await;
            Ok::<_, Upstream>(format!("out+{}", x.unwrap()))
        })
        .await;
    assert_eq!(v.unwrap(), "out+in");
    assert_eq!(cache.store().peek("inner").unwrap().value, "in");
}

#[tokio::test]
async fn an_insert_during_a_load_is_not_overwritten() {
    let cache = cache();
    let gate = Gate::closed();
    let loading = {
        let (cache, gate) = (cache.clone(), gate.clone());
        tokio::spawn(async move {
            cache
                .fetch("k", move || async move {
                    gate.pass().await;
                    Ok::<_, Upstream>("old".to_string())
                })
                .await
        })
    };
    until("the load runs", || cache.loads_in_flight() == 1).await;
    cache.insert("k", "new".to_string()).await.unwrap();
    gate.open();
    assert_eq!(
        loading.await.unwrap().unwrap(),
        "old",
        "the waiter gets its load's value"
    );
    until("the flight ended", || cache.loads_in_flight() == 0).await;
    assert_eq!(cache.get("k").await.unwrap().as_deref(), Some("new"));
}

#[tokio::test]
async fn an_invalidate_during_a_load_is_not_undone() {
    let cache = cache();
    let gate = Gate::closed();
    let loading = {
        let (cache, gate) = (cache.clone(), gate.clone());
        tokio::spawn(async move {
            cache
                .fetch("k", move || async move {
                    gate.pass().await;
                    Ok::<_, Upstream>("from before the invalidate".to_string())
                })
                .await
        })
    };
    until("the load runs", || cache.loads_in_flight() == 1).await;
    cache.invalidate("k").await.unwrap();
    gate.open();
    loading.await.unwrap().unwrap();
    until("the flight ended", || cache.loads_in_flight() == 0).await;
    assert_eq!(cache.get("k").await.unwrap(), None);
}

#[derive(Debug, thiserror::Error)]
#[error("another error type")]
struct OtherError;

#[tokio::test]
async fn a_waiter_with_another_error_type_loads_for_itself() {
    let cache = cache();
    let gate = Gate::closed();
    let leader = {
        let (cache, gate) = (cache.clone(), gate.clone());
        tokio::spawn(async move {
            cache
                .fetch("k", move || async move {
                    gate.pass().await;
                    Err::<String, _>(Upstream("leader failed"))
                })
                .await
        })
    };
    until("the leader loads", || cache.loads_in_flight() == 1).await;
    let follower = {
        let cache = cache.clone();
        tokio::spawn(async move {
            cache
                .fetch("k", || async {
                    Ok::<_, OtherError>("follower's own".to_string())
                })
                .await
        })
    };
    until("the follower joined", || cache.stats().coalesced == 1).await;
    gate.open();
    assert!(matches!(leader.await.unwrap(), Err(Error::Load(_))));
    assert_eq!(follower.await.unwrap().unwrap(), "follower's own");
}

#[test]
fn fetch_outside_a_runtime_runs_the_load_inline() {
    let cache = cache();
    let mut fut = pin!(cache.fetch("k", || async { Ok::<_, Upstream>("inline".to_string()) }));
    let mut cx = Context::from_waker(Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        Poll::Ready(v) => assert_eq!(v.unwrap(), "inline"),
        Poll::Pending => panic!("an immediate loader over an immediate store completes at once"),
    }
    assert_eq!(cache.store().peek("k").unwrap().value, "inline");
}

#[tokio::test]
async fn a_hit_never_calls_the_loader() {
    let cache = cache();
    cache.insert("k", "stored".to_string()).await.unwrap();
    let calls = Calls::default();
    for _ in 0..3 {
        let c = calls.clone();
        let v = cache
            .fetch("k", move || async move {
                c.hit();
                Ok::<_, Upstream>("loaded".to_string())
            })
            .await;
        assert_eq!(v.unwrap(), "stored");
    }
    assert_eq!(calls.get(), 0);
    assert_eq!((cache.stats().hits, cache.stats().misses), (3, 0));
}

#[tokio::test]
async fn dropping_the_leader_mid_load_leaves_the_waiters_their_value() {
    let cache = cache();
    let gate = Gate::closed();
    let calls = Calls::default();
    let spawn_fetch = |value: &'static str| {
        let (cache, gate, calls) = (cache.clone(), gate.clone(), calls.clone());
        tokio::spawn(async move {
            cache
                .fetch("k", move || async move {
                    calls.hit();
                    gate.pass().await;
                    Ok::<_, Upstream>(value.to_string())
                })
                .await
        })
    };
    let leader = spawn_fetch("leader's");
    until("the leader's load runs", || calls.get() == 1).await;
    let waiters: Vec<_> = (0..5).map(|_| spawn_fetch("a waiter's")).collect();
    until("the waiters joined", || cache.stats().coalesced == 5).await;
    leader.abort();
    assert!(leader.await.unwrap_err().is_cancelled());
    gate.open();
    for waiter in waiters {
        assert_eq!(waiter.await.unwrap().unwrap(), "leader's");
    }
    assert_eq!(calls.get(), 1);
    until("the flight ended", || cache.loads_in_flight() == 0).await;
    assert_eq!(cache.store().peek("k").unwrap().value, "leader's");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_fetches_of_a_cold_key_load_once() {
    let cache = cache();
    let calls = Calls::default();
    let gate = Gate::closed();
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let (cache, calls, gate) = (cache.clone(), calls.clone(), gate.clone());
            tokio::spawn(async move {
                cache
                    .fetch("cold", move || async move {
                        calls.hit();
                        gate.pass().await;
                        Ok::<_, Upstream>("v".to_string())
                    })
                    .await
            })
        })
        .collect();
    until("all callers joined", || cache.stats().coalesced == 999).await;
    gate.open();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), "v");
    }
    assert_eq!(calls.get(), 1);
    assert_eq!(cache.loads_in_flight(), 0);
}

#[tokio::test]
async fn a_fetch_after_an_invalidate_does_not_get_the_value_from_before() {
    let cache = cache();
    let source = Arc::new(std::sync::atomic::AtomicU64::new(1));
    let gate = Gate::closed();
    let read = Calls::default();
    let first = {
        let (cache, source, gate, read) =
            (cache.clone(), source.clone(), gate.clone(), read.clone());
        tokio::spawn(async move {
            cache
                .fetch("k", move || async move {
                    let version = source.load(std::sync::atomic::Ordering::SeqCst);
                    read.hit();
                    gate.pass().await;
                    Ok::<_, Upstream>(format!("v{version}"))
                })
                .await
        })
    };
    until("the first load read version 1", || read.get() == 1).await;
    source.store(2, std::sync::atomic::Ordering::SeqCst);
    cache.invalidate("k").await.unwrap();
    // Started after the invalidate returned: it must not join the load from before.
    let second = {
        let (cache, source) = (cache.clone(), source.clone());
        tokio::spawn(async move {
            cache
                .fetch("k", move || async move {
                    let version = source.load(std::sync::atomic::Ordering::SeqCst);
                    Ok::<_, Upstream>(format!("v{version}"))
                })
                .await
        })
    };
    assert_eq!(second.await.unwrap().unwrap(), "v2");
    gate.open();
    assert_eq!(
        first.await.unwrap().unwrap(),
        "v1",
        "the caller from before gets its load"
    );
    until("both flights ended", || cache.loads_in_flight() == 0).await;
    assert_eq!(cache.get("k").await.unwrap().as_deref(), Some("v2"));
}
