//! echocache benchmarks, side by side with moka, quick_cache and a bare
//! `Mutex<hashlink::LruCache>` floor, in one run on one machine.
//!
//! Names follow the Go original's benchmarks (`FetchWithCache_CacheHit` → `fetch_hit`, …).
//! Allocation counts per operation are recorded beside the times (a counting global
//! allocator) and written to `target/echocache-bench/figures.json`; `cargo xtask bench`
//! turns both into `docs/benchmarks.md`.
//!
//! `footprint.rs` measures the memory stores' bytes per entry; `backends.rs` the Redis and
//! NATS stores beside their raw clients (skipped, with a message, when no server answers);
//! `fleet.rs` what ordered writes, the fleet lock and waiting for another process cost;
//! `outage.rs` what a fetch costs while the store is stalled or dead; `tiered.rs` the
//! tiered store against the memory store and `RedisStore` alone.

mod backends;
mod fleet;
mod footprint;
mod outage;
mod tiered;

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use echocache::store::{ExpiringLruStore, LruStore, ShardedLruStore, SingleStore};
use echocache::{EchoCache, Entry, LazyEchoCache, Store};
use echocache_benches::{CountingAlloc, assert_only_hits, record, record_allocs, save_figures};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const KEYS: usize = 1_000;
const ALLOC_SAMPLES: u64 = 10_000;

type Never = std::convert::Infallible;

/// Polls a future that completes at once (memory stores, hits) without any executor.
fn ready<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("this operation was expected to complete at once"),
    }
}

fn keys() -> Vec<String> {
    (0..KEYS).map(|i| format!("key-{i}")).collect()
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn multi_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// One hit benchmark: times `op(i)` and records its allocations.
fn hit(
    c: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    id: &str,
    mut op: impl FnMut(usize),
) {
    let mut i = 0usize;
    c.bench_function(id, |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            op(i % KEYS)
        })
    });
    let group_id = format!("{}/{id}", c_name(c));
    let mut j = 0usize;
    record_allocs(&format!("allocs/{group_id}"), ALLOC_SAMPLES, || {
        j = j.wrapping_add(1);
        op(j % KEYS)
    });
}

// criterion's BenchmarkGroup does not expose its name; the groups below register it here.
static GROUP: Mutex<String> = Mutex::new(String::new());
fn c_name(_: &criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) -> String {
    GROUP.lock().unwrap().clone()
}
fn group<'a>(
    c: &'a mut Criterion,
    name: &str,
) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    *GROUP.lock().unwrap() = name.to_owned();
    c.benchmark_group(name)
}

