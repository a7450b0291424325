//! [`RedisStore`]: its constructors, setters and [`Store`] implementation. The connection
//! types are in `connection.rs`, what differs between the native and Go formats in
//! `format.rs`.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use echocache_core::codec::{Codec, DEFAULT_MAX_VALUE_BYTES, MessagePack};
use echocache_core::{BuildError, Entry, LockToken, Store, StoreError, Version};
use fred::bytes::Bytes;
use fred::interfaces::KeysInterface;
use fred::types::{Expiration, Value};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::connection::{RedisConnection, backend};
use crate::format::{Format, RedisFormat};
use crate::keys::KeySpace;
use crate::lock::{self, MAX_TTL_MS};

/// A [`Store`] in Redis, through [fred](https://docs.rs/fred).
///
/// - Data key `{prefix}:v:{key}`, lock key `{prefix}:l:{key}`: no user key can collide
///   with a lock, and no command spans two keys, so it runs on Redis Cluster.
/// - Each entry is written with `SET key value PX ttl`: Redis drops it `ttl` after its
///   last write.
/// - Values are stored in echocache's versioned envelope (see
///   [`echocache_core::codec`]), encoded by the codec `C`: [`MessagePack`] by default,
///   [`Json`](crate::Json) with [`codec`](Self::codec). An entry larger than
///   [`max_value_bytes`](Self::max_value_bytes) is refused when written and when read
///   (at most that many bytes plus one are ever read); bytes that do not decode give a
///   [`StoreError`] with [`is_decode`](StoreError::is_decode), which the caches count and
///   heal by loading and overwriting the entry.
/// - The refresh lock is `SET {prefix}:l:{key} token NX PX ttl`, released by an atomic
///   compare-and-delete script: a process never deletes a lock it no longer owns.
///
/// [`go_echocache_compatible`](RedisStore::go_echocache_compatible) and
/// [`go_echocache_compatible_plain`](RedisStore::go_echocache_compatible_plain) make a
/// store that shares its entries and locks with services using the Go echocache instead:
/// see the [crate docs](crate#go-interop).
///
/// Cheap to clone when `C` is (fred clients are handles to shared state).
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use echocache_redis::{Json, RedisStore};
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store: RedisStore<Vec<u32>, Json> =
///     RedisStore::connect("redis://127.0.0.1:6379", "myapp", Duration::from_secs(600))
///         .await?
///         .codec(Json)
///         .max_value_bytes(1024 * 1024);
/// assert_eq!(store.data_key("answer"), "myapp:v:answer");
/// # Ok(()) }
/// ```
///
/// Over a client of your own: [`RedisStore::new`].
pub struct RedisStore<V, C = MessagePack> {
    conn: RedisConnection,
    keys: KeySpace,
    format: Format,
    ttl: Duration,
    ttl_ms: i64,
    codec: C,
    max_value_bytes: usize,
    tombstone_ms: i64,
    value: PhantomData<fn() -> V>,
}

/// How long a native store's `remove` leaves its tombstone by default: longer than the
/// caches' default `load_timeout` (30 s), so that a load begun before the removal ends
/// (and is refused) before the tombstone expires.
pub const DEFAULT_TOMBSTONE_TTL: Duration = Duration::from_secs(60);

/// What a native store's `remove` writes in place of the entry, followed by a fresh token
/// so that no two removals leave the same bytes. Byte 0 is never an envelope version (1)
/// nor the first byte of any JSON text, so a tombstone is never read as an entry: `get`
/// reads it as a miss, other readers as a decode error (which the caches heal).
const TOMBSTONE: &[u8] = b"\xffechocache:tombstone:";

/// Checks an entry TTL and returns it in whole milliseconds.
fn ttl_millis(ttl: Duration) -> Result<i64, BuildError> {
    if ttl < Duration::from_millis(1) {
        return Err(BuildError::InvalidSetting {
            setting: "ttl",
            reason: "must be at least 1 ms (Redis PX resolution)",
        });
    }
    i64::try_from(ttl.as_millis())
        .ok()
        .filter(|ms| *ms <= MAX_TTL_MS)
        .ok_or(BuildError::InvalidSetting {
            setting: "ttl",
            reason: "is too large for Redis PX",
        })
}

