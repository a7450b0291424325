//! The synchronization primitives of the single-flight and the pending set, swapped for
//! [shuttle](https://docs.rs/shuttle)'s in the model-check build.
//!
//! `RUSTFLAGS="--cfg echocache_shuttle" cargo test -p echocache-core --lib model` builds
//! this crate's unit tests with shuttle's `Mutex` and atomics (which yield to shuttle's
//! scheduler at every operation) and runs the model checks of `model_tests.rs` and
//! `lazy/scheduler.rs`. Every other build uses `std`'s, at no cost. Like tokio's `loom`
//! shim the swap needs `test` too, so a `--cfg echocache_shuttle` build of anything else
//! (an integration test, a dependent crate) still gets `std`.
//!
//! What is not shim-aware stays outside the model: tokio's channels and semaphore are
//! atomic steps to shuttle (they never block a thread), and `NEXT_ID` in `flight.rs` is a
//! plain counter.

#[cfg(not(all(test, echocache_shuttle)))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64};
#[cfg(not(all(test, echocache_shuttle)))]
pub(crate) use std::sync::{Mutex, MutexGuard};

#[cfg(all(test, echocache_shuttle))]
pub(crate) use shuttle::sync::atomic::{AtomicBool, AtomicU64};
#[cfg(all(test, echocache_shuttle))]
pub(crate) use shuttle::sync::{Mutex, MutexGuard};

pub(crate) use std::sync::Arc;
pub(crate) use std::sync::atomic::Ordering;

/// The hasher of the sharded maps. Under shuttle a fixed one, so that which keys share a
/// shard, hence a lock, is the same in every run and a failing schedule replays.
#[cfg(not(all(test, echocache_shuttle)))]
pub(crate) type HashState = foldhash::fast::RandomState;
#[cfg(all(test, echocache_shuttle))]
pub(crate) type HashState = foldhash::fast::FixedState;

/// Locks `m`. Every update made under this crate's locks is complete before anything that
/// may panic runs there (only a value's `clone`), so a poisoned lock is used as it is.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs `fut` as its own task: tokio's in every ordinary build, shuttle's in the model.
#[cfg(not(all(test, echocache_shuttle)))]
pub(crate) fn spawn<F>(fut: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(fut);
}

/// Runs `fut` as its own task: tokio's in every ordinary build, shuttle's in the model.
#[cfg(all(test, echocache_shuttle))]
pub(crate) fn spawn<F>(fut: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    shuttle::future::spawn(fut);
}
