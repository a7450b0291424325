//! What the fleet guarantees cost (issue 15): the ordered write of a loaded value, the
//! store lock a miss takes, and how long a process waiting for another's load takes to
//! see its value.
//!
//! For each backend (group `fleet_redis`, `fleet_nats`), one request after the other on a
//! current-thread runtime:
//!
//! - `write/plain` vs `write/ordered`: the write path of a load without and with ordering:
//!   `get` + `set` against `get_versioned` + `set_if_version` (the Lua compare-and-set on
//!   Redis, the revision-checked update on NATS). Every ordered write must succeed (it is
//!   checked): the bench measures writes, not refusals.
//! - `miss/lock_off` vs `miss/lock_on`: `EchoCache::fetch` of a missing key (a loader that
//!   returns at once), with `fleet_single_flight` off and on; the key is invalidated
//!   again after each timed fetch, outside the timing. Checked: one load per fetch.
//!
//! Then, outside criterion, the wait: process A (its own client) loads a key for 20 ms
//! while process B (another client) waits for it (B polls the store, pausing a quarter
//! of the time waited so far, 2 ms to 50 ms, or until its store hears of a change). Over
//! [`WAIT_TRIALS`] trials, the time
//! from A's `fetch` returning (its value is written) to B's returning is recorded as
//! `fleet/{backend}/wait_after_value_ms/{p50,p99,max}`; for Redis once more through tiered
//! stores (`redis_tiered`), whose backplane tells B of A's write (`Store::changed`).
//!
//! Servers as in `backends.rs` (skipped with a message when unreachable); keys under a
//! prefix (Redis, expiring after 10 minutes) or in a bucket (NATS, deleted at the end)
//! unique to the run.

use std::future::Future;
use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime};

use criterion::{Criterion, Throughput};
use echocache::store::{
    BucketOptions, LruStore, NatsStore, RedisBackplane, RedisStore, open_or_create_bucket,
};
use echocache::{EchoCache, Entry, L1Entry, Store, TieredStore};
use echocache_benches::record;

use crate::{Never, current_thread, multi_thread};

/// Keys cycled through.
const KEYS: usize = 100;
/// Trials of the waiting-process measurement.
const WAIT_TRIALS: usize = 40;
/// How long the loading process's loader takes in the wait measurement.
const LOAD_TIME: Duration = Duration::from_millis(20);
const TTL: Duration = Duration::from_secs(600);

fn run_name() -> String {
    let ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    format!("echocache-fleet-bench-{}-{ms}", std::process::id())
}

