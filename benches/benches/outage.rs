//! Outage cost (issue 12): what a fetch of a new key costs while the store is healthy,
//! stalled (`SIGSTOP`: sockets open, nothing answers) and dead (`SIGKILL`: connections
//! refused), with the circuit breaker on (the default) and off, on Redis and NATS.
//!
//! Each backend runs a server of its own on a free loopback port (never the shared one:
//! it is stalled and killed), and stores made by the `connect` helpers (what the README
//! shows). The loader returns at once, so the figures are what the store costs a fetch.
//! Timed one after the other on a current-thread runtime; recorded as
//! `outage/{backend}/{state}/{breaker}/{p50_ms,p99_ms,max_ms,fetches}`, turned into the
//! "Outage cost" table by `cargo xtask bench`.
//!
//! Without a breaker, every fetch during a stall waits out the cache's store timeout on
//! each store call it makes, so that state gets fewer fetches. Not a criterion bench: the
//! states are minutes of wall time apart, and a percentile table says more than a mean.

use std::future::Future;
use std::time::{Duration, Instant};

use criterion::Criterion;
use echocache::store::{NatsStore, RedisStore};
use echocache::{EchoCache, Store};
use echocache_benches::record;
use echocache_testkit::OwnServer;

use crate::{Never, current_thread};

/// Fetches per state with the breaker on, and with it off (a stall costs those seconds).
const FETCHES: usize = 200;
const FETCHES_NO_BREAKER: usize = 20;

/// `outage`: both backends (skipped with a message when a server cannot be started).
pub(crate) fn outage(_: &mut Criterion) {
    if !selected("outage") {
        return;
    }
    let rt = current_thread();
    run(&rt, "redis", OwnServer::redis, |url| async move {
        RedisStore::<String>::connect(&url, "outage", Duration::from_secs(600))
            .await
            .map_err(|e| e.to_string())
    });
    run(&rt, "nats", OwnServer::nats, |url| async move {
        NatsStore::<String>::connect(&url, "outage", "bench")
            .await
            .map_err(|e| e.to_string())
    });
}

fn run<S, Start, Connect, Fut>(
    rt: &tokio::runtime::Runtime,
    backend: &str,
    start: Start,
    connect: Connect,
) where
    S: Store<String> + Clone,
    Start: FnOnce() -> OwnServer + std::panic::UnwindSafe,
    Connect: Fn(String) -> Fut,
    Fut: Future<Output = Result<S, String>>,
{
    let Ok(mut server) = std::panic::catch_unwind(start) else {
        eprintln!("outage: no {backend} server of its own could be started; skipped");
        return;
    };
    let store = match rt.block_on(connect(server.url())) {
        Ok(store) => store,
        Err(e) => {
            eprintln!("outage: {backend}: {e}; skipped");
            return;
        }
    };
    let on = EchoCache::new(store.clone());
    let off = EchoCache::builder(store)
        .no_circuit_breaker()
        .build()
        .expect("default settings");
    let mut next_key = 0u64;
    let mut measure = |state: &str, breaker: &str, cache: &EchoCache<String, S>, n: usize| {
        let times = rt.block_on(async {
            let mut times = Vec::with_capacity(n);
            for _ in 0..n {
                next_key += 1;
                let key = format!("{state}-{breaker}-{next_key}");
                let started = Instant::now();
                let v = cache
                    .fetch(&key, || async { Ok::<_, Never>("v".to_owned()) })
                    .await;
                times.push(started.elapsed());
                assert_eq!(v.ok().as_deref(), Some("v"), "fail open: the loaded value");
            }
            times
        });
        summary(backend, state, breaker, times);
    };
    // Warm up both caches (connections, scripts), then healthy.
    measure("warm-up", "on", &on, 20);
    measure("warm-up", "off", &off, 20);
    measure("healthy", "on", &on, FETCHES);
    measure("healthy", "off", &off, FETCHES);
    server.stall();
    measure("stalled", "on", &on, FETCHES);
    measure("stalled", "off", &off, FETCHES_NO_BREAKER);
    server.resume();
    server.kill();
    measure("dead", "on", &on, FETCHES);
    measure("dead", "off", &off, FETCHES_NO_BREAKER);
    drop(server);
}

/// Whether the bench filter on the command line (`cargo bench -- fleet`), if any, selects
/// `name` the way criterion's substring filter would.
fn selected(name: &str) -> bool {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()))
}

fn summary(backend: &str, state: &str, breaker: &str, mut times: Vec<Duration>) {
    if state == "warm-up" || times.is_empty() {
        return;
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let rank = |p: f64| {
        let i = ((p * times.len() as f64).ceil() as usize).clamp(1, times.len()) - 1;
        ms(times[i])
    };
    let name = |what: &str| format!("outage/{backend}/{state}/{breaker}/{what}");
    record(&name("p50_ms"), rank(0.5));
    record(&name("p99_ms"), rank(0.99));
    record(&name("max_ms"), ms(times[times.len() - 1]));
    record(&name("fetches"), times.len() as f64);
    eprintln!(
        "outage: {backend} {state}, breaker {breaker}: p50 {:.3} ms, p99 {:.3} ms ({} fetches)",
        rank(0.5),
        rank(0.99),
        times.len()
    );
}
