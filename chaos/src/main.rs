//! `echocache-chaos`: a bounded load on `EchoCache` and `LazyEchoCache` over Redis and over
//! NATS (four caches), checking every value it gets back, while the servers are killed
//! and restarted.
//!
//! ```text
//! echocache-chaos --redis URL --nats URL [--seconds 60] [--tasks 64] [--keys 1000]
//!                 [--recovery-seconds 30] [--report PATH] [--events-stdin]
//! ```
//!
//! The servers are not this program's: `cargo xtask chaos` starts its own `redis-server`
//! and `nats-server -js`, runs this binary, and kills (SIGKILL) and restarts the servers
//! during the run. With `--events-stdin` it tells this program about each fault with a
//! line on stdin (`down redis`, `up redis`, `down nats`, `up nats`), so that the time to
//! recover can be measured: from each `up` to the first successful probe `get` on that
//! backend (a probe is bounded to one second and runs every 50 ms).
//!
//! Values carry their key and a version. Each key has a version in an in-process source
//! of truth, which the loaders return; from time to time a task bumps a key's version and
//! invalidates the key in every cache. A value is wrong when it belongs to another key,
//! or when its version is older than one whose invalidation had completed (successfully,
//! in that cache) before the fetch started. Exits non-zero on a panic, a wrong value, or a
//! backend that did not recover within `--recovery-seconds`.
//!
//! Only loopback URLs are accepted.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use echocache_chaos::{Args, Rng, count_panics, is_loopback_url, ms, seed, write_report};
use echocache_core::{EchoCache, Error, LazyEchoCache, Stats, Store, StoreError};
use echocache_nats::{BucketOptions, NatsStore, open_or_create_bucket};
use echocache_redis::RedisStore;
use echocache_redis::fred::prelude::{
    Builder, Client as RedisClient, ClientLike, Config, ReconnectPolicy,
};
use serde::{Deserialize, Serialize};

const USAGE: &str = "usage: echocache-chaos --redis URL --nats URL [--seconds 60] [--tasks 64] \
[--keys 1000] [--recovery-seconds 30] [--report PATH] [--events-stdin]";

/// Every operation of the load is abandoned (and counted) after this: a call that takes
/// longer is what the clients' timeouts should have prevented.
const OP_BOUND: Duration = Duration::from_secs(5);
/// `LazyEchoCache::refresh_after`, and the window loader calls are counted in.
const REFRESH_AFTER: Duration = Duration::from_secs(1);
/// `LazyEchoCache::expire_after`.
const EXPIRE_AFTER: Duration = Duration::from_secs(10);
/// The stores' entry TTL (Redis `PX`, NATS expiry on read).
const ENTRY_TTL: Duration = Duration::from_secs(20);
/// Both caches' `load_timeout`.
const LOAD_TIMEOUT: Duration = Duration::from_secs(2);
/// fred's `default_command_timeout`, as the echocache-redis docs recommend.
const REDIS_COMMAND_TIMEOUT: Duration = Duration::from_millis(500);
/// async-nats: the JetStream request timeout and the client's request timeout.
const NATS_REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
/// The recovery probe: how often, and how long one may take.
const PROBE_EVERY: Duration = Duration::from_millis(50);
const PROBE_BOUND: Duration = Duration::from_secs(1);
/// Per mille of operations that bump a key's version and invalidate it everywhere, and
/// that read the store directly with `get`; the rest are `fetch`es.
const BUMP_PER_MILLE: u64 = 3;
const GET_PER_MILLE: u64 = 30;
/// Half of the picks go to this many hot keys, the other half over all keys.
const HOT_KEYS: u64 = 50;

/// The cached value: the key it belongs to and the version the loader read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Versioned {
    key: String,
    version: u64,
    /// When the loader read the version, in ms since the load started (diagnostics).
    loaded_at_ms: u64,
}

/// The loaders' error type; the loaders never fail, the stores do.
#[derive(Debug)]
struct LoadFailed;

impl std::fmt::Display for LoadFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("load failed")
    }
}

impl std::error::Error for LoadFailed {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Redis,
    Nats,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Redis => "redis",
            Backend::Nats => "nats",
        }
    }
}

const CACHES: usize = 4;
const NAMES: [&str; CACHES] = [
    "redis/EchoCache",
    "redis/LazyEchoCache",
    "nats/EchoCache",
    "nats/LazyEchoCache",
];

