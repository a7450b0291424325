//! Backends (DESIGN §7, "Redis hit ≤ 1.1× a raw fred GET of the same bytes; NATS hit ≤
//! 1.1× a raw KV get"): hits through [`RedisStore`] and [`NatsStore`], each beside the raw
//! client reading the same bytes of the same key, and `redis-benchmark` against the same
//! Redis for scale.
//!
//! For each backend, and each path (an `EchoCache::fetch` hit through the store, the
//! store's own `get`, the raw client):
//!
//! - `hit/{path}`: one request after the other, timed inside `block_on` of a
//!   current-thread runtime (the client's connection task runs on the same thread): the
//!   latency of one hit, i.e. one round trip plus what the path adds.
//! - `in_flight_64/{path}`: 64 tasks on a 2-worker multi-thread runtime, each doing its
//!   share of the gets one after the other, so that 64 requests are in flight; the time
//!   reported is wall time per get (`Throughput::Elements(1)`), i.e. 1 / throughput.
//!
//! Allocations per hit (sequential, counted over the whole process) are recorded as
//! `allocs/{group}/hit/{path}`. Then every path runs again, interleaved with the others in
//! short rounds, for its ratio to the raw client under the same conditions:
//! `ratio/{group}/hit/{path}` and `ratio/{group}/in_flight_64/{path}` (what the report
//! judges the DESIGN target by), with the median time per call of those rounds,
//! `interleaved/{group}/…`. `redis-benchmark -q -c 50 -n 100000 -t get` runs last
//! against the same server: `redis_benchmark/get_rps`.
//!
//! Servers: `ECHOCACHE_REDIS_URL` (default `redis://127.0.0.1:6379`) and
//! `ECHOCACHE_NATS_URL` (default `nats://127.0.0.1:4222`, JetStream enabled). Keys go under
//! a prefix (Redis) or into a bucket (NATS) unique to this run, and are deleted at the end
//! (they also expire after 10 minutes, should the run be killed). A server that cannot be
//! reached is reported on stderr and its benches are skipped; nothing is recorded for it.

use std::cell::Cell;
use std::future::Future;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, kv, stream::StorageType};
use criterion::{Criterion, Throughput};
use echocache::store::{BucketOptions, NatsStore, RedisStore, open_or_create_bucket};
use echocache::{EchoCache, Entry, Store};
use echocache_benches::{Runner, allocations, assert_only_hits, interleaved, record};
use echocache_redis::DEFAULT_MAX_VALUE_BYTES;
use echocache_redis::fred::bytes::Bytes;
use echocache_redis::fred::prelude::{
    Builder, Client, ClientLike, Config, Expiration, KeysInterface, SetOptions,
};

use crate::{Never, current_thread, multi_thread};

/// Keys cycled through (each holds the same value).
const KEYS: usize = 100;
/// Requests in flight in the throughput benches.
const IN_FLIGHT: usize = 64;
/// The value: a string of this many bytes.
const VALUE_LEN: usize = 100;
/// Sequential hits whose allocations are counted.
const ALLOC_SAMPLES: u64 = 1_000;
/// Rounds of the interleaved ratio measurement, and calls per path and round.
const ROUNDS: usize = 25;
const SEQ_CALLS_PER_ROUND: u64 = 200;
const PAR_CALLS_PER_ROUND: u64 = 16 * IN_FLIGHT as u64;
/// How long the entries written live on the server, should the run be killed.
const TTL: Duration = Duration::from_secs(600);
/// How long connecting may take before the server counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A name unique to this run: `echocache-bench-{pid}-{ms since epoch}`.
fn run_name() -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("echocache-bench-{}-{ms}", std::process::id())
}

fn keys() -> Arc<Vec<String>> {
    Arc::new((0..KEYS).map(|i| format!("bench-key-{i}")).collect())
}

fn value() -> String {
    "v".repeat(VALUE_LEN)
}

