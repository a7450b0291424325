//! Outage scenarios every remote store runs against a server of its test's own: the
//! store stalled (SIGSTOP) and resumed (SIGCONT), read-your-writes across two clients.
//! Each takes the server and a function that makes a store on it (a new client each
//! call: another "process").
//!
//! The time bounds are the acceptance bounds on waits (a hang fails them), not speed
//! claims: speed is measured by `cargo xtask bench` (docs/benchmarks.md, "Outage cost").

use std::future::Future;
use std::time::{Duration, SystemTime};

use echocache_core::{EchoCache, Entry, LazyEchoCache, ManualClock, Store};
use tokio::time::Instant;

use crate::{Kind, OwnServer, eventually};

const LOADER_TIME: Duration = Duration::from_millis(10);

/// Returns once a read straight from `store` gets no answer within 100 ms (a stalled
/// server); bounded: 10 s.
async fn until_unanswered<S: Store<String>>(store: &S) {
    for _ in 0..100 {
        let read = tokio::time::timeout(Duration::from_millis(100), store.get("stall-probe"));
        if read.await.is_err() {
            return;
        }
    }
    panic!("the server still answers 10 s after SIGSTOP");
}

async fn slow_value(v: String) -> Result<String, std::io::Error> {
    tokio::time::sleep(LOADER_TIME).await;
    Ok(v)
}

