//! `echocache-soak`: a bounded soak of `LazyEchoCache` over `LruStore`.
//!
//! ```text
//! echocache-soak [--seconds 120] [--tasks 16] [--report PATH]
//! ```
//!
//! Keys are drawn from a window that moves forward all the time, so old keys fall out of
//! the LRU and new ones keep arriving; `refresh_after` is short so that nearly every hit
//! is stale and schedules a refresh; the refresh queue is small so that it overflows
//! (refreshes dropped) with 4 workers busy. Some loads fail and a few run past
//! `load_timeout`, so the failure paths run too. Every second the process samples its
//! resident memory (`VmRSS`), `loads_in_flight()` and `refreshes_pending()`.
//!
//! It passes when: no panic; over the samples after warm-up (at least 45: `--seconds 60`
//! or more), resident memory grows by no more than +3 % or +512 KiB (the larger), both
//! between the first and last quarters' means and along the least-squares line; in-flight loads and
//! pending refreshes stay bounded during the run and are 0 after `shutdown()`; the LRU
//! never holds more than its capacity; and the queue did overflow (else the soak tested
//! nothing). Exits non-zero otherwise.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use echocache_chaos::{Args, Rng, count_panics, rss_kib, seed, write_report};
use echocache_core::{Error, LazyEchoCache, Stats};
use echocache_memory::LruStore;

const USAGE: &str = "usage: echocache-soak [--seconds 120] [--tasks 16] [--report PATH]";

/// LRU capacity, and the window keys are drawn from (twice as large: the LRU churns).
const CAPACITY: usize = 4096;
const WINDOW: u64 = 8192;
/// How many new keys enter the window per second (old ones leave it).
const DRIFT_PER_SEC: u64 = 2000;
const REFRESH_AFTER: Duration = Duration::from_millis(20);
const QUEUE_CAPACITY: usize = 8;
const WORKERS: usize = 4;
const LOAD_TIMEOUT: Duration = Duration::from_millis(500);
/// Bytes of payload per value.
const PAYLOAD: usize = 256;
/// Memory bound: over the steady part of the run, resident memory may grow (by the
/// least-squares line through the samples, and between the first and last quarters' means)
/// by this fraction of the first quarter's mean or this many KiB, whichever is larger. The
/// floor is the allocator's noise on this ≈6 MiB process, measured in the soak reports.
const RSS_GROWTH: f64 = 0.03;
const RSS_SLACK_KIB: u64 = 512;
/// Steady samples (one a second) needed to see a slope ...
const MIN_STEADY_SAMPLES: usize = 45;
/// ... which a run of this many seconds gives after its warm-up (10 s).
const MIN_SECONDS: u64 = 60;

/// A cached value: its key, a version, and some bytes so that a leak shows in memory.
#[derive(Debug)]
struct Value {
    key: String,
    version: u64,
    payload: Vec<u8>,
}

/// The loaders' error.
#[derive(Debug)]
struct Unavailable;

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("source unavailable")
    }
}

impl std::error::Error for Unavailable {}

type Cache = LazyEchoCache<Arc<Value>, LruStore<Arc<Value>>>;

/// One sample, taken every second.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Duration,
    rss_kib: u64,
    in_flight: usize,
    pending: usize,
    stored: usize,
}

