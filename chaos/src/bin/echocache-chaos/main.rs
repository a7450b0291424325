//! `echocache-chaos`: a bounded load on `EchoCache` and `LazyEchoCache` over Redis and over
//! NATS, on each server a second `EchoCache` on a client of its own sharing the first
//! one's prefix (two "processes" of one fleet), and on each server two `EchoCache`s over
//! tiered stores (an L1 each, a backplane between them): ten caches, checking every value
//! they give back, while the servers are killed and restarted, or stalled and resumed.
//! The second tiered cache is never invalidated directly: it must hear of the first's
//! invalidations through the backplane, within 250 ms while its server is healthy and
//! within its L1 TTL (2 s) otherwise.
//!
//! ```text
//! echocache-chaos --redis URL --nats URL [--seconds 60] [--tasks 64] [--keys 1000]
//!                 [--recovery-seconds 30] [--report PATH] [--events-stdin]
//! ```
//!
//! The servers are not this program's: `cargo xtask chaos` starts its own `redis-server`
//! and `nats-server -js`, runs this binary, and during the run kills (SIGKILL) and
//! restarts the servers, or stalls (SIGSTOP) and resumes (SIGCONT) them. With
//! `--events-stdin` it tells this program about each fault with a line on stdin
//! (`down redis`, `up redis`, `stall nats`, `resume nats`, …), so that the time to recover
//! can be measured: from each restart or SIGCONT to the first successful probe `get`
//! straight from the store (the client answers again) and to the first successful `get`
//! through each cache (the cache, past its circuit breaker, uses the store again). Probes
//! are bounded to one second and run every 50 ms. Every fetch is timed and its latency
//! counted in the phase its store was in (healthy, stalled, down, recovering).
//!
//! The caches use their default store timeout and circuit breaker (what users get).
//!
//! Values carry their key and a version. Each key has a version in an in-process source
//! of truth, which the loaders return; from time to time a task bumps a key's version and
//! invalidates the key in every cache. A value is wrong when it belongs to another key,
//! or when its version is older than one whose invalidation had completed (successfully,
//! in that cache or in a cache of another process sharing its store) before the fetch
//! started. Fleet check: two processes sharing a store never load the same key version at
//! the same time, outside outages, store trouble and invalidations of that key. Exits
//! non-zero on a panic, a wrong value, a fleet duplicate load, a task that did not end, a
//! shutdown that did not return or left work behind, loader calls beyond what the
//! invalidations explain outside outages, or a fault (kill or stall) not recovered within
//! `--recovery-seconds` of its restart or SIGCONT.
//!
//! Only loopback URLs are accepted.

mod caches;
mod load;
mod outages;
mod report;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use echocache_chaos::{Args, count_panics, is_loopback_url, seed, write_report};
use echocache_core::{EchoCache, LazyEchoCache, Stats, Store, TieredStore};
use echocache_memory::LruStore;
use echocache_nats::{BucketOptions, NatsBackplane, NatsStore, open_or_create_bucket};
use echocache_redis::fred::prelude::{Client as RedisClient, ClientLike};
use echocache_redis::{RedisBackplane, RedisStore};

use caches::{CACHES, Cache, NAMES, Versioned, nats_context, redis_client};
use load::{OP_BOUND, Shared, Tally, fleet_check, load_task, lock};
use outages::{Event, PROBE_BOUND, PROBE_EVERY, PhaseCell, Phases, outages, probe_task};
use report::Report;

const USAGE: &str = "usage: echocache-chaos --redis URL --nats URL [--seconds 60] [--tasks 64] \
[--keys 1000] [--recovery-seconds 30] [--report PATH] [--events-stdin]";

/// `LazyEchoCache::refresh_after`, and the window loader calls are counted in.
const REFRESH_AFTER: Duration = Duration::from_secs(1);
/// `LazyEchoCache::expire_after`.
const EXPIRE_AFTER: Duration = Duration::from_secs(10);
/// The stores' entry TTL (Redis `PX`, NATS expiry on read).
const ENTRY_TTL: Duration = Duration::from_secs(20);
/// Both caches' `load_timeout`.
const LOAD_TIMEOUT: Duration = Duration::from_secs(2);

