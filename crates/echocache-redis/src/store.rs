//! [`RedisStore`] and the [`RedisConnection`] it runs its commands on.

use std::error::Error as StdError;
use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use echocache_core::codec::{Codec, DEFAULT_MAX_VALUE_BYTES, HEADER_LEN, MessagePack};
use echocache_core::codec::{decode_entry, encode_entry};
use echocache_core::{BuildError, Entry, LockToken, Store, StoreError};
use fred::bytes::Bytes;
use fred::clients::{Client, Pool};
use fred::error::Error as FredError;
use fred::interfaces::{ClientLike, KeysInterface};
use fred::types::{Expiration, Value};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::keys::KeySpace;
use crate::lock::{self, MAX_TTL_MS};

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

impl RedisConnection {
    /// The client for the next command: for a pool, the next connected client in turn.
    fn client(&self) -> &Client {
        match self {
            RedisConnection::Client(client) => client,
            RedisConnection::Pool(pool) => pool.next_connected(),
        }
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
fn backend(command: &'static str) -> impl FnOnce(FredError) -> StoreError {
    move |source| StoreError::backend(CommandError { command, source })
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
/// Cheap to clone when `C` is (fred clients are handles to shared state).
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use echocache_redis::{Json, RedisStore};
/// use fred::prelude::*;
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let client = Builder::from_config(Config::from_url("redis://127.0.0.1:6379")?)
///     .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
///     .build()?;
/// client.init().await?;
///
/// let store: RedisStore<Vec<u32>, Json> = RedisStore::new(client, "myapp", Duration::from_secs(600))?
///     .codec(Json)
///     .max_value_bytes(1024 * 1024);
/// assert_eq!(store.data_key("answer"), "myapp:v:answer");
/// # Ok(()) }
/// ```
pub struct RedisStore<V, C = MessagePack> {
    conn: RedisConnection,
    keys: KeySpace,
    ttl: Duration,
    ttl_ms: i64,
    codec: C,
    max_value_bytes: usize,
    value: PhantomData<fn() -> V>,
}

impl<V> RedisStore<V, MessagePack> {
    /// Makes a store that keeps entries under `prefix` for `ttl` after their last write,
    /// encoded with [`MessagePack`].
    ///
    /// `client` is a fred [`Client`] or [`Pool`] (or a reference to one). Connect it
    /// yourself (`client.init().await?`) with a reconnect policy and a command timeout: see
    /// the [crate docs](crate#resilience) for why and how.
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
        if ttl < Duration::from_millis(1) {
            return Err(BuildError::InvalidSetting {
                setting: "ttl",
                reason: "must be at least 1 ms (Redis PX resolution)",
            });
        }
        let ttl_ms = i64::try_from(ttl.as_millis())
            .ok()
            .filter(|ms| *ms <= MAX_TTL_MS)
            .ok_or(BuildError::InvalidSetting {
                setting: "ttl",
                reason: "is too large for Redis PX",
            })?;
        Ok(Self {
            conn: client.into(),
            keys,
            ttl,
            ttl_ms,
            codec: MessagePack,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            value: PhantomData,
        })
    }
}

impl<V, C> RedisStore<V, C> {
    /// Uses `codec` for the values, e.g. [`Json`](crate::Json) to read entries in
    /// `redis-cli`.
    ///
    /// Entries written with another codec read as decode errors (then the caches reload
    /// and overwrite them), so switching codecs on a live prefix costs one load per key.
    ///
    /// # Default
    ///
    /// [`MessagePack`].
    pub fn codec<C2: Codec>(self, codec: C2) -> RedisStore<V, C2> {
        RedisStore {
            conn: self.conn,
            keys: self.keys,
            ttl: self.ttl,
            ttl_ms: self.ttl_ms,
            codec,
            max_value_bytes: self.max_value_bytes,
            value: PhantomData,
        }
    }

    /// Limits an encoded entry (envelope included) to `max` bytes.
    ///
    /// A larger entry fails to be written (a [`StoreError`] the caches count; the caller
    /// still gets the loaded value) and, if one was written by someone else, reads as a
    /// decode error after at most `max + 1` bytes were transferred.
    ///
    /// # Default
    ///
    /// [`DEFAULT_MAX_VALUE_BYTES`] (16 MiB).
    ///
    /// # Panics
    ///
    /// When `max` is not above the envelope header ([`HEADER_LEN`], 10 bytes): no entry
    /// could ever be stored.
    #[track_caller]
    pub fn max_value_bytes(self, max: usize) -> Self {
        assert!(
            max > HEADER_LEN,
            "max_value_bytes must be above the {HEADER_LEN}-byte envelope header, got {max}"
        );
        Self {
            max_value_bytes: max,
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

    /// The Redis key holding the entry for `key`: `{prefix}:v:{key}`.
    pub fn data_key(&self, key: &str) -> String {
        self.keys.data_key(key)
    }

    /// The Redis key holding the refresh lock for `key`: `{prefix}:l:{key}`.
    pub fn lock_key(&self, key: &str) -> String {
        self.keys.lock_key(key)
    }

    /// Resets the TTL of the refresh lock for `key` to `ttl`, if `token` still owns it.
    ///
    /// For refreshes that may outlive the lock's TTL. Atomic (a compare-and-pexpire
    /// script): a lock taken over by another owner is left alone.
    ///
    /// Returns whether the lock was extended: `false` when it expired or changed owner.
    ///
    /// # Errors
    ///
    /// A backend [`StoreError`] when Redis fails.
    pub async fn extend_lock(
        &self,
        key: &str,
        token: &LockToken,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        lock::extend(self.conn.client(), self.keys.lock_key(key), token, ttl)
            .await
            .map_err(backend("EVALSHA (extend lock)"))
    }
}

impl<V, C: Clone> Clone for RedisStore<V, C> {
    fn clone(&self) -> Self {
        Self {
            conn: self.conn.clone(),
            keys: self.keys.clone(),
            ttl: self.ttl,
            ttl_ms: self.ttl_ms,
            codec: self.codec.clone(),
            max_value_bytes: self.max_value_bytes,
            value: PhantomData,
        }
    }
}

impl<V, C: Codec> fmt::Debug for RedisStore<V, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.keys.prefix())
            .field("ttl", &self.ttl)
            .field("codec_id", &C::ID)
            .field("max_value_bytes", &self.max_value_bytes)
            .field("connection", &self.conn)
            .finish()
    }
}

impl<V, C> Store<V> for RedisStore<V, C>
where
    V: Serialize + DeserializeOwned + Send + Sync + 'static,
    C: Codec,
{
    async fn get(&self, key: &str) -> Result<Option<Entry<V>>, StoreError> {
        // GETRANGE 0 max (inclusive) rather than GET: one round trip all the same, but an
        // oversized value costs at most `max + 1` bytes, never its full size. A missing key
        // reads as "" (so does an empty string, which is no envelope either).
        let end = self.max_value_bytes.min(i64::MAX as usize);
        let bytes: Option<Bytes> = self
            .conn
            .client()
            .getrange(self.keys.data_key(key), 0, end)
            .await
            .map_err(backend("GETRANGE"))?;
        match bytes {
            Some(bytes) if !bytes.is_empty() => {
                decode_entry(&self.codec, &bytes, self.max_value_bytes).map(Some)
            }
            _ => Ok(None),
        }
    }

    async fn set(&self, key: &str, entry: &Entry<V>) -> Result<(), StoreError> {
        let bytes = encode_entry(&self.codec, entry, self.max_value_bytes)?;
        self.conn
            .client()
            .set::<(), _, _>(
                self.keys.data_key(key),
                Value::Bytes(Bytes::from(bytes)),
                Some(Expiration::PX(self.ttl_ms)),
                None,
                false,
            )
            .await
            .map_err(backend("SET"))
    }

    async fn remove(&self, key: &str) -> Result<(), StoreError> {
        self.conn
            .client()
            .del::<(), _>(self.keys.data_key(key))
            .await
            .map_err(backend("DEL"))
    }

    async fn try_lock(&self, key: &str, ttl: Duration) -> Result<Option<LockToken>, StoreError> {
        lock::try_lock(self.conn.client(), self.keys.lock_key(key), ttl)
            .await
            .map_err(backend("SET NX (lock)"))
    }

    async fn unlock(&self, key: &str, token: &LockToken) -> Result<(), StoreError> {
        lock::unlock(self.conn.client(), self.keys.lock_key(key), token)
            .await
            .map_err(backend("EVALSHA (unlock)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fred::types::config::Config;

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

    #[test]
    #[should_panic(expected = "max_value_bytes must be above")]
    fn a_limit_below_the_header_panics_at_construction() {
        let store: RedisStore<String> =
            RedisStore::new(client(), "app", Duration::from_secs(1)).unwrap();
        let _ = store.max_value_bytes(HEADER_LEN);
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
        let store: RedisStore<String> =
            RedisStore::new(client(), "app", Duration::from_secs(1)).unwrap();
        let entry = Entry::new(String::new(), std::time::SystemTime::UNIX_EPOCH);
        let token = LockToken::generate();
        is_send(store.get("k"));
        is_send(store.set("k", &entry));
        is_send(store.remove("k"));
        is_send(store.try_lock("k", Duration::from_secs(1)));
        is_send(store.unlock("k", &token));
        is_send(store.extend_lock("k", &token, Duration::from_secs(1)));
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
