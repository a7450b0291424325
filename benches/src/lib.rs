//! Shared pieces of the benchmarks: a counting global allocator (allocations made, and
//! bytes live) and the file where allocation counts and other figures are recorded for
//! `cargo xtask bench`'s report.
//!
//! The benchmarks themselves are in `benches/main.rs` (`cargo bench -p echocache-benches`
//! or `cargo xtask bench`).

#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Counts allocations (and reallocations) made through it, and the bytes live (requested
/// sizes, not the allocator's own rounding or bookkeeping), forwarding to [`System`].
#[derive(Debug)]
pub struct CountingAlloc;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
/// Bytes allocated and not yet freed. Wrapping arithmetic: each update is a relaxed
/// add or subtract, so the value is exact once the allocations it covers are done.
static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every method forwards its arguments unchanged to `System`, which upholds the
// `GlobalAlloc` contract; the only additions are relaxed atomic updates of two counters,
// which neither allocate nor touch the memory handed out.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded as is; the caller upholds `alloc`'s contract.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `System` through this allocator with this `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded as is.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: `ptr`/`layout` came from `System` through this allocator.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        // On failure the old block stays allocated, unchanged.
        if !new.is_null() {
            LIVE_BYTES.fetch_add(new_size, Ordering::Relaxed);
            LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        new
    }
}

/// Allocations so far in the process.
pub fn allocations() -> u64 {
    ALLOCATIONS.load(Ordering::Relaxed)
}

/// Bytes allocated through [`CountingAlloc`] and not yet freed, in the whole process (as
/// requested: the system allocator's rounding and headers are not counted).
pub fn live_bytes() -> usize {
    LIVE_BYTES.load(Ordering::Relaxed)
}

static RECORDED: Mutex<BTreeMap<String, f64>> = Mutex::new(BTreeMap::new());

/// Runs `op` `n` times (after one warm-up call) and records allocations per call under
/// `name` (the criterion id, e.g. `fetch_hit/echocache/u64`).
pub fn record_allocs(name: &str, n: u64, mut op: impl FnMut()) -> f64 {
    op();
    let before = allocations();
    for _ in 0..n {
        op();
    }
    let per_op = (allocations() - before) as f64 / n as f64;
    RECORDED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(name.to_owned(), per_op);
    per_op
}

/// Records a figure measured outside criterion (e.g. loader calls of a stampede). A value
/// that is not finite (nothing was measured: `0 / 0`) is left out.
pub fn record(name: &str, value: f64) {
    if !value.is_finite() {
        return;
    }
    RECORDED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(name.to_owned(), value);
}

/// Where the recorded figures go: `target/echocache-bench/figures.json`.
pub fn figures_path() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("echocache-bench").join("figures.json")
}

/// Writes every recorded figure, merged into what earlier runs wrote.
pub fn save_figures() {
    let path = figures_path();
    let mut all: BTreeMap<String, f64> = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    all.extend(
        RECORDED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), *v)),
    );
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Ok(json) = serde_json::to_vec_pretty(&all) {
        let _ = std::fs::write(&path, json);
    }
}

/// Stops the run (a panic) unless every fetch `bench` measured through a cache with these
/// `stats` was a hit: no miss, no load, no store error. A hit bench that missed would
/// report the cost of something else under its name.
pub fn assert_only_hits(bench: &str, stats: &echocache_core::Stats) {
    assert!(
        stats.misses == 0 && stats.loads == 0 && stats.store_errors == 0,
        "{bench}: every measured fetch should have been a hit, but: {} misses, {} loads, \
         {} store errors",
        stats.misses,
        stats.loads,
        stats.store_errors
    );
}

/// Runs a path `iters` times and returns the time of those `iters` calls.
pub type Runner<'a> = Box<dyn Fn(u64) -> std::time::Duration + 'a>;

/// Runs every path in `rounds` short rounds, the paths one after the other in each round
/// (from a different first path each round), and records, for each path, its time relative
/// to the last path (the reference) as the median of the per-round ratios,
/// `ratio/{prefix}/{path}`, and its median time per call (ns),
/// `interleaved/{prefix}/{path}`.
///
/// Criterion measures the paths one after the other over several seconds each, so a
/// change in the machine's load between two of them (other builds, the server, another
/// tenant of the host) skews their ratio; paths measured side by side in every round see
/// the same conditions.
pub fn interleaved(
    prefix: &str,
    paths: &[(&str, Runner<'_>)],
    rounds: usize,
    calls_per_round: u64,
) {
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mut ratios: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds); paths.len()];
    let mut per_call: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds); paths.len()];
    let mut times = vec![std::time::Duration::ZERO; paths.len()];
    for round in 0..rounds.max(1) {
        for k in 0..paths.len() {
            let p = (round + k) % paths.len();
            times[p] = (paths[p].1)(calls_per_round);
        }
        let reference = times[paths.len() - 1].as_secs_f64();
        for (p, t) in times.iter().enumerate() {
            ratios[p].push(t.as_secs_f64() / reference);
            per_call[p].push(t.as_secs_f64() * 1e9 / calls_per_round as f64);
        }
    }
    for (((path, _), r), t) in paths.iter().zip(ratios).zip(per_call) {
        record(&format!("ratio/{prefix}/{path}"), median(r));
        record(&format!("interleaved/{prefix}/{path}"), median(t));
    }
}