/// What the load tasks count.
#[derive(Debug, Default)]
struct Counts {
    ops: AtomicU64,
    load_errors: AtomicU64,
    timeouts: AtomicU64,
    other_errors: AtomicU64,
    wrong_key: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn load_task(cache: Cache, start: Instant, deadline: Instant, counts: Arc<Counts>) {
    let mut rng = Rng::new(seed());
    let mut n = 0u64;
    while Instant::now() < deadline {
        let base = start.elapsed().as_millis() as u64 * DRIFT_PER_SEC / 1000;
        let k = base + rng.below(WINDOW);
        let key = format!("key-{k}");
        if rng.below(1000) == 0 {
            let _ = cache.invalidate(&key).await;
        } else {
            let roll = rng.below(10_000);
            let delay = if roll == 0 {
                LOAD_TIMEOUT + Duration::from_millis(100) // past load_timeout
            } else {
                Duration::from_micros(rng.below(2_000))
            };
            let fail = roll < 100; // 1 % of loads fail
            let loader_key = key.clone();
            let result = cache
                .fetch(&key, move || async move {
                    tokio::time::sleep(delay).await;
                    if fail {
                        return Err(Unavailable);
                    }
                    Ok(Arc::new(Value {
                        key: loader_key,
                        version: k,
                        payload: vec![k as u8; PAYLOAD],
                    }))
                })
                .await;
            match result {
                Ok(value) => {
                    if value.key != key || value.version != k || value.payload.len() != PAYLOAD {
                        counts.wrong_key.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(Error::Load(_)) => {
                    counts.load_errors.fetch_add(1, Ordering::Relaxed);
                }
                Err(Error::Timeout) => {
                    counts.timeouts.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {
                    counts.other_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        counts.ops.fetch_add(1, Ordering::Relaxed);
        n += 1;
        // Memory-store fetches rarely wait: let the other tasks (and refreshes) run.
        if n.is_multiple_of(64) {
            tokio::task::yield_now().await;
        }
    }
}

fn mean(samples: &[Sample]) -> u64 {
    if samples.is_empty() {
        return 0;
    }
    samples.iter().map(|s| s.rss_kib).sum::<u64>() / samples.len() as u64
}

/// The least-squares slope of resident memory over time, in KiB per second (0 for fewer
/// than two samples).
fn slope_kib_per_s(samples: &[Sample]) -> f64 {
    let n = samples.len() as f64;
    if samples.len() < 2 {
        return 0.0;
    }
    let t = |s: &Sample| s.at.as_secs_f64();
    let mean_t = samples.iter().map(t).sum::<f64>() / n;
    let mean_m = samples.iter().map(|s| s.rss_kib as f64).sum::<f64>() / n;
    let (mut cov, mut var) = (0.0, 0.0);
    for s in samples {
        cov += (t(s) - mean_t) * (s.rss_kib as f64 - mean_m);
        var += (t(s) - mean_t).powi(2);
    }
    if var == 0.0 { 0.0 } else { cov / var }
}

fn main() -> ExitCode {
    let panics = count_panics();
    let args = match Args::parse(std::env::args().skip(1), &[]) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("echocache-soak: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if let Some(name) = args.unknown(&["seconds", "tasks", "report"]).first() {
        eprintln!("echocache-soak: unknown option `--{name}`\n{USAGE}");
        return ExitCode::from(2);
    }
    let (seconds, tasks) = match (args.number("seconds", 120), args.number("tasks", 16)) {
        (Ok(s), Ok(t)) if s >= MIN_SECONDS && t >= 1 => (s, t),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("echocache-soak: {e}");
            return ExitCode::from(2);
        }
        _ => {
            eprintln!(
                "echocache-soak: `--seconds` must be at least {MIN_SECONDS} (a memory trend \
                 needs {MIN_STEADY_SAMPLES} samples after warm-up) and `--tasks` at least 1"
            );
            return ExitCode::from(2);
        }
    };
    let report = args.value("report").map(PathBuf::from);
    if rss_kib().is_none() {
        eprintln!("echocache-soak: no /proc/self/status: resident memory cannot be sampled");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("echocache-soak: no tokio runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let (text, passed) = runtime.block_on(soak(seconds, tasks, panics));
    runtime.shutdown_timeout(Duration::from_secs(2));
    println!("{text}");
    if let Some(path) = report {
        if let Err(e) = write_report(&path, &text) {
            eprintln!("echocache-soak: {e}");
        } else {
            eprintln!("soak: report written to {}", path.display());
        }
    }
    if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn soak(seconds: u64, tasks: u64, panics: &'static AtomicU64) -> (String, bool) {
    let rss_before = rss_kib().unwrap_or(0);
    let store = match LruStore::new(CAPACITY) {
        Ok(s) => s,
        Err(e) => return (format!("cannot make the LruStore: {e}"), false),
    };
    let cache: Cache = match LazyEchoCache::builder(store)
        .refresh_after(REFRESH_AFTER)
        .queue_capacity(QUEUE_CAPACITY)
        .workers(WORKERS)
        .load_timeout(LOAD_TIMEOUT)
        .build()
    {
        Ok(c) => c,
        Err(e) => return (format!("cannot build the cache: {e}"), false),
    };
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    let counts = Arc::new(Counts::default());

    // The sampler is a thread of its own, so that busy tasks cannot delay it.
    let samples = Arc::new(Mutex::new(Vec::<Sample>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (cache, samples, stop, counts) = (
            cache.clone(),
            Arc::clone(&samples),
            Arc::clone(&stop),
            Arc::clone(&counts),
        );
        std::thread::spawn(move || {
            let mut next = start + Duration::from_secs(1);
            while !stop.load(Ordering::Relaxed) {
                let now = Instant::now();
                if now < next {
                    std::thread::sleep((next - now).min(Duration::from_millis(50)));
                    continue;
                }
                let sample = Sample {
                    at: now.duration_since(start),
                    rss_kib: rss_kib().unwrap_or(0),
                    in_flight: cache.loads_in_flight(),
                    pending: cache.refreshes_pending(),
                    stored: cache.store().len(),
                };
                if sample.at.as_secs().is_multiple_of(10) {
                    let st = cache.stats();
                    eprintln!(
                        "soak: {:>4} s  rss {:>7} KiB  in flight {:>3}  pending {:>3}  stored {:>5}  ops {:>10}  refreshes {:>8}  dropped {:>9}",
                        sample.at.as_secs(),
                        sample.rss_kib,
                        sample.in_flight,
                        sample.pending,
                        sample.stored,
                        counts.ops.load(Ordering::Relaxed),
                        st.refreshes,
                        st.refreshes_dropped,
                    );
                }
                lock(&samples).push(sample);
                next += Duration::from_secs(1);
            }
        })
    };

    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            tokio::spawn(load_task(
                cache.clone(),
                start,
                deadline,
                Arc::clone(&counts),
            ))
        })
        .collect();
    let mut task_panics = 0u64;
    let mut stuck = 0u64;
    for handle in handles {
        let abort = handle.abort_handle();
        // Each fetch is bounded by load_timeout; a task ends soon after the deadline.
        match tokio::time::timeout_at((deadline + Duration::from_secs(10)).into(), handle).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) if e.is_panic() => task_panics += 1,
            Ok(Err(_)) => stuck += 1,
            Err(_) => {
                abort.abort();
                stuck += 1;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let samples = lock(&samples).clone();

    let before_shutdown = (cache.loads_in_flight(), cache.refreshes_pending());
    let shutdown_started = Instant::now();
    let shutdown_ok = tokio::time::timeout(Duration::from_secs(10), cache.shutdown())
        .await
        .is_ok();
    let shutdown_took = shutdown_started.elapsed();
    let right_after = (cache.loads_in_flight(), cache.refreshes_pending());
    let drained_by = Instant::now() + Duration::from_secs(5);
    while Instant::now() < drained_by && cache.loads_in_flight() + cache.refreshes_pending() > 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let settled = (cache.loads_in_flight(), cache.refreshes_pending());
    let stats = cache.stats();
    let stored = cache.store().len();
    drop(cache);

    render(Figures {
        seconds,
        tasks,
        rss_before,
        samples,
        counts: &counts,
        stats,
        stored,
        task_panics,
        hook_panics: panics.load(Ordering::SeqCst),
        stuck,
        before_shutdown,
        shutdown_ok,
        shutdown_took,
        right_after,
        settled,
    })
}

/// Everything the report shows.
struct Figures<'a> {
    seconds: u64,
    tasks: u64,
    rss_before: u64,
    samples: Vec<Sample>,
    counts: &'a Counts,
    stats: Stats,
    stored: usize,
    task_panics: u64,
    hook_panics: u64,
    stuck: u64,
    before_shutdown: (usize, usize),
    shutdown_ok: bool,
    shutdown_took: Duration,
    right_after: (usize, usize),
    settled: (usize, usize),
}

fn render(f: Figures<'_>) -> (String, bool) {
    let warm_up = Duration::from_secs((f.seconds / 6).max(5));
    let steady: Vec<Sample> = f
        .samples
        .iter()
        .copied()
        .filter(|s| s.at >= warm_up)
        .collect();
    let quarter = (steady.len() / 4).max(1);
    let first = &steady[..quarter.min(steady.len())];
    let last = &steady[steady.len().saturating_sub(quarter)..];
    let (first_mean, last_mean) = (mean(first), mean(last));
    let allowed = ((first_mean as f64 * RSS_GROWTH) as u64).max(RSS_SLACK_KIB);
    let slope = slope_kib_per_s(&steady);
    let span = match (steady.first(), steady.last()) {
        (Some(a), Some(b)) => (b.at - a.at).as_secs_f64(),
        _ => 0.0,
    };
    let trend = slope * span;
    let rss_max = f.samples.iter().map(|s| s.rss_kib).max().unwrap_or(0);
    let max_in_flight = f.samples.iter().map(|s| s.in_flight).max().unwrap_or(0);
    let max_pending = f.samples.iter().map(|s| s.pending).max().unwrap_or(0);
    let max_stored = f.samples.iter().map(|s| s.stored).max().unwrap_or(0);
    let in_flight_bound = 2 * f.tasks as usize + WORKERS;
    let pending_bound = QUEUE_CAPACITY + WORKERS + 1;

    let checks = [
        (
            "resident memory flat",
            steady.len() >= MIN_STEADY_SAMPLES
                && last_mean <= first_mean + allowed
                && trend <= allowed as f64,
            format!(
                "last quarter {last_mean} KiB vs first quarter {first_mean} KiB after a {} s warm-up \
                 ({} samples each); trend {slope:+.2} KiB/s, {trend:+.0} KiB over {span:.0} s \
                 ({} steady samples, at least {MIN_STEADY_SAMPLES}); allowed +{allowed} KiB; \
                 max {rss_max} KiB",
                warm_up.as_secs(),
                first.len(),
                steady.len()
            ),
        ),
        (
            "no panic",
            f.task_panics + f.hook_panics == 0,
            format!("tasks {}, panic hook {}", f.task_panics, f.hook_panics),
        ),
        (
            "tasks ended by themselves",
            f.stuck == 0,
            format!("{} stopped by the harness", f.stuck),
        ),
        (
            "in-flight loads bounded",
            max_in_flight <= in_flight_bound,
            format!("max {max_in_flight} (bound {in_flight_bound})"),
        ),
        (
            "pending refreshes bounded",
            max_pending <= pending_bound,
            format!("max {max_pending} (bound queue {QUEUE_CAPACITY} + workers {WORKERS} + 1)"),
        ),
        (
            "0 in flight and 0 pending after shutdown()",
            f.shutdown_ok && f.settled == (0, 0),
            format!(
                "before shutdown {} / {}; right after {} / {}; settled {} / {}; shutdown took {:.1} ms{}",
                f.before_shutdown.0,
                f.before_shutdown.1,
                f.right_after.0,
                f.right_after.1,
                f.settled.0,
                f.settled.1,
                f.shutdown_took.as_secs_f64() * 1000.0,
                if f.shutdown_ok {
                    ""
                } else {
                    " (did NOT return within 10 s)"
                }
            ),
        ),
        (
            "LRU within capacity",
            max_stored <= CAPACITY && f.stored <= CAPACITY,
            format!("max {max_stored} entries, capacity {CAPACITY}"),
        ),
        (
            "no wrong value",
            f.counts.wrong_key.load(Ordering::Relaxed) == 0,
            format!("{}", f.counts.wrong_key.load(Ordering::Relaxed)),
        ),
        (
            "the queue overflowed and refreshes ran (the scenario happened)",
            f.stats.refreshes_dropped > 0 && f.stats.refreshes > 0,
            format!(
                "refreshes {}, dropped {}",
                f.stats.refreshes, f.stats.refreshes_dropped
            ),
        ),
    ];
    let passed = checks.iter().all(|(_, ok, _)| *ok);

    let mut out = String::new();
    let _ = writeln!(out, "# echocache soak run\n");
    let _ = writeln!(
        out,
        "{} s, {} tasks, `LazyEchoCache` over `LruStore::new({CAPACITY})`; keys from a window of \
         {WINDOW} moving {DRIFT_PER_SEC} keys/s; refresh_after {} ms, queue_capacity \
         {QUEUE_CAPACITY}, workers {WORKERS}, load_timeout {} ms; 1 % of loads fail, 0.01 % \
         run past load_timeout, 0.1 % of operations invalidate.\n",
        f.seconds,
        f.tasks,
        REFRESH_AFTER.as_millis(),
        LOAD_TIMEOUT.as_millis()
    );
    let _ = writeln!(
        out,
        "**Verdict: {}**\n",
        if passed { "PASS" } else { "FAIL" }
    );
    let _ = writeln!(out, "| check | ok | figures |\n|---|---|---|");
    for (name, ok, figures) in &checks {
        let _ = writeln!(
            out,
            "| {name} | {} | {figures} |",
            if *ok { "yes" } else { "NO" }
        );
    }
    let c = f.counts;
    let st = f.stats;
    let _ = writeln!(
        out,
        "\nOperations {}; fetch errors returned: loader errors {}, load timeouts {}, other {}.\n",
        c.ops.load(Ordering::Relaxed),
        c.load_errors.load(Ordering::Relaxed),
        c.timeouts.load(Ordering::Relaxed),
        c.other_errors.load(Ordering::Relaxed),
    );
    let _ = writeln!(
        out,
        "Counters: hits {}, stale hits {}, misses {}, loads {}, coalesced {}, refreshes {}, \
         refresh errors {}, refreshes dropped {}, load errors {}, load timeouts {}.\n",
        st.hits,
        st.stale_hits,
        st.misses,
        st.loads,
        st.coalesced,
        st.refreshes,
        st.refresh_errors,
        st.refreshes_dropped,
        st.load_errors,
        st.load_timeouts,
    );
    let _ = writeln!(
        out,
        "Resident memory: {} KiB before the cache was built, {} KiB at the end.\n",
        f.rss_before,
        f.samples.last().map_or(0, |s| s.rss_kib)
    );
    let _ = writeln!(
        out,
        "Samples (every 10th second): t, VmRSS KiB, loads in flight, refreshes pending, entries\n"
    );
    let _ = writeln!(out, "```");
    for s in f
        .samples
        .iter()
        .filter(|s| s.at.as_secs().is_multiple_of(10))
    {
        let _ = writeln!(
            out,
            "{:>4} s  {:>7}  {:>3}  {:>3}  {:>5}",
            s.at.as_secs(),
            s.rss_kib,
            s.in_flight,
            s.pending,
            s.stored
        );
    }
    let _ = writeln!(out, "```");
    (out, passed)
}