impl<V> RedisStore<V, MessagePack> {
    /// Makes a store over your own fred client that keeps entries under `prefix` for `ttl`
    /// after their last write, encoded with [`MessagePack`].
    ///
    /// [`RedisStore::connect`] builds and connects a client with safe defaults: use it
    /// unless you need a client of your own (a pool, TLS certificates, other timeouts, one
    /// client for several stores). `client` is a fred [`Client`](fred::clients::Client) or [`Pool`](fred::clients::Pool) (or a
    /// reference to one); start it yourself. Give it a command timeout, a reconnect policy
    /// that retries for ever, and `fail_fast: false` (started with `client.connect()`) if
    /// the process must start while Redis is down: see
    /// [Your own fred client](crate#your-own-fred-client) for why and how.
    ///
    /// Whatever the client's settings, the store sends its commands with fred's
    /// per-command `fail_fast`: while the client is not connected, a call fails at once
    /// instead of waiting in fred's buffer for the reconnection (where a write its caller
    /// gave up on could land later, over a newer value).
    ///
    /// # Errors
    ///
    /// [`BuildError::InvalidSetting`] naming `prefix` when the prefix is empty, longer
    /// than 256 bytes, holds whitespace or control characters, or has a `:`-separated
    /// segment `v` or `l` (the store's own namespaces, so that two prefixes never share a
    /// key); naming `ttl` when `ttl` is below 1 ms (Redis `PX` resolution) or too large
    /// for Redis.
    pub fn new(
        client: impl Into<RedisConnection>,
        prefix: &str,
        ttl: Duration,
    ) -> Result<Self, BuildError> {
        let keys = KeySpace::new(prefix)?;
        RedisStore::with_format(client.into(), keys, Format::Native, ttl, MessagePack)
    }
}

impl<V, C> RedisStore<V, C> {
    pub(crate) fn with_format(
        conn: RedisConnection,
        keys: KeySpace,
        format: Format,
        ttl: Duration,
        codec: C,
    ) -> Result<Self, BuildError> {
        Ok(Self {
            conn,
            keys,
            format,
            ttl,
            ttl_ms: ttl_millis(ttl)?,
            codec,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            tombstone_ms: lock::px_millis(DEFAULT_TOMBSTONE_TTL),
            value: PhantomData,
        })
    }

    /// Uses `codec` for the values, e.g. [`Json`](crate::Json) to read entries in
    /// `redis-cli`.
    ///
    /// Entries written with another codec read as decode errors (then the caches reload
    /// and overwrite them), so switching codecs on a live prefix costs one load per key.
    ///
    /// A Go-compatible store (see
    /// [`go_echocache_compatible`](RedisStore::go_echocache_compatible)) keeps writing the
    /// Go echocache's JSON: there the codec changes the type only.
    ///
    /// # Default
    ///
    /// [`MessagePack`] ([`Json`](crate::Json) for Go-compatible stores).
    pub fn codec<C2: Codec>(self, codec: C2) -> RedisStore<V, C2> {
        RedisStore {
            conn: self.conn,
            keys: self.keys,
            format: self.format,
            ttl: self.ttl,
            ttl_ms: self.ttl_ms,
            codec,
            max_value_bytes: self.max_value_bytes,
            tombstone_ms: self.tombstone_ms,
            value: PhantomData,
        }
    }

    /// Limits an encoded entry (envelope included) to `max` bytes.
    ///
    /// A larger entry fails to be written (a [`StoreError`] the caches count; the caller
    /// still gets the loaded value) and, if one was written by someone else, reads as a
    /// decode error after at most `max + 1` bytes were transferred.
    ///
    /// Any `max` is accepted. One that no entry can fit in (at most the 10-byte envelope
    /// header, [`HEADER_LEN`](echocache_core::codec::HEADER_LEN), for the native format;
    /// below the shortest JSON, for a Go-compatible store) makes every write fail with
    /// that size error and every read a decode error: the caches then load every time.
    ///
    /// # Default
    ///
    /// [`DEFAULT_MAX_VALUE_BYTES`] (16 MiB).
    pub fn max_value_bytes(self, max: usize) -> Self {
        Self {
            max_value_bytes: max,
            ..self
        }
    }

    /// How long [`remove`](Store::remove) keeps a tombstone in place of the entry
    /// (native format only), rounded up to whole milliseconds.
    ///
    /// A native store's `remove` does not delete the key: it writes a short-lived
    /// tombstone, which reads as a miss. A load that another process began before the
    /// removal then finds the key changed when it comes to write
    /// ([`set_if_version`](Store::set_if_version)) and leaves it alone, instead of
    /// putting back the value the removal was meant to drop. A load that outlives the
    /// tombstone (and read the key as absent) can still write its value: keep this above
    /// the caches' `load_timeout`. The Go formats delete the key (Go services cannot read
    /// tombstones): see the [crate docs](crate#ordered-writes).
    ///
    /// # Default
    ///
    /// [`DEFAULT_TOMBSTONE_TTL`] (60 s, twice the caches' default `load_timeout`).
    pub fn tombstone_ttl(self, ttl: Duration) -> Self {
        Self {
            tombstone_ms: lock::px_millis(ttl),
            ..self
        }
    }

