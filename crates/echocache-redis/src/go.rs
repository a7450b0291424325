//! The constructors of the Go-compatible [`RedisStore`]s: the Go echocache's key layout
//! and JSON formats (see the [crate docs](crate#go-interop) and `format.rs`).

use std::time::Duration;

use echocache_core::BuildError;
use echocache_core::codec::Json;

use crate::RedisStore;
use crate::connection::RedisConnection;
use crate::format::Format;
use crate::keys::KeySpace;

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
