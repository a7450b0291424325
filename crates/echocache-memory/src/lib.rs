#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
//! In-memory stores for [echocache](https://docs.rs/echocache): the [`Store`] backends
//! that keep entries in this process.
//!
//! | Store | Holds | Expiry |
//! |---|---|---|
//! | [`LruStore`] | up to `capacity` entries, least recently used evicted first | none |
//! | [`ShardedLruStore`] | the same, split into shards with a lock each (LRU order per shard): for many threads hitting at once | none |
//! | [`ExpiringLruStore`] | the same as `LruStore` | a TTL counted from each entry's last `set` |
//! | [`SingleStore`] | one entry (one key) | a TTL counted from the last `set` |
//!
//! `LruStore`, `ExpiringLruStore` and `SingleStore` keep their state behind one [`Mutex`]
//! (`ShardedLruStore` one per shard), hash the key once outside it, and allocate nothing on a hit beyond the value's own `Clone` (use
//! `Arc<T>` or `Bytes` for large values). None runs a background thread or task:
//! expired entries are reclaimed when they are read and, for [`ExpiringLruStore`], when
//! new entries are written, so dropping a store frees everything it held.
//!
//! The refresh lock of the [`Store`] trait is granted at once by every in-memory store
//! (within one process the caches' single-flight and pending set already dedupe).
//!
//! Invalid settings (a zero capacity, a zero TTL) are rejected by the constructors with a
//! [`BuildError`], never by a panic on first use (Go bug 17).
//!
//! # Examples
//!
//! ```
//! use echocache_core::EchoCache;
//! use echocache_memory::LruStore;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let cache = EchoCache::new(LruStore::new(10_000).unwrap());
//! let name = cache
//!     .fetch("user:42", || async { Ok::<_, std::io::Error>("Ada".to_string()) })
//!     .await
//!     .unwrap();
//! assert_eq!(name, "Ada");
//! assert_eq!(cache.store().len(), 1);
//! # }
//! ```
//!
//! [`Store`]: echocache_core::Store
//! [`BuildError`]: echocache_core::BuildError

mod expiring;
mod lru;
mod sharded;
mod single;

pub use expiring::ExpiringLruStore;
pub use lru::LruStore;
pub use sharded::ShardedLruStore;
pub use single::SingleStore;

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use echocache_core::{BuildError, LockToken};

/// Takes `mutex`, recovering the data if a panic poisoned it.
///
/// A panic under these locks can only come from a value's `Clone` or `Drop`, which leave
/// the map itself consistent, so the data is still good.
#[inline]
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Rejects a zero capacity (Go bug 17: the Go LRU accepted it and panicked on first use).
fn check_capacity(capacity: usize) -> Result<(), BuildError> {
    if capacity == 0 {
        return Err(BuildError::InvalidSetting {
            setting: "capacity",
            reason: "must be at least 1",
        });
    }
    Ok(())
}

/// Rejects a zero TTL: every entry would be expired as soon as it is written.
fn check_ttl(ttl: Duration) -> Result<(), BuildError> {
    if ttl.is_zero() {
        return Err(BuildError::InvalidSetting {
            setting: "ttl",
            reason: "must be greater than zero",
        });
    }
    Ok(())
}

/// The token the in-memory stores hand out: their lock excludes no one (see the
/// [`Store`](echocache_core::Store) docs), so one fixed token serves every grant.
fn granted_token() -> LockToken {
    LockToken::new("echocache-memory")
}