/// The settings of one run.
struct Settings {
    redis: String,
    nats: String,
    seconds: u64,
    tasks: u64,
    keys: u64,
    recovery: Duration,
    report: Option<PathBuf>,
    events: bool,
}
fn settings() -> Result<Settings, String> {
    let args = Args::parse(std::env::args().skip(1), &["events-stdin"])?;
    let known = [
        "redis",
        "nats",
        "seconds",
        "tasks",
        "keys",
        "recovery-seconds",
        "report",
        "events-stdin",
    ];
    if let Some(name) = args.unknown(&known).first() {
        return Err(format!("unknown option `--{name}`\n{USAGE}"));
    }
    let url = |name: &str| -> Result<String, String> {
        let url = args
            .value(name)
            .ok_or_else(|| format!("`--{name} URL` is required\n{USAGE}"))?;
        if !is_loopback_url(url) {
            return Err(format!(
                "`--{name} {url}`: the chaos load sends traffic only to loopback servers"
            ));
        }
        Ok(url.to_owned())
    };
    let settings = Settings {
        redis: url("redis")?,
        nats: url("nats")?,
        seconds: args.number("seconds", 60)?,
        tasks: args.number("tasks", 64)?,
        keys: args.number("keys", 1000)?,
        recovery: Duration::from_secs(args.number("recovery-seconds", 30)?),
        report: args.value("report").map(PathBuf::from),
        events: args.flag("events-stdin"),
    };
    if settings.seconds == 0 || settings.tasks == 0 || settings.keys == 0 {
        return Err("`--seconds`, `--tasks` and `--keys` must be at least 1".into());
    }
    if settings.keys > u64::from(u32::MAX) {
        return Err("`--keys` is too large".into());
    }
    Ok(settings)
}

fn main() -> ExitCode {
    let panics = count_panics();
    let settings = match settings() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("echocache-chaos: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("echocache-chaos: no tokio runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(run(&settings, panics));
    // The clients' background tasks may still wait on a dead server: don't wait for them.
    runtime.shutdown_timeout(Duration::from_secs(2));
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("echocache-chaos: {e}");
            ExitCode::from(2)
        }
    }
}

/// An `EchoCache` as the run uses it.
fn echo<S: Store<Versioned>>(store: S) -> Result<EchoCache<Versioned, S>, String> {
    EchoCache::builder(store)
        .load_timeout(LOAD_TIMEOUT)
        .build()
        .map_err(|e| e.to_string())
}

/// A `LazyEchoCache` as the run uses it.
fn lazy<S: Store<Versioned>>(store: S) -> Result<LazyEchoCache<Versioned, S>, String> {
    LazyEchoCache::builder(store)
        .refresh_after(REFRESH_AFTER)
        .expire_after(EXPIRE_AFTER)
        .load_timeout(LOAD_TIMEOUT)
        .workers(4)
        .build()
        .map_err(|e| e.to_string())
}

/// A tiered store of its own "process" over Redis: an L1, `client` for L2, a backplane
/// on clients of its own; prefix `{run_id}:tiered`.
async fn redis_tiered(
    settings: &Settings,
    client: &RedisClient,
    run_id: &str,
) -> Result<caches::RedisTiered, String> {
    let prefix = format!("{run_id}:tiered");
    let l2 = RedisStore::<Versioned>::new(client, &prefix, ENTRY_TTL).map_err(|e| e.to_string())?;
    let backplane = RedisBackplane::connect(&settings.redis, &prefix)
        .await
        .map_err(|e| format!("Redis backplane: {e}"))?;
    tiered(l2, backplane)
}

/// A tiered store of its own "process" over NATS: an L1, `kv` for L2, a backplane on a
/// client of its own; prefix `tiered`.
async fn nats_tiered(
    settings: &Settings,
    kv: &async_nats::jetstream::kv::Store,
    bucket: &str,
) -> Result<caches::NatsTiered, String> {
    let l2 = NatsStore::<Versioned>::new(kv.clone(), "tiered")
        .and_then(|s| s.ttl(ENTRY_TTL))
        .map_err(|e| e.to_string())?;
    let backplane = NatsBackplane::connect(&settings.nats, bucket, "tiered")
        .await
        .map_err(|e| format!("NATS backplane: {e}"))?;
    tiered(l2, backplane)
}

/// A tiered store with an `LruStore` L1 of [`caches::L1_TTL`].
fn tiered<L2: Store<Versioned>, B: echocache_core::Backplane>(
    l2: L2,
    backplane: B,
) -> Result<TieredStore<Versioned, caches::L1, L2, B>, String> {
    let l1 = LruStore::new(100_000).map_err(|e| e.to_string())?;
    Ok(TieredStore::new(l1, l2, backplane).l1_ttl(caches::L1_TTL))
}

