//! [`LruStore`]: an exact LRU over `hashlink`, and the table it shares with
//! [`ExpiringLruStore`](crate::ExpiringLruStore).

use std::fmt;
use std::hash::BuildHasher;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use echocache_core::{BuildError, Entry, LockToken, Store, StoreError};
use hashlink::linked_hash_map::RawEntryMut;
use hashlink::{DefaultHashBuilder, LruCache};

/// The map behind the LRU stores: front = least recently used, back = most recently used.
pub(crate) type Map<T> = LruCache<Box<str>, T, DefaultHashBuilder>;

/// A capacity-bounded LRU map behind one mutex, with its hasher kept outside the lock so
/// that the key is hashed before the lock is taken (and only once).
pub(crate) struct Table<T> {
    map: Mutex<Map<T>>,
    hasher: DefaultHashBuilder,
}

/// What a write pushed out of the map, to be dropped after the lock is released (a
/// value's `Drop` may be costly: the last `Arc` of a large value).
pub(crate) struct Displaced<T> {
    _replaced: Option<T>,
    _evicted: Option<(Box<str>, T)>,
}

impl<T> Table<T> {
    pub(crate) fn new(capacity: usize) -> Result<Self, BuildError> {
        crate::check_capacity(capacity)?;
        let hasher = DefaultHashBuilder::default();
        Ok(Self {
            map: Mutex::new(LruCache::with_hasher(capacity, hasher.clone())),
            hasher,
        })
    }

    /// The key's hash, as the map computes it (`Box<str>` hashes as its `str`).
    #[inline]
    pub(crate) fn hash(&self, key: &str) -> u64 {
        self.hasher.hash_one(key)
    }

    #[inline]
    pub(crate) fn lock(&self) -> MutexGuard<'_, Map<T>> {
        crate::lock(&self.map)
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    pub(crate) fn capacity(&self) -> usize {
        self.lock().capacity()
    }

    /// Removes `key`, returning its value for the caller to drop outside the lock.
    pub(crate) fn remove(&self, key: &str) -> Option<T> {
        let hash = self.hash(key);
        take(&mut self.lock(), hash, key)
    }
}

/// The map's slot for `key`, found with its precomputed `hash`.
#[inline]
pub(crate) fn slot<'a, T>(
    map: &'a mut Map<T>,
    hash: u64,
    key: &str,
) -> RawEntryMut<'a, Box<str>, T, DefaultHashBuilder> {
    map.raw_entry_mut().from_key_hashed_nocheck(hash, key)
}

/// A clone of the value for `key`, which becomes the most recently used entry.
#[inline]
pub(crate) fn get_promoted<T: Clone>(map: &mut Map<T>, hash: u64, key: &str) -> Option<T> {
    match slot(map, hash, key) {
        RawEntryMut::Occupied(mut occupied) => {
            occupied.to_back();
            Some(occupied.get().clone())
        }
        RawEntryMut::Vacant(_) => None,
    }
}

/// Removes `key`, returning its value for the caller to drop outside the lock.
pub(crate) fn take<T>(map: &mut Map<T>, hash: u64, key: &str) -> Option<T> {
    match slot(map, hash, key) {
        RawEntryMut::Occupied(occupied) => Some(occupied.remove()),
        RawEntryMut::Vacant(_) => None,
    }
}

/// Writes `value` for `key` as the most recently used entry, evicting the least recently
/// used one when the map goes over capacity. Updating a present key allocates nothing.
pub(crate) fn put<T>(map: &mut Map<T>, hash: u64, key: &str, value: T) -> Displaced<T> {
    let replaced = match slot(map, hash, key) {
        RawEntryMut::Occupied(mut occupied) => {
            occupied.to_back();
            Some(occupied.replace_value(value))
        }
        RawEntryMut::Vacant(vacant) => {
            vacant.insert_hashed_nocheck(hash, Box::from(key), value);
            None
        }
    };
    let evicted = if map.len() > map.capacity() {
        map.remove_lru()
    } else {
        None
    };
    Displaced {
        _replaced: replaced,
        _evicted: evicted,
    }
}

/// An exact least-recently-used store with a fixed capacity and no expiry.
///
/// A [`get`](Store::get) hit marks the key most recently used; a [`set`](Store::set) of a
/// new key past the capacity evicts the least recently used entry. Entries never expire:
/// with [`LazyEchoCache`](echocache_core::LazyEchoCache) an old entry is served stale and
/// refreshed in the background; use [`ExpiringLruStore`](crate::ExpiringLruStore) to bound
/// how long an entry may live.
///
/// One [`Mutex`] guards the map; the key is hashed once, before the lock is taken. A hit
/// allocates nothing beyond `V::clone` (wrap large values in `Arc`). The refresh lock is
/// granted at once and [`unlock`](Store::unlock) does nothing.
///
/// # Examples
///
/// ```
/// use std::time::SystemTime;
/// use echocache_core::{Entry, Store};
/// use echocache_memory::LruStore;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = LruStore::new(2)?;
/// let now = SystemTime::now();
/// store.set("a", &Entry::new(1, now)).await?;
/// store.set("b", &Entry::new(2, now)).await?;
/// store.get("a").await?; // "a" is now the most recently used
/// store.set("c", &Entry::new(3, now)).await?; // evicts "b"
///
/// assert!(store.get("b").await?.is_none());
/// assert_eq!(store.get("a").await?.map(|e| e.value), Some(1));
/// assert_eq!(store.len(), 2);
/// # Ok(())
/// # }
/// ```
pub struct LruStore<V> {
    table: Table<Entry<V>>,
}