/// The four caches under load.
enum Cache {
    RedisEcho(EchoCache<Versioned, RedisStore<Versioned>>),
    RedisLazy(LazyEchoCache<Versioned, RedisStore<Versioned>>),
    NatsEcho(EchoCache<Versioned, NatsStore<Versioned>>),
    NatsLazy(LazyEchoCache<Versioned, NatsStore<Versioned>>),
}

/// Runs `$body` with `$c` bound to whichever cache `$cache` is.
macro_rules! each {
    ($cache:expr, $c:ident => $body:expr) => {
        match $cache {
            Cache::RedisEcho($c) => $body,
            Cache::RedisLazy($c) => $body,
            Cache::NatsEcho($c) => $body,
            Cache::NatsLazy($c) => $body,
        }
    };
}

type LoadFuture = Pin<Box<dyn Future<Output = Result<Versioned, LoadFailed>> + Send>>;

impl Cache {
    async fn fetch(
        &self,
        key: &str,
        loader: impl FnOnce() -> LoadFuture + Send + 'static,
    ) -> Result<Versioned, Error<LoadFailed>> {
        each!(self, c => c.fetch(key, loader).await)
    }

    async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        each!(self, c => c.get(key).await)
    }

    async fn invalidate(&self, key: &str) -> Result<(), StoreError> {
        each!(self, c => c.invalidate(key).await)
    }

    /// One read straight from the store (the recovery probe).
    async fn probe(&self, key: &str) -> Result<(), StoreError> {
        each!(self, c => c.store().get(key).await.map(drop))
    }

    fn stats(&self) -> Stats {
        each!(self, c => c.stats())
    }

    fn loads_in_flight(&self) -> usize {
        each!(self, c => c.loads_in_flight())
    }

    fn refreshes_pending(&self) -> usize {
        match self {
            Cache::RedisLazy(c) => c.refreshes_pending(),
            Cache::NatsLazy(c) => c.refreshes_pending(),
            _ => 0,
        }
    }

    async fn shutdown(&self) {
        match self {
            Cache::RedisLazy(c) => c.shutdown().await,
            Cache::NatsLazy(c) => c.shutdown().await,
            _ => {}
        }
    }
}

/// A fault `cargo xtask chaos` reported on stdin.
#[derive(Debug, Clone, Copy)]
struct Event {
    at: Instant,
    backend: Backend,
    up: bool,
}

/// What every task shares.
struct Shared {
    start: Instant,
    deadline: Instant,
    keys: Vec<String>,
    /// The source of truth: the current version of each key.
    source: Vec<AtomicU64>,
    /// Per cache and key: the highest version whose invalidation completed in that cache.
    floors: Vec<Vec<AtomicU64>>,
    /// Per cache and key: when the floor was last raised, in ms since the start.
    floors_at: Vec<Vec<AtomicU64>>,
    /// Loader calls per (cache, refresh window, key).
    loader_calls: Mutex<HashMap<(usize, u32, u32), u32>>,
    /// Version bumps (each invalidating the key in every cache) per (refresh window, key).
    bumps: Mutex<HashMap<(u32, u32), u32>>,
    ops: AtomicU64,
    errors: AtomicU64,
    wrong: AtomicU64,
}