fn env_url(var: &str, default: &str) -> String {
    std::env::var(var)
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// The keys of the write benches.
fn key(i: u64) -> String {
    format!("k{}", i % KEYS as u64)
}

/// The keys of the miss benches (never written by the write benches).
fn miss_key(i: u64) -> String {
    format!("m{}", i % KEYS as u64)
}

/// `fleet_redis`: see the module docs.
pub(crate) fn redis(c: &mut Criterion) {
    let url = env_url("ECHOCACHE_REDIS_URL", "redis://127.0.0.1:6379");
    let prefix = run_name();
    let connect = |rt: &tokio::runtime::Runtime| {
        rt.block_on(async {
            tokio::time::timeout(
                Duration::from_secs(3),
                RedisStore::<String>::connect(&url, &prefix, TTL),
            )
            .await
            .map_err(|_| "connect timed out".to_owned())?
            .map_err(|e| e.to_string())
        })
    };
    let rt = current_thread();
    let store = match connect(&rt) {
        // Tombstones left by the bench's invalidations expire soon.
        Ok(store) => store.tombstone_ttl(Duration::from_secs(5)),
        Err(e) => {
            eprintln!("fleet: Redis at {url} cannot be reached ({e}); skipping its benches");
            return;
        }
    };
    if let Err(e) = benches(c, "fleet_redis", &rt, &store) {
        eprintln!("fleet: Redis benches stopped: {e}");
        return;
    }
    let wait_rt = multi_thread();
    let stores = (connect(&wait_rt), connect(&wait_rt));
    match stores {
        (Ok(a), Ok(b)) => wait_after_value("redis", &wait_rt, a, b),
        _ => eprintln!("fleet: Redis wait measurement not run: cannot connect twice"),
    }
    // The same through tiered stores, whose backplane tells the waiter of the write.
    let tiered = |rt: &tokio::runtime::Runtime| {
        rt.block_on(async {
            let l2 = RedisStore::<String>::connect(&url, &format!("{prefix}-tiered"), TTL)
                .await
                .map_err(|e| e.to_string())?;
            let backplane = RedisBackplane::connect(&url, &format!("{prefix}-tiered"))
                .await
                .map_err(|e| e.to_string())?;
            let store = TieredStore::new(
                LruStore::<L1Entry<String>>::new(1_000).map_err(|e| e.to_string())?,
                l2,
                backplane,
            );
            let since = std::time::Instant::now();
            while !store.is_l1_serving() && since.elapsed() < Duration::from_secs(3) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Ok::<_, String>(store)
        })
    };
    match (tiered(&wait_rt), tiered(&wait_rt)) {
        (Ok(a), Ok(b)) => wait_after_value("redis_tiered", &wait_rt, a, b),
        _ => eprintln!("fleet: tiered wait measurement not run: cannot connect twice"),
    }
}

/// `fleet_nats`: see the module docs.
pub(crate) fn nats(c: &mut Criterion) {
    let url = env_url("ECHOCACHE_NATS_URL", "nats://127.0.0.1:4222");
    let bucket = run_name();
    let connect = |rt: &tokio::runtime::Runtime| {
        rt.block_on(async {
            let client = tokio::time::timeout(Duration::from_secs(3), async_nats::connect(&url))
                .await
                .map_err(|_| "connect timed out".to_owned())?
                .map_err(|e| e.to_string())?;
            let js = async_nats::jetstream::new(client);
            let kv = open_or_create_bucket(&js, &bucket, &BucketOptions::new())
                .await
                .map_err(|e| e.to_string())?;
            NatsStore::<String>::new(kv, "bench")
                .map(|s| (s, js))
                .map_err(|e| e.to_string())
        })
    };
    let rt = current_thread();
    let (store, js) = match connect(&rt) {
        Ok(side) => side,
        Err(e) => {
            eprintln!("fleet: NATS at {url} cannot be reached ({e}); skipping its benches");
            return;
        }
    };
    if let Err(e) = benches(c, "fleet_nats", &rt, &store) {
        eprintln!("fleet: NATS benches stopped: {e}");
    } else {
        let wait_rt = multi_thread();
        match (connect(&wait_rt), connect(&wait_rt)) {
            (Ok((a, _)), Ok((b, _))) => wait_after_value("nats", &wait_rt, a, b),
            _ => eprintln!("fleet: NATS wait measurement not run: cannot connect twice"),
        }
    }
    rt.block_on(async {
        let _ = js.delete_key_value(&bucket).await;
    });
}

/// Times `op(i)` for `iters` calls, running `after(i)` after each call outside the timing.
fn timed<Op, OpFut, After, AfterFut>(
    rt: &tokio::runtime::Runtime,
    iters: u64,
    op: Op,
    after: After,
) -> Duration
where
    Op: Fn(u64) -> OpFut,
    OpFut: Future<Output = ()>,
    After: Fn(u64) -> AfterFut,
    AfterFut: Future<Output = ()>,
{
    rt.block_on(async {
        let mut total = Duration::ZERO;
        for i in 0..iters {
            let start = Instant::now();
            op(i).await;
            total += start.elapsed();
            after(i).await;
        }
        total
    })
}

fn benches<S: Store<String> + Clone>(
    c: &mut Criterion,
    group: &str,
    rt: &tokio::runtime::Runtime,
    store: &S,
) -> Result<(), String> {
    let entry = &Entry::new("v".repeat(100), SystemTime::now());
    // Both write paths must write: check once before measuring.
    rt.block_on(async {
        let (_, version) = store.get_versioned("k0").await.map_err(|e| e.to_string())?;
        match store.set_if_version("k0", entry, &version).await {
            Ok(true) => Ok(()),
            Ok(false) => Err("an ordered write with the version just read was refused".to_owned()),
            Err(e) => Err(e.to_string()),
        }
    })?;
    let refused = std::cell::Cell::new(0u64);
    let lock_off = EchoCache::builder(store.clone())
        .fleet_single_flight(false)
        .build()
        .map_err(|e| e.to_string())?;
    let lock_on = EchoCache::new(store.clone());
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements(1));
    g.bench_function("write/plain", |b| {
        b.iter_custom(|iters| {
            timed(
                rt,
                iters,
                |i| async move {
                    let k = key(i);
                    black_box(store.get(&k).await.ok());
                    black_box(store.set(&k, entry).await.ok());
                },
                |_| async {},
            )
        })
    });
    g.bench_function("write/ordered", |b| {
        b.iter_custom(|iters| {
            timed(
                rt,
                iters,
                |i| {
                    let refused = &refused;
                    async move {
                        let k = key(i);
                        if let Ok((_, version)) = store.get_versioned(&k).await
                            && !matches!(store.set_if_version(&k, entry, &version).await, Ok(true))
                        {
                            refused.set(refused.get() + 1);
                        }
                    }
                },
                |_| async {},
            )
        })
    });
    for (name, cache) in [("miss/lock_off", &lock_off), ("miss/lock_on", &lock_on)] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                timed(
                    rt,
                    iters,
                    |i| async move {
                        let v = cache
                            .fetch(&miss_key(i), || async { Ok::<_, Never>(String::from("v")) })
                            .await;
                        black_box(v.ok());
                    },
                    |i| async move {
                        let _ = cache.invalidate(&miss_key(i)).await;
                    },
                )
            })
        });
    }
    g.finish();
    if refused.get() > 0 {
        return Err(format!(
            "{} ordered writes were refused: the bench did not measure writes only",
            refused.get()
        ));
    }
    for (name, cache) in [("lock_off", &lock_off), ("lock_on", &lock_on)] {
        let s = cache.stats();
        if s.hits != 0 || s.store_errors != 0 || s.fleet_waits != 0 {
            return Err(format!(
                "miss/{name}: every fetch should have been a miss with no store error: {s:?}"
            ));
        }
    }
    Ok(())
}

