//! A global allocator that tracks, per thread, the bytes currently allocated and their
//! peak, so that a check can ask "how much memory did this call hold at most?".
//!
//! Per thread, so that tests running in parallel (or libFuzzer's own bookkeeping on other
//! threads) don't see each other's allocations. A `realloc` counts as its size change.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// `System`, tracking this thread's live bytes and their peak.
#[derive(Debug)]
pub(crate) struct CountingAlloc;

thread_local! {
    // Const-initialised and without `Drop`: reading them never allocates nor registers a
    // destructor, so they are safe to touch from inside the allocator.
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn grow(bytes: usize) {
    let bytes = isize::try_from(bytes).unwrap_or(isize::MAX);
    // `try_with`: during thread teardown the slots may be gone; then don't count.
    let _ = LIVE.try_with(|live| {
        let now = live.get().saturating_add(bytes);
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

fn shrink(bytes: usize) {
    let bytes = isize::try_from(bytes).unwrap_or(isize::MAX);
    let _ = LIVE.try_with(|live| live.set(live.get().saturating_sub(bytes)));
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so
// `System`'s guarantees are ours; the only extra work is updating thread-local counters,
// which neither allocates nor unwinds.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwards the caller's layout (non-zero size is the caller's contract).
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            grow(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            grow(layout.size());
        }
        ptr
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Counted as if the new block were allocated before the old one is freed, which is
        // what a moving realloc does: the peak includes both.
        grow(new_size);
        // SAFETY: `ptr` was allocated by `System` (every allocation goes through this
        // wrapper) with `layout`, as the caller guarantees.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if new.is_null() {
            shrink(new_size);
        } else {
            shrink(layout.size());
        }
        new
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        shrink(layout.size());
        // SAFETY: `ptr` was allocated by `System` through this wrapper with `layout`, as
        // the caller guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Runs `f` on this thread and returns its output with the largest number of bytes that
/// were allocated at once during the call, above what was live when it started. The
/// output's own memory is included (it is still live at the end of the call).
///
/// Only meaningful in a binary whose `#[global_allocator]` is [`CountingAlloc`].
pub(crate) fn peak_bytes<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let start = LIVE.with(Cell::get);
    let saved_peak = PEAK.with(Cell::get);
    PEAK.with(|peak| peak.set(start));
    let out = f();
    let peak = PEAK.with(Cell::get);
    PEAK.with(|p| p.set(saved_peak.max(peak)));
    (out, usize::try_from(peak - start).unwrap_or(0))
}

/// Whether [`CountingAlloc`] is this binary's global allocator: a check that would pass
/// vacuously otherwise asserts this first.
pub(crate) fn is_installed() -> bool {
    let (buf, peak) = peak_bytes(|| std::hint::black_box(vec![0u8; 4096]));
    drop(buf);
    peak >= 4096
}