impl<V> LruStore<V> {
    /// An empty store holding at most `capacity` entries.
    ///
    /// # Errors
    ///
    /// [`BuildError::InvalidSetting`] with `setting: "capacity"` when `capacity` is zero.
    ///
    /// # Examples
    ///
    /// ```
    /// use echocache_core::BuildError;
    /// use echocache_memory::LruStore;
    ///
    /// let store = LruStore::<String>::new(1_000).unwrap();
    /// assert_eq!(store.capacity(), 1_000);
    ///
    /// let err = LruStore::<String>::new(0).unwrap_err();
    /// assert_eq!(
    ///     err,
    ///     BuildError::InvalidSetting { setting: "capacity", reason: "must be at least 1" }
    /// );
    /// ```
    pub fn new(capacity: usize) -> Result<Self, BuildError> {
        Ok(Self {
            table: Table::new(capacity)?,
        })
    }

    /// The number of entries held.
    ///
    /// # Examples
    ///
    /// ```
    /// # use echocache_core::{Entry, Store};
    /// # use echocache_memory::LruStore;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let store = LruStore::new(10).unwrap();
    /// assert_eq!(store.len(), 0);
    /// store.set("k", &Entry::new("v", std::time::SystemTime::now())).await.unwrap();
    /// assert_eq!(store.len(), 1);
    /// # }
    /// ```
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether the store holds no entry.
    ///
    /// # Examples
    ///
    /// ```
    /// # use echocache_memory::LruStore;
    /// assert!(LruStore::<u64>::new(10).unwrap().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most entries the store holds, as given to [`new`](Self::new).
    ///
    /// # Examples
    ///
    /// ```
    /// # use echocache_memory::LruStore;
    /// assert_eq!(LruStore::<u64>::new(64).unwrap().capacity(), 64);
    /// ```
    pub fn capacity(&self) -> usize {
        self.table.capacity()
    }
}

impl<V> fmt::Debug for LruStore<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Sizes only: keys and values are the user's and may be sensitive.
        let map = self.table.lock();
        f.debug_struct("LruStore")
            .field("len", &map.len())
            .field("capacity", &map.capacity())
            .finish_non_exhaustive()
    }
}

