//! [`ExpiringLruStore`]: an exact LRU whose entries expire a fixed time after their last
//! write, reclaimed without any background thread (Go bug 18).

use std::fmt;
use std::time::{Duration, SystemTime};

use echocache_core::{BuildError, Clock, Entry, LockToken, Store, StoreError};
use hashlink::linked_hash_map::RawEntryMut;

use crate::lru::{Table, put, slot};

/// How many expired entries a `set` reclaims at most from the least recently used end.
///
/// Each `set` adds at most one entry, so reclaiming up to a few keeps up with writes while
/// bounding the time spent under the lock when many entries expire together.
const RECLAIM_PER_SET: usize = 4;

/// An entry and the time (by the store's clock) from which it is expired.
pub(crate) struct Timed<V> {
    pub(crate) entry: Entry<V>,
    /// `None` when `now + ttl` does not fit in a `SystemTime`: never expires.
    expires_at: Option<SystemTime>,
}

impl<V> Timed<V> {
    /// `entry` written at `now`, living for `ttl`.
    #[inline]
    pub(crate) fn new(entry: Entry<V>, now: SystemTime, ttl: Duration) -> Self {
        Self {
            entry,
            expires_at: now.checked_add(ttl),
        }
    }

    /// Whether the entry is expired at `now`: from `written + ttl` on, inclusive.
    #[inline]
    pub(crate) fn is_expired(&self, now: SystemTime) -> bool {
        self.expires_at.is_some_and(|at| now >= at)
    }
}

/// An exact least-recently-used store whose entries expire `ttl` after their last
/// [`set`](Store::set).
///
/// It behaves as [`LruStore`](crate::LruStore) (same capacity, same eviction, same single
/// lock and allocation-free hits), and in addition:
///
/// - **Expiry.** An entry set at time `t` is expired when `now >= t + ttl`: it lives for
///   exactly `ttl`. An expired entry is never returned: [`get`](Store::get) reports a
///   miss. Reading does not extend the TTL; only another `set` does.
/// - **Whose clock.** `t` is read from the store's own [`Clock`] when `set` runs, not taken
///   from the entry's `written_at`, which callers may set in the past (a value loaded
///   elsewhere, a replayed entry): every entry lives a full `ttl` in this store. The
///   entry's `written_at` is stored and returned unchanged. A `ttl` too large to add to the
///   clock's time means the entry never expires.
/// - **Reclaiming.** There is no background thread or task (the Go original leaked one
///   sweeper goroutine per store, Go bug 18). An expired entry is removed when a `get`
///   finds it, and each `set` first removes up to a few expired entries from the least
///   recently used end. Expired entries otherwise still count in [`len`](Self::len) until
///   reclaimed or evicted, and never hold more than `capacity` slots; dropping the store
///   frees everything.
///
/// With [`LazyEchoCache`](echocache_core::LazyEchoCache), choose a `ttl` above the
/// cache's `refresh_after` so that stale entries are still there to be served while they
/// are refreshed.
///
/// # Examples
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use echocache_core::{Entry, ManualClock, Store};
/// use echocache_memory::ExpiringLruStore;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let clock = ManualClock::new(SystemTime::now());
/// let store = ExpiringLruStore::new(1_000, Duration::from_secs(60))?.with_clock(clock.clone());
///
/// store.set("session", &Entry::new("token-1", clock.now())).await?;
/// clock.advance(Duration::from_secs(59));
/// assert!(store.get("session").await?.is_some());
///
/// clock.advance(Duration::from_secs(1)); // 60 s after the set: expired
/// assert!(store.get("session").await?.is_none());
/// assert_eq!(store.len(), 0, "the expired entry was reclaimed by the get");
/// # Ok(())
/// # }
/// ```
pub struct ExpiringLruStore<V> {
    table: Table<Timed<V>>,
    ttl: Duration,
    clock: Clock,
}

