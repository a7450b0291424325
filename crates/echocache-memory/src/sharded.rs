//! [`ShardedLruStore`]: an LRU split into shards, each behind its own lock, for caches hit
//! from many threads at once.

use std::fmt;
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::Duration;

use echocache_core::{BuildError, Entry, LockToken, Store, StoreError};
use hashlink::{DefaultHashBuilder, LruCache};

use crate::lru::{Map, get_promoted, put, take};

/// A least-recently-used store split into shards, each an exact LRU behind its own lock.
///
/// [`LruStore`](crate::LruStore) keeps one exact LRU behind one mutex, and every hit
/// writes to it (the hit entry moves to the back), so threads hitting the cache at the
/// same time queue on that lock. Here a key's hash picks one of several shards, each with
/// `capacity / shards` (rounded up) of the entries: hits on different shards never meet.
/// The price is that eviction is least-recently-used *within a shard*, an approximation
/// of the global order, and the store holds at most `capacity` rounded up to a multiple
/// of the shard count.
///
/// Hits allocate nothing beyond `V::clone`; the refresh lock is granted at once, as in
/// every memory store.
///
/// # Examples
///
/// ```
/// use std::time::SystemTime;
/// use echocache_core::{Entry, Store};
/// use echocache_memory::ShardedLruStore;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = ShardedLruStore::new(100_000)?;
/// store.set("k", &Entry::new("v", SystemTime::now())).await?;
/// assert_eq!(store.get("k").await?.map(|e| e.value), Some("v"));
/// assert!(store.shards() >= 1);
/// # Ok(())
/// # }
/// ```
pub struct ShardedLruStore<V> {
    /// One hasher for all shards: the hash picks the shard and is reused inside it.
    hasher: DefaultHashBuilder,
    shards: Box<[Mutex<Map<Entry<V>>>]>,
}

impl<V> ShardedLruStore<V> {
    /// A store of about `capacity` entries, with four shards per available core (a power
    /// of two, at most 64, and never more shards than entries).
    ///
    /// # Errors
    ///
    /// [`BuildError::InvalidSetting`] with `setting: "capacity"` when `capacity` is zero.
    pub fn new(capacity: usize) -> Result<Self, BuildError> {
        let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
        Self::with_shards(capacity, (cores * 4).next_power_of_two().min(64))
    }

    /// A store of about `capacity` entries in `shards` shards (fewer when `capacity` is
    /// smaller than `shards`).
    ///
    /// # Errors
    ///
    /// [`BuildError::InvalidSetting`] with `setting: "capacity"` or `"shards"` when either
    /// is zero.
    ///
    /// # Examples
    ///
    /// ```
    /// use echocache_memory::ShardedLruStore;
    ///
    /// let store = ShardedLruStore::<u64>::with_shards(1_000, 8).unwrap();
    /// assert_eq!((store.shards(), store.capacity()), (8, 1_000));
    /// let store = ShardedLruStore::<u64>::with_shards(10, 8).unwrap();
    /// assert_eq!((store.shards(), store.capacity()), (8, 16)); // 2 per shard
    /// assert!(ShardedLruStore::<u64>::with_shards(10, 0).is_err());
    /// ```
    pub fn with_shards(capacity: usize, shards: usize) -> Result<Self, BuildError> {
        crate::check_capacity(capacity)?;
        if shards == 0 {
            return Err(BuildError::InvalidSetting {
                setting: "shards",
                reason: "must be at least 1",
            });
        }
        let shards = shards.min(capacity);
        let per_shard = capacity.div_ceil(shards);
        let hasher = DefaultHashBuilder::default();
        Ok(Self {
            shards: (0..shards)
                .map(|_| Mutex::new(LruCache::with_hasher(per_shard, hasher.clone())))
                .collect(),
            hasher,
        })
    }

    /// The key's hash and its shard.
    #[inline]
    fn locate(&self, key: &str) -> (u64, &Mutex<Map<Entry<V>>>) {
        let hash = self.hasher.hash_one(key);
        // Middle bits: hashbrown uses the low bits for the bucket and the top seven for
        // its tags, so the shard choice stays independent of both.
        let index = ((hash >> 32) as usize) % self.shards.len();
        (hash, &self.shards[index])
    }

    /// The number of shards.
    pub fn shards(&self) -> usize {
        self.shards.len()
    }

    /// The most entries the store holds: the per-shard capacity times the shard count.
    pub fn capacity(&self) -> usize {
        self.shards.iter().map(|s| crate::lock(s).capacity()).sum()
    }

