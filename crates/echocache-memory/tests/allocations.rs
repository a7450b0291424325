//! A hit allocates nothing beyond `V::clone` (DESIGN §5 Memory): measured with a counting
//! global allocator, for each store and for `EchoCache::fetch` over `LruStore`.
//!
//! Allocations are counted per thread, so tests running in parallel don't see each
//! other's; each measures only the hot call, after a warm-up.

// A `GlobalAlloc` needs `unsafe impl`; this test binary is the one place in the crate that
// allows it (the library forbids it in src/lib.rs).
#![allow(unsafe_code)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::{Duration, SystemTime};

use common::run;
use echocache_core::{EchoCache, Entry, LazyEchoCache, ManualClock, Store};
use echocache_memory::{ExpiringLruStore, LruStore, ShardedLruStore, SingleStore};

/// `System`, counting this thread's allocations and frees.
struct Counting;

thread_local! {
    // Const-initialised and without `Drop`: reading it never allocates nor registers a
    // destructor, so it is safe to touch from inside the allocator.
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
    static FREES: Cell<u64> = const { Cell::new(0) };
}

fn count(counter: &'static std::thread::LocalKey<Cell<u64>>) {
    // `try_with`: during thread teardown the slot may be gone; then don't count.
    let _ = counter.try_with(|c| c.set(c.get() + 1));
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so
// `System`'s guarantees are ours; the only extra work is bumping a thread-local counter,
// which neither allocates nor unwinds.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(&ALLOCS);
        // SAFETY: forwards to `System.alloc` with the caller's layout (non-zero size is
        // the caller's contract, as for us).
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(&ALLOCS);
        // SAFETY: forwards to `System.alloc_zeroed` with the caller's layout.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(&ALLOCS);
        // SAFETY: forwards to `System.realloc`; `ptr` was allocated by `System` (every
        // allocation goes through this wrapper) with `layout`, as the caller guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(&FREES);
        // SAFETY: forwards to `System.dealloc`; `ptr` was allocated by `System` through
        // this wrapper with `layout`, as the caller guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f` and returns its output with the number of allocations and frees it made on
/// this thread. The output is dropped by the caller, outside the measurement.
fn measure<T>(f: impl FnOnce() -> T) -> (T, u64, u64) {
    let allocs = ALLOCS.with(Cell::get);
    let frees = FREES.with(Cell::get);
    let out = f();
    let allocs = ALLOCS.with(Cell::get) - allocs;
    let frees = FREES.with(Cell::get) - frees;
    (out, allocs, frees)
}

fn entry(value: u64) -> Entry<u64> {
    Entry::new(value, SystemTime::UNIX_EPOCH)
}

/// Asserts that a store hit allocates (and frees) nothing, after a warm-up.
fn assert_hit_allocates_nothing<S: Store<u64>>(name: &str, store: &S) {
    run(store.set("hot-key", &entry(7))).unwrap();
    assert_eq!(run(store.get("hot-key")).unwrap().map(|e| e.value), Some(7));
    for _ in 0..3 {
        let (got, allocs, frees) = measure(|| run(store.get("hot-key")));
        assert_eq!(got.unwrap().map(|e| e.value), Some(7), "{name}: a hit");
        assert_eq!(allocs, 0, "{name}: allocations on a hit");
        assert_eq!(frees, 0, "{name}: frees on a hit");
    }
}

/// Asserts that overwriting a present key allocates nothing for the store's bookkeeping.
fn assert_update_allocates_nothing<S: Store<u64>>(name: &str, store: &S) {
    run(store.set("hot-key", &entry(1))).unwrap();
    for value in 2..5 {
        let (res, allocs, frees) = measure(|| run(store.set("hot-key", &entry(value))));
        res.unwrap();
        assert_eq!(allocs, 0, "{name}: allocations on an update");
        assert_eq!(frees, 0, "{name}: frees on an update");
    }
    assert_eq!(run(store.get("hot-key")).unwrap().map(|e| e.value), Some(4));
}

/// A store with other keys around, so that the hit is not on a trivial map.
fn lru() -> LruStore<u64> {
    let store = LruStore::new(1_000).unwrap();
    for i in 0..500 {
        run(store.set(&format!("key-{i}"), &entry(i))).unwrap();
    }
    store
}

fn expiring() -> ExpiringLruStore<u64> {
    let store = ExpiringLruStore::new(1_000, Duration::from_secs(3_600)).unwrap();
    for i in 0..500 {
        run(store.set(&format!("key-{i}"), &entry(i))).unwrap();
    }
    store
}

#[test]
fn counter_sees_allocations() {
    let (boxed, allocs, _) = measure(|| Box::new(42u64));
    assert_eq!(*boxed, 42);
    assert_eq!(allocs, 1, "the counting allocator is in place");
}

#[test]
fn lru_store_hit_allocates_nothing() {
    assert_hit_allocates_nothing("LruStore", &lru());
}

#[test]
fn expiring_lru_store_hit_allocates_nothing() {
    assert_hit_allocates_nothing("ExpiringLruStore", &expiring());
    let manual = ManualClock::new(SystemTime::UNIX_EPOCH);
    let on_manual = ExpiringLruStore::new(8, Duration::from_secs(60))
        .unwrap()
        .with_clock(manual);
    assert_hit_allocates_nothing("ExpiringLruStore (manual clock)", &on_manual);
}

#[test]
fn sharded_lru_store_hit_and_update_allocate_nothing() {
    let store = ShardedLruStore::new(1_000).unwrap();
    for i in 0..500 {
        run(store.set(&format!("key-{i}"), &entry(i))).unwrap();
    }
    assert_hit_allocates_nothing("ShardedLruStore", &store);
    assert_update_allocates_nothing("ShardedLruStore", &store);
}

#[test]
fn single_store_hit_allocates_nothing() {
    let store = SingleStore::new(Duration::from_secs(3_600)).unwrap();
    assert_hit_allocates_nothing("SingleStore", &store);
}

#[test]
fn updates_of_a_present_key_allocate_nothing() {
    assert_update_allocates_nothing("LruStore", &lru());
    assert_update_allocates_nothing("ExpiringLruStore", &expiring());
    let single = SingleStore::new(Duration::from_secs(3_600)).unwrap();
    assert_update_allocates_nothing("SingleStore", &single);
    // A SingleStore reuses its key buffer for a key no longer than the last one.
    run(single.set("a-long-key", &entry(1))).unwrap();
    let (res, allocs, _) = measure(|| run(single.set("short", &entry(2))));
    res.unwrap();
    assert_eq!(allocs, 0, "SingleStore: a shorter key reuses the buffer");
}

#[test]
fn echo_cache_fetch_hit_over_lru_store_allocates_nothing() {
    let cache = EchoCache::new(lru());
    run(cache.insert("hot-key", 7)).unwrap();
    let loader = || async { Ok::<u64, std::io::Error>(0) };
    // Warm-up: the first hit may set up per-thread state (stats stripes).
    assert_eq!(run(cache.fetch("hot-key", loader)).unwrap(), 7);
    for _ in 0..3 {
        let (got, allocs, frees) = measure(|| run(cache.fetch("hot-key", loader)));
        assert_eq!(got.unwrap(), 7);
        assert_eq!(allocs, 0, "EchoCache::fetch: allocations on a hit");
        assert_eq!(frees, 0, "EchoCache::fetch: frees on a hit");
    }
    assert_eq!(cache.stats().hits, 4);
    assert_eq!(cache.stats().loads, 0);
}

#[test]
fn lazy_echo_cache_fresh_hit_over_lru_store_allocates_nothing() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = runtime.enter(); // the lazy cache's workers need a runtime to be built
    let cache = LazyEchoCache::builder(lru())
        .refresh_after(Duration::from_secs(3_600))
        .build()
        .unwrap();
    run(cache.insert("hot-key", 7)).unwrap();
    let loader = || async { Ok::<u64, std::io::Error>(0) };
    assert_eq!(run(cache.fetch("hot-key", loader)).unwrap(), 7);
    for _ in 0..3 {
        let (got, allocs, frees) = measure(|| run(cache.fetch("hot-key", loader)));
        assert_eq!(got.unwrap(), 7);
        assert_eq!(
            allocs, 0,
            "LazyEchoCache::fetch: allocations on a fresh hit"
        );
        assert_eq!(frees, 0, "LazyEchoCache::fetch: frees on a fresh hit");
    }
}
