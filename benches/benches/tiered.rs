//! The tiered store (issue 14), against the Redis found by `cargo xtask bench`:
//!
//! - `l1_hit/tiered` vs `l1_hit/lru`: `EchoCache::fetch` hits through a `TieredStore`
//!   (`LruStore` L1, `RedisStore` L2, `RedisBackplane`) and through the same `LruStore`
//!   alone; polled without an executor, so a hit that reached Redis could not complete
//!   (the bench would panic): both measure L1 hits only.
//! - `l2_hit/tiered` vs `l2_hit/redis`: one fetch after the other on a current-thread
//!   runtime, through a tiered store whose L1 holds one entry (100 keys cycled: every read
//!   misses L1, reads Redis and fills L1) and through `RedisStore` alone.
//! - `hot_64/tiered` vs `hot_64/redis`: 64 tasks on a 2-worker runtime fetching 100 hot
//!   keys; wall time per fetch (1 / throughput).
//! - Outside criterion, the propagation delay: from process A's `insert` returning to
//!   process B serving the new value instead of its L1 copy.
//!
//! Keys under a prefix unique to the run, with a 10-minute TTL.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use criterion::{Criterion, Throughput};
use echocache::store::{LruStore, RedisBackplane, RedisStore};
use echocache::{EchoCache, L1Entry, Store, TieredStore};

use echocache_benches::{Runner, assert_only_hits, interleaved};

use crate::{Never, current_thread, multi_thread, ready};

const KEYS: usize = 100;
const TASKS: usize = 64;
const TTL: Duration = Duration::from_secs(600);
/// Trials of the propagation measurement.
const PROPAGATION_TRIALS: usize = 200;
/// Rounds of the side-by-side ratio measurements, and calls per path and round.
const ROUNDS: usize = 25;
const L1_CALLS_PER_ROUND: u64 = 50_000;
const L2_CALLS_PER_ROUND: u64 = 200;

type Tiered = TieredStore<String, LruStore<L1Entry<String>>, RedisStore<String>, RedisBackplane>;

fn keys() -> Arc<Vec<String>> {
    Arc::new((0..KEYS).map(|i| format!("k{i}")).collect())
}

