//! The load: tasks doing random fetches, gets and invalidations on random caches and keys,
//! checking every value they get back, timing every fetch.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use echocache_chaos::{Latencies, Rng};
use echocache_core::{Error, StoreError};

use crate::REFRESH_AFTER;
use crate::caches::{
    CACHES, Cache, L1_TTL, LoadFailed, LoadFuture, PROPAGATION_BOUND, Versioned, is_tiered,
    sharing_store, told_by_backplane,
};
use crate::outages::{Phase, Phases, phase_of};

/// Every operation of the load is abandoned (and counted) after this: a call that takes
/// longer is what the caches' store timeout and the clients' timeouts should have
/// prevented.
pub(crate) const OP_BOUND: Duration = Duration::from_secs(5);
/// Per mille of operations that bump a key's version and invalidate it everywhere, and
/// that read the store directly with `get`; the rest are `fetch`es.
const BUMP_PER_MILLE: u64 = 3;
const GET_PER_MILLE: u64 = 30;
/// Half of the picks go to this many hot keys, the other half over all keys.
const HOT_KEYS: u64 = 50;

/// What every task shares.
pub(crate) struct Shared {
    pub(crate) start: Instant,
    pub(crate) deadline: Instant,
    pub(crate) keys: Vec<String>,
    /// The source of truth: the current version of each key.
    pub(crate) source: Vec<AtomicU64>,
    /// Per cache and key: the highest version whose invalidation completed in that cache.
    pub(crate) floors: Vec<Vec<AtomicU64>>,
    /// Per cache and key: when the floor was last raised, in ms since the start.
    pub(crate) floors_at: Vec<Vec<AtomicU64>>,
    /// Loader calls per (cache, refresh window, key).
    pub(crate) loader_calls: Mutex<HashMap<(usize, u32, u32), u32>>,
    /// Version bumps (each invalidating the key in every cache) per (refresh window, key).
    pub(crate) bumps: Mutex<HashMap<(u32, u32), u32>>,
    /// When each bump began, in µs since the start, per key.
    pub(crate) bump_times: Mutex<HashMap<u32, Vec<u64>>>,
    /// Every load of the EchoCaches that share a store (see [`sharing_store`]), for the
    /// fleet check: one load of a key version across processes at a time.
    pub(crate) spans: Mutex<Vec<LoadSpan>>,
    /// The phase of each cache's store (faults reported by `cargo xtask chaos`).
    pub(crate) phases: Arc<Phases>,
    pub(crate) ops: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) wrong: AtomicU64,
}

impl Shared {
    /// State for `keys` keys, the load running from `start` to `deadline`.
    pub(crate) fn new(start: Instant, deadline: Instant, keys: u64, phases: Arc<Phases>) -> Self {
        let per_key = || (0..keys).map(|_| AtomicU64::new(0)).collect();
        Self {
            start,
            deadline,
            keys: (0..keys).map(|k| format!("key-{k}")).collect(),
            source: (0..keys).map(|_| AtomicU64::new(1)).collect(),
            floors: (0..CACHES).map(|_| per_key()).collect(),
            floors_at: (0..CACHES).map(|_| per_key()).collect(),
            loader_calls: Mutex::new(HashMap::new()),
            bumps: Mutex::new(HashMap::new()),
            bump_times: Mutex::new(HashMap::new()),
            spans: Mutex::new(Vec::new()),
            phases,
            ops: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            wrong: AtomicU64::new(0),
        }
    }