fn env_url(var: &str, default: &str) -> String {
    std::env::var(var)
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// `op(i)` one call after the other, timed inside `block_on` of the current-thread `rt`.
fn sequential<'a, F, Fut>(rt: &'a tokio::runtime::Runtime, op: F) -> Runner<'a>
where
    F: Fn(usize) -> Fut + 'a,
    Fut: Future<Output = usize>,
{
    Box::new(move |iters| {
        rt.block_on(async {
            let start = Instant::now();
            for i in 0..iters {
                black_box(op(i as usize % KEYS).await);
            }
            start.elapsed()
        })
    })
}

/// `iters` calls of `op` spread over [`IN_FLIGHT`] tasks on the multi-thread `rt` (each
/// task calls it one after the other), timed from their release to the last one's end.
fn in_flight<F, Fut>(rt: &tokio::runtime::Runtime, op: F) -> Runner<'_>
where
    F: Fn(usize) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = usize> + Send + 'static,
{
    Box::new(move |iters| {
        let per_task = iters.div_ceil(IN_FLIGHT as u64);
        let op = op.clone();
        let elapsed = rt.block_on(async move {
            let barrier = Arc::new(tokio::sync::Barrier::new(IN_FLIGHT + 1));
            let handles: Vec<_> = (0..IN_FLIGHT)
                .map(|t| {
                    let (op, barrier) = (op.clone(), barrier.clone());
                    tokio::spawn(async move {
                        barrier.wait().await;
                        for i in 0..per_task as usize {
                            black_box(op((t + i * IN_FLIGHT) % KEYS).await);
                        }
                    })
                })
                .collect();
            barrier.wait().await;
            let start = Instant::now();
            for h in handles {
                h.await.expect("a bench task panicked");
            }
            start.elapsed()
        });
        // Exactly `per_task * IN_FLIGHT` calls were made: scale to `iters`.
        elapsed.mul_f64(iters as f64 / (per_task * IN_FLIGHT as u64) as f64)
    })
}