async fn tiered(url: &str, prefix: &str, l1: usize) -> Result<EchoCache<String, Tiered>, String> {
    let l2 = RedisStore::connect(url, prefix, TTL)
        .await
        .map_err(|e| e.to_string())?;
    let backplane = RedisBackplane::connect(url, prefix)
        .await
        .map_err(|e| e.to_string())?;
    let store = TieredStore::new(LruStore::new(l1).map_err(|e| e.to_string())?, l2, backplane);
    let subscribed = Instant::now();
    while !store.is_l1_serving() {
        if subscribed.elapsed() > Duration::from_secs(3) {
            return Err("the backplane did not subscribe within 3 s".into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(EchoCache::new(store))
}

async fn redis(url: &str, prefix: &str) -> Result<EchoCache<String, RedisStore<String>>, String> {
    RedisStore::connect(url, prefix, TTL)
        .await
        .map(EchoCache::new)
        .map_err(|e| e.to_string())
}

/// Writes every key once (through `cache`, so that they exist in Redis).
async fn fill<S: Store<String>>(cache: &EchoCache<String, S>, keys: &[String]) {
    for k in keys {
        let _ = cache.insert(k, "v".repeat(100)).await;
    }
}

/// `tiered`: see the module docs.
pub(crate) fn tiered_benches(c: &mut Criterion) {
    let url = std::env::var("ECHOCACHE_REDIS_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned());
    let ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let prefix = format!("echocache-tiered-bench-{}-{ms}", std::process::id());
    if let Err(e) = run(c, &url, &prefix) {
        eprintln!("tiered: Redis at {url}: {e}; the tiered benches stopped");
    }
}

fn run(c: &mut Criterion, url: &str, prefix: &str) -> Result<(), String> {
    let keys = keys();
    let bg = multi_thread();
    let miss = || async { Ok::<_, Never>(String::from("loaded")) };

    // L1 hits: set up on a runtime that keeps running the clients, measured without one.
    let (tiered_l1, lru) = bg.block_on(async {
        let tiered_l1 = tiered(url, prefix, KEYS * 2).await?;
        fill(&tiered_l1, &keys).await;
        for k in keys.iter() {
            tiered_l1.fetch(k, miss).await.map_err(|e| e.to_string())?;
        }
        let lru = EchoCache::new(LruStore::<String>::new(KEYS * 2).map_err(|e| e.to_string())?);
        fill(&lru, &keys).await;
        Ok::<_, String>((tiered_l1, lru))
    })?;
    let mut g = c.benchmark_group("tiered");
    g.throughput(Throughput::Elements(1));
    for (name, run) in [
        ("l1_hit/tiered", hits(&tiered_l1, &keys)),
        ("l1_hit/lru", hits(&lru, &keys)),
    ] {
        g.bench_function(name, |b| b.iter_custom(&run));
    }
    // Side by side in rounds as well: criterion measures the two seconds apart, and this
    // machine's speed drifts by more than the difference (see `interleaved`).
    interleaved(
        "tiered/l1_hit",
        &[
            ("tiered", hits(&tiered_l1, &keys)),
            ("lru", hits(&lru, &keys)),
        ],
        ROUNDS,
        L1_CALLS_PER_ROUND,
    );
    assert_only_hits("tiered/l1_hit/tiered", &tiered_l1.stats());
    assert_only_hits("tiered/l1_hit/lru", &lru.stats());

    // L2 hits, one after the other on the runtime the clients run on.
    let seq = current_thread();
    let (tiered_l2, plain) = seq.block_on(async {
        Ok::<_, String>((tiered(url, prefix, 1).await?, redis(url, prefix).await?))
    })?;
    g.bench_function("l2_hit/tiered", |b| {
        b.iter_custom(|n| sequential(&seq, n, |k| fetch_one(&tiered_l2, &keys[k])))
    });
    g.bench_function("l2_hit/redis", |b| {
        b.iter_custom(|n| sequential(&seq, n, |k| fetch_one(&plain, &keys[k])))
    });
    interleaved(
        "tiered/l2_hit",
        &[
            (
                "tiered",
                Box::new(|n| sequential(&seq, n, |k| fetch_one(&tiered_l2, &keys[k]))),
            ),
            (
                "redis",
                Box::new(|n| sequential(&seq, n, |k| fetch_one(&plain, &keys[k]))),
            ),
        ],
        ROUNDS,
        L2_CALLS_PER_ROUND,
    );
    assert_only_hits("tiered/l2_hit/tiered", &tiered_l2.stats());
    assert_only_hits("tiered/l2_hit/redis", &plain.stats());

    // Hot keys from 64 tasks.
    let (hot_tiered, hot_redis) = bg.block_on(async {
        let t = tiered(url, prefix, KEYS * 2).await?;
        Ok::<_, String>((Arc::new(t), Arc::new(redis(url, prefix).await?)))
    })?;
    let run_hot = |iters: u64, cache: Arc<dyn Fetch>| {
        let per_task = iters.div_ceil(TASKS as u64);
        let elapsed = bg.block_on(async {
            let start = Instant::now();
            let tasks: Vec<_> = (0..TASKS)
                .map(|t| {
                    let (cache, keys) = (Arc::clone(&cache), Arc::clone(&keys));
                    tokio::spawn(async move {
                        for n in 0..per_task as usize {
                            cache.fetch_one(&keys[(t + n) % KEYS]).await;
                        }
                    })
                })
                .collect();
            for task in tasks {
                let _ = task.await;
            }
            start.elapsed()
        });
        elapsed.mul_f64(iters as f64 / (per_task * TASKS as u64) as f64)
    };
    g.bench_function("hot_64/tiered", |b| {
        b.iter_custom(|iters| run_hot(iters, hot_tiered.clone()))
    });
    g.bench_function("hot_64/redis", |b| {
        b.iter_custom(|iters| run_hot(iters, hot_redis.clone()))
    });
    g.finish();
    propagation(&bg, url, prefix)
}

/// How long after process A's `insert` returned process B (its own clients) serves the new
/// value instead of its L1 copy: B polls from the moment A's insert returned. Recorded as
/// `tiered/propagation_ms/{p50,p99,max}` over [`PROPAGATION_TRIALS`] trials.
fn propagation(bg: &tokio::runtime::Runtime, url: &str, prefix: &str) -> Result<(), String> {
    let delays = bg.block_on(async {
        let a = tiered(url, prefix, KEYS * 2).await?;
        let b = tiered(url, prefix, KEYS * 2).await?;
        let mut delays = Vec::with_capacity(PROPAGATION_TRIALS);
        for trial in 0..PROPAGATION_TRIALS {
            let key = format!("propagation-{trial}");
            a.insert(&key, "old".to_owned())
                .await
                .map_err(|e| e.to_string())?;
            // B's L1 holds "old" (read until it does: A's own announcement may arrive
            // during B's first read, which then fills nothing).
            for _ in 0..100 {
                let _ = b.get(&key).await;
            }
            a.insert(&key, "new".to_owned())
                .await
                .map_err(|e| e.to_string())?;
            let returned = Instant::now();
            loop {
                if b.get(&key).await.map_err(|e| e.to_string())?.as_deref() == Some("new") {
                    break;
                }
                if returned.elapsed() > Duration::from_secs(5) {
                    return Err(format!("{key}: B still served the old value after 5 s"));
                }
                tokio::task::yield_now().await;
            }
            delays.push(returned.elapsed());
            let _ = a.invalidate(&key).await;
        }
        Ok::<_, String>(delays)
    })?;
    let mut ms: Vec<f64> = delays.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    let rank = |p: f64| ms[((p * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1];
    echocache_benches::record("tiered/propagation_ms/p50", rank(0.5));
    echocache_benches::record("tiered/propagation_ms/p99", rank(0.99));
    echocache_benches::record("tiered/propagation_ms/max", ms[ms.len() - 1]);
    eprintln!(
        "tiered: propagation p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        rank(0.5),
        rank(0.99),
        ms[ms.len() - 1]
    );
    Ok(())
}

/// `iters` calls of `op(key index)`, one after the other inside `block_on` of `rt`.
fn sequential<F, Fut>(rt: &tokio::runtime::Runtime, iters: u64, op: F) -> Duration
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    rt.block_on(async {
        let start = Instant::now();
        for n in 0..iters {
            op(n as usize % KEYS).await;
        }
        start.elapsed()
    })
}

/// `n` L1 hits through `cache`, polled without an executor (see the module docs).
fn hits<'a, S: Store<String>>(cache: &'a EchoCache<String, S>, keys: &'a [String]) -> Runner<'a> {
    Box::new(move |n| {
        let start = Instant::now();
        for i in 0..n as usize {
            black_box(
                ready(cache.fetch(&keys[i % KEYS], || async { Ok::<_, Never>(String::new()) }))
                    .ok(),
            );
        }
        start.elapsed()
    })
}

/// One fetch through `cache` (a hit in the L2 benches).
async fn fetch_one<S: Store<String>>(cache: &EchoCache<String, S>, key: &str) {
    black_box(
        cache
            .fetch(key, || async { Ok::<_, Never>(String::from("loaded")) })
            .await
            .ok(),
    );
}

/// A cache the hot-key bench fetches through, behind one type.
trait Fetch: Send + Sync + 'static {
    fn fetch_one<'a>(
        &'a self,
        key: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>>;
}

impl<S: Store<String>> Fetch for EchoCache<String, S> {
    fn fetch_one<'a>(
        &'a self,
        key: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
        Box::pin(fetch_one(self, key))
    }
}