fn fetch_hit(c: &mut Criterion) {
    let keys = keys();
    let arc_keys: Vec<Arc<str>> = keys.iter().map(|k| Arc::from(k.as_str())).collect();
    let mut g = group(c, "fetch_hit");

    let u64_cache = EchoCache::new(LruStore::<u64>::new(KEYS * 2).unwrap());
    let arc_cache = EchoCache::new(LruStore::<Arc<str>>::new(KEYS * 2).unwrap());
    let string_cache = EchoCache::new(LruStore::<String>::new(KEYS * 2).unwrap());
    let static_cache = EchoCache::new(LruStore::<&'static str>::new(KEYS * 2).unwrap());
    for (i, k) in keys.iter().enumerate() {
        ready(u64_cache.insert(k, i as u64)).unwrap();
        ready(arc_cache.insert(k, Arc::from(k.as_str()))).unwrap();
        ready(string_cache.insert(k, k.clone())).unwrap();
        ready(static_cache.insert(k, "value")).unwrap();
    }
    hit(&mut g, "echocache/u64", |i| {
        black_box(ready(u64_cache.fetch(&keys[i], || async { Ok::<u64, Never>(0) })).unwrap());
    });
    hit(&mut g, "echocache/static_str", |i| {
        black_box(ready(static_cache.fetch(&keys[i], || async { Ok::<_, Never>("x") })).unwrap());
    });
    hit(&mut g, "echocache/arc_str", |i| {
        black_box(
            ready(arc_cache.fetch(&keys[i], || async { Ok::<Arc<str>, Never>(Arc::from("x")) }))
                .unwrap(),
        );
    });
    let sharded_cache = EchoCache::new(ShardedLruStore::<Arc<str>>::new(KEYS * 2).unwrap());
    for k in &keys {
        ready(sharded_cache.insert(k, Arc::from(k.as_str()))).unwrap();
    }
    hit(&mut g, "echocache_sharded/arc_str", |i| {
        black_box(
            ready(
                sharded_cache.fetch(&keys[i], || async { Ok::<Arc<str>, Never>(Arc::from("x")) }),
            )
            .unwrap(),
        );
    });
    // The same store behind `BoxStore` (chosen at run time): a boxed future per store call.
    let boxed_cache = EchoCache::new(echocache::BoxStore::new(
        ShardedLruStore::<Arc<str>>::new(KEYS * 2).unwrap(),
    ));
    for k in &keys {
        ready(boxed_cache.insert(k, Arc::from(k.as_str()))).unwrap();
    }
    hit(&mut g, "echocache_boxed/arc_str", |i| {
        black_box(
            ready(boxed_cache.fetch(&keys[i], || async { Ok::<Arc<str>, Never>(Arc::from("x")) }))
                .unwrap(),
        );
    });
    hit(&mut g, "echocache/string", |i| {
        black_box(
            ready(string_cache.fetch(&keys[i], || async { Ok::<_, Never>(String::new()) }))
                .unwrap(),
        );
    });

    let moka: moka::future::Cache<String, Arc<str>> = moka::future::Cache::new((KEYS * 2) as u64);
    for k in &keys {
        ready(moka.insert(k.clone(), Arc::from(k.as_str())));
    }
    hit(&mut g, "moka/arc_str", |i| {
        black_box(ready(
            moka.get_with_by_ref(&keys[i], async { Arc::from("x") }),
        ));
    });

    let quick: quick_cache::sync::Cache<String, Arc<str>> = quick_cache::sync::Cache::new(KEYS * 2);
    for k in &keys {
        quick.insert(k.clone(), Arc::from(k.as_str()));
    }
    hit(&mut g, "quick_cache/arc_str", |i| {
        black_box(
            ready(
                quick
                    .get_or_insert_async(&keys[i], async { Ok::<Arc<str>, Never>(Arc::from("x")) }),
            )
            .unwrap(),
        );
    });

    let floor: Mutex<hashlink::LruCache<String, Arc<str>>> =
        Mutex::new(hashlink::LruCache::new(KEYS * 2));
    let floor_u64: Mutex<hashlink::LruCache<String, u64>> =
        Mutex::new(hashlink::LruCache::new(KEYS * 2));
    for (i, k) in arc_keys.iter().enumerate() {
        floor.lock().unwrap().insert(k.to_string(), k.clone());
        floor_u64.lock().unwrap().insert(k.to_string(), i as u64);
    }
    hit(&mut g, "floor_mutex_hashlink/arc_str", |i| {
        black_box(floor.lock().unwrap().get(keys[i].as_str()).cloned());
    });
    hit(&mut g, "floor_mutex_hashlink/u64", |i| {
        black_box(floor_u64.lock().unwrap().get(keys[i].as_str()).copied());
    });
    g.finish();
    for (name, stats) in [
        ("echocache/u64", u64_cache.stats()),
        ("echocache/static_str", static_cache.stats()),
        ("echocache/arc_str", arc_cache.stats()),
        ("echocache_sharded/arc_str", sharded_cache.stats()),
        ("echocache_boxed/arc_str", boxed_cache.stats()),
        ("echocache/string", string_cache.stats()),
    ] {
        assert_only_hits(&format!("fetch_hit/{name}"), &stats);
    }
    peers_only_hit("fetch_hit", &keys, &quick, &moka);
}

/// Stops the run unless quick_cache and moka still hold each key's own value: their
/// loaders in the hit benches return "x", which a miss would have stored.
fn peers_only_hit(
    bench: &str,
    keys: &[String],
    quick: &quick_cache::sync::Cache<String, Arc<str>>,
    moka: &moka::future::Cache<String, Arc<str>>,
) {
    for k in keys {
        let (q, m) = (quick.get(k.as_str()), ready(moka.get(k.as_str())));
        assert!(
            q.as_deref() == Some(k.as_str()) && m.as_deref() == Some(k.as_str()),
            "{bench}: quick_cache or moka missed {k}"
        );
    }
}

/// Misses: a new key every iteration, the store at capacity, timed inside a task on a
/// current-thread runtime (the load's spawn + join stays on one thread).
fn fetch_miss(c: &mut Criterion) {
    let rt = current_thread();
    let mut g = group(c, "fetch_miss");
    let capacity = 10_000;
    let value: Arc<str> = Arc::from("value");

    let cache = EchoCache::new(LruStore::<Arc<str>>::new(capacity).unwrap());
    let counter = Arc::new(AtomicUsize::new(0));
    {
        let (cache, counter, value) = (cache.clone(), counter.clone(), value.clone());
        rt.block_on(async move {
            for _ in 0..capacity {
                let k = format!("fill-{}", counter.fetch_add(1, Ordering::Relaxed));
                let v = value.clone();
                cache
                    .fetch(&k, move || async move { Ok::<_, Never>(v) })
                    .await
                    .unwrap();
            }
        });
    }
    let miss_once = |cache: EchoCache<Arc<str>, LruStore<Arc<str>>>,
                     counter: Arc<AtomicUsize>,
                     value: Arc<str>,
                     iters: u64| async move {
        let keys: Vec<String> = (0..iters)
            .map(|_| format!("miss-{}", counter.fetch_add(1, Ordering::Relaxed)))
            .collect();
        let start = Instant::now();
        for k in &keys {
            let v = value.clone();
            black_box(
                cache
                    .fetch(k, move || async move { Ok::<_, Never>(v) })
                    .await
                    .unwrap(),
            );
        }
        start.elapsed()
    };
    g.bench_function("echocache/arc_str", |b| {
        b.iter_custom(|iters| {
            let f = miss_once(cache.clone(), counter.clone(), value.clone(), iters);
            rt.block_on(async move { tokio::spawn(f).await.unwrap() })
        })
    });
    let before = echocache_benches::allocations();
    rt.block_on({
        let f = miss_once(cache.clone(), counter.clone(), value.clone(), ALLOC_SAMPLES);
        async move { tokio::spawn(f).await.unwrap() }
    });
    // The key strings are made before timing; subtract their one allocation each.
    let per_op = (echocache_benches::allocations() - before) as f64 / ALLOC_SAMPLES as f64 - 1.0;
    record("allocs/fetch_miss/echocache/arc_str", per_op);

    let moka: moka::future::Cache<String, Arc<str>> = moka::future::Cache::new(capacity as u64);
    g.bench_function("moka/arc_str", |b| {
        b.iter_custom(|iters| {
            let (moka, counter, value) = (moka.clone(), counter.clone(), value.clone());
            rt.block_on(async move {
                tokio::spawn(async move {
                    let keys: Vec<String> = (0..iters)
                        .map(|_| format!("miss-{}", counter.fetch_add(1, Ordering::Relaxed)))
                        .collect();
                    let start = Instant::now();
                    for k in keys {
                        black_box(moka.get_with(k, async { value.clone() }).await);
                    }
                    start.elapsed()
                })
                .await
                .unwrap()
            })
        })
    });
    let quick: Arc<quick_cache::sync::Cache<String, Arc<str>>> =
        Arc::new(quick_cache::sync::Cache::new(capacity));
    g.bench_function("quick_cache/arc_str", |b| {
        b.iter_custom(|iters| {
            let (quick, counter, value) = (quick.clone(), counter.clone(), value.clone());
            rt.block_on(async move {
                tokio::spawn(async move {
                    let keys: Vec<String> = (0..iters)
                        .map(|_| format!("miss-{}", counter.fetch_add(1, Ordering::Relaxed)))
                        .collect();
                    let start = Instant::now();
                    for k in &keys {
                        black_box(
                            quick
                                .get_or_insert_async(k, async { Ok::<_, Never>(value.clone()) })
                                .await
                                .unwrap(),
                        );
                    }
                    start.elapsed()
                })
                .await
                .unwrap()
            })
        })
    });
    g.finish();
}

/// Hit throughput from `tasks` tasks on a 2-worker multi-thread runtime.
fn fetch_concurrent(c: &mut Criterion) {
    let rt = multi_thread();
    let keys: Arc<Vec<String>> = Arc::new(keys());
    let mut g = group(c, "fetch_concurrent");
    g.throughput(Throughput::Elements(1));

    let echo = EchoCache::new(LruStore::<Arc<str>>::new(KEYS * 2).unwrap());
    let sharded = EchoCache::new(ShardedLruStore::<Arc<str>>::new(KEYS * 2).unwrap());
    let moka: moka::future::Cache<String, Arc<str>> = moka::future::Cache::new((KEYS * 2) as u64);
    let quick: Arc<quick_cache::sync::Cache<String, Arc<str>>> =
        Arc::new(quick_cache::sync::Cache::new(KEYS * 2));
    for k in keys.iter() {
        ready(echo.insert(k, Arc::from(k.as_str()))).unwrap();
        ready(sharded.insert(k, Arc::from(k.as_str()))).unwrap();
        ready(moka.insert(k.clone(), Arc::from(k.as_str())));
        quick.insert(k.clone(), Arc::from(k.as_str()));
    }

    for tasks in [1u64, 2, 4, 8] {
        let run = |op: Arc<dyn Fn(usize) + Send + Sync>, iters: u64| {
            let per_task = iters.div_ceil(tasks);
            rt.block_on(async move {
                let barrier = Arc::new(tokio::sync::Barrier::new(tasks as usize + 1));
                let handles: Vec<_> = (0..tasks)
                    .map(|t| {
                        let (op, barrier) = (op.clone(), barrier.clone());
                        tokio::spawn(async move {
                            barrier.wait().await;
                            for i in 0..per_task {
                                op((i as usize).wrapping_mul(7).wrapping_add(t as usize) % KEYS);
                            }
                        })
                    })
                    .collect();
                barrier.wait().await;
                let start = Instant::now();
                for h in handles {
                    h.await.unwrap();
                }
                start.elapsed()
            })
        };
        let echo_op: Arc<dyn Fn(usize) + Send + Sync> = {
            let (echo, keys) = (echo.clone(), keys.clone());
            Arc::new(move |i| {
                black_box(
                    ready(echo.fetch(&keys[i], || async { Ok::<Arc<str>, Never>(Arc::from("x")) }))
                        .unwrap(),
                );
            })
        };
        let sharded_op: Arc<dyn Fn(usize) + Send + Sync> = {
            let (sharded, keys) = (sharded.clone(), keys.clone());
            Arc::new(move |i| {
                black_box(
                    ready(
                        sharded.fetch(&keys[i], || async { Ok::<Arc<str>, Never>(Arc::from("x")) }),
                    )
                    .unwrap(),
                );
            })
        };
        let moka_op: Arc<dyn Fn(usize) + Send + Sync> = {
            let (moka, keys) = (moka.clone(), keys.clone());
            Arc::new(move |i| {
                black_box(ready(
                    moka.get_with_by_ref(&keys[i], async { Arc::from("x") }),
                ));
            })
        };
        let quick_op: Arc<dyn Fn(usize) + Send + Sync> = {
            let (quick, keys) = (quick.clone(), keys.clone());
            Arc::new(move |i| {
                black_box(
                    ready(quick.get_or_insert_async(&keys[i], async {
                        Ok::<Arc<str>, Never>(Arc::from("x"))
                    }))
                    .unwrap(),
                );
            })
        };
        for (name, op) in [
            ("echocache", echo_op),
            ("echocache_sharded", sharded_op),
            ("moka", moka_op),
            ("quick_cache", quick_op),
        ] {
            g.bench_with_input(BenchmarkId::new(name, tasks), &tasks, |b, _| {
                b.iter_custom(|iters| run(op.clone(), iters))
            });
        }
    }
    g.finish();
    assert_only_hits("fetch_concurrent/echocache", &echo.stats());
    assert_only_hits("fetch_concurrent/echocache_sharded", &sharded.stats());
    peers_only_hit("fetch_concurrent", &keys, &quick, &moka);
}

fn lazy(c: &mut Criterion) {
    let rt = multi_thread();
    let _guard = rt.enter();
    let keys = keys();
    let mut g = group(c, "lazy");

    let fresh = LazyEchoCache::builder(LruStore::<Arc<str>>::new(KEYS * 2).unwrap())
        .refresh_after(Duration::from_secs(3600))
        .build()
        .unwrap();
    for k in &keys {
        ready(fresh.insert(k, Arc::from(k.as_str()))).unwrap();
    }
    hit(&mut g, "lazy_hit/echocache/arc_str", |i| {
        black_box(
            ready(fresh.fetch(&keys[i], || async { Ok::<Arc<str>, Never>(Arc::from("x")) }))
                .unwrap(),
        );
    });

    // Stale entries whose refresh is already pending (its loader never finishes).
    let store = LruStore::<Arc<str>>::new(KEYS * 2).unwrap();
    let old = SystemTime::now() - Duration::from_secs(120);
    for k in &keys {
        ready(store.set(k, &Entry::new(Arc::from(k.as_str()), old))).unwrap();
    }
    let stale = LazyEchoCache::builder(store)
        .refresh_after(Duration::from_secs(60))
        .load_timeout(Duration::from_secs(24 * 3600))
        .workers(KEYS)
        .queue_capacity(KEYS * 2)
        .build()
        .unwrap();
    for k in &keys {
        let v = ready(stale.fetch(k, std::future::pending::<Result<Arc<str>, Never>>)).unwrap();
        black_box(v);
    }
    assert_eq!(
        stale.refreshes_pending(),
        KEYS,
        "every key has a refresh pending"
    );
    hit(&mut g, "lazy_stale_hit/echocache/arc_str", |i| {
        black_box(
            ready(stale.fetch(&keys[i], || async { Ok::<Arc<str>, Never>(Arc::from("x")) }))
                .unwrap(),
        );
    });
    g.finish();
    assert_only_hits("lazy/lazy_hit", &fresh.stats());
    let s = stale.stats();
    assert!(
        s.misses == 0
            && s.hits == 0
            && s.refreshes_dropped == 0
            && stale.refreshes_pending() == KEYS,
        "lazy/lazy_stale_hit: every fetch should have been a stale hit, its refresh \
         pending from the setup: {s:?}"
    );
}

fn stores(c: &mut Criterion) {
    let keys = keys();
    let now = SystemTime::now();
    let mut g = group(c, "store");

    let lru = LruStore::<Arc<str>>::new(KEYS * 2).unwrap();
    let expiring = ExpiringLruStore::<Arc<str>>::new(KEYS * 2, Duration::from_secs(3600)).unwrap();
    let single = SingleStore::<Arc<str>>::new(Duration::from_secs(3600)).unwrap();
    let entry = Entry::new(Arc::<str>::from("value"), now);
    for k in &keys {
        ready(lru.set(k, &entry)).unwrap();
        ready(expiring.set(k, &entry)).unwrap();
    }
    ready(single.set(&keys[0], &entry)).unwrap();

    hit(&mut g, "lru_get/arc_str", |i| {
        black_box(ready(lru.get(&keys[i])).unwrap());
    });
    hit(&mut g, "lru_set/arc_str", |i| {
        ready(lru.set(&keys[i], &entry)).unwrap();
    });
    hit(&mut g, "expiring_lru_get/arc_str", |i| {
        black_box(ready(expiring.get(&keys[i])).unwrap());
    });
    hit(&mut g, "expiring_lru_set/arc_str", |i| {
        ready(expiring.set(&keys[i], &entry)).unwrap();
    });
    hit(&mut g, "single_get/arc_str", |_| {
        black_box(ready(single.get(&keys[0])).unwrap());
    });
    hit(&mut g, "single_set/arc_str", |_| {
        ready(single.set(&keys[0], &entry)).unwrap();
    });
    g.finish();
}

/// Single-flight at scale: 10 000 concurrent fetches of one cold key, and a stampede of
/// 10 callers on each of 1 000 cold keys.
fn single_flight(c: &mut Criterion) {
    let rt = multi_thread();
    let mut g = group(c, "single_flight");
    g.sample_size(10);
    let calls = Arc::new(AtomicUsize::new(0));
    let stampede = |callers_per_key: usize, keys: usize, calls: Arc<AtomicUsize>| {
        rt.block_on(async move {
            let cache = EchoCache::new(LruStore::<Arc<str>>::new(keys.max(1) * 2).unwrap());
            let barrier = Arc::new(tokio::sync::Barrier::new(callers_per_key * keys + 1));
            let handles: Vec<_> = (0..callers_per_key * keys)
                .map(|n| {
                    let (cache, barrier, calls) = (cache.clone(), barrier.clone(), calls.clone());
                    tokio::spawn(async move {
                        let key = format!("cold-{}", n % keys);
                        barrier.wait().await;
                        cache
                            .fetch(&key, move || async move {
                                calls.fetch_add(1, Ordering::Relaxed);
                                tokio::task::yield_now().await;
                                Ok::<Arc<str>, Never>(Arc::from("v"))
                            })
                            .await
                            .unwrap()
                    })
                })
                .collect();
            barrier.wait().await;
            let start = Instant::now();
            for h in handles {
                black_box(h.await.unwrap());
            }
            start.elapsed()
        })
    };
    let mut runs = 0u64;
    g.bench_function("one_key_10000_callers", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    runs += 1;
                    stampede(10_000, 1, calls.clone())
                })
                .sum()
        })
    });
    record(
        "loader_calls_per_run/single_flight/one_key_10000_callers",
        calls.swap(0, Ordering::Relaxed) as f64 / runs as f64,
    );
    let mut runs = 0u64;
    g.bench_function("1000_keys_10_callers_each", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    runs += 1;
                    stampede(10, 1000, calls.clone())
                })
                .sum()
        })
    });
    record(
        "loader_calls_per_run/single_flight/1000_keys_10_callers_each",
        calls.swap(0, Ordering::Relaxed) as f64 / runs as f64,
    );
    g.finish();
}

fn finish(_: &mut Criterion) {
    save_figures();
}

fn config() -> Criterion {
    let quick = std::env::var_os("ECHOCACHE_BENCH_QUICK").is_some();
    let c = Criterion::default().configure_from_args();
    if quick {
        c.warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(1))
            .sample_size(20)
    } else {
        c.warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3))
    }
}

criterion_group! {
    name = benches;
    config = config();
    targets = fetch_hit, fetch_miss, fetch_concurrent, lazy, stores, footprint::memory_footprint,
        single_flight, backends::redis, backends::nats, fleet::redis, fleet::nats, outage::outage, tiered::tiered_benches, finish
}
criterion_main!(benches);