/// The server stalls: the first fetch of a new key returns the loaded value within 2 s,
/// the next 20 average under the loader's time + 20 ms (the breaker is open), and after
/// SIGCONT a fetch is a hit again within 5 s, with no user action.
pub async fn a_stall_costs_a_fetch_the_loader_and_recovers_on_its_own<S, F, Fut>(
    server: &OwnServer,
    store: F,
) where
    S: Store<String>,
    F: Fn(&'static str) -> Fut,
    Fut: Future<Output = S>,
{
    let cache = EchoCache::new(store("outage").await);
    cache
        .fetch("warm", || slow_value("w".into()))
        .await
        .unwrap();

    server.stall();
    let started = Instant::now();
    let v = cache.fetch("cold-0", || slow_value("v0".into())).await;
    let first = started.elapsed();
    assert_eq!(v.unwrap(), "v0");
    assert!(first < Duration::from_secs(2), "first fetch took {first:?}");

    let started = Instant::now();
    for i in 1..=20 {
        let key = format!("cold-{i}");
        assert_eq!(
            cache.fetch(&key, || slow_value(key.clone())).await.unwrap(),
            key
        );
    }
    let average = started.elapsed() / 20;
    assert!(
        average < LOADER_TIME + Duration::from_millis(20),
        "a fetch during the stall cost {average:?} on average"
    );
    let stats = cache.stats();
    assert!(stats.store_timeouts >= 1, "{stats:?}");
    assert_eq!(stats.circuit_opens, 1, "{stats:?}");
    assert!(stats.store_calls_skipped >= 40, "{stats:?}");

    server.resume();
    let (_, took) = eventually(
        "a hit from the store after SIGCONT",
        Duration::from_secs(5),
        || {
            let cache = cache.clone();
            async move {
                let hits = cache.stats().hits;
                cache.fetch("after", || slow_value("a".into())).await.ok()?;
                (cache.stats().hits > hits).then_some(())
            }
        },
    )
    .await;
    eprintln!(
        "store used again {took:?} after SIGCONT; {:?}",
        cache.stats()
    );
    assert!(!cache.is_circuit_open());
}

/// Read-your-writes, and what another process sees: once `fetch` has returned a loaded
/// value, a `get` on the same cache and on another client's cache both see it.
pub async fn after_fetch_returns_this_cache_and_other_processes_see_the_value<S, F, Fut>(store: F)
where
    S: Store<String>,
    F: Fn(&'static str) -> Fut,
    Fut: Future<Output = S>,
{
    let here = EchoCache::new(store("ryw").await);
    let there = EchoCache::new(store("ryw").await);
    for i in 0..200 {
        let key = format!("fresh-{i}");
        let v = here
            .fetch(&key, || {
                std::future::ready(Ok::<_, std::io::Error>(format!("v{i}")))
            })
            .await
            .unwrap();
        assert_eq!(here.get(&key).await.unwrap().as_ref(), Some(&v), "{key}");
        assert_eq!(
            there.get(&key).await.unwrap(),
            Some(v),
            "{key}, other client"
        );
    }
}

/// A background refresh caught by a stall (its loader runs while the server stops answering)
/// gives up its write and unlock after the store timeout, and `shutdown` returns.
pub async fn a_refresh_and_shutdown_are_bounded_while_the_store_stalls<S, F, Fut>(
    server: &OwnServer,
    store: F,
) where
    S: Store<String>,
    F: Fn(&'static str) -> Fut,
    Fut: Future<Output = S>,
{
    let store = store("stalled-refresh").await;
    let clock = ManualClock::new(SystemTime::now());
    store
        .set("k", &Entry::new("old".into(), clock.now()))
        .await
        .unwrap();
    let cache = LazyEchoCache::builder(store)
        .refresh_after(Duration::from_secs(1))
        .clock(clock.clone())
        .build()
        .unwrap();
    clock.advance(Duration::from_secs(2));
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let (gate_tx, gate_rx) = tokio::sync::oneshot::channel::<()>();
    let v = cache
        .fetch("k", move || async move {
            started_tx.send(()).unwrap();
            let _ = gate_rx.await;
            Ok::<_, std::io::Error>("new".to_owned())
        })
        .await;
    assert_eq!(v.unwrap(), "old", "a stale hit");
    started_rx.await.expect("the refresh's loader runs");

    server.stall();
    // SIGSTOP takes effect when the kernel delivers it: on a loaded machine a request sent
    // right after `kill -STOP` returned was still answered (a CI run saw the refresh's
    // write succeed). The gate opens once the server no longer answers.
    until_unanswered(cache.store()).await;
    let shutdown = tokio::spawn({
        let cache = cache.clone();
        async move {
            let started = Instant::now();
            cache.shutdown().await;
            started.elapsed()
        }
    });
    gate_tx.send(()).unwrap();
    let took = shutdown.await.unwrap();
    assert!(took < Duration::from_secs(3), "shutdown took {took:?}");
    let stats = cache.stats();
    // The write and the unlock both failed: timed out, or (NATS) failed once the client
    // saw the stalled server's connection as broken.
    assert!(stats.store_timeouts >= 1, "{stats:?}");
    assert!(
        stats.store_errors >= 2,
        "the write and the unlock: {stats:?}"
    );
    assert_eq!(cache.refreshes_pending(), 0);
    server.resume();
}

/// A service starts while its server is down (the stores' `connect` helpers): the store
/// is made at once, fetches serve loaded values meanwhile, and once the server comes up
/// the cache uses it (a fetch is a hit) within 5 s, with no user action.
pub async fn a_service_started_while_the_server_is_down<S, F, Fut>(kind: Kind, connect: F)
where
    S: Store<String>,
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = S>,
{
    let port = crate::free_port();
    let url = match kind {
        Kind::Redis => format!("redis://127.0.0.1:{port}"),
        Kind::Nats(_) => format!("nats://127.0.0.1:{port}"),
    };
    let started = Instant::now();
    let cache = EchoCache::new(connect(url).await);
    let made = started.elapsed();
    assert!(made < Duration::from_secs(2), "connect took {made:?}");
    for i in 0..5 {
        let key = format!("down-{i}");
        let started = Instant::now();
        let v = cache.fetch(&key, || slow_value(key.clone())).await.unwrap();
        assert_eq!(v, key);
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(2),
            "fetch while down took {took:?}"
        );
    }

    let server = OwnServer::start(kind, port);
    let (_, took) = eventually(
        "a hit once the server is up",
        Duration::from_secs(5),
        || {
            let cache = cache.clone();
            async move {
                let hits = cache.stats().hits;
                cache.fetch("up", || slow_value("u".into())).await.ok()?;
                (cache.stats().hits > hits).then_some(())
            }
        },
    )
    .await;
    eprintln!(
        "store used {took:?} after the server came up; {:?}",
        cache.stats()
    );
    drop(server);
}
