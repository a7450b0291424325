//! [`SingleStore`]: one slot, holding the last entry written, for caching one value.

use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use echocache_core::{BuildError, Clock, Entry, LockToken, Store, StoreError};

use crate::expiring::Timed;

/// The slot: the key last written and its entry. The key's buffer is kept and reused when
/// the entry goes, so that writes of keys no longer than a previous one allocate nothing
/// for the key.
struct Slot<V> {
    key: String,
    value: Option<Timed<V>>,
}

/// A store with a single slot: the last entry written, under its key, for `ttl`.
///
/// Meant for caching one value (a configuration, a token, a computed report):
///
/// - [`set`](Store::set) replaces the slot, whatever key it held.
/// - [`get`](Store::get) returns the entry only for the key it was written under; a get for
///   any other key is a miss. (The Go original ignored the key and answered every key with
///   the one value.)
/// - An entry set at time `t` (by the store's own [`Clock`], not the entry's `written_at`)
///   is expired when `now >= t + ttl`, and then reads as a miss and is dropped. Reading
///   does not extend the TTL. A `ttl` too large to add to the clock's time never expires.
/// - [`remove`](Store::remove) empties the slot if it holds that key.
///
/// Every read and write of the slot happens under one [`Mutex`], so there is no data race
/// and no lost update: an expired entry is dropped in the same critical section that found
/// it expired, so a concurrent fresh `set` is never wiped out (Go bug 16). A hit allocates
/// nothing beyond `V::clone`. The refresh lock is granted at once.
///
/// # Examples
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use echocache_core::{Entry, ManualClock, Store};
/// use echocache_memory::SingleStore;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let clock = ManualClock::new(SystemTime::now());
/// let store = SingleStore::new(Duration::from_secs(30))?.with_clock(clock.clone());
///
/// store.set("config", &Entry::new("v1", clock.now())).await?;
/// assert_eq!(store.get("config").await?.map(|e| e.value), Some("v1"));
/// assert!(store.get("other").await?.is_none(), "another key is a miss");
///
/// clock.advance(Duration::from_secs(30));
/// assert!(store.get("config").await?.is_none(), "expired");
/// # Ok(())
/// # }
/// ```
pub struct SingleStore<V> {
    slot: Mutex<Slot<V>>,
    ttl: Duration,
    clock: Clock,
}

impl<V> SingleStore<V> {
    /// An empty store whose entry lives for `ttl` after each write, on the system clock.
    ///
    /// # Errors
    ///
    /// [`BuildError::InvalidSetting`] with `setting: "ttl"` when `ttl` is zero.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use echocache_core::BuildError;
    /// use echocache_memory::SingleStore;
    ///
    /// let store = SingleStore::<String>::new(Duration::from_secs(60)).unwrap();
    /// assert!(store.is_empty());
    ///
    /// let err = SingleStore::<String>::new(Duration::ZERO).unwrap_err();
    /// assert_eq!(
    ///     err,
    ///     BuildError::InvalidSetting { setting: "ttl", reason: "must be greater than zero" }
    /// );
    /// ```
    pub fn new(ttl: Duration) -> Result<Self, BuildError> {
        crate::check_ttl(ttl)?;
        Ok(Self {
            slot: Mutex::new(Slot {
                key: String::new(),
                value: None,
            }),
            ttl,
            clock: Clock::system(),
        })
    }

    /// Uses `clock` for write times and expiry instead of the system clock: a
    /// [`ManualClock`](echocache_core::ManualClock) lets tests expire the entry without
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
    /// use echocache_memory::SingleStore;
    ///
    /// let clock = ManualClock::new(SystemTime::UNIX_EPOCH);
    /// let store = SingleStore::<u64>::new(Duration::from_secs(1)).unwrap().with_clock(clock);
    /// # let _ = store;
    /// ```
    #[must_use]
    pub fn with_clock(self, clock: impl Into<Clock>) -> Self {
        Self {
            clock: clock.into(),
            ..self
        }
    }