/// The benches of one backend, in the criterion group `group`: each sequential path as
/// `hit/{path}` (with its allocations per call), each in-flight path as
/// `in_flight_64/{path}`, then both sets again interleaved for their ratios to the raw
/// client, which must be the last path of each set.
///
/// Returns whether criterion ran any of them: with a filter that leaves them all out
/// (`cargo bench -- fetch_hit`), nothing is measured or recorded.
fn bench_paths(
    c: &mut Criterion,
    group: &str,
    seq: &[(&str, Runner<'_>)],
    par: &[(&str, Runner<'_>)],
) -> bool {
    let ran = Cell::new(false);
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements(1));
    for (path, run) in seq {
        g.bench_function(format!("hit/{path}"), |b| {
            b.iter_custom(|iters| {
                ran.set(true);
                run(iters)
            })
        });
    }
    for (path, run) in par {
        g.bench_function(format!("in_flight_{IN_FLIGHT}/{path}"), |b| {
            b.iter_custom(|iters| {
                ran.set(true);
                run(iters)
            })
        });
    }
    g.finish();
    if !ran.get() {
        return false;
    }
    for (path, run) in seq {
        let before = allocations();
        run(ALLOC_SAMPLES);
        let per_op = (allocations() - before) as f64 / ALLOC_SAMPLES as f64;
        record(&format!("allocs/{group}/hit/{path}"), per_op);
    }
    interleaved(&format!("{group}/hit"), seq, ROUNDS, SEQ_CALLS_PER_ROUND);
    interleaved(
        &format!("{group}/in_flight_{IN_FLIGHT}"),
        par,
        ROUNDS,
        PAR_CALLS_PER_ROUND,
    );
    true
}

/// Runs `op(0)` once and checks it returned `expected` bytes (a hit, of the right size).
fn check<Fut: Future<Output = usize>>(
    rt: &tokio::runtime::Runtime,
    what: &str,
    expected: impl Fn(usize) -> bool,
    op: impl Fn(usize) -> Fut,
) -> Result<(), String> {
    let got = rt.block_on(op(0));
    if expected(got) {
        Ok(())
    } else {
        Err(format!(
            "{what} returned {got} bytes for a key just written"
        ))
    }
}

// ----------------------------------------------------------------------------- Redis

/// What one runtime needs to talk to Redis: its own client (fred runs the connection on
/// the runtime that connected it).
struct RedisSide {
    client: Client,
    cache: EchoCache<String, RedisStore<String>>,
    keys: Arc<Vec<String>>,
    data_keys: Arc<Vec<String>>,
}

async fn redis_side(url: &str, prefix: &str) -> Result<RedisSide, String> {
    let config = Config::from_url(url).map_err(|e| format!("bad URL `{url}`: {e}"))?;
    let client = Builder::from_config(config)
        .with_connection_config(|c| {
            c.connection_timeout = CONNECT_TIMEOUT;
            c.internal_command_timeout = CONNECT_TIMEOUT;
        })
        .with_performance_config(|c| c.default_command_timeout = Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    // No reconnect policy: a server that does not answer fails `init` at once.
    tokio::time::timeout(CONNECT_TIMEOUT * 2, client.init())
        .await
        .map_err(|_| "timed out connecting".to_owned())?
        .map_err(|e| e.to_string())?;
    let store = RedisStore::new(&client, prefix, TTL).map_err(|e| e.to_string())?;
    let keys = keys();
    let data_keys = Arc::new(keys.iter().map(|k| store.data_key(k)).collect());
    Ok(RedisSide {
        client,
        cache: EchoCache::new(store),
        keys,
        data_keys,
    })
}

impl RedisSide {
    fn store(&self) -> &RedisStore<String> {
        self.cache.store()
    }
}

pub(crate) fn redis(c: &mut Criterion) {
    let url = env_url("ECHOCACHE_REDIS_URL", "redis://127.0.0.1:6379");
    let prefix = run_name();
    let seq_rt = current_thread();
    let par_rt = multi_thread();
    let sides = seq_rt
        .block_on(redis_side(&url, &prefix))
        .and_then(|seq| Ok((seq, par_rt.block_on(redis_side(&url, &prefix))?)));
    let (seq, par) = match sides {
        Ok(sides) => sides,
        Err(e) => {
            eprintln!(
                "backends: Redis at {url} cannot be reached ({e}); skipping the Redis benches \
                 (nothing recorded). Set ECHOCACHE_REDIS_URL, or run `cargo xtask bench`, which \
                 finds or starts a server."
            );
            return;
        }
    };
    let value = value();
    let written = seq_rt.block_on(async {
        let now = SystemTime::now();
        for k in seq.keys.iter() {
            seq.store()
                .set(k, &Entry::new(value.clone(), now))
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok::<_, String>(())
    });
    let result = written.and_then(|()| redis_benches(c, &seq_rt, &par_rt, &seq, &par, &url));
    if let Err(e) = result {
        eprintln!("backends: Redis benches stopped: {e}");
    }
    seq_rt.block_on(async {
        for k in seq.keys.iter() {
            let _ = seq.store().remove(k).await;
        }
        let _ = seq.client.quit().await;
    });
    par_rt.block_on(async {
        let _ = par.client.quit().await;
    });
}

fn redis_benches(
    c: &mut Criterion,
    seq_rt: &tokio::runtime::Runtime,
    par_rt: &tokio::runtime::Runtime,
    seq: &RedisSide,
    par: &RedisSide,
    url: &str,
) -> Result<(), String> {
    // Each call clones two `Arc`s (a handle and the keys), the same for every path, so
    // that its future owns what it uses (`in_flight` spawns it). A handle that is not an
    // `Arc` already is put in one: cloning a `RedisStore` or a `kv::Store` allocates.
    let fetch = |s: &RedisSide| {
        let (cache, keys) = (s.cache.clone(), s.keys.clone());
        move |i: usize| {
            let (cache, keys) = (cache.clone(), keys.clone());
            async move {
                cache
                    .fetch(&keys[i], || async { Ok::<_, Never>(String::new()) })
                    .await
                    .map_or(0, |v| v.len())
            }
        }
    };
    let store_get = |s: &RedisSide| {
        let (store, keys) = (Arc::new(s.store().clone()), s.keys.clone());
        move |i: usize| {
            let (store, keys) = (store.clone(), keys.clone());
            async move {
                store
                    .get(&keys[i])
                    .await
                    .ok()
                    .flatten()
                    .map_or(0, |e| e.value.len())
            }
        }
    };
    let raw_get = |s: &RedisSide| {
        let (client, data_keys) = (Arc::new(s.client.clone()), s.data_keys.clone());
        move |i: usize| {
            let (client, data_keys) = (client.clone(), data_keys.clone());
            async move {
                client
                    .get::<Option<Bytes>, _>(data_keys[i].as_str())
                    .await
                    .ok()
                    .flatten()
                    .map_or(0, |b| b.len())
            }
        }
    };
    // The store's own command: GETRANGE key 0 max.
    let raw_getrange = |s: &RedisSide| {
        let (client, data_keys) = (Arc::new(s.client.clone()), s.data_keys.clone());
        move |i: usize| {
            let (client, data_keys) = (client.clone(), data_keys.clone());
            async move {
                client
                    .getrange::<Option<Bytes>, _>(data_keys[i].as_str(), 0, DEFAULT_MAX_VALUE_BYTES)
                    .await
                    .ok()
                    .flatten()
                    .map_or(0, |b| b.len())
            }
        }
    };
    let is_value = |n: usize| n == VALUE_LEN;
    let is_envelope = |n: usize| n > VALUE_LEN;
    check(seq_rt, "EchoCache::fetch", is_value, fetch(seq))?;
    check(seq_rt, "RedisStore::get", is_value, store_get(seq))?;
    check(seq_rt, "GET", is_envelope, raw_get(seq))?;
    check(seq_rt, "GETRANGE", is_envelope, raw_getrange(seq))?;

    let ran = bench_paths(
        c,
        "redis",
        &[
            ("echocache_fetch", sequential(seq_rt, fetch(seq))),
            ("store_get", sequential(seq_rt, store_get(seq))),
            ("raw_getrange", sequential(seq_rt, raw_getrange(seq))),
            ("raw_get", sequential(seq_rt, raw_get(seq))),
        ],
        &[
            ("echocache_fetch", in_flight(par_rt, fetch(par))),
            ("store_get", in_flight(par_rt, store_get(par))),
            ("raw_getrange", in_flight(par_rt, raw_getrange(par))),
            ("raw_get", in_flight(par_rt, raw_get(par))),
        ],
    );
    for (side, name) in [(seq, "sequential"), (par, "in-flight")] {
        assert_only_hits(
            &format!("the {name} Redis fetch benches"),
            &side.cache.stats(),
        );
    }

    if !ran {
        return Ok(());
    }
    // redis-benchmark on the same server, GETting the same bytes.
    let envelope: Option<Bytes> = seq_rt
        .block_on(seq.client.get(seq.data_keys[0].as_str()))
        .map_err(|e| e.to_string())?;
    match redis_benchmark(seq_rt, &seq.client, url, envelope) {
        Ok(rps) => {
            eprintln!("backends: redis-benchmark -c 50 -t get: {rps:.0} GET/s");
            record("redis_benchmark/get_rps", rps);
        }
        Err(e) => eprintln!("backends: redis-benchmark not run: {e}"),
    }
    Ok(())
}

/// `redis-benchmark`'s host, port and credentials for a
/// `redis://[user[:password]@]host[:port][/db]` URL.
fn redis_benchmark_args(url: &str) -> Result<Vec<String>, String> {
    let rest = url
        .strip_prefix("redis://")
        .ok_or_else(|| format!("redis-benchmark needs a redis:// URL, not `{url}`"))?;
    let rest = rest.split(['/', '?']).next().unwrap_or(rest);
    let (auth, host_port) = rest
        .rsplit_once('@')
        .map_or((None, rest), |(a, h)| (Some(a), h));
    let (host, port) = host_port
        .rsplit_once(':')
        .filter(|(_, p)| p.parse::<u16>().is_ok())
        .unwrap_or((host_port, "6379"));
    let mut args = vec!["-h".into(), host.into(), "-p".into(), port.into()];
    if let Some(auth) = auth {
        match auth.split_once(':') {
            Some(("", password)) => args.extend(["-a".into(), password.into()]),
            Some((user, password)) => {
                args.extend(["--user".into(), user.into(), "-a".into(), password.into()]);
            }
            None => args.extend(["-a".into(), auth.into()]),
        }
    }
    Ok(args)
}

/// Runs `redis-benchmark -q -c 50 -n 100000 -t get` against the server at `url` and returns
/// its GETs per second. The key it reads (`key:__rand_int__`) is given `value` for the run
/// if it does not exist, and deleted after.
fn redis_benchmark(
    rt: &tokio::runtime::Runtime,
    client: &Client,
    url: &str,
    value: Option<Bytes>,
) -> Result<f64, String> {
    const KEY: &str = "key:__rand_int__";
    let mut args = redis_benchmark_args(url)?;
    args.extend(
        ["-q", "-c", "50", "-n", "100000", "-t", "get"]
            .iter()
            .map(|a| (*a).to_owned()),
    );
    let created = match value {
        Some(value) => rt
            .block_on(client.set::<Option<String>, _, _>(
                KEY,
                value,
                Some(Expiration::EX(TTL.as_secs() as i64)),
                Some(SetOptions::NX),
                false,
            ))
            .is_ok_and(|r| r.is_some()),
        None => false,
    };
    let output = std::process::Command::new("redis-benchmark")
        .args(&args)
        .output();
    if created {
        let _ = rt.block_on(client.del::<(), _>(KEY));
    }
    let output = output.map_err(|e| format!("cannot run redis-benchmark: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "redis-benchmark failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    parse_redis_benchmark(&String::from_utf8_lossy(&output.stdout))
        .ok_or_else(|| "no `GET: … requests per second` in its output".to_owned())
}

/// The rate in `GET: 107991.36 requests per second, p50=0.231 msec` (progress lines
/// before it are separated by `\r`).
fn parse_redis_benchmark(out: &str) -> Option<f64> {
    out.split(['\r', '\n'])
        .filter(|l| l.contains("requests per second"))
        .find_map(|l| {
            l.trim()
                .strip_prefix("GET:")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .filter(|rps: &f64| rps.is_finite() && *rps > 0.0)
}

// ----------------------------------------------------------------------------- NATS

/// What one runtime needs to talk to NATS: its own client and handle on the bucket.
struct NatsSide {
    js: jetstream::Context,
    kv: kv::Store,
    cache: EchoCache<String, NatsStore<String>>,
    keys: Arc<Vec<String>>,
    data_keys: Arc<Vec<String>>,
}

async fn nats_side(url: &str, bucket: &str) -> Result<NatsSide, String> {
    let client = tokio::time::timeout(
        CONNECT_TIMEOUT * 2,
        async_nats::ConnectOptions::new()
            .connection_timeout(CONNECT_TIMEOUT)
            .connect(url),
    )
    .await
    .map_err(|_| "timed out connecting".to_owned())?
    .map_err(|e| e.to_string())?;
    let js = jetstream::new(client);
    let options = BucketOptions::new()
        .storage(StorageType::Memory)
        .max_age(TTL)
        .description("echocache benchmark run; deleted at its end");
    let kv = open_or_create_bucket(&js, bucket, &options)
        .await
        .map_err(|e| format!("{e} (is JetStream enabled? start nats-server with -js)"))?;
    let store = NatsStore::new(kv.clone(), "bench").map_err(|e| e.to_string())?;
    let keys = keys();
    let data_keys = Arc::new(keys.iter().map(|k| store.data_key(k)).collect());
    Ok(NatsSide {
        js,
        kv,
        cache: EchoCache::new(store),
        keys,
        data_keys,
    })
}

pub(crate) fn nats(c: &mut Criterion) {
    let url = env_url("ECHOCACHE_NATS_URL", "nats://127.0.0.1:4222");
    let bucket = run_name();
    let seq_rt = current_thread();
    let par_rt = multi_thread();
    let seq = match seq_rt.block_on(nats_side(&url, &bucket)) {
        Ok(seq) => seq,
        Err(e) => {
            eprintln!(
                "backends: NATS (JetStream) at {url} cannot be used ({e}); skipping the NATS \
                 benches (nothing recorded). Set ECHOCACHE_NATS_URL, or run `cargo xtask bench`, \
                 which finds or starts a server."
            );
            return;
        }
    };
    // The bucket exists from here on: delete it whatever happens next.
    let result = par_rt.block_on(nats_side(&url, &bucket)).and_then(|par| {
        let value = value();
        seq_rt.block_on(async {
            let now = SystemTime::now();
            for k in seq.keys.iter() {
                seq.cache
                    .store()
                    .set(k, &Entry::new(value.clone(), now))
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok::<_, String>(())
        })?;
        nats_benches(c, &seq_rt, &par_rt, &seq, &par)
    });
    if let Err(e) = result {
        eprintln!("backends: NATS benches stopped: {e}");
    }
    if let Err(e) = seq_rt.block_on(seq.js.delete_key_value(&bucket)) {
        eprintln!("backends: could not delete the bench bucket {bucket}: {e}");
    }
}

fn nats_benches(
    c: &mut Criterion,
    seq_rt: &tokio::runtime::Runtime,
    par_rt: &tokio::runtime::Runtime,
    seq: &NatsSide,
    par: &NatsSide,
) -> Result<(), String> {
    let fetch = |s: &NatsSide| {
        let (cache, keys) = (s.cache.clone(), s.keys.clone());
        move |i: usize| {
            let (cache, keys) = (cache.clone(), keys.clone());
            async move {
                cache
                    .fetch(&keys[i], || async { Ok::<_, Never>(String::new()) })
                    .await
                    .map_or(0, |v| v.len())
            }
        }
    };
    let store_get = |s: &NatsSide| {
        let (cache, keys) = (s.cache.clone(), s.keys.clone());
        move |i: usize| {
            let (cache, keys) = (cache.clone(), keys.clone());
            async move {
                cache
                    .store()
                    .get(&keys[i])
                    .await
                    .ok()
                    .flatten()
                    .map_or(0, |e| e.value.len())
            }
        }
    };
    let raw_kv_get = |s: &NatsSide| {
        let (kv, data_keys) = (Arc::new(s.kv.clone()), s.data_keys.clone());
        move |i: usize| {
            let (kv, data_keys) = (kv.clone(), data_keys.clone());
            async move {
                kv.get(data_keys[i].as_str())
                    .await
                    .ok()
                    .flatten()
                    .map_or(0, |b| b.len())
            }
        }
    };
    let is_value = |n: usize| n == VALUE_LEN;
    check(seq_rt, "EchoCache::fetch", is_value, fetch(seq))?;
    check(seq_rt, "NatsStore::get", is_value, store_get(seq))?;
    check(seq_rt, "kv.get", |n| n > VALUE_LEN, raw_kv_get(seq))?;

    bench_paths(
        c,
        "nats",
        &[
            ("echocache_fetch", sequential(seq_rt, fetch(seq))),
            ("store_get", sequential(seq_rt, store_get(seq))),
            ("raw_kv_get", sequential(seq_rt, raw_kv_get(seq))),
        ],
        &[
            ("echocache_fetch", in_flight(par_rt, fetch(par))),
            ("store_get", in_flight(par_rt, store_get(par))),
            ("raw_kv_get", in_flight(par_rt, raw_kv_get(par))),
        ],
    );
    for (side, name) in [(seq, "sequential"), (par, "in-flight")] {
        assert_only_hits(
            &format!("the {name} NATS fetch benches"),
            &side.cache.stats(),
        );
    }
    Ok(())
}