/// Sets up, runs the load, waits (bounded) for the recoveries, reports. `Ok(passed)`.
async fn run(settings: &Settings, panics: &'static AtomicU64) -> Result<bool, String> {
    let run_id = format!("echocache-chaos-{:08x}", seed() as u32);
    let redis = redis_client(&settings.redis).await?;
    let js = nats_context(&settings.nats).await?;
    let bucket = run_id.replace('-', "_");
    let kv = tokio::time::timeout(
        Duration::from_secs(10),
        open_or_create_bucket(
            &js,
            &bucket,
            &BucketOptions::new()
                .max_age(Duration::from_secs(600))
                .description("echocache chaos run (deleted at its end)"),
        ),
    )
    .await
    .map_err(|_| "no answer from NATS creating the bucket within 10 s".to_owned())?
    .map_err(|e| format!("cannot create the NATS bucket: {e}"))?;

    // A second client of each server, for a second EchoCache sharing the first one's
    // prefix: another "process" of the same fleet.
    let redis2 = redis_client(&settings.redis).await?;
    let js2 = nats_context(&settings.nats).await?;
    let kv2 = tokio::time::timeout(
        Duration::from_secs(10),
        open_or_create_bucket(&js2, &bucket, &BucketOptions::new()),
    )
    .await
    .map_err(|_| "no answer from NATS opening the bucket within 10 s".to_owned())?
    .map_err(|e| format!("cannot open the NATS bucket on a second client: {e}"))?;

    let err = |e: echocache_core::BuildError| e.to_string();
    let redis_store = |client: &RedisClient, suffix: &str| {
        RedisStore::<Versioned>::new(client, &format!("{run_id}:{suffix}"), ENTRY_TTL).map_err(err)
    };
    let nats_store = |kv: &async_nats::jetstream::kv::Store, prefix: &str| {
        NatsStore::<Versioned>::new(kv.clone(), prefix)
            .and_then(|s| s.ttl(ENTRY_TTL))
            .map_err(err)
    };
    // The store timeout and circuit breaker stay at their defaults: what users get.
    let caches = Arc::new(vec![
        Cache::RedisEcho(echo(redis_store(&redis, "echo")?)?),
        Cache::RedisLazy(lazy(redis_store(&redis, "lazy")?)?),
        Cache::NatsEcho(echo(nats_store(&kv, "echo")?)?),
        Cache::NatsLazy(lazy(nats_store(&kv, "lazy")?)?),
        Cache::RedisEcho(echo(redis_store(&redis2, "echo")?)?),
        Cache::NatsEcho(echo(nats_store(&kv2, "echo")?)?),
        Cache::RedisTiered(echo(redis_tiered(settings, &redis, &run_id).await?)?),
        Cache::RedisTiered(echo(redis_tiered(settings, &redis2, &run_id).await?)?),
        Cache::NatsTiered(echo(nats_tiered(settings, &kv, &bucket).await?)?),
        Cache::NatsTiered(echo(nats_tiered(settings, &kv2, &bucket).await?)?),
    ]);
    let first_gets = [
        (0, "Redis"),
        (2, "NATS"),
        (4, "Redis (2nd client)"),
        (5, "NATS (2nd client)"),
        (6, "Redis (tiered A)"),
        (7, "Redis (tiered B)"),
        (8, "NATS (tiered A)"),
        (9, "NATS (tiered B)"),
    ];
    for (i, name) in first_gets {
        match tokio::time::timeout(PROBE_BOUND * 5, caches[i].probe("chaos-probe")).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("{name} does not answer a first get: {e:?}")),
            Err(_) => return Err(format!("{name} does not answer a first get within 5 s")),
        }
    }
    // The tiered caches' backplanes subscribe before the load starts (bounded).
    let subscribed = Instant::now() + Duration::from_secs(10);
    while caches.iter().any(|c| c.l1_serving() == Some(false)) {
        if Instant::now() > subscribed {
            return Err("a tiered cache's backplane did not subscribe within 10 s".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let events = Arc::new(Mutex::new(Vec::<Event>::new()));
    let phases: Arc<Phases> = Arc::new(std::array::from_fn(|_| PhaseCell::default()));
    if settings.events {
        outages::read_events(Arc::clone(&events), Arc::clone(&phases));
    }
    let start = Instant::now();
    let deadline = start + Duration::from_secs(settings.seconds);
    let shared = Arc::new(Shared::new(
        start,
        deadline,
        settings.keys,
        Arc::clone(&phases),
    ));
    let stop_probes = Arc::new(AtomicBool::new(false));
    let probe_logs: Vec<outages::ProbeLog> = (0..CACHES).map(|_| Arc::default()).collect();
    let probes: Vec<_> = probe_logs
        .iter()
        .enumerate()
        .map(|(i, log)| {
            tokio::spawn(probe_task(
                Arc::clone(&caches),
                i,
                Arc::clone(&stop_probes),
                Arc::clone(log),
                Arc::clone(&phases),
            ))
        })
        .collect();
    let tasks: Vec<_> = (0..settings.tasks)
        .map(|_| tokio::spawn(load_task(Arc::clone(&shared), Arc::clone(&caches), seed())))
        .collect();
    println!(
        "chaos: ready ({} tasks, {} keys, {} s, caches: {})",
        settings.tasks,
        settings.keys,
        settings.seconds,
        NAMES.join(", ")
    );
    let _ = std::io::stdout().flush();

    // Progress, every ten seconds, until the deadline.
    let mut next = start + Duration::from_secs(10);
    while next < deadline {
        tokio::time::sleep_until(next.into()).await;
        eprintln!(
            "chaos: {:>4} s  ops {:>9}  errors {:>7}  wrong values {}  faults so far {}",
            next.duration_since(start).as_secs(),
            shared.ops.load(Ordering::Relaxed),
            shared.errors.load(Ordering::Relaxed),
            shared.wrong.load(Ordering::Relaxed),
            lock(&events).iter().filter(|e| e.begins).count(),
        );
        next += Duration::from_secs(10);
    }

    let (totals, task_panics, stuck_tasks) = join_tasks(tasks, deadline).await;
    let load_ended = Instant::now();

    // Bounded recovery: every restart and SIGCONT must be followed by a successful probe
    // of the store, and of each of its caches.
    let recovered_by = Instant::now() + settings.recovery;
    loop {
        let pending = outages(&lock(&events), &probe_logs)
            .iter()
            .any(|o| o.recovered().is_none());
        if !pending || Instant::now() >= recovered_by {
            break;
        }
        tokio::time::sleep(PROBE_EVERY).await;
    }
    stop_probes.store(true, Ordering::Relaxed);
    for probe in probes {
        let _ = tokio::time::timeout(PROBE_BOUND * 2, probe).await;
    }
    let outages = outages(&lock(&events), &probe_logs);

    let stats: Vec<Stats> = caches.iter().map(Cache::stats).collect();
    let (left, shutdown_hung) = shut_down(&caches).await;

    // Clean up what this run made (the bucket; Redis keys expire by their TTL).
    let _ = tokio::time::timeout(Duration::from_secs(5), js.delete_key_value(&bucket)).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), redis.quit()).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), redis2.quit()).await;

    let calls = lock(&shared.loader_calls).clone();
    let bumps = lock(&shared.bumps).clone();
    let fleet = fleet_check(&lock(&shared.spans), &lock(&shared.bump_times));
    let report = Report {
        settings,
        start,
        elapsed: load_ended.duration_since(start),
        totals,
        stats,
        task_panics,
        hook_panics: panics.load(Ordering::SeqCst),
        stuck_tasks,
        outages,
        calls,
        bumps,
        left,
        shutdown_hung,
        fleet,
    };
    let (text, passed) = report.render();
    println!("{text}");
    println!("{}", report.summary());
    if let Some(path) = &settings.report {
        write_report(path, &text)?;
        eprintln!("chaos: report written to {}", path.display());
    }
    Ok(passed)
}