    pub(crate) fn ms_since_start(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn us_since_start(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
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

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One load by a cache whose store another cache shares, for the fleet check.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LoadSpan {
    pub(crate) cache: usize,
    pub(crate) key: u32,
    pub(crate) version: u64,
    /// When the fetch that led the load began, when the loader began and ended (µs since
    /// the start).
    pub(crate) fetch_start: u64,
    pub(crate) start: u64,
    pub(crate) end: u64,
    /// The cache's store was healthy from the fetch's start to the load's end.
    pub(crate) healthy: bool,
    /// Its store trouble counters did not move meanwhile (no fail-open without the lock).
    pub(crate) untroubled: bool,
}

/// What a fetch knew when it began, for its load's [`LoadSpan`].
#[derive(Clone, Copy)]
struct FetchStart {
    at_us: u64,
    phase: (u64, Phase),
    trouble: u64,
}

/// A loader for `key` of cache `cache`: reads the key's current version, then takes
/// `delay` (an upstream's latency).
fn loader(
    shared: &Arc<Shared>,
    caches: &Arc<Vec<Cache>>,
    cache: usize,
    key: usize,
    delay: Duration,
    began: FetchStart,
) -> impl FnOnce() -> LoadFuture + Send + 'static {
    let shared = Arc::clone(shared);
    let caches = Arc::clone(caches);
    move || {
        Box::pin(async move {
            shared.record_load(cache, key);
            let start = shared.us_since_start();
            let version = shared.source[key].load(Ordering::SeqCst);
            let loaded_at_ms = shared.ms_since_start();
            tokio::time::sleep(delay).await;
            if sharing_store(cache).len() > 1 {
                let end_phase = shared.phases[cache].read();
                let healthy = began.phase == end_phase && began.phase.1 == Phase::Healthy;
                let untroubled = caches[cache].trouble() == began.trouble;
                lock(&shared.spans).push(LoadSpan {
                    cache,
                    key: key as u32,
                    version,
                    fetch_start: began.at_us,
                    start,
                    end: shared.us_since_start(),
                    healthy,
                    untroubled,
                });
            }
            Ok(Versioned {
                key: shared.keys[key].clone(),
                version,
                loaded_at_ms,
            })
        })
    }
}

/// What the fleet check found.
#[derive(Debug, Default, Clone)]
pub(crate) struct FleetCheck {
    /// Loads of caches sharing a store.
    pub(crate) loads: usize,
    /// Pairs of loads of one key version by two processes, running at once.
    pub(crate) overlapping: usize,
    /// Of those, the pairs left out: a store outage in either cache; else store trouble
    /// in either (a store call failed or timed out, so a fetch may have failed open,
    /// without the lock); else a bump of the key (an invalidation, which may supersede a
    /// load) around them.
    pub(crate) in_outage: usize,
    pub(crate) in_trouble: usize,
    pub(crate) bumped: usize,
    /// The rest: the fleet single-flight let two processes load a key at once.
    pub(crate) duplicates: usize,
    /// A few of them, for the report.
    pub(crate) examples: Vec<(LoadSpan, LoadSpan)>,
}

/// How long before a pair of loads a bump of their key still excuses them: the
/// invalidation that follows it may supersede a load still running then.
const BUMP_MARGIN_US: u64 = 50_000;

/// The fleet check over `spans`: two caches sharing a store must not load the same key
/// version at the same time (the fleet single-flight), outside outages, store trouble
/// and invalidations of that key.
pub(crate) fn fleet_check(spans: &[LoadSpan], bumps: &HashMap<u32, Vec<u64>>) -> FleetCheck {
    let mut by_key: HashMap<(u32, u64), Vec<&LoadSpan>> = HashMap::new();
    for span in spans {
        by_key
            .entry((span.key, span.version))
            .or_default()
            .push(span);
    }
    let mut check = FleetCheck {
        loads: spans.len(),
        ..FleetCheck::default()
    };
    for ((key, _), loads) in &by_key {
        for (i, a) in loads.iter().enumerate() {
            for b in &loads[i + 1..] {
                let fleet = sharing_store(a.cache);
                if a.cache == b.cache || !fleet.contains(&b.cache) {
                    continue;
                }
                if a.start > b.end || b.start > a.end {
                    continue;
                }
                check.overlapping += 1;
                let from = a
                    .fetch_start
                    .min(b.fetch_start)
                    .saturating_sub(BUMP_MARGIN_US);
                let to = a.end.max(b.end);
                let bumped = bumps
                    .get(key)
                    .is_some_and(|times| times.iter().any(|&t| t >= from && t <= to));
                if !a.healthy || !b.healthy {
                    check.in_outage += 1;
                } else if !a.untroubled || !b.untroubled {
                    check.in_trouble += 1;
                } else if bumped {
                    check.bumped += 1;
                } else {
                    check.duplicates += 1;
                    if check.examples.len() < 5 {
                        check.examples.push((**a, **b));
                    }
                }
            }
        }
    }
    check
}

/// A wrong value, kept for the report.
#[derive(Debug, Clone)]
pub(crate) struct WrongValue {
    pub(crate) cache: usize,
    pub(crate) op: &'static str,
    pub(crate) key: String,
    pub(crate) got: Versioned,
    pub(crate) floor: u64,
    /// When the invalidation of `floor` completed, in ms since the start.
    pub(crate) floor_at_ms: u64,
    pub(crate) at: Duration,
    pub(crate) took: Duration,
}

/// One task's figures for one cache.
#[derive(Debug, Default, Clone)]
pub(crate) struct Tally {
    pub(crate) fetches: u64,
    pub(crate) gets: u64,
    pub(crate) invalidates: u64,
    pub(crate) errors: BTreeMap<&'static str, u64>,
    pub(crate) wrong_key: u64,
    pub(crate) below_floor: u64,
    pub(crate) regressions: u64,
    pub(crate) slowest: Duration,
    pub(crate) wrong: Vec<WrongValue>,
    /// Every fetch's latency, by the phase of the cache's store ([`Phase::index`]).
    pub(crate) fetch_latency: [Latencies; 4],
}

impl Tally {
    pub(crate) fn ops(&self) -> u64 {
        self.fetches + self.gets + self.invalidates
    }

    pub(crate) fn errors(&self) -> u64 {
        self.errors.values().sum()
    }

    pub(crate) fn merge(&mut self, other: Tally) {
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
        for (mine, theirs) in self.fetch_latency.iter_mut().zip(other.fetch_latency) {
            mine.merge(theirs);
        }
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
    let get = op == "get";
    if err.is_circuit_open() {
        if get {
            "get: circuit breaker open"
        } else {
            "invalidate: circuit breaker open"
        }
    } else if err.is_timeout() {
        if get {
            "get: store timeout"
        } else {
            "invalidate: store timeout"
        }
    } else {
        match (get, err.is_decode()) {
            (true, false) => "get: store backend error",
            (true, true) => "get: store decode error",
            (false, false) => "invalidate: store backend error",
            (false, true) => "invalidate: store decode error",
        }
    }
}

/// One load task: random operations on random caches and keys until the deadline.
pub(crate) async fn load_task(
    shared: Arc<Shared>,
    caches: Arc<Vec<Cache>>,
    seed: u64,
) -> Vec<Tally> {
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
            bump(&shared, &caches, &mut tallies, key).await;
            continue;
        }
        let c = rng.below(CACHES as u64) as usize;
        let cache = &caches[c];
        // The highest version invalidated in any cache sharing this one's store (any
        // process of its fleet): no older value may be served after that returned. A
        // tiered cache hears of another process's invalidation through its backplane:
        // within PROPAGATION_BOUND while its server is healthy, within its L1 TTL
        // otherwise.
        let now_ms = shared.ms_since_start();
        let bound_ms = if !is_tiered(c) {
            0
        } else if shared.phases[c].read().1 == Phase::Healthy {
            PROPAGATION_BOUND.as_millis() as u64
        } else {
            (L1_TTL + PROPAGATION_BOUND).as_millis() as u64
        };
        let (floor, floor_at_ms) = sharing_store(c)
            .iter()
            .map(|&s| {
                (
                    shared.floors[s][key].load(Ordering::SeqCst),
                    shared.floors_at[s][key].load(Ordering::SeqCst),
                    s,
                )
            })
            .filter(|&(_, at, s)| s == c || at.saturating_add(bound_ms) <= now_ms)
            .map(|(floor, at, _)| (floor, at))
            .max()
            .unwrap_or_default();
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
            let phase = shared.phases[c].read();
            let began = FetchStart {
                at_us: shared.us_since_start(),
                phase,
                trouble: cache.trouble(),
            };
            let load = loader(&shared, &caches, c, key, delay, began);
            let outcome = match tokio::time::timeout(OP_BOUND, cache.fetch(name, load)).await {
                Ok(Ok(value)) => Ok(Some(value)),
                Ok(Err(e)) => Err(fetch_error_kind(&e)),
                Err(_) => Err("fetch: no answer within 5 s (harness bound)"),
            };
            let phase: Phase = phase_of(phase, shared.phases[c].read());
            t.fetch_latency[phase.index()].record(started.elapsed());
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

/// The source changes for `key`; then every cache is told (invalidated).
async fn bump(shared: &Shared, caches: &[Cache], tallies: &mut [Tally], key: usize) {
    let name = shared.keys[key].as_str();
    let version = shared.source[key].fetch_add(1, Ordering::SeqCst) + 1;
    *lock(&shared.bumps)
        .entry((shared.window(Instant::now()), key as u32))
        .or_default() += 1;
    lock(&shared.bump_times)
        .entry(key as u32)
        .or_default()
        .push(shared.us_since_start());
    for (c, cache) in caches.iter().enumerate() {
        if told_by_backplane(c) {
            continue;
        }
        let t = &mut tallies[c];
        t.invalidates += 1;
        let started = Instant::now();
        match tokio::time::timeout(OP_BOUND, cache.invalidate(name)).await {
            Ok(Ok(())) => {
                let before = shared.floors[c][key].fetch_max(version, Ordering::SeqCst);
                if before < version {
                    shared.floors_at[c][key].store(shared.ms_since_start(), Ordering::SeqCst);
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
}