impl<V> ExpiringLruStore<V> {
    /// An empty store holding at most `capacity` entries, each for `ttl` after its last
    /// write, on the system clock.
    ///
    /// # Errors
    ///
    /// [`BuildError::InvalidSetting`] with `setting: "capacity"` when `capacity` is zero,
    /// or `setting: "ttl"` when `ttl` is zero (checked in that order).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use echocache_core::BuildError;
    /// use echocache_memory::ExpiringLruStore;
    ///
    /// let store = ExpiringLruStore::<String>::new(1_000, Duration::from_secs(300)).unwrap();
    /// assert_eq!(store.ttl(), Duration::from_secs(300));
    ///
    /// let err = ExpiringLruStore::<String>::new(1_000, Duration::ZERO).unwrap_err();
    /// assert_eq!(
    ///     err,
    ///     BuildError::InvalidSetting { setting: "ttl", reason: "must be greater than zero" }
    /// );
    /// ```
    pub fn new(capacity: usize, ttl: Duration) -> Result<Self, BuildError> {
        let table = Table::new(capacity)?;
        crate::check_ttl(ttl)?;
        Ok(Self {
            table,
            ttl,
            clock: Clock::system(),
        })
    }

    /// Uses `clock` for write times and expiry instead of the system clock: a
    /// [`ManualClock`](echocache_core::ManualClock) lets tests expire entries without
    /// sleeping.
    ///
    /// # Default
    ///
    /// [`Clock::system`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use echocache_core::ManualClock;
    /// use echocache_memory::ExpiringLruStore;
    ///
    /// let clock = ManualClock::new(SystemTime::UNIX_EPOCH);
    /// let store = ExpiringLruStore::<u64>::new(10, Duration::from_secs(1))
    ///     .unwrap()
    ///     .with_clock(clock);
    /// # let _ = store;
    /// ```
    #[must_use]
    pub fn with_clock(self, clock: impl Into<Clock>) -> Self {
        Self {
            clock: clock.into(),
            ..self
        }
    }

    /// How long an entry lives after its last write.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use echocache_memory::ExpiringLruStore;
    /// let store = ExpiringLruStore::<u64>::new(10, Duration::from_secs(5)).unwrap();
    /// assert_eq!(store.ttl(), Duration::from_secs(5));
    /// ```
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The number of entries held, counting expired entries not yet reclaimed.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::{Duration, SystemTime};
    /// # use echocache_core::{Entry, Store};
    /// # use echocache_memory::ExpiringLruStore;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let store = ExpiringLruStore::new(10, Duration::from_secs(60)).unwrap();
    /// store.set("k", &Entry::new(1u64, SystemTime::now())).await.unwrap();
    /// assert_eq!(store.len(), 1);
    /// # }
    /// ```
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether the store holds no entry (expired or not).
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use echocache_memory::ExpiringLruStore;
    /// assert!(ExpiringLruStore::<u64>::new(10, Duration::from_secs(1)).unwrap().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most entries the store holds, as given to [`new`](Self::new).
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use echocache_memory::ExpiringLruStore;
    /// let store = ExpiringLruStore::<u64>::new(64, Duration::from_secs(1)).unwrap();
    /// assert_eq!(store.capacity(), 64);
    /// ```
    pub fn capacity(&self) -> usize {
        self.table.capacity()
    }
}