/// Waits for the load tasks, which stop by themselves at the deadline (each operation is
/// bounded, an invalidation of the four caches by four bounds). Returns their tallies
/// merged per cache, the tasks that panicked and those stopped for not ending in time.
async fn join_tasks(
    tasks: Vec<tokio::task::JoinHandle<Vec<Tally>>>,
    deadline: Instant,
) -> (Vec<Tally>, u64, u64) {
    let mut totals = vec![Tally::default(); CACHES];
    let mut task_panics = 0u64;
    let mut stuck_tasks = 0u64;
    let join_by = tokio::time::Instant::from(deadline) + OP_BOUND * 5;
    for task in tasks {
        let abort = task.abort_handle();
        match tokio::time::timeout_at(join_by, task).await {
            Ok(Ok(tallies)) => {
                for (total, t) in totals.iter_mut().zip(tallies) {
                    total.merge(t);
                }
            }
            Ok(Err(e)) if e.is_panic() => task_panics += 1,
            Ok(Err(_)) => stuck_tasks += 1,
            Err(_) => {
                abort.abort();
                stuck_tasks += 1;
            }
        }
    }
    (totals, task_panics, stuck_tasks)
}

/// Shuts the lazy caches down; in-flight loads and pending refreshes must drain. Returns
/// what is left per cache (loads in flight, refreshes pending) and the caches whose
/// `shutdown()` did not return within 10 s.
async fn shut_down(caches: &[Cache]) -> (Vec<(usize, usize)>, Vec<&'static str>) {
    let mut shutdown_hung = Vec::new();
    for (c, cache) in caches.iter().enumerate() {
        if tokio::time::timeout(Duration::from_secs(10), cache.shutdown())
            .await
            .is_err()
        {
            shutdown_hung.push(NAMES[c]);
        }
    }
    let drained_by = Instant::now() + Duration::from_secs(5);
    while Instant::now() < drained_by
        && caches
            .iter()
            .any(|c| c.loads_in_flight() + c.refreshes_pending() > 0)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left = caches
        .iter()
        .map(|c| (c.loads_in_flight(), c.refreshes_pending()))
        .collect();
    (left, shutdown_hung)
}
