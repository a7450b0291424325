//! [`RedisStore`] and the [`RedisConnection`] it runs its commands on.

use std::error::Error as StdError;
use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use echocache_core::codec::{Codec, DEFAULT_MAX_VALUE_BYTES, Json, MessagePack};
use echocache_core::codec::{decode_entry, encode_entry};
use echocache_core::{BuildError, Entry, LockToken, Store, StoreError, Version};
use fred::bytes::Bytes;
use fred::clients::{Client, Pool, WithOptions};
use fred::error::Error as FredError;
use fred::interfaces::{ClientLike, KeysInterface};
use fred::types::config::Options;
use fred::types::{Expiration, Value};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::keys::KeySpace;
use crate::lock::{self, MAX_TTL_MS};
use echocache_core::go_format;

/// The fred client a [`RedisStore`] sends its commands through: one [`Client`] or a
/// round-robin [`Pool`] of them.
///
/// Both work against a single server, a replicated setup or Redis Cluster (the client's
/// configuration decides); the store never sends a command that spans two keys.
/// Build one with `From`: `RedisStore::new(client, ..)` accepts a [`Client`], a [`Pool`],
/// or a reference to either (cloned: fred clients are cheap handles to shared state).
#[non_exhaustive]
#[derive(Clone)]
pub enum RedisConnection {
    /// One client (one connection per server; commands are pipelined on it).
    Client(Client),
    /// A pool of clients; each command goes to the next connected one.
    Pool(Pool),
}

/// A client whose commands carry the store's per-command options (see
/// [`RedisConnection::commands`]).
pub(crate) type Commands = WithOptions<Client>;

impl RedisConnection {
    /// The client for the next command (for a pool, the next connected client in turn),
    /// with fred's per-command `fail_fast`: while the client is not connected, a command
    /// fails at once instead of waiting in fred's buffer for the reconnection. A buffered
    /// write that its caller gave up on (as the caches give up on a slow store call) would
    /// otherwise land whenever the client reconnects, over what others wrote meanwhile; and
    /// every call would wait out the command timeout while Redis is down.
    pub(crate) fn commands(&self) -> Commands {
        let client = match self {
            RedisConnection::Client(client) => client,
            RedisConnection::Pool(pool) => pool.next_connected(),
        };
        client.with_options(&Options {
            fail_fast: true,
            ..Options::default()
        })
    }

    /// Whether the client (or, for a pool, at least one client) is connected now.
    pub fn is_connected(&self) -> bool {
        match self {
            RedisConnection::Client(client) => client.is_connected(),
            RedisConnection::Pool(pool) => pool.clients().iter().any(ClientLike::is_connected),
        }
    }
}

impl From<Client> for RedisConnection {
    fn from(client: Client) -> Self {
        RedisConnection::Client(client)
    }
}

impl From<&Client> for RedisConnection {
    fn from(client: &Client) -> Self {
        RedisConnection::Client(client.clone())
    }
}

impl From<Pool> for RedisConnection {
    fn from(pool: Pool) -> Self {
        RedisConnection::Pool(pool)
    }
}

impl From<&Pool> for RedisConnection {
    fn from(pool: &Pool) -> Self {
        RedisConnection::Pool(pool.clone())
    }
}

impl fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Only the client id and shape: never the configuration, which may hold a password.
        match self {
            RedisConnection::Client(client) => f
                .debug_struct("Client")
                .field("id", &client.id())
                .finish_non_exhaustive(),
            RedisConnection::Pool(pool) => f
                .debug_struct("Pool")
                .field("size", &pool.size())
                .finish_non_exhaustive(),
        }
    }
}

/// A Redis command failed; the fred error is the source.
#[derive(Debug)]
struct CommandError {
    command: &'static str,
    source: FredError,
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "redis {} failed", self.command)
    }
}

impl StdError for CommandError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&self.source)
    }
}

