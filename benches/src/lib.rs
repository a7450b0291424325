//! Shared pieces of the benchmarks: a counting global allocator and the file where
//! allocation counts are recorded for `cargo xtask bench`'s report.
//!
//! The benchmarks themselves are in `benches/main.rs` (`cargo bench -p echocache-benches`
//! or `cargo xtask bench`).

#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counts allocations (and reallocations) made through it, forwarding to [`System`].
#[derive(Debug)]
pub struct CountingAlloc;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every method forwards its arguments unchanged to `System`, which upholds the
// `GlobalAlloc` contract; the only addition is a relaxed atomic increment, which neither
// allocates nor touches the memory handed out.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded as is; the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` through this allocator with this `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded as is.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: `ptr`/`layout` came from `System` through this allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Allocations so far in the process.
pub fn allocations() -> u64 {
    ALLOCATIONS.load(Ordering::Relaxed)
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

/// Records a figure measured outside criterion (e.g. loader calls of a stampede).
pub fn record(name: &str, value: f64) {
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