impl Shared {
    fn ms_since_start(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn window(&self, at: Instant) -> u32 {
        let elapsed = at.saturating_duration_since(self.start);
        (elapsed.as_millis() / REFRESH_AFTER.as_millis()) as u32
    }

    fn record_load(&self, cache: usize, key: usize) {
        let window = self.window(Instant::now());
        *lock(&self.loader_calls)
            .entry((cache, window, key as u32))
            .or_default() += 1;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A loader for `key` of cache `cache`: reads the key's current version, then takes
/// `delay` (an upstream's latency).
fn loader(
    shared: &Arc<Shared>,
    cache: usize,
    key: usize,
    delay: Duration,
) -> impl FnOnce() -> LoadFuture + Send + 'static {
    let shared = Arc::clone(shared);
    move || {
        Box::pin(async move {
            shared.record_load(cache, key);
            let version = shared.source[key].load(Ordering::SeqCst);
            let loaded_at_ms = shared.ms_since_start();
            tokio::time::sleep(delay).await;
            Ok(Versioned {
                key: shared.keys[key].clone(),
                version,
                loaded_at_ms,
            })
        })
    }
}

/// A wrong value, kept for the report.
#[derive(Debug, Clone)]
struct WrongValue {
    cache: usize,
    op: &'static str,
    key: String,
    got: Versioned,
    floor: u64,
    /// When the invalidation of `floor` completed, in ms since the start.
    floor_at_ms: u64,
    at: Duration,
    took: Duration,
}

/// One task's figures for one cache.
#[derive(Debug, Default, Clone)]
struct Tally {
    fetches: u64,
    gets: u64,
    invalidates: u64,
    errors: BTreeMap<&'static str, u64>,
    wrong_key: u64,
    below_floor: u64,
    regressions: u64,
    slowest: Duration,
    wrong: Vec<WrongValue>,
}

impl Tally {
    fn ops(&self) -> u64 {
        self.fetches + self.gets + self.invalidates
    }

    fn errors(&self) -> u64 {
        self.errors.values().sum()
    }

    fn merge(&mut self, other: Tally) {
        self.fetches += other.fetches;
        self.gets += other.gets;
        self.invalidates += other.invalidates;
        for (kind, n) in other.errors {
            *self.errors.entry(kind).or_default() += n;
        }
        self.wrong_key += other.wrong_key;
        self.below_floor += other.below_floor;
        self.regressions += other.regressions;
        self.slowest = self.slowest.max(other.slowest);
        self.wrong.extend(other.wrong);
    }
}

fn fetch_error_kind(err: &Error<LoadFailed>) -> &'static str {
    match err {
        Error::Load(_) => "fetch: loader error",
        Error::LoaderPanicked(_) => "fetch: loader panicked",
        Error::Timeout => "fetch: load timeout",
        Error::RecursiveLoad => "fetch: recursive load",
        Error::Aborted => "fetch: load aborted",
        _ => "fetch: other",
    }
}

fn store_error_kind(op: &'static str, err: &StoreError) -> &'static str {
    match (op, err.is_decode()) {
        ("get", false) => "get: store backend error",
        ("get", true) => "get: store decode error",
        (_, false) => "invalidate: store backend error",
        (_, true) => "invalidate: store decode error",
    }
}

/// One load task: random operations on random caches and keys until the deadline.
async fn load_task(shared: Arc<Shared>, caches: Arc<Vec<Cache>>, seed: u64) -> Vec<Tally> {
    let mut rng = Rng::new(seed);
    let mut tallies = vec![Tally::default(); CACHES];
    // The highest version this task has seen per (cache, key).
    let mut seen: HashMap<(usize, usize), u64> = HashMap::new();
    let n_keys = shared.keys.len() as u64;
    while Instant::now() < shared.deadline {
        let key = if rng.below(2) == 0 {
            rng.below(HOT_KEYS.min(n_keys))
        } else {
            rng.below(n_keys)
        } as usize;
        let name = shared.keys[key].as_str();
        let roll = rng.below(1000);
        if roll < BUMP_PER_MILLE {
            // The source changes; then every cache is told.
            let version = shared.source[key].fetch_add(1, Ordering::SeqCst) + 1;
            *lock(&shared.bumps)
                .entry((shared.window(Instant::now()), key as u32))
                .or_default() += 1;
            for (c, cache) in caches.iter().enumerate() {
                let t = &mut tallies[c];
                t.invalidates += 1;
                let started = Instant::now();
                match tokio::time::timeout(OP_BOUND, cache.invalidate(name)).await {
                    Ok(Ok(())) => {
                        let before = shared.floors[c][key].fetch_max(version, Ordering::SeqCst);
                        if before < version {
                            shared.floors_at[c][key]
                                .store(shared.ms_since_start(), Ordering::SeqCst);
                        }
                    }
                    Ok(Err(e)) => {
                        *t.errors
                            .entry(store_error_kind("invalidate", &e))
                            .or_default() += 1;
                        shared.errors.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        *t.errors
                            .entry("invalidate: no answer within 5 s (harness bound)")
                            .or_default() += 1;
                        shared.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                t.slowest = t.slowest.max(started.elapsed());
                shared.ops.fetch_add(1, Ordering::Relaxed);
            }
            continue;
        }
        let c = rng.below(CACHES as u64) as usize;
        let cache = &caches[c];
        let floor = shared.floors[c][key].load(Ordering::SeqCst);
        let floor_at_ms = shared.floors_at[c][key].load(Ordering::SeqCst);
        let started = Instant::now();
        let t = &mut tallies[c];
        let (op, outcome) = if roll < BUMP_PER_MILLE + GET_PER_MILLE {
            t.gets += 1;
            let outcome = match tokio::time::timeout(OP_BOUND, cache.get(name)).await {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(e)) => Err(store_error_kind("get", &e)),
                Err(_) => Err("get: no answer within 5 s (harness bound)"),
            };
            ("get", outcome)
        } else {
            t.fetches += 1;
            let delay = Duration::from_micros(500 + rng.below(3_000));
            let load = loader(&shared, c, key, delay);
            let outcome = match tokio::time::timeout(OP_BOUND, cache.fetch(name, load)).await {
                Ok(Ok(value)) => Ok(Some(value)),
                Ok(Err(e)) => Err(fetch_error_kind(&e)),
                Err(_) => Err("fetch: no answer within 5 s (harness bound)"),
            };
            ("fetch", outcome)
        };
        t.slowest = t.slowest.max(started.elapsed());
        shared.ops.fetch_add(1, Ordering::Relaxed);
        match outcome {
            Ok(None) => {}
            Ok(Some(value)) => {
                let wrong_key = value.key != name;
                let below_floor = !wrong_key && value.version < floor;
                if wrong_key {
                    t.wrong_key += 1;
                }
                if below_floor {
                    t.below_floor += 1;
                }
                if (wrong_key || below_floor) && t.wrong.len() < 5 {
                    t.wrong.push(WrongValue {
                        cache: c,
                        op,
                        key: name.to_owned(),
                        got: value.clone(),
                        floor,
                        floor_at_ms,
                        at: started.saturating_duration_since(shared.start),
                        took: started.elapsed(),
                    });
                }
                if wrong_key || below_floor {
                    shared.wrong.fetch_add(1, Ordering::Relaxed);
                }
                if !wrong_key {
                    let seen = seen.entry((c, key)).or_default();
                    if value.version < *seen {
                        t.regressions += 1;
                    } else {
                        *seen = value.version;
                    }
                }
            }
            Err(kind) => {
                *t.errors.entry(kind).or_default() += 1;
                shared.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    tallies
}

/// Polls `cache`'s store with a bounded `get` until `stop`, logging (time, success).
async fn probe_task(caches: Arc<Vec<Cache>>, index: usize, stop: Arc<AtomicBool>, log: ProbeLog) {
    while !stop.load(Ordering::Relaxed) {
        let ok = matches!(
            tokio::time::timeout(PROBE_BOUND, caches[index].probe("chaos-probe")).await,
            Ok(Ok(()))
        );
        lock(&log).push((Instant::now(), ok));
        tokio::time::sleep(PROBE_EVERY).await;
    }
}

/// Reads fault events from stdin (a thread: stdin blocks).
fn read_events(events: Arc<Mutex<Vec<Event>>>) {
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            let mut words = line.split_whitespace();
            let up = match words.next() {
                Some("down") => false,
                Some("up") => true,
                _ => continue,
            };
            let backend = match words.next() {
                Some("redis") => Backend::Redis,
                Some("nats") => Backend::Nats,
                _ => continue,
            };
            lock(&events).push(Event {
                at: Instant::now(),
                backend,
                up,
            });
        }
    });
}

async fn redis_client(url: &str) -> Result<RedisClient, String> {
    // As the echocache-redis crate docs recommend: reconnect for ever, time commands out.
    let config = Config {
        fail_fast: false,
        ..Config::from_url(url).map_err(|e| format!("redis url: {e}"))?
    };
    let client = Builder::from_config(config)
        .with_connection_config(|c| {
            c.connection_timeout = Duration::from_secs(2);
            c.internal_command_timeout = Duration::from_secs(2);
            c.max_command_attempts = 2;
        })
        .with_performance_config(|c| c.default_command_timeout = REDIS_COMMAND_TIMEOUT)
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
        .build()
        .map_err(|e| format!("redis client: {e}"))?;
    match tokio::time::timeout(Duration::from_secs(10), client.init()).await {
        Ok(Ok(_)) => Ok(client),
        Ok(Err(e)) => Err(format!("cannot connect to Redis at {url}: {e}")),
        Err(_) => Err(format!("no answer from Redis at {url} within 10 s")),
    }
}

async fn nats_context(url: &str) -> Result<async_nats::jetstream::Context, String> {
    let client = tokio::time::timeout(
        Duration::from_secs(10),
        async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(2))
            .request_timeout(Some(NATS_REQUEST_TIMEOUT))
            .connect(url),
    )
    .await
    .map_err(|_| format!("no answer from NATS at {url} within 10 s"))?
    .map_err(|e| format!("cannot connect to NATS at {url}: {e}"))?;
    Ok(async_nats::jetstream::ContextBuilder::new()
        .timeout(NATS_REQUEST_TIMEOUT)
        .build(client))
}

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

    let err = |e: echocache_core::BuildError| e.to_string();
    let redis_store = |suffix: &str| {
        RedisStore::<Versioned>::new(&redis, &format!("{run_id}:{suffix}"), ENTRY_TTL).map_err(err)
    };
    let nats_store = |prefix: &str| {
        NatsStore::<Versioned>::new(kv.clone(), prefix)
            .and_then(|s| s.ttl(ENTRY_TTL))
            .map_err(err)
    };
    let caches = Arc::new(vec![
        Cache::RedisEcho(
            EchoCache::builder(redis_store("echo")?)
                .load_timeout(LOAD_TIMEOUT)
                .build()
                .map_err(err)?,
        ),
        Cache::RedisLazy(
            LazyEchoCache::builder(redis_store("lazy")?)
                .refresh_after(REFRESH_AFTER)
                .expire_after(EXPIRE_AFTER)
                .load_timeout(LOAD_TIMEOUT)
                .workers(4)
                .build()
                .map_err(err)?,
        ),
        Cache::NatsEcho(
            EchoCache::builder(nats_store("echo")?)
                .load_timeout(LOAD_TIMEOUT)
                .build()
                .map_err(err)?,
        ),
        Cache::NatsLazy(
            LazyEchoCache::builder(nats_store("lazy")?)
                .refresh_after(REFRESH_AFTER)
                .expire_after(EXPIRE_AFTER)
                .load_timeout(LOAD_TIMEOUT)
                .workers(4)
                .build()
                .map_err(err)?,
        ),
    ]);
    for (i, name) in [(0, "Redis"), (2, "NATS")] {
        match tokio::time::timeout(PROBE_BOUND * 5, caches[i].probe("chaos-probe")).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("{name} does not answer a first get: {e:?}")),
            Err(_) => return Err(format!("{name} does not answer a first get within 5 s")),
        }
    }

    let events = Arc::new(Mutex::new(Vec::<Event>::new()));
    if settings.events {
        read_events(Arc::clone(&events));
    }
    let start = Instant::now();
    let deadline = start + Duration::from_secs(settings.seconds);
    let shared = Arc::new(Shared {
        start,
        deadline,
        keys: (0..settings.keys).map(|k| format!("key-{k}")).collect(),
        source: (0..settings.keys).map(|_| AtomicU64::new(1)).collect(),
        floors: (0..CACHES)
            .map(|_| (0..settings.keys).map(|_| AtomicU64::new(0)).collect())
            .collect(),
        floors_at: (0..CACHES)
            .map(|_| (0..settings.keys).map(|_| AtomicU64::new(0)).collect())
            .collect(),
        loader_calls: Mutex::new(HashMap::new()),
        bumps: Mutex::new(HashMap::new()),
        ops: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        wrong: AtomicU64::new(0),
    });
    let stop_probes = Arc::new(AtomicBool::new(false));
    let probe_logs = [
        Arc::new(Mutex::new(Vec::new())),
        Arc::new(Mutex::new(Vec::new())),
    ];
    let probes: Vec<_> = [0, 2]
        .into_iter()
        .zip(&probe_logs)
        .map(|(i, log)| {
            tokio::spawn(probe_task(
                Arc::clone(&caches),
                i,
                Arc::clone(&stop_probes),
                Arc::clone(log),
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
            lock(&events).iter().filter(|e| !e.up).count(),
        );
        next += Duration::from_secs(10);
    }

    // The tasks stop by themselves at the deadline; each operation is bounded, an
    // invalidation of the four caches by four bounds.
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
    let load_ended = Instant::now();

    // Bounded recovery: every restart must be followed by a successful probe.
    let recovered_by = Instant::now() + settings.recovery;
    loop {
        let pending = outages(&lock(&events), &probe_logs)
            .iter()
            .any(|o| o.recovered.is_none());
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

    // Shut the lazy caches down; in-flight loads and pending refreshes must drain.
    let stats: Vec<Stats> = caches.iter().map(Cache::stats).collect();
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
    let left: Vec<(usize, usize)> = caches
        .iter()
        .map(|c| (c.loads_in_flight(), c.refreshes_pending()))
        .collect();

    // Clean up what this run made (the bucket; Redis keys expire by their TTL).
    let _ = tokio::time::timeout(Duration::from_secs(5), js.delete_key_value(&bucket)).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), redis.quit()).await;

    let calls = lock(&shared.loader_calls).clone();
    let bumps = lock(&shared.bumps).clone();
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

/// One kill and restart of a server, as measured.
#[derive(Debug, Clone)]
struct Outage {
    backend: Backend,
    down: Instant,
    up: Option<Instant>,
    /// The first successful probe after the restart.
    recovered: Option<Instant>,
    /// Probes that failed between the kill and the recovery.
    failed_probes: usize,
}

/// The probe's log: when each probe ended and whether it succeeded.
type ProbeLog = Arc<Mutex<Vec<(Instant, bool)>>>;

fn outages(events: &[Event], logs: &[ProbeLog; 2]) -> Vec<Outage> {
    let mut out: Vec<Outage> = Vec::new();
    for e in events {
        if !e.up {
            out.push(Outage {
                backend: e.backend,
                down: e.at,
                up: None,
                recovered: None,
                failed_probes: 0,
            });
        } else if let Some(o) = out
            .iter_mut()
            .rev()
            .find(|o| o.backend == e.backend && o.up.is_none())
        {
            o.up = Some(e.at);
        }
    }
    for o in &mut out {
        let log = lock(&logs[usize::from(o.backend == Backend::Nats)]);
        if let Some(up) = o.up {
            o.recovered = log.iter().find(|(t, ok)| *ok && *t >= up).map(|(t, _)| *t);
        }
        let end = o.recovered.unwrap_or_else(Instant::now);
        o.failed_probes = log
            .iter()
            .filter(|(t, ok)| !*ok && *t >= o.down && *t <= end)
            .count();
    }
    out
}

/// Loader calls per key per refresh window, for one cache.
#[derive(Debug, Default)]
struct LoaderFigures {
    total: u64,
    /// (key, window) pairs with at least one call.
    key_windows: usize,
    max: u32,
    mean: f64,
    /// The max over windows that overlap no outage (kill to recovery).
    healthy_max: u32,
    /// Outside outages: the most calls beyond one plus the key's invalidations in the
    /// window, and how many key-windows had any.
    healthy_max_excess: u32,
    healthy_excess_windows: usize,
}

/// Everything the report shows.
struct Report<'a> {
    settings: &'a Settings,
    start: Instant,
    elapsed: Duration,
    totals: Vec<Tally>,
    stats: Vec<Stats>,
    task_panics: u64,
    hook_panics: u64,
    stuck_tasks: u64,
    outages: Vec<Outage>,
    calls: HashMap<(usize, u32, u32), u32>,
    bumps: HashMap<(u32, u32), u32>,
    left: Vec<(usize, usize)>,
    shutdown_hung: Vec<&'static str>,
}