    /// The prefix, as given to [`new`](RedisStore::new).
    pub fn prefix(&self) -> &str {
        self.keys.prefix()
    }

    /// The TTL every entry gets when written.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The client the commands go through.
    pub fn connection(&self) -> &RedisConnection {
        &self.conn
    }

    /// The Redis key holding the entry for `key`: `{prefix}:v:{key}`, or `{prefix}:{key}`
    /// for a Go-compatible store.
    pub fn data_key(&self, key: &str) -> String {
        self.keys.data_key(key)
    }

    /// The Redis key holding the refresh lock for `key`: `{prefix}:l:{key}`, or
    /// `{prefix}:lock:{key}` for a Go-compatible store (where it is also the
    /// [`data_key`](Self::data_key) of the user key `lock:{key}`: see the
    /// [crate docs](crate#go-interop)).
    pub fn lock_key(&self, key: &str) -> String {
        self.keys.lock_key(key)
    }

    /// The expiry an entry is written with (see [`Format::entry_expiration`]).
    fn entry_expiration(&self) -> Expiration {
        self.format.entry_expiration(self.ttl, self.ttl_ms)
    }

    /// Resets the TTL of the refresh lock for `key` to `ttl`, if `token` still owns it.
    ///
    /// For refreshes that may outlive the lock's TTL. Atomic (a compare-and-pexpire
    /// script): a lock taken over by another owner is left alone.
    ///
    /// Returns whether the lock was extended: `false` when it expired or changed owner.
    ///
    /// The same as the [`Store::extend_lock`] the caches call while a refresh runs.
    ///
    /// # Errors
    ///
    /// A backend [`StoreError`] when Redis fails, or at once on a store made with
    /// [`go_echocache_compatible_plain`](RedisStore::go_echocache_compatible_plain), which
    /// has no refresh lock.
    pub async fn extend_lock(
        &self,
        key: &str,
        token: &LockToken,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.extend_owned_lock(key, token, ttl).await
    }

    /// The compare-and-pexpire behind both `extend_lock`s (the inherent one and
    /// [`Store::extend_lock`]), so that neither calls the other.
    async fn extend_owned_lock(
        &self,
        key: &str,
        token: &LockToken,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.format.lock_support()?;
        lock::extend(&self.conn.commands(), self.keys.lock_key(key), token, ttl)
            .await
            .map_err(backend("EVALSHA (extend lock)"))
    }
}

impl<V, C: Clone> Clone for RedisStore<V, C> {
    fn clone(&self) -> Self {
        Self {
            conn: self.conn.clone(),
            keys: self.keys.clone(),
            format: self.format,
            ttl: self.ttl,
            ttl_ms: self.ttl_ms,
            codec: self.codec.clone(),
            max_value_bytes: self.max_value_bytes,
            tombstone_ms: self.tombstone_ms,
            value: PhantomData,
        }
    }
}

impl<V, C: Codec> fmt::Debug for RedisStore<V, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (format, value) = self.format.describe::<C>();
        f.debug_struct("RedisStore")
            .field("prefix", &self.keys.prefix())
            .field(format, value)
            .field("ttl", &self.ttl)
            .field("max_value_bytes", &self.max_value_bytes)
            .field("connection", &self.conn)
            .finish()
    }
}

impl<V, C> RedisStore<V, C>
where
    V: Serialize + DeserializeOwned,
    C: Codec,
{
    /// The bytes stored for `entry`, in this store's format.
    fn encode(&self, entry: &Entry<V>) -> Result<Vec<u8>, StoreError> {
        self.format.encode(&self.codec, entry, self.max_value_bytes)
    }

    /// The bytes stored for `key` (empty for a missing key), at most `max_value_bytes + 1`
    /// of them.
    async fn read(&self, key: &str) -> Result<Bytes, StoreError> {
        // GETRANGE 0 max (inclusive) rather than GET: one round trip all the same, but an
        // oversized value costs at most `max + 1` bytes, never its full size. A missing key
        // reads as "" (so does an empty string, which is no envelope, nor JSON, either).
        let end = self.max_value_bytes.min(i64::MAX as usize);
        let bytes: Option<Bytes> = self
            .conn
            .commands()
            .getrange(self.keys.data_key(key), 0, end)
            .await
            .map_err(backend("GETRANGE"))?;
        Ok(bytes.unwrap_or_default())
    }

    /// The entry `bytes` hold: none for a missing key or a tombstone.
    fn entry_of(&self, bytes: &[u8]) -> Result<Option<Entry<V>>, StoreError> {
        if bytes.is_empty() || bytes.starts_with(TOMBSTONE) {
            return Ok(None);
        }
        self.decode(bytes).map(Some)
    }

    /// The entry stored as `bytes`, in this store's format.
    fn decode(&self, bytes: &[u8]) -> Result<Entry<V>, StoreError> {
        self.format.decode(&self.codec, bytes, self.max_value_bytes)
    }
}