    /// How long the entry lives after its last write.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use echocache_memory::SingleStore;
    /// let store = SingleStore::<u64>::new(Duration::from_secs(5)).unwrap();
    /// assert_eq!(store.ttl(), Duration::from_secs(5));
    /// ```
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Whether the slot is empty. An expired entry not yet dropped (no access since it
    /// expired) still counts as held.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::{Duration, SystemTime};
    /// # use echocache_core::{Entry, Store};
    /// # use echocache_memory::SingleStore;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let store = SingleStore::new(Duration::from_secs(5)).unwrap();
    /// assert!(store.is_empty());
    /// store.set("k", &Entry::new(1u64, SystemTime::now())).await.unwrap();
    /// assert!(!store.is_empty());
    /// # }
    /// ```
    pub fn is_empty(&self) -> bool {
        crate::lock(&self.slot).value.is_none()
    }
}

impl<V> fmt::Debug for SingleStore<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // No key, no value: they are the user's and may be sensitive.
        f.debug_struct("SingleStore")
            .field("occupied", &!self.is_empty())
            .field("ttl", &self.ttl)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl<V: Clone + Send + Sync + 'static> Store<V> for SingleStore<V> {
    /// Returns a clone of the entry if the slot holds `key` and it has not expired. An
    /// expired entry is dropped, whatever key is asked for.
    async fn get(&self, key: &str) -> Result<Option<Entry<V>>, StoreError> {
        let now = self.clock.now();
        let expired = {
            let mut slot = crate::lock(&self.slot);
            let Some(timed) = &slot.value else {
                return Ok(None);
            };
            if !timed.is_expired(now) {
                // Cloned under the lock: nothing is read outside it (Go bug 16).
                return Ok((slot.key == key).then(|| timed.entry.clone()));
            }
            // Dropped in the same critical section that found it expired, so a fresh
            // `set` cannot land in between and be lost (Go bug 16).
            slot.value.take()
        };
        drop(expired); // after the lock is released
        Ok(None)
    }

    /// Replaces the slot with `entry` under `key`, living for `ttl` from now (by the
    /// store's clock).
    async fn set(&self, key: &str, entry: &Entry<V>) -> Result<(), StoreError> {
        let timed = Timed::new(entry.clone(), self.clock.now(), self.ttl);
        let replaced = {
            let mut slot = crate::lock(&self.slot);
            if slot.key != key {
                slot.key.clear();
                slot.key.push_str(key); // reuses the buffer when it is long enough
            }
            slot.value.replace(timed)
        };
        drop(replaced); // after the lock is released
        Ok(())
    }

    /// Empties the slot if it holds `key`; another key is left in place.
    async fn remove(&self, key: &str) -> Result<(), StoreError> {
        let removed = {
            let mut slot = crate::lock(&self.slot);
            if slot.key == key {
                slot.value.take()
            } else {
                None
            }
        };
        drop(removed);
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
    use std::sync::Arc;
    use std::task::{Context, Poll, Waker};
    use std::time::SystemTime;

    fn run<F: Future>(future: F) -> F::Output {
        match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(output) => output,
            Poll::Pending => panic!("memory store futures complete at once"),
        }
    }

    const TTL: Duration = Duration::from_secs(10);