impl Report<'_> {
    /// One machine-readable line with the headline figures (read by the smoke test).
    fn summary(&self) -> String {
        let sum = |f: fn(&Tally) -> u64| self.totals.iter().map(f).sum::<u64>();
        format!(
            "chaos: summary ops={} errors={} panics={} wrong_key={} older_than_invalidated={} \
             unrecovered={} stuck_tasks={} left_after_shutdown={}",
            sum(Tally::ops),
            sum(Tally::errors),
            self.task_panics + self.hook_panics,
            sum(|t| t.wrong_key),
            sum(|t| t.below_floor),
            self.outages
                .iter()
                .filter(|o| o.recovered.is_none())
                .count(),
            self.stuck_tasks,
            self.left.iter().map(|(a, b)| a + b).sum::<usize>(),
        )
    }

    /// Loader calls per key per refresh window for cache `c`.
    fn loader_calls(&self, c: usize) -> LoaderFigures {
        let start = self.start;
        let outage_windows: Vec<(u32, u32)> = self
            .outages
            .iter()
            .map(|o| {
                let w = |t: Instant| {
                    (t.saturating_duration_since(start).as_millis() / REFRESH_AFTER.as_millis())
                        as u32
                };
                (w(o.down), w(o.recovered.unwrap_or_else(Instant::now)))
            })
            .collect();
        let mut f = LoaderFigures::default();
        let mut sum = 0u64;
        for (&(cache, window, key), &calls) in &self.calls {
            if cache != c {
                continue;
            }
            f.max = f.max.max(calls);
            sum += u64::from(calls);
            f.total += u64::from(calls);
            f.key_windows += 1;
            let in_outage = outage_windows
                .iter()
                .any(|&(from, to)| window >= from && window <= to);
            if !in_outage {
                f.healthy_max = f.healthy_max.max(calls);
                let bumps = self.bumps.get(&(window, key)).copied().unwrap_or(0);
                let excess = calls.saturating_sub(1 + bumps);
                f.healthy_max_excess = f.healthy_max_excess.max(excess);
                if excess > 0 {
                    f.healthy_excess_windows += 1;
                }
            }
        }
        if f.key_windows > 0 {
            f.mean = sum as f64 / f.key_windows as f64;
        }
        f
    }

    fn render(&self) -> (String, bool) {
        let s = self.settings;
        let mut out = String::new();
        let total_ops: u64 = self.totals.iter().map(Tally::ops).sum();
        let total_errors: u64 = self.totals.iter().map(Tally::errors).sum();
        let wrong: u64 = self
            .totals
            .iter()
            .map(|t| t.wrong_key + t.below_floor)
            .sum();
        let panics = self.task_panics + self.hook_panics;
        let unrecovered = self
            .outages
            .iter()
            .filter(|o| o.recovered.is_none())
            .count();
        let kills = |b: Backend| self.outages.iter().filter(|o| o.backend == b).count();
        let passed = panics == 0 && wrong == 0 && unrecovered == 0;

        out.push_str("# echocache chaos run\n\n");
        out.push_str(&format!(
            "{} s of load ({:.1} s measured), {} tasks over {} keys, 4 caches \
             (EchoCache and LazyEchoCache on Redis and on NATS); faults: {} SIGKILL + restart \
             ({} Redis, {} NATS).\n\n",
            s.seconds,
            self.elapsed.as_secs_f64(),
            s.tasks,
            s.keys,
            self.outages.len(),
            kills(Backend::Redis),
            kills(Backend::Nats),
        ));
        out.push_str(&format!(
            "Settings: lazy refresh_after {} s, expire_after {} s; load_timeout {} s; entry TTL \
             {} s; fred: command timeout {} ms, reconnect exponential 100 ms..5 s, \
             fail_fast false, 2 attempts; async-nats: request timeout {} ms, default reconnect; \
             each operation bounded by the harness at {} s.\n\n",
            REFRESH_AFTER.as_secs(),
            EXPIRE_AFTER.as_secs(),
            LOAD_TIMEOUT.as_secs(),
            ENTRY_TTL.as_secs(),
            REDIS_COMMAND_TIMEOUT.as_millis(),
            NATS_REQUEST_TIMEOUT.as_millis(),
            OP_BOUND.as_secs(),
        ));
        out.push_str(&format!(
            "**Verdict: {}** — operations {total_ops}, errors returned {total_errors}, \
             panics {panics}, wrong values {wrong}, unrecovered restarts {unrecovered}.\n\n",
            if passed { "PASS" } else { "FAIL" }
        ));

        out.push_str("## Operations\n\n");
        out.push_str(
            "| cache | ops | fetch | get | invalidate | errors | wrong key | older than an \
             invalidated version | task saw a version go back | slowest op |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for (c, t) in self.totals.iter().enumerate() {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                NAMES[c],
                t.ops(),
                t.fetches,
                t.gets,
                t.invalidates,
                t.errors(),
                t.wrong_key,
                t.below_floor,
                t.regressions,
                ms(t.slowest),
            ));
        }
        out.push_str(
            "\n\"Task saw a version go back\" is informational: after an invalidation that \
             failed (server down), an older entry may legitimately be read again.\n\n",
        );

        out.push_str("## Errors returned, by kind\n\n");
        let mut kinds: BTreeMap<(&str, &str), u64> = BTreeMap::new();
        for (c, t) in self.totals.iter().enumerate() {
            for (kind, n) in &t.errors {
                *kinds.entry((NAMES[c], kind)).or_default() += n;
            }
        }
        if kinds.is_empty() {
            out.push_str("none\n\n");
        } else {
            out.push_str("| cache | kind | count |\n|---|---|---:|\n");
            for ((cache, kind), n) in &kinds {
                out.push_str(&format!("| {cache} | {kind} | {n} |\n"));
            }
            out.push('\n');
        }

        out.push_str("## Panics\n\n");
        out.push_str(&format!(
            "Load tasks that panicked (JoinError::is_panic): {}. Panics anywhere in the \
             process (panic hook, including caught ones): {}. Tasks stopped by the harness \
             (did not end in time): {}.\n\n",
            self.task_panics, self.hook_panics, self.stuck_tasks
        ));

        if wrong > 0 {
            out.push_str("## Wrong values (first few per task and cache)\n\n");
            out.push_str(
                "Times in ms since the start: when the loader read the version it returned, \
                 when the invalidation of the newer version completed, when the operation \
                 started, and how long it took.\n\n\
                 | cache | op | key | got | loaded at | invalidated up to | invalidated at | op started | op took |\n\
                 |---|---|---|---|---:|---:|---:|---:|---:|\n",
            );
            for t in &self.totals {
                for w in t.wrong.iter().take(20) {
                    out.push_str(&format!(
                        "| {} | {} | {} | {} v{} | {} | v{} | {} | {} | {} |\n",
                        NAMES[w.cache],
                        w.op,
                        w.key,
                        w.got.key,
                        w.got.version,
                        w.got.loaded_at_ms,
                        w.floor,
                        w.floor_at_ms,
                        w.at.as_millis(),
                        ms(w.took),
                    ));
                }
            }
            out.push('\n');
        }

        out.push_str("## Recovery after each restart\n\n");
        if self.outages.is_empty() {
            out.push_str("No faults were injected (no `--events-stdin` events).\n\n");
        } else {
            out.push_str(
                "| # | server | down for | recovered after restart | failed probes |\n\
                 |---:|---|---:|---:|---:|\n",
            );
            let mut recoveries = Vec::new();
            for (i, o) in self.outages.iter().enumerate() {
                let down_for = o.up.map_or("not restarted".to_owned(), |up| {
                    ms(up.duration_since(o.down))
                });
                let recovered = match (o.up, o.recovered) {
                    (Some(up), Some(r)) => {
                        recoveries.push(r.duration_since(up));
                        ms(r.duration_since(up))
                    }
                    _ => format!("NOT within {} s", s.recovery.as_secs()),
                };
                out.push_str(&format!(
                    "| {} | {} | {} | {} | {} |\n",
                    i + 1,
                    o.backend.name(),
                    down_for,
                    recovered,
                    o.failed_probes
                ));
            }
            if let Some(max) = recoveries.iter().max() {
                let mean = recoveries.iter().sum::<Duration>() / recoveries.len() as u32;
                out.push_str(&format!(
                    "\nRecovery (restart to first successful probe `get`): max {}, mean {}.\n\n",
                    ms(*max),
                    ms(mean)
                ));
            }
        }

        out.push_str("## Loader calls per key per refresh window (1 s)\n\n");
        out.push_str(
            "Counted per cache, key and 1 s window (the lazy caches' refresh_after), over the \
             key-windows with at least one call. \"Beyond 1 + invalidations\": calls in a window \
             outside outages beyond one load plus one per invalidation of that key in that \
             window (a reload right after an invalidation made late in the previous window \
             also counts here).\n\n\
             | cache | loader calls | key-windows | max | mean | max outside outages | \
             max beyond 1 + invalidations (outside outages) | key-windows with any |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for (c, name) in NAMES.iter().enumerate() {
            let f = self.loader_calls(c);
            out.push_str(&format!(
                "| {name} | {} | {} | {} | {:.2} | {} | {} | {} |\n",
                f.total,
                f.key_windows,
                f.max,
                f.mean,
                f.healthy_max,
                f.healthy_max_excess,
                f.healthy_excess_windows
            ));
        }
        out.push_str(
            "\nWhile a store is down every fetch fails open to the loader (concurrent fetches \
             of a key still share one load), so outage windows see more calls.\n\n",
        );

        out.push_str("## Cache counters (`stats()`)\n\n");
        out.push_str(
            "| cache | hits | stale hits | misses | loads | coalesced | refreshes | refresh errors | dropped | locked out | load timeouts | store errors | decode errors |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for (c, st) in self.stats.iter().enumerate() {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                NAMES[c],
                st.hits,
                st.stale_hits,
                st.misses,
                st.loads,
                st.coalesced,
                st.refreshes,
                st.refresh_errors,
                st.refreshes_dropped,
                st.refreshes_locked_out,
                st.load_timeouts,
                st.store_errors,
                st.decode_errors,
            ));
        }
        out.push_str("\n## After shutdown\n\n");
        for (c, (inflight, pending)) in self.left.iter().enumerate() {
            out.push_str(&format!(
                "- {}: loads in flight {inflight}, refreshes pending {pending}\n",
                NAMES[c]
            ));
        }
        if !self.shutdown_hung.is_empty() {
            out.push_str(&format!(
                "- shutdown() did not return within 10 s: {}\n",
                self.shutdown_hung.join(", ")
            ));
        }
        (out, passed)
    }
}