/// Maps a fred error to a backend [`StoreError`] at the store's boundary.
pub(crate) fn backend(command: &'static str) -> impl FnOnce(FredError) -> StoreError {
    move |source| StoreError::backend(CommandError { command, source })
}

/// What the lock operations of a Go plain store return: that format has no timestamp, so a
/// [`LazyEchoCache`](echocache_core::LazyEchoCache) cannot work on it.
const GO_PLAIN_NO_LOCK: &str = "the Go echocache plain format has no timestamps and no refresh \
    lock: a LazyEchoCache needs RedisStore::go_echocache_compatible (the envelope format)";

/// The layout and value format of a [`RedisStore`]: one store type, one set of commands;
/// only the key builders and the (de)serialisation look at it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    /// `{prefix}:v:` / `{prefix}:l:` keys, echocache's versioned envelope, the codec `C`.
    Native,
    /// The Go echocache's `{prefix}:` / `{prefix}:lock:` keys and the JSON of its
    /// stale-while-revalidate stores, `{"Value":…,"CreatedAt":…}`.
    GoEnvelope,
    /// The Go echocache's keys and the JSON of its plain stores: the value alone, no
    /// timestamp; no refresh lock.
    GoPlain,
}

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
    /// client for several stores). `client` is a fred [`Client`] or [`Pool`] (or a
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

impl<V> RedisStore<V, Json> {
    /// Makes a store that shares its entries and refresh locks with Go services using the
    /// Go echocache's `NewStaleWhileRevalidateRedisCache(db, prefix, ttl)`.
    ///
    /// - Entries live under `{prefix}:{key}` as the JSON of Go's `StaleValue[T]`,
    ///   `{"Value":…,"CreatedAt":"2025-02-21T21:01:30.123456789Z"}`, written with
    ///   `SET key json EX secs` (whole seconds) or `PX ms`, as go-redis sends them.
    /// - The refresh lock is `SET {prefix}:lock:{key} token NX EX|PX ttl`: a Go instance and
    ///   a Rust instance exclude each other. It is still released by an atomic
    ///   compare-and-delete (the Go code's `GET` then `DEL` releases Rust locks just as
    ///   well).
    ///
    /// Use it with [`LazyEchoCache`](echocache_core::LazyEchoCache) (entries carry their
    /// age) or [`EchoCache`](echocache_core::EchoCache). The value type must have the same
    /// JSON as the Go type: see the [crate docs](crate#go-interop) for the details, the
    /// codec (`Json` in the type, unused: there is no envelope header) and the one
    /// collision the Go key layout has (`lock:x` is the lock of `x`).
    ///
    /// # Errors
    ///
    /// [`BuildError::InvalidSetting`] naming `prefix` when the prefix is longer than 256
    /// bytes, holds control characters, or has a `:`-separated segment `v` or `l` (its keys
    /// would land in a native store's namespaces: see SECURITY.md); any other prefix is used
    /// as given, as Go does, the empty one included. Naming `ttl` when `ttl` is below 1 ms or too large for
    /// Redis. Go's TTL of 0 (no expiry) has no equivalent: use a long TTL (Go's
    /// `NeverExpire`, 100 years, is `Duration::from_secs(3_153_600_000)`).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use echocache_core::LazyEchoCache;
    /// use echocache_redis::{Json, RedisStore};
    /// use echocache_redis::fred::prelude::*;
    ///
    /// /// Go: `type Profile struct { Name string; Tags []string }`.
    /// #[derive(Clone, serde::Serialize, serde::Deserialize)]
    /// #[serde(rename_all = "PascalCase")]
    /// struct Profile {
    ///     name: String,
    ///     tags: Option<Vec<String>>, // a nil Go slice is `null`
    /// }
    ///
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// // `client`: a fred client of your own, set up as in the crate docs
    /// // ("Your own fred client": command timeout, reconnect policy, fail_fast false).
    /// # let config = Config { fail_fast: false, ..Config::from_url("redis://127.0.0.1:6379")? };
    /// # let client = Builder::from_config(config)
    /// #     .with_performance_config(|c| c.default_command_timeout = Duration::from_secs(2))
    /// #     .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2))
    /// #     .build()?;
    /// # let _connection = client.connect();
    ///
    /// // The prefix and TTL the Go services pass to NewStaleWhileRevalidateRedisCache.
    /// let store: RedisStore<Profile, Json> =
    ///     RedisStore::go_echocache_compatible(client, "profiles", Duration::from_secs(24 * 3600))?;
    /// assert_eq!(store.data_key("42"), "profiles:42");
    /// assert_eq!(store.lock_key("42"), "profiles:lock:42");
    /// let cache = LazyEchoCache::builder(store)
    ///     .refresh_after(Duration::from_secs(60))
    ///     .build()?;
    /// # drop(cache);
    /// # Ok(()) }
    /// ```
    pub fn go_echocache_compatible(
        client: impl Into<RedisConnection>,
        prefix: &str,
        ttl: Duration,
    ) -> Result<Self, BuildError> {
        let keys = KeySpace::go(prefix)?;
        RedisStore::with_format(client.into(), keys, Format::GoEnvelope, ttl, Json)
    }