impl<V> fmt::Debug for ExpiringLruStore<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Sizes and settings only: keys and values are the user's and may be sensitive.
        let (len, capacity) = {
            let map = self.table.lock();
            (map.len(), map.capacity())
        };
        f.debug_struct("ExpiringLruStore")
            .field("len", &len)
            .field("capacity", &capacity)
            .field("ttl", &self.ttl)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl<V: Clone + Send + Sync + 'static> Store<V> for ExpiringLruStore<V> {
    /// Returns a clone of the live entry for `key` and marks it most recently used; an
    /// expired entry is removed and reported as a miss.
    async fn get(&self, key: &str) -> Result<Option<Entry<V>>, StoreError> {
        let now = self.clock.now();
        let hash = self.table.hash(key);
        let expired = {
            let mut map = self.table.lock();
            match slot(&mut map, hash, key) {
                RawEntryMut::Occupied(mut occupied) if !occupied.get().is_expired(now) => {
                    occupied.to_back();
                    return Ok(Some(occupied.get().entry.clone()));
                }
                RawEntryMut::Occupied(occupied) => occupied.remove(),
                RawEntryMut::Vacant(_) => return Ok(None),
            }
        };
        drop(expired); // after the lock is released
        Ok(None)
    }

    /// Writes `entry` for `key`, living for `ttl` from now (by the store's clock), as the
    /// most recently used entry; reclaims a few expired entries and evicts the least
    /// recently used one when the store is full.
    async fn set(&self, key: &str, entry: &Entry<V>) -> Result<(), StoreError> {
        let now = self.clock.now();
        let timed = Timed::new(entry.clone(), now, self.ttl);
        let hash = self.table.hash(key);
        let mut reclaimed: [Option<(Box<str>, Timed<V>)>; RECLAIM_PER_SET] = Default::default();
        let displaced = {
            let mut map = self.table.lock();
            for slot in &mut reclaimed {
                let front_expired = map
                    .iter()
                    .next()
                    .is_some_and(|(_, timed)| timed.is_expired(now));
                if !front_expired {
                    break;
                }
                *slot = map.remove_lru();
            }
            put(&mut map, hash, key, timed)
        };
        // After the lock is released.
        drop(displaced);
        drop(reclaimed);
        Ok(())
    }

    async fn remove(&self, key: &str) -> Result<(), StoreError> {
        drop(self.table.remove(key));
        Ok(())
    }

    /// Granted at once: the lock excludes no one in memory.
    async fn try_lock(&self, _key: &str, _ttl: Duration) -> Result<Option<LockToken>, StoreError> {
        Ok(Some(crate::granted_token()))
    }

    /// Does nothing: the lock excludes no one in memory.
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
    use echocache_core::ManualClock;
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    fn run<F: Future>(future: F) -> F::Output {
        match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(output) => output,
            Poll::Pending => panic!("memory store futures complete at once"),
        }
    }

    const TTL: Duration = Duration::from_secs(10);

    fn setup(capacity: usize) -> (ManualClock, ExpiringLruStore<u64>) {
        let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000));
        let store = ExpiringLruStore::new(capacity, TTL)
            .unwrap()
            .with_clock(clock.clone());
        (clock, store)
    }

    fn set(store: &ExpiringLruStore<u64>, key: &str, value: u64) {
        run(store.set(key, &Entry::new(value, SystemTime::UNIX_EPOCH))).unwrap();
    }

    fn value(store: &ExpiringLruStore<u64>, key: &str) -> Option<u64> {
        run(store.get(key)).unwrap().map(|e| e.value)
    }

    #[test]
    fn futures_are_send() {
        fn is_send<T: Send>(_: T) {}
        let (_, store) = setup(1);
        is_send(store.get("k"));
        is_send(store.set("k", &Entry::new(1, SystemTime::UNIX_EPOCH)));
        is_send(store.remove("k"));
        is_send(store.try_lock("k", TTL));
        is_send(store.unlock("k", &LockToken::new("t")));
    }

    #[test]
    fn an_entry_lives_exactly_ttl_after_its_last_set() {
        let (clock, store) = setup(4);
        set(&store, "k", 1);
        clock.advance(TTL - Duration::from_nanos(1));
        assert_eq!(value(&store, "k"), Some(1), "just before the deadline");
        clock.advance(Duration::from_nanos(1));
        assert_eq!(value(&store, "k"), None, "at the deadline: expired");
        assert!(store.is_empty(), "the get reclaimed it");
    }

    #[test]
    fn reading_does_not_extend_the_ttl_but_writing_does() {
        let (clock, store) = setup(4);
        set(&store, "k", 1);
        clock.advance(TTL / 2);
        assert_eq!(value(&store, "k"), Some(1));
        clock.advance(TTL / 2);
        assert_eq!(value(&store, "k"), None);

        set(&store, "k", 2);
        clock.advance(TTL / 2);
        set(&store, "k", 3);
        clock.advance(TTL / 2);
        assert_eq!(
            value(&store, "k"),
            Some(3),
            "the second set restarted the TTL"
        );
    }

    #[test]
    fn ttl_counts_from_the_store_clock_not_written_at() {
        let (clock, store) = setup(4);
        // An entry written long ago (by another process, say) still lives a full TTL.
        let old = clock.now() - Duration::from_secs(3_600);
        run(store.set("k", &Entry::new(9, old))).unwrap();
        clock.advance(TTL - Duration::from_secs(1));
        let got = run(store.get("k")).unwrap().expect("live");
        assert_eq!(got.written_at, old, "written_at is kept as given");
    }

    #[test]
    fn set_reclaims_expired_entries_from_the_lru_end() {
        let (clock, store) = setup(10);
        for key in ["a", "b", "c", "d", "e", "f"] {
            set(&store, key, 0);
        }
        clock.advance(TTL);
        set(&store, "g", 1);
        assert_eq!(store.len(), 7 - RECLAIM_PER_SET);
        set(&store, "h", 1);
        assert_eq!(store.len(), 2, "the rest of the expired entries are gone");
        assert_eq!(value(&store, "g"), Some(1));
        assert_eq!(value(&store, "a"), None);
    }

    #[test]
    fn set_stops_reclaiming_at_a_live_entry() {
        let (clock, store) = setup(10);
        set(&store, "old", 0);
        set(&store, "older", 0);
        clock.advance(TTL / 2);
        set(&store, "young", 0);
        assert_eq!(value(&store, "older"), Some(0)); // LRU order: old, young, older
        clock.advance(TTL / 2); // "old" and "older" expired, "young" live
        set(&store, "new", 0);
        assert_eq!(store.len(), 3, "old reclaimed, young stops the sweep");
        assert_eq!(value(&store, "older"), None);
        assert_eq!(value(&store, "young"), Some(0));
    }

    #[test]
    fn expired_entries_make_room_before_live_ones_are_evicted() {
        let (clock, store) = setup(2);
        set(&store, "a", 1);
        set(&store, "b", 2);
        clock.advance(TTL);
        set(&store, "c", 3);
        set(&store, "d", 4);
        assert_eq!(value(&store, "c"), Some(3));
        assert_eq!(value(&store, "d"), Some(4));
        assert_eq!(store.len(), 2);
    }

    #[test]
    fn lru_eviction_still_applies() {
        let (_, store) = setup(2);
        set(&store, "a", 1);
        set(&store, "b", 2);
        assert_eq!(value(&store, "a"), Some(1));
        set(&store, "c", 3);
        assert_eq!(value(&store, "b"), None);
        assert_eq!(value(&store, "a"), Some(1));
        assert_eq!(value(&store, "c"), Some(3));
    }

    #[test]
    fn a_huge_ttl_never_expires() {
        let clock = ManualClock::new(SystemTime::UNIX_EPOCH);
        let store = ExpiringLruStore::new(1, Duration::MAX)
            .unwrap()
            .with_clock(clock.clone());
        run(store.set("k", &Entry::new(1u64, SystemTime::UNIX_EPOCH))).unwrap();
        clock.advance(Duration::from_secs(u64::MAX / 4_000_000_000));
        assert!(run(store.get("k")).unwrap().is_some());
    }

    #[test]
    fn invalid_settings_are_rejected() {
        assert_eq!(
            ExpiringLruStore::<u64>::new(0, TTL).unwrap_err(),
            BuildError::InvalidSetting {
                setting: "capacity",
                reason: "must be at least 1"
            }
        );
        assert_eq!(
            ExpiringLruStore::<u64>::new(1, Duration::ZERO).unwrap_err(),
            BuildError::InvalidSetting {
                setting: "ttl",
                reason: "must be greater than zero"
            }
        );
    }

    #[test]
    fn remove_and_locks() {
        let (_, store) = setup(2);
        set(&store, "k", 1);
        run(store.remove("k")).unwrap();
        run(store.remove("k")).unwrap();
        assert_eq!(value(&store, "k"), None);
        let token = run(store.try_lock("k", TTL)).unwrap().expect("granted");
        assert!(run(store.try_lock("k", TTL)).unwrap().is_some());
        run(store.unlock("k", &token)).unwrap();
        assert!(store.is_empty(), "a lock is not an entry");
    }

    #[test]
    fn debug_prints_no_keys_or_values() {
        let (_, store) = setup(3);
        set(&store, "secret-key", 424_242);
        let printed = format!("{store:?}");
        assert!(!printed.contains("secret"), "{printed}");
        assert!(!printed.contains("424242"), "{printed}");
        assert!(printed.contains("ttl: 10s"), "{printed}");
        assert!(printed.contains("len: 1"), "{printed}");
    }
}