    fn setup() -> (ManualClock, SingleStore<u64>) {
        let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000));
        let store = SingleStore::new(TTL).unwrap().with_clock(clock.clone());
        (clock, store)
    }

    fn set(store: &SingleStore<u64>, key: &str, value: u64) {
        run(store.set(key, &Entry::new(value, SystemTime::UNIX_EPOCH))).unwrap();
    }

    fn value(store: &SingleStore<u64>, key: &str) -> Option<u64> {
        run(store.get(key)).unwrap().map(|e| e.value)
    }

    #[test]
    fn futures_are_send() {
        fn is_send<T: Send>(_: T) {}
        let (_, store) = setup();
        is_send(store.get("k"));
        is_send(store.set("k", &Entry::new(1, SystemTime::UNIX_EPOCH)));
        is_send(store.remove("k"));
        is_send(store.try_lock("k", TTL));
        is_send(store.unlock("k", &LockToken::new("t")));
    }

    #[test]
    fn only_the_key_written_is_a_hit() {
        let (_, store) = setup();
        assert_eq!(value(&store, "a"), None);
        set(&store, "a", 1);
        assert_eq!(value(&store, "a"), Some(1));
        assert_eq!(value(&store, "b"), None);
        set(&store, "b", 2);
        assert_eq!(value(&store, "a"), None, "set replaced the slot");
        assert_eq!(value(&store, "b"), Some(2));
        // A shorter key reuses the buffer and must not keep the longer key's tail.
        set(&store, "long-key", 3);
        set(&store, "long", 4);
        assert_eq!(value(&store, "long-key"), None);
        assert_eq!(value(&store, "long"), Some(4));
    }

    #[test]
    fn the_entry_lives_exactly_ttl_after_its_last_set() {
        let (clock, store) = setup();
        set(&store, "k", 1);
        clock.advance(TTL - Duration::from_nanos(1));
        assert_eq!(value(&store, "k"), Some(1));
        set(&store, "k", 2); // restarts the TTL
        clock.advance(TTL - Duration::from_nanos(1));
        assert_eq!(value(&store, "k"), Some(2));
        clock.advance(Duration::from_nanos(1));
        assert_eq!(value(&store, "k"), None);
        assert!(store.is_empty(), "the expired entry was dropped");
    }

    #[test]
    fn a_get_for_another_key_drops_an_expired_entry() {
        let (clock, store) = setup();
        set(&store, "k", 1);
        clock.advance(TTL);
        assert!(!store.is_empty());
        assert_eq!(value(&store, "other"), None);
        assert!(store.is_empty());
    }

    #[test]
    fn a_set_after_expiry_is_served() {
        // Go bug 16: the expiry path could wipe out a set that landed meanwhile.
        let (clock, store) = setup();
        set(&store, "k", 1);
        clock.advance(TTL);
        set(&store, "k", 2);
        assert_eq!(value(&store, "k"), Some(2));
    }

    #[test]
    fn remove_empties_only_its_own_key() {
        let (_, store) = setup();
        set(&store, "k", 1);
        run(store.remove("other")).unwrap();
        assert_eq!(value(&store, "k"), Some(1));
        run(store.remove("k")).unwrap();
        run(store.remove("k")).unwrap();
        assert_eq!(value(&store, "k"), None);
        assert!(store.is_empty());
    }

    #[test]
    fn concurrent_writers_never_see_another_keys_value() {
        let store = Arc::new(SingleStore::<u64>::new(Duration::from_secs(3_600)).unwrap());
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let store = Arc::clone(&store);
                std::thread::spawn(move || {
                    let key = format!("key-{t}");
                    for i in 0..5_000u64 {
                        let value = t * 1_000_000 + i;
                        run(store.set(&key, &Entry::new(value, SystemTime::UNIX_EPOCH))).unwrap();
                        if let Some(entry) = run(store.get(&key)).unwrap() {
                            // Only this thread writes this key: a hit is what it just wrote,
                            // never another key's value nor a torn or older one.
                            assert_eq!(entry.value, value);
                        }
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
    }

    #[test]
    fn invalid_ttl_is_rejected() {
        assert_eq!(
            SingleStore::<u64>::new(Duration::ZERO).unwrap_err(),
            BuildError::InvalidSetting {
                setting: "ttl",
                reason: "must be greater than zero"
            }
        );
    }

    #[test]
    fn debug_prints_no_keys_or_values() {
        let (_, store) = setup();
        set(&store, "secret-key", 424_242);
        let printed = format!("{store:?}");
        assert!(!printed.contains("secret"), "{printed}");
        assert!(!printed.contains("424242"), "{printed}");
        assert!(printed.contains("occupied: true"), "{printed}");
    }
}