impl<V, C> Store<V> for RedisStore<V, C>
where
    V: Serialize + DeserializeOwned + Send + Sync + 'static,
    C: Codec,
{
    async fn get(&self, key: &str) -> Result<Option<Entry<V>>, StoreError> {
        let bytes = self.read(key).await?;
        self.entry_of(&bytes)
    }

    /// The entry and the bytes read (empty for a missing key), which
    /// [`set_if_version`](Store::set_if_version) compares with what the key holds then.
    /// Bytes that do not decode read as no entry (`get` reports them).
    async fn get_versioned(&self, key: &str) -> Result<(Option<Entry<V>>, Version), StoreError> {
        let bytes = self.read(key).await?;
        // Bytes that do not decode read as no entry, at the version of those bytes: `get`
        // reports the decode error; the caches load and overwrite them conditionally.
        let entry = self.entry_of(&bytes).unwrap_or(None);
        Ok((entry, Version::bytes(bytes.as_ref())))
    }

    /// One atomic compare-and-set script on the data key: writes only if the key still
    /// holds the bytes `version` read (or is still absent). A write, a removal (its
    /// tombstone) or an expiry in between makes it refuse and return `false`.
    /// [`Version::UNKNOWN`] (or a version this store did not make) writes as `set` does.
    async fn set_if_version(
        &self,
        key: &str,
        entry: &Entry<V>,
        version: &Version,
    ) -> Result<bool, StoreError> {
        let Some(expected) = version.as_bytes() else {
            return self.set(key, entry).await.map(|()| true);
        };
        let bytes = self.encode(entry)?;
        lock::set_if_unchanged(
            &self.conn.commands(),
            self.keys.data_key(key),
            expected,
            bytes,
            &self.entry_expiration(),
        )
        .await
        .map_err(backend("EVALSHA (set if unchanged)"))
    }

    async fn set(&self, key: &str, entry: &Entry<V>) -> Result<(), StoreError> {
        let bytes = self.encode(entry)?;
        self.conn
            .commands()
            .set::<(), _, _>(
                self.keys.data_key(key),
                Value::Bytes(Bytes::from(bytes)),
                Some(self.entry_expiration()),
                None,
                false,
            )
            .await
            .map_err(backend("SET"))
    }

    /// Native format: `SET key tombstone PX tombstone_ttl` (see
    /// [`tombstone_ttl`](RedisStore::tombstone_ttl)); Go formats: `DEL key`.
    async fn remove(&self, key: &str) -> Result<(), StoreError> {
        let commands = self.conn.commands();
        if !self.format.removes_with_tombstone() {
            return commands
                .del::<(), _>(self.keys.data_key(key))
                .await
                .map_err(backend("DEL"));
        }
        let mut tombstone = TOMBSTONE.to_vec();
        tombstone.extend_from_slice(LockToken::generate().as_str().as_bytes());
        commands
            .set::<(), _, _>(
                self.keys.data_key(key),
                Value::Bytes(Bytes::from(tombstone)),
                Some(Expiration::PX(self.tombstone_ms)),
                None,
                false,
            )
            .await
            .map_err(backend("SET (tombstone)"))
    }

    async fn try_lock(&self, key: &str, ttl: Duration) -> Result<Option<LockToken>, StoreError> {
        self.format.lock_support()?;
        let expiry = self.format.lock_expiration(ttl);
        lock::try_lock(&self.conn.commands(), self.keys.lock_key(key), expiry)
            .await
            .map_err(backend("SET NX (lock)"))
    }

    async fn unlock(&self, key: &str, token: &LockToken) -> Result<(), StoreError> {
        if self.format.lock_support().is_err() {
            // No lock was ever taken through this store: nothing to release.
            return Ok(());
        }
        lock::unlock(&self.conn.commands(), self.keys.lock_key(key), token)
            .await
            .map_err(backend("EVALSHA (unlock)"))
    }

    /// `false` for the Go plain format, which has no lock (the caches then rely on the
    /// in-process single-flight alone, instead of failing to take a lock on every miss);
    /// `true` otherwise.
    fn shares_locks(&self) -> bool {
        self.format.lock_support().is_ok()
    }

    /// Atomic compare-and-pexpire: a lock that expired or changed owner is left alone and
    /// gives `false`.
    async fn extend_lock(
        &self,
        key: &str,
        token: &LockToken,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.extend_owned_lock(key, token, ttl).await
    }
}

#[cfg(test)]
mod tests;
