//! The [`Store`] trait every backend implements, and [`LockToken`].

use std::collections::hash_map::RandomState;
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use crate::{Entry, StoreError};

/// Where a cache keeps its entries: in memory, in Redis, in NATS, or anywhere else.
///
/// A store maps a key to an [`Entry`] and offers an owner-token lock per key, which
/// [`LazyEchoCache`](crate::LazyEchoCache) takes before a background refresh so that one
/// refresh per key runs across every process sharing the store. In-memory stores grant the
/// lock at once: within one process the single-flight and the pending set already dedupe.
///
/// Stores add their own namespacing (prefixes); the key given here is the caller's raw key.
///
/// # Implementing a store
///
/// ```
/// use std::collections::HashMap;
/// use std::sync::Mutex;
/// use std::time::Duration;
/// use echocache_core::{Entry, LockToken, Store, StoreError};
///
/// /// A tiny unbounded store, for illustration.
/// #[derive(Default)]
/// struct MapStore(Mutex<HashMap<String, Entry<u64>>>);
///
/// impl Store<u64> for MapStore {
///     async fn get(&self, key: &str) -> Result<Option<Entry<u64>>, StoreError> {
///         Ok(self.0.lock().unwrap().get(key).cloned())
///     }
///     async fn set(&self, key: &str, entry: &Entry<u64>) -> Result<(), StoreError> {
///         self.0.lock().unwrap().insert(key.to_owned(), entry.clone());
///         Ok(())
///     }
///     async fn remove(&self, key: &str) -> Result<(), StoreError> {
///         self.0.lock().unwrap().remove(key);
///         Ok(())
///     }
///     async fn try_lock(&self, _key: &str, _ttl: Duration) -> Result<Option<LockToken>, StoreError> {
///         Ok(Some(LockToken::generate()))
///     }
///     async fn unlock(&self, _key: &str, _token: &LockToken) -> Result<(), StoreError> {
///         Ok(())
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let cache = echocache_core::EchoCache::new(MapStore::default());
/// let value = cache.fetch("answer", || async { Ok::<_, std::io::Error>(42) }).await.unwrap();
/// assert_eq!(value, 42);
/// # }
/// ```
pub trait Store<V>: Send + Sync + 'static {
    /// Reads the entry for `key`, or `None` when there is none (or it has expired).
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<Entry<V>>, StoreError>> + Send;

    /// Writes `entry` for `key`, replacing any previous entry.
    fn set(
        &self,
        key: &str,
        entry: &Entry<V>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Removes the entry for `key`; removing a missing key is not an error.
    fn remove(&self, key: &str) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Tries to take the refresh lock for `key` for at most `ttl`.
    ///
    /// Returns the owner's token when the lock was taken, `None` when another owner holds
    /// it. The lock must expire by itself after `ttl`, so a crashed owner cannot block the
    /// key for ever.
    fn try_lock(
        &self,
        key: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<Option<LockToken>, StoreError>> + Send;

    /// Releases the refresh lock for `key` if, and only if, `token` still owns it.
    ///
    /// Releasing a lock that expired or that another owner took since is not an error and
    /// leaves the other owner's lock in place.
    fn unlock(
        &self,
        key: &str,
        token: &LockToken,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Resets the refresh lock for `key` to expire `ttl` from now, if, and only if,
    /// `token` still owns it. Returns whether it did.
    ///
    /// [`LazyEchoCache`](crate::LazyEchoCache) calls it while a background refresh runs,
    /// so that a load slower than the lock's TTL (a loader that blocks its thread past
    /// `load_timeout`) does not let another process take the lock and refresh the same
    /// key at once.
    ///
    /// # Default
    ///
    /// `Ok(false)`: the store cannot extend locks, and a refresh that outlives the lock's
    /// TTL may overlap another process's refresh of the key (counted in
    /// `Stats::lock_extension_failures`). Stores with real locks should implement it.
    fn extend_lock(
        &self,
        key: &str,
        token: &LockToken,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let _ = (key, token, ttl);
        std::future::ready(Ok(false))
    }

    /// Reads the entry for `key` as [`get`](Self::get) does, with the [`Version`] of what
    /// was read (the key's state, present or not), for a later
    /// [`set_if_version`](Self::set_if_version).
    ///
    /// The caches call it on a miss before loading, never on the hit path, after a `get`
    /// of the same key: an entry that does not decode should read as `None` here, with
    /// the version of those bytes (so that the load's write replaces them, conditionally),
    /// rather than as an error counted a second time.
    ///
    /// # Default
    ///
    /// [`get`](Self::get) with [`Version::UNKNOWN`].
    fn get_versioned(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<(Option<Entry<V>>, Version), StoreError>> + Send {
        futures::FutureExt::map(self.get(key), |read| {
            read.map(|entry| (entry, Version::UNKNOWN))
        })
    }

    /// Writes `entry` for `key` only if the key is still as `version` saw it: no write,
    /// removal (from any process) came in between. Returns whether it wrote.
    ///
    /// The caches store a loaded value with it, so a load can never put its value over a
    /// newer `insert` or an `invalidate` that returned while it ran, in any process
    /// sharing the store. `insert` and `invalidate` write unconditionally; a store whose
    /// `remove` leaves nothing behind must keep a marker (a tombstone) long enough for the
    /// loads that began before it to see that the key changed.
    ///
    /// With [`Version::UNKNOWN`] it must write as [`set`](Self::set) does.
    ///
    /// # Default
    ///
    /// [`set`](Self::set), always `true`: the store does not order writes across
    /// processes.
    fn set_if_version(
        &self,
        key: &str,
        entry: &Entry<V>,
        version: &Version,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let _ = version;
        futures::FutureExt::map(self.set(key, entry), |written| written.map(|()| true))
    }

    /// Waits until `key` may have changed in the store, or until `within` has passed,
    /// whichever comes first. A process waiting for another's load of `key` (the
    /// fleet-wide single-flight) calls it between two reads of the store: a store that
    /// hears of changes (a [`TieredStore`](crate::TieredStore) through its backplane)
    /// returns as soon as one may concern `key`, so the waiter reads the value at once
    /// instead of at its next poll.
    ///
    /// # Default
    ///
    /// Sleeps `within` (the waiter polls).
    fn changed(&self, key: &str, within: Duration) -> impl Future<Output = ()> + Send {
        let _ = key;
        tokio::time::sleep(within)
    }

    /// Whether the refresh lock is shared with other processes (Redis, NATS), so that a
    /// miss's load takes it first and other processes wait for its value instead of
    /// loading the same key at once (the fleet-wide single-flight).
    ///
    /// # Default
    ///
    /// `true`. Stores whose lock is granted at once within one process (the memory
    /// stores) return `false`: the in-process single-flight is all they need.
    fn shares_locks(&self) -> bool {
        true
    }
}

/// What a store read saw of a key (a server-side revision, or the bytes read), for a
/// conditional write with [`Store::set_if_version`]. Opaque to the caches.
///
/// # Examples
///
/// ```
/// use echocache_core::Version;
///
/// assert!(Version::UNKNOWN.is_unknown());
/// assert_eq!(Version::revision(7).as_revision(), Some(7));
/// assert_eq!(Version::bytes(b"abc".to_vec()).as_bytes(), Some(&b"abc"[..]));
/// assert_eq!(Version::absent().as_bytes(), Some(&b""[..]));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Version(VersionRepr);

#[derive(Clone, Debug, Default, PartialEq, Eq)]
enum VersionRepr {
    #[default]
    Unknown,
    Revision(u64),
    Bytes(Arc<[u8]>),
}

impl Version {
    /// The store does not version its keys: a conditional write is a plain write.
    pub const UNKNOWN: Version = Version(VersionRepr::Unknown);

    /// A server-side revision (NATS KV revisions; 0 for a key never written).
    pub fn revision(revision: u64) -> Self {
        Self(VersionRepr::Revision(revision))
    }

    /// The raw bytes read (compared with the stored bytes by the conditional write).
    pub fn bytes(bytes: impl Into<Arc<[u8]>>) -> Self {
        Self(VersionRepr::Bytes(bytes.into()))
    }

    /// No bytes: the key was absent.
    pub fn absent() -> Self {
        Self::bytes(Vec::new())
    }

    /// Whether this is [`Version::UNKNOWN`].
    pub fn is_unknown(&self) -> bool {
        self.0 == VersionRepr::Unknown
    }

    /// The revision, when this is one.
    pub fn as_revision(&self) -> Option<u64> {
        match self.0 {
            VersionRepr::Revision(r) => Some(r),
            _ => None,
        }
    }

    /// The bytes, when this is bytes.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match &self.0 {
            VersionRepr::Bytes(b) => Some(b),
            _ => None,
        }
    }
}

/// The opaque token that proves ownership of a refresh lock.
///
/// # Examples
///
/// ```
/// use echocache_core::LockToken;
///
/// let a = LockToken::generate();
/// let b = LockToken::generate();
/// assert_ne!(a, b);
/// assert_eq!(LockToken::new("owner-1").as_str(), "owner-1");
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct LockToken(String);

impl LockToken {
    /// Wraps a token string, for stores that read tokens back from their backend.
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// Makes a fresh token: 32 hexadecimal characters, unique within the process and
    /// unpredictable across processes (seeded from the operating system's randomness).
    pub fn generate() -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let count = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let mut words = [0u64; 2];
        for (i, word) in words.iter_mut().enumerate() {
            // Each RandomState carries fresh random keys.
            let mut hasher = RandomState::new().build_hasher();
            hasher.write_u64(count);
            hasher.write_u128(nanos);
            hasher.write_u32(std::process::id());
            hasher.write_usize(i);
            *word = hasher.finish();
        }
        Self(format!("{:016x}{:016x}", words[0], words[1]))
    }

    /// The token as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for LockToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("LockToken").field(&self.0).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn generated_tokens_are_distinct_hex() {
        let tokens: HashSet<_> = (0..10_000).map(|_| LockToken::generate()).collect();
        assert_eq!(tokens.len(), 10_000);
        for token in tokens.iter().take(10) {
            assert_eq!(token.as_str().len(), 32);
            assert!(token.as_str().chars().all(|c| c.is_ascii_hexdigit()));
        }
    }
}