    /// The number of entries held.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| crate::lock(s).len()).sum()
    }

    /// Whether the store holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<V> fmt::Debug for ShardedLruStore<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShardedLruStore")
            .field("shards", &self.shards())
            .field("len", &self.len())
            .field("capacity", &self.capacity())
            .finish_non_exhaustive()
    }
}

impl<V: Clone + Send + Sync + 'static> Store<V> for ShardedLruStore<V> {
    /// Returns a clone of the entry for `key` and marks it most recently used in its shard.
    async fn get(&self, key: &str) -> Result<Option<Entry<V>>, StoreError> {
        let (hash, shard) = self.locate(key);
        Ok(get_promoted(&mut crate::lock(shard), hash, key))
    }

    /// Writes `entry` for `key`, evicting the least recently used entry of its shard when
    /// that shard is full.
    async fn set(&self, key: &str, entry: &Entry<V>) -> Result<(), StoreError> {
        let entry = entry.clone();
        let (hash, shard) = self.locate(key);
        let displaced = put(&mut crate::lock(shard), hash, key, entry);
        drop(displaced); // after the lock is released
        Ok(())
    }

    async fn remove(&self, key: &str) -> Result<(), StoreError> {
        let (hash, shard) = self.locate(key);
        let removed = take(&mut crate::lock(shard), hash, key);
        drop(removed); // after the lock is released
        Ok(())
    }

    /// Granted at once: see the type's docs.
    async fn try_lock(&self, _key: &str, _ttl: Duration) -> Result<Option<LockToken>, StoreError> {
        Ok(Some(crate::granted_token()))
    }

    /// Does nothing: see the type's docs.
    async fn unlock(&self, _key: &str, _token: &LockToken) -> Result<(), StoreError> {
        Ok(())
    }

    /// Always `true`: the lock is granted at once and never taken by anyone else.
    async fn extend_lock(
        &self,
        _key: &str,
        _token: &LockToken,
        _ttl: Duration,
    ) -> Result<bool, StoreError> {
        Ok(true)
    }

    /// `false`: the lock is this process's only.
    fn shares_locks(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};
    use std::time::SystemTime;

    fn run<F: Future>(future: F) -> F::Output {
        match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(output) => output,
            Poll::Pending => panic!("memory store futures complete at once"),
        }
    }

    fn entry(value: u64) -> Entry<u64> {
        Entry::new(value, SystemTime::UNIX_EPOCH)
    }

    #[test]
    fn one_shard_is_an_exact_lru() {
        let store = ShardedLruStore::with_shards(2, 1).unwrap();
        run(store.set("a", &entry(1))).unwrap();
        run(store.set("b", &entry(2))).unwrap();
        assert!(run(store.get("a")).unwrap().is_some()); // "a" most recently used
        run(store.set("c", &entry(3))).unwrap(); // evicts "b"
        assert!(run(store.get("b")).unwrap().is_none());
        assert_eq!(run(store.get("a")).unwrap().map(|e| e.value), Some(1));
        assert_eq!(run(store.get("c")).unwrap().map(|e| e.value), Some(3));
    }

    #[test]
    fn keys_spread_over_shards_and_capacity_holds() {
        let store = ShardedLruStore::with_shards(1_000, 8).unwrap();
        for i in 0..5_000u64 {
            run(store.set(&format!("key-{i}"), &entry(i))).unwrap();
            assert!(store.len() <= store.capacity());
        }
        assert_eq!(store.capacity(), 1_000);
        let used: HashSet<usize> = store
            .shards
            .iter()
            .enumerate()
            .filter(|(_, s)| !crate::lock(s).is_empty())
            .map(|(i, _)| i)
            .collect();
        assert_eq!(used.len(), 8, "every shard holds entries");
        // The most recent keys are all there, each with its own value.
        for i in 4_990..5_000u64 {
            assert_eq!(
                run(store.get(&format!("key-{i}")))
                    .unwrap()
                    .map(|e| e.value),
                Some(i)
            );
        }
        run(store.remove("key-4999")).unwrap();
        assert!(run(store.get("key-4999")).unwrap().is_none());
    }

    #[test]
    fn zero_capacity_or_shards_is_refused() {
        assert!(ShardedLruStore::<u64>::new(0).is_err());
        assert!(ShardedLruStore::<u64>::with_shards(5, 0).is_err());
        assert_eq!(
            ShardedLruStore::<u64>::with_shards(3, 16).unwrap().shards(),
            3
        );
    }
}