impl<V: Clone + Send + Sync + 'static> Store<V> for LruStore<V> {
    /// Returns a clone of the entry for `key` and marks it most recently used.
    async fn get(&self, key: &str) -> Result<Option<Entry<V>>, StoreError> {
        let hash = self.table.hash(key);
        Ok(get_promoted(&mut self.table.lock(), hash, key))
    }

    /// Writes `entry` for `key` as the most recently used entry, evicting the least
    /// recently used one when the store is full.
    async fn set(&self, key: &str, entry: &Entry<V>) -> Result<(), StoreError> {
        let entry = entry.clone(); // the user's clone, outside the lock
        let hash = self.table.hash(key);
        let displaced = put(&mut self.table.lock(), hash, key, entry);
        drop(displaced); // after the lock is released
        Ok(())
    }

    async fn remove(&self, key: &str) -> Result<(), StoreError> {
        drop(self.table.remove(key));
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
    use std::future::Future;
    use std::pin::pin;
    use std::sync::Arc;
    use std::task::{Context, Poll, Waker};
    use std::time::SystemTime;

    /// Runs a store future, which completes on its first poll.
    fn run<F: Future>(future: F) -> F::Output {
        match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(output) => output,
            Poll::Pending => panic!("memory store futures complete at once"),
        }
    }

    fn entry(value: u64) -> Entry<u64> {
        Entry::new(value, SystemTime::UNIX_EPOCH)
    }

    fn value(store: &LruStore<u64>, key: &str) -> Option<u64> {
        run(store.get(key)).unwrap().map(|e| e.value)
    }

    #[test]
    fn futures_are_send() {
        fn is_send<T: Send>(_: T) {}
        let store = LruStore::<u64>::new(1).unwrap();
        is_send(store.get("k"));
        is_send(store.set("k", &entry(1)));
        is_send(store.remove("k"));
        is_send(store.try_lock("k", Duration::from_secs(1)));
        is_send(store.unlock("k", &LockToken::new("t")));
    }

    #[test]
    fn evicts_the_least_recently_used() {
        let store = LruStore::new(3).unwrap();
        for (i, key) in ["a", "b", "c"].into_iter().enumerate() {
            run(store.set(key, &entry(i as u64))).unwrap();
        }
        assert_eq!(value(&store, "a"), Some(0)); // order now b, c, a
        run(store.set("b", &entry(10))).unwrap(); // update: order c, a, b
        run(store.set("d", &entry(3))).unwrap(); // evicts c
        assert_eq!(value(&store, "c"), None);
        assert_eq!(value(&store, "a"), Some(0));
        assert_eq!(value(&store, "b"), Some(10));
        assert_eq!(value(&store, "d"), Some(3));
        assert_eq!(store.len(), 3);
    }

    #[test]
    fn update_keeps_written_at_as_given() {
        let store = LruStore::new(1).unwrap();
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(42);
        run(store.set("k", &Entry::new(7, at))).unwrap();
        let got = run(store.get("k")).unwrap().unwrap();
        assert_eq!(got.written_at, at);
    }

    #[test]
    fn remove_frees_a_slot() {
        let store = LruStore::new(1).unwrap();
        run(store.set("a", &entry(1))).unwrap();
        run(store.remove("a")).unwrap();
        run(store.remove("a")).unwrap();
        assert!(store.is_empty());
        assert_eq!(value(&store, "a"), None);
    }

    #[test]
    fn zero_capacity_is_rejected() {
        let err = LruStore::<u64>::new(0).unwrap_err();
        assert_eq!(
            err,
            BuildError::InvalidSetting {
                setting: "capacity",
                reason: "must be at least 1"
            }
        );
        assert_eq!(
            err.to_string(),
            "invalid setting `capacity`: must be at least 1"
        );
    }

    #[test]
    fn displaced_values_are_dropped_outside_the_lock() {
        use std::sync::TryLockError;
        use std::sync::atomic::{AtomicUsize, Ordering};

        /// Records, when dropped, whether the store's lock was held.
        #[derive(Clone)]
        struct Probe {
            store: std::sync::Weak<LruStore<Probe>>,
            outside: Arc<AtomicUsize>,
            inside: Arc<AtomicUsize>,
        }
        impl Drop for Probe {
            fn drop(&mut self) {
                let Some(store) = self.store.upgrade() else {
                    return;
                };
                let held = matches!(store.table.map.try_lock(), Err(TryLockError::WouldBlock));
                let counter = if held { &self.inside } else { &self.outside };
                counter.fetch_add(1, Ordering::SeqCst);
            }
        }

        let store = Arc::new(LruStore::<Probe>::new(1).unwrap());
        let outside = Arc::new(AtomicUsize::new(0));
        let inside = Arc::new(AtomicUsize::new(0));
        let probe = || {
            Entry::new(
                Probe {
                    store: Arc::downgrade(&store),
                    outside: Arc::clone(&outside),
                    inside: Arc::clone(&inside),
                },
                SystemTime::UNIX_EPOCH,
            )
        };
        run(store.set("a", &probe())).unwrap();
        run(store.set("a", &probe())).unwrap(); // replaces
        run(store.set("b", &probe())).unwrap(); // evicts "a"
        run(store.remove("b")).unwrap(); // removes
        assert!(store.is_empty());
        assert_eq!(inside.load(Ordering::SeqCst), 0, "dropped under the lock");
        // The three argument entries, and the three stored clones displaced above.
        assert_eq!(outside.load(Ordering::SeqCst), 6);
    }

    #[test]
    fn a_poisoned_lock_is_recovered() {
        #[derive(Debug)]
        struct PanicsOnClone;
        impl Clone for PanicsOnClone {
            fn clone(&self) -> Self {
                panic!("clone failed")
            }
        }
        let store = LruStore::new(2).unwrap();
        // `set` clones outside the lock, so put the value in directly and poison via `get`.
        {
            let mut map = store.table.lock();
            let hash = store.table.hash("k");
            drop(put(
                &mut map,
                hash,
                "k",
                Entry::new(PanicsOnClone, SystemTime::UNIX_EPOCH),
            ));
        }
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = run(store.get("k"));
        }));
        assert!(result.is_err());
        assert!(store.table.map.is_poisoned());
        // Still usable.
        assert_eq!(store.len(), 1);
        run(store.remove("k")).unwrap();
        assert!(store.is_empty());
    }

    #[test]
    fn debug_prints_no_keys_or_values() {
        let store = LruStore::new(4).unwrap();
        run(store.set(
            "secret-key",
            &Entry::new("secret-value", SystemTime::UNIX_EPOCH),
        ))
        .unwrap();
        let printed = format!("{store:?}");
        assert!(!printed.contains("secret"), "{printed}");
        assert!(printed.contains("len: 1"), "{printed}");
        assert!(printed.contains("capacity: 4"), "{printed}");
    }

    #[test]
    fn lock_is_granted_at_once() {
        let store = LruStore::<u64>::new(1).unwrap();
        let a = run(store.try_lock("k", Duration::from_secs(1))).unwrap();
        let b = run(store.try_lock("k", Duration::from_secs(1))).unwrap();
        assert!(a.is_some() && b.is_some());
        run(store.unlock("k", &a.unwrap())).unwrap();
        assert!(
            run(store.get("k")).unwrap().is_none(),
            "a lock is not an entry"
        );
    }
}