/// The wait measurement (see the module docs), on caches over `a` and `b`.
fn wait_after_value<S: Store<String>>(backend: &str, rt: &tokio::runtime::Runtime, a: S, b: S) {
    let a = EchoCache::new(a);
    let b = EchoCache::new(b);
    let extra = rt.block_on(async {
        let mut extra = Vec::with_capacity(WAIT_TRIALS);
        for trial in 0..WAIT_TRIALS {
            let k = format!("wait-{trial}");
            let (started_tx, started) = tokio::sync::oneshot::channel();
            let loading = tokio::spawn({
                let (a, k) = (a.clone(), k.clone());
                async move {
                    let v = a
                        .fetch(&k, move || async move {
                            let _ = started_tx.send(());
                            tokio::time::sleep(LOAD_TIME).await;
                            Ok::<_, Never>("a".to_owned())
                        })
                        .await;
                    (v, Instant::now())
                }
            });
            if started.await.is_err() {
                continue;
            }
            let waiting = tokio::spawn({
                let (b, k) = (b.clone(), k.clone());
                async move {
                    let v = b
                        .fetch(&k, || async { Ok::<_, Never>("b".to_owned()) })
                        .await;
                    (v, Instant::now())
                }
            });
            let ((va, a_done), (vb, b_done)) = match (loading.await, waiting.await) {
                (Ok(a), Ok(b)) => (a, b),
                _ => continue,
            };
            // Only trials where B waited for A's value count.
            if va.ok().as_deref() == Some("a") && vb.ok().as_deref() == Some("a") {
                extra.push(b_done.saturating_duration_since(a_done));
            }
            let _ = a.invalidate(&k).await;
        }
        extra
    });
    if extra.len() < WAIT_TRIALS / 2 {
        eprintln!(
            "fleet: {backend}: only {} of {WAIT_TRIALS} trials had B wait for A's value; \
             nothing recorded ({:?})",
            extra.len(),
            b.stats()
        );
        return;
    }
    let mut ms: Vec<f64> = extra.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    let rank = |p: f64| ms[((p * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1];
    record(
        &format!("fleet/{backend}/wait_after_value_ms/p50"),
        rank(0.5),
    );
    record(
        &format!("fleet/{backend}/wait_after_value_ms/p99"),
        rank(0.99),
    );
    record(
        &format!("fleet/{backend}/wait_after_value_ms/max"),
        ms[ms.len() - 1],
    );
    record(
        &format!("fleet/{backend}/wait_after_value/trials"),
        ms.len() as f64,
    );
}
