//! The constructors of the Go-compatible [`NatsStore`]s: the Go echocache's key layout,
//! JSON formats and locks (see the [crate docs](crate#go-interop)).

use async_nats::jetstream::kv;
use echocache_core::BuildError;
use echocache_core::codec::{Json, ValueFormat};

use crate::NatsStore;

impl<V> NatsStore<V, Json> {
    /// A store that shares entries and refresh locks with Go services using the Go
    /// echocache v1.2.0's `store.NewStaleWhileRevalidateNatsCache[T](kv, prefix)` on the
    /// same bucket and prefix (see the [crate docs](crate#go-interop)).
    ///
    /// - **Keys** are Go's: `{prefix}.{md5(key)}` (lower-case hex) for entries,
    ///   `{prefix}.{md5("lock:" + key)}` for locks, trailing dots of the prefix trimmed.
    ///   The data of the key `lock:x` is therefore the lock of `x` (Go bug 24, kept because
    ///   it is what Go services read); two keys with the same MD5 share an entry, and MD5
    ///   collisions can be made on purpose: do not let untrusted input choose whole keys.
    ///   The bucket's key list shows hashes, not cache keys.
    /// - **Values** are Go's JSON, `{"Value":…,"CreatedAt":"<RFC 3339>"}`, byte for byte
    ///   what Go writes for the same value (see [`go_format`](echocache_core::go_format)).
    ///   Go writes with `kv.Put` and no per-key TTL: entries live until the bucket's
    ///   `max_age`. [`ttl`](NatsStore::ttl) makes older entries read as missing here (by
    ///   `CreatedAt`); Go readers ignore it.
    /// - **Locks** are Go's: `kv.Create` of `{token}|{RFC 3339 second}`, released by their
    ///   owner with a revision-checked purge. Go v1.2.0's lazy cache never takes the lock
    ///   (its refreshes are not deduplicated with ours), but a lock taken by Go code
    ///   (`TryAcquireRefreshLock`) makes our refresh skip, and ours makes Go's fail.
    ///
    /// # Errors
    ///
    /// [`BuildError::InvalidSetting`] naming `prefix` when the prefix, without its
    /// trailing dots, is not a valid prefix (see [`new`](NatsStore::new); Go accepted
    /// such a prefix and then failed on every operation, bug 25) or ends with a token `v`
    /// or `l` (its keys would land in a native store's namespaces: see SECURITY.md).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use echocache_core::LazyEchoCache;
    /// use echocache_nats::NatsStore;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let client = async_nats::connect("nats://127.0.0.1:4222").await?;
    /// let kv = async_nats::jetstream::new(client).get_key_value("TEST_02").await?;
    /// // The Go side: store.NewStaleWhileRevalidateNatsCache[Weather](kv, "weather")
    /// let store = NatsStore::<String, _>::go_echocache_compatible(kv, "weather")?;
    /// let cache = LazyEchoCache::builder(store).build()?;
    /// # let _ = cache;
    /// # Ok(())
    /// # }
    /// ```
    pub fn go_echocache_compatible(kv: kv::Store, prefix: &str) -> Result<Self, BuildError> {
        Self::go(kv, prefix, ValueFormat::GoEnvelope)
    }

    /// A store that shares entries with Go services using the Go echocache v1.2.0's
    /// plain `store.NewNatsCache[T](kv, prefix)`: the same keys as
    /// [`go_echocache_compatible`](Self::go_echocache_compatible), the value's JSON alone
    /// as the value, and no lock (the Go plain cache has none).
    ///
    /// The bytes carry no time: entries read back as written at the epoch (never fresh
    /// to a `LazyEchoCache`, which should use the envelope format instead), and
    /// [`ttl`](NatsStore::ttl) has no effect. `try_lock` and `extend_lock` fail,
    /// [`shares_locks`](echocache_core::Store::shares_locks) is `false`, so the caches dedupe loads within
    /// the process only.
    ///
    /// # Errors
    ///
    /// As [`go_echocache_compatible`](Self::go_echocache_compatible).
    pub fn go_echocache_compatible_plain(kv: kv::Store, prefix: &str) -> Result<Self, BuildError> {
        Self::go(kv, prefix, ValueFormat::GoPlain)
    }
}