    /// Makes a store that shares its entries with Go services using the Go echocache's
    /// plain `NewRedisCache(db, prefix, ttl)`: entries under `{prefix}:{key}`, holding the
    /// JSON of the value alone (a string is stored with its quotes, `"hello"`).
    ///
    /// **That format has no timestamp**, so an entry's age is unknown. This store reads
    /// every entry with `written_at` = [`UNIX_EPOCH`](std::time::SystemTime::UNIX_EPOCH)
    /// (the oldest time, as Go reads a missing `CreatedAt`: never "fresh" by mistake) and
    /// drops `written_at` when writing. Use it with [`EchoCache`](echocache_core::EchoCache),
    /// which does not look at ages. A [`LazyEchoCache`](echocache_core::LazyEchoCache)
    /// needs [`go_echocache_compatible`](Self::go_echocache_compatible) (the Go
    /// stale-while-revalidate format): on this store every hit would be stale, so
    /// `try_lock` and [`extend_lock`](Self::extend_lock) return an error saying so, and
    /// every background refresh fails visibly (counted in `stats().refresh_errors` and
    /// `store_errors`) instead of running against an age that does not exist. (With
    /// `expire_after` set, every hit would even be expired and load: nothing is cached.)
    ///
    /// # Errors
    ///
    /// As [`go_echocache_compatible`](Self::go_echocache_compatible).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use echocache_core::EchoCache;
    /// use echocache_redis::{Json, RedisStore};
    /// use echocache_redis::fred::prelude::*;
    ///
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// // `client`: a fred client of your own, set up as in the crate docs
    /// // ("Your own fred client": command timeout, reconnect policy, fail_fast false).
    /// # let config = Config { fail_fast: false, ..Config::from_url("redis://127.0.0.1:6379")? };
    /// # let client = Builder::from_config(config)
    /// #     .with_performance_config(|c| c.default_command_timeout = Duration::from_secs(2))
    /// #     .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2))
    /// #     .build()?;
    /// # let _connection = client.connect();
    /// let store: RedisStore<String, Json> =
    ///     RedisStore::go_echocache_compatible_plain(client, "greetings", Duration::from_secs(3600))?;
    /// let cache = EchoCache::new(store);
    /// let hello = cache
    ///     .fetch("en", || async { Ok::<_, std::io::Error>("hello".to_owned()) })
    ///     .await?;
    /// // Redis now holds `greetings:en` = `"hello"`, which a Go NewRedisCache[string] reads.
    /// # drop(hello);
    /// # Ok(()) }
    /// ```
    pub fn go_echocache_compatible_plain(
        client: impl Into<RedisConnection>,
        prefix: &str,
        ttl: Duration,
    ) -> Result<Self, BuildError> {
        let keys = KeySpace::go(prefix)?;
        RedisStore::with_format(client.into(), keys, Format::GoPlain, ttl, Json)
    }
}

impl<V, C> RedisStore<V, C> {
    fn with_format(
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
    /// [`MessagePack`] ([`Json`] for Go-compatible stores).
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

    /// The expiry an entry is written with: `PX ms`, or as go-redis sends it (`EX secs`
    /// for whole seconds) for a Go-compatible store.
    fn entry_expiration(&self) -> Expiration {
        match self.format {
            Format::Native => Expiration::PX(self.ttl_ms),
            Format::GoEnvelope | Format::GoPlain => lock::go_expiration(self.ttl),
        }
    }

    /// The expiry a refresh lock of `ttl` is taken with.
    fn lock_expiration(&self, ttl: Duration) -> Expiration {
        match self.format {
            Format::Native => Expiration::PX(lock::px_millis(ttl)),
            Format::GoEnvelope | Format::GoPlain => lock::go_expiration(ttl),
        }
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
        if self.format == Format::GoPlain {
            return Err(StoreError::backend_msg(GO_PLAIN_NO_LOCK));
        }
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
        let mut out = f.debug_struct("RedisStore");
        out.field("prefix", &self.keys.prefix());
        match self.format {
            Format::Native => out.field("codec_id", &C::ID),
            Format::GoEnvelope => out.field("format", &"go-echocache-envelope"),
            Format::GoPlain => out.field("format", &"go-echocache-plain"),
        };
        out.field("ttl", &self.ttl)
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
        match self.format {
            Format::Native => encode_entry(&self.codec, entry, self.max_value_bytes),
            Format::GoEnvelope => go_format::encode_envelope(entry, self.max_value_bytes),
            Format::GoPlain => go_format::encode_plain(&entry.value, self.max_value_bytes),
        }
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
        match self.format {
            Format::Native => decode_entry(&self.codec, bytes, self.max_value_bytes),
            Format::GoEnvelope => go_format::decode_envelope(bytes, self.max_value_bytes),
            // No timestamp in this format: the oldest time, never "fresh" by mistake.
            Format::GoPlain => go_format::decode_plain(bytes, self.max_value_bytes)
                .map(|value| Entry::new(value, std::time::SystemTime::UNIX_EPOCH)),
        }
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
        if self.format != Format::Native {
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
        if self.format == Format::GoPlain {
            return Err(StoreError::backend_msg(GO_PLAIN_NO_LOCK));
        }
        let expiry = self.lock_expiration(ttl);
        lock::try_lock(&self.conn.commands(), self.keys.lock_key(key), expiry)
            .await
            .map_err(backend("SET NX (lock)"))
    }

    async fn unlock(&self, key: &str, token: &LockToken) -> Result<(), StoreError> {
        if self.format == Format::GoPlain {
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
        self.format != Format::GoPlain
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
mod tests {
    use super::*;
    use echocache_core::codec::HEADER_LEN;
    use fred::types::config::Config;
    use std::time::SystemTime;

    fn client() -> Client {
        // Never connected: these tests send no command.
        Client::new(Config::default(), None, None, None)
    }

    fn setting(result: Result<RedisStore<String>, BuildError>) -> (&'static str, &'static str) {
        match result {
            Err(BuildError::InvalidSetting { setting, reason }) => (setting, reason),
            other => panic!("accepted: {other:?}"),
        }
    }

    #[test]
    fn builds_keys_under_the_prefix() {
        let store: RedisStore<String> =
            RedisStore::new(client(), "app", Duration::from_secs(60)).unwrap();
        assert_eq!(store.prefix(), "app");
        assert_eq!(store.ttl(), Duration::from_secs(60));
        assert_eq!(store.data_key("k"), "app:v:k");
        assert_eq!(store.lock_key("k"), "app:l:k");
        assert_ne!(store.data_key("l:k"), store.lock_key("k"));
    }

    #[test]
    fn rejects_bad_prefix_and_ttl_at_construction() {
        let ttl = Duration::from_secs(1);
        assert_eq!(setting(RedisStore::new(client(), "", ttl)).0, "prefix");
        assert_eq!(setting(RedisStore::new(client(), "a b", ttl)).0, "prefix");
        assert_eq!(setting(RedisStore::new(client(), "a:l", ttl)).0, "prefix");
        assert_eq!(
            setting(RedisStore::new(client(), "app", Duration::ZERO)),
            ("ttl", "must be at least 1 ms (Redis PX resolution)")
        );
        assert_eq!(
            setting(RedisStore::new(client(), "app", Duration::from_micros(999))).0,
            "ttl"
        );
        assert_eq!(
            setting(RedisStore::new(client(), "app", Duration::MAX)),
            ("ttl", "is too large for Redis PX")
        );
    }

    #[test]
    fn codec_and_limit_are_settable() {
        let store: RedisStore<String, crate::Json> =
            RedisStore::new(client(), "app", Duration::from_secs(1))
                .unwrap()
                .codec(crate::Json)
                .max_value_bytes(HEADER_LEN + 1);
        let printed = format!("{store:?}");
        assert!(printed.contains("codec_id: 2"), "{printed}");
        assert!(printed.contains("max_value_bytes: 11"), "{printed}");
    }

    #[tokio::test]
    async fn a_limit_no_entry_fits_is_accepted_and_every_write_fails() {
        // No server: the size check fails before any command is sent.
        for max in [0, 1, HEADER_LEN] {
            let store: RedisStore<String> =
                RedisStore::new(client(), "app", Duration::from_secs(1))
                    .unwrap()
                    .max_value_bytes(max);
            assert!(format!("{store:?}").contains(&format!("max_value_bytes: {max}")));
            let err = store
                .set("k", &Entry::new(String::new(), SystemTime::UNIX_EPOCH))
                .await;
            let err = err.unwrap_err();
            assert!(err.is_decode(), "{err:?}");
            let cause = err.source().unwrap().to_string();
            assert!(cause.contains("exceeds the limit"), "{cause}");
        }
        let go: RedisStore<String, crate::Json> =
            RedisStore::go_echocache_compatible(client(), "app", Duration::from_secs(1))
                .unwrap()
                .max_value_bytes(0);
        let err = go
            .set("k", &Entry::new(String::new(), SystemTime::UNIX_EPOCH))
            .await;
        assert!(err.unwrap_err().is_decode());
    }

    #[test]
    fn go_stores_use_the_go_layout() {
        let ttl = Duration::from_secs(3600);
        let store: RedisStore<String, crate::Json> =
            RedisStore::go_echocache_compatible(client(), "myapp", ttl).unwrap();
        assert_eq!(store.prefix(), "myapp");
        assert_eq!(store.ttl(), ttl);
        assert_eq!(store.data_key("greeting"), "myapp:greeting");
        assert_eq!(store.lock_key("greeting"), "myapp:lock:greeting");
        // The known collision of the Go layout (Go bug 21), kept: Go services use it.
        assert_eq!(store.data_key("lock:x"), store.lock_key("x"));
        let printed = format!("{store:?}");
        assert!(printed.contains("go-echocache-envelope"), "{printed}");
        assert!(!printed.contains("codec_id"), "{printed}");

        let plain: RedisStore<String, crate::Json> =
            RedisStore::go_echocache_compatible_plain(client(), "", ttl).unwrap();
        assert_eq!(
            plain.data_key("k"),
            ":k",
            "an empty prefix is used as Go uses it"
        );
        assert!(format!("{plain:?}").contains("go-echocache-plain"));
        // `codec` changes the type, not the format.
        let plain = plain.codec(MessagePack);
        assert_eq!(plain.data_key("k"), ":k");
        assert!(format!("{plain:?}").contains("go-echocache-plain"));
    }

    #[test]
    fn go_stores_validate_their_settings() {
        let go = |prefix: &str, ttl| -> Result<RedisStore<String, crate::Json>, BuildError> {
            RedisStore::go_echocache_compatible(client(), prefix, ttl)
        };
        let setting_of = |result: Result<RedisStore<String, crate::Json>, BuildError>| match result
        {
            Err(BuildError::InvalidSetting { setting, .. }) => setting,
            Ok(store) => panic!("accepted: {store:?}"),
            Err(other) => panic!("{other:?}"),
        };
        let ttl = Duration::from_secs(1);
        assert!(
            go("my app:vv", ttl).is_ok(),
            "Go prefixes are used as given"
        );
        assert_eq!(
            setting_of(go("my app:v", ttl)),
            "prefix",
            "but never inside a native store's namespace"
        );
        assert_eq!(setting_of(go("app\n", ttl)), "prefix");
        assert_eq!(setting_of(go(&"x".repeat(257), ttl)), "prefix");
        assert_eq!(setting_of(go("app", Duration::ZERO)), "ttl");
        assert_eq!(setting_of(go("app", Duration::MAX)), "ttl");
        assert_eq!(
            setting_of(RedisStore::go_echocache_compatible_plain(
                client(),
                "app\0",
                ttl
            )),
            "prefix"
        );
        assert!(
            go("app", Duration::from_secs(3_153_600_000)).is_ok(),
            "NeverExpire"
        );
    }

    #[tokio::test]
    async fn the_go_plain_store_refuses_locks_with_a_clear_error() {
        // No server: refused before any command is sent.
        let store: RedisStore<String, crate::Json> =
            RedisStore::go_echocache_compatible_plain(client(), "app", Duration::from_secs(1))
                .unwrap();
        let err = store
            .try_lock("k", Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(!err.is_decode());
        let message = format!("{err}: {:?}", err.source());
        assert!(
            message.contains("LazyEchoCache needs RedisStore::go_echocache_compatible"),
            "{message}"
        );
        let token = LockToken::generate();
        assert!(
            store.unlock("k", &token).await.is_ok(),
            "nothing to release"
        );
        assert!(
            store
                .extend_lock("k", &token, Duration::from_secs(1))
                .await
                .is_err()
        );
        assert!(
            Store::extend_lock(&store, "k", &token, Duration::from_secs(1))
                .await
                .is_err(),
            "the trait method refuses too (not the default `Ok(false)`)"
        );
    }

    #[test]
    fn debug_shows_no_credentials() {
        let config = Config::from_url("redis://user:hunter2@127.0.0.1:6379").unwrap();
        let client = Client::new(config, None, None, None);
        let store: RedisStore<String> =
            RedisStore::new(&client, "app", Duration::from_secs(1)).unwrap();
        let printed = format!("{store:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("prefix: \"app\""), "{printed}");
    }

    #[test]
    fn store_futures_are_send() {
        fn is_send<T: Send>(_: T) {}
        let ttl = Duration::from_secs(1);
        let native: RedisStore<String, crate::Json> = RedisStore::new(client(), "app", ttl)
            .unwrap()
            .codec(crate::Json);
        let go = RedisStore::go_echocache_compatible(client(), "app", ttl).unwrap();
        let entry = Entry::new(String::new(), SystemTime::UNIX_EPOCH);
        let token = LockToken::generate();
        for store in [native, go] {
            is_send(store.get("k"));
            is_send(store.set("k", &entry));
            is_send(store.remove("k"));
            is_send(store.try_lock("k", ttl));
            is_send(store.unlock("k", &token));
            is_send(store.extend_lock("k", &token, ttl));
            is_send(Store::extend_lock(&store, "k", &token, ttl));
        }
    }

    #[test]
    fn backend_errors_name_the_command_and_keep_the_cause() {
        let err = backend("GET")(FredError::new(
            fred::error::ErrorKind::IO,
            "connection refused",
        ));
        assert!(!err.is_decode());
        let cause = err.source().unwrap();
        assert_eq!(cause.to_string(), "redis GET failed");
        assert!(
            cause
                .source()
                .unwrap()
                .to_string()
                .contains("connection refused")
        );
    }
}
