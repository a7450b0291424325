#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
//! A Redis store for [echocache](https://docs.rs/echocache), through
//! [fred](https://docs.rs/fred): [`RedisStore`] shares one cache between every process
//! that talks to the same Redis (single server, replicas or Redis Cluster), and gives
//! [`LazyEchoCache`](echocache_core::LazyEchoCache) a fleet-wide refresh lock, so that one
//! process refreshes a stale key while the others keep serving the old value.
//!
//! # Examples
//!
//! ```no_run
//! use std::time::Duration;
//! use echocache_core::EchoCache;
//! use echocache_redis::RedisStore;
//! use echocache_redis::fred::prelude::*;
//!
//! #[derive(Clone, serde::Serialize, serde::Deserialize)]
//! struct User {
//!     name: String,
//! }
//!
//! # async fn load_user(id: &str) -> Result<User, std::io::Error> { Ok(User { name: id.into() }) }
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Builder::from_config(Config::from_url("redis://127.0.0.1:6379")?)
//!     .with_performance_config(|c| c.default_command_timeout = Duration::from_millis(500))
//!     .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
//!     .build()?;
//! client.init().await?;
//!
//! let store = RedisStore::new(client, "myapp:users", Duration::from_secs(3600))?;
//! let cache = EchoCache::new(store);
//!
//! // Concurrent misses of "42", in this process, run `load_user` once; the value is then
//! // shared through Redis with every other process using the prefix "myapp:users".
//! let user = cache.fetch("42", || load_user("42")).await?;
//! println!("{}", user.name);
//! # Ok(()) }
//! ```
//!
//! # Key layout
//!
//! | Redis key | holds |
//! |---|---|
//! | `{prefix}:v:{key}` | the entry: the [envelope](echocache_core::codec) (version, codec, `written_at`, value), with `PX ttl` |
//! | `{prefix}:l:{key}` | the refresh lock: a random owner token, with `PX lock_ttl` |
//!
//! Data and locks live in distinct namespaces, so a user key such as `l:x` never touches
//! the lock of `x`. The prefix is checked when the store is made (non-empty, at most 256
//! bytes, no whitespace or control characters, no `:`-separated segment `v` or `l`), so
//! two stores with different prefixes never share a key. Every command names one key:
//! the store works on Redis Cluster, and spreads over its slots (a `{hash tag}` in the
//! prefix would pin every key to one slot).
//!
//! # Resilience
//!
//! A cache outage must not become an application outage: the caches treat a failing store
//! as a miss (counted in `stats().store_errors`) and still return the loaded value. Two
//! settings of the fred client make that true in practice:
//!
//! - **A reconnect policy**, so that after Redis restarts (or fails over) the client
//!   reconnects by itself and the store works again with no action from you. Without one,
//!   fred gives up on the first broken connection and every later command fails.
//! - **A command timeout**, so that a dead or unreachable server gives an error quickly
//!   instead of a caller waiting for the reconnection.
//! - **`fail_fast: false`** in the [`Config`](fred::types::config::Config), if the
//!   process should start while Redis is down: with the default, a first connection that
//!   fails is never retried.
//!
//! ```no_run
//! use std::time::Duration;
//! use echocache_redis::fred::prelude::*;
//!
//! # #[tokio::main] async fn main() -> Result<(), Error> {
//! let config = Config {
//!     // The first connection follows the reconnect policy too, so that the process can
//!     // start while Redis is down (the default, `true`, gives up at once for good).
//!     fail_fast: false,
//!     ..Config::from_url("redis://127.0.0.1:6379")?
//! };
//! let client = Builder::from_config(config)
//!     .with_connection_config(|c| {
//!         // A TCP connect (or TLS handshake) that hangs gives up after this.
//!         c.connection_timeout = Duration::from_secs(2);
//!         c.internal_command_timeout = Duration::from_secs(2);
//!         // A command caught by a broken connection is retried once on the new one.
//!         c.max_command_attempts = 2;
//!     })
//!     .with_performance_config(|c| {
//!         // Every command fails after this, connected or not: a dead server is an error.
//!         c.default_command_timeout = Duration::from_millis(500);
//!     })
//!     // Reconnect for ever (0 = no limit), waiting 100 ms, 200 ms, 400 ms ... up to 5 s.
//!     .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
//!     .build()?;
//! // Start the connection task without waiting for it: until Redis answers, commands fail
//! // after the command timeout and the caches load from the source. (`client.init()`
//! // would wait for the first connection instead.)
//! let _connection = client.connect();
//! # Ok(()) }
//! ```
//!
//! A [`Pool`](fred::clients::Pool) is built the same way with `build_pool(n)`. Errors from
//! fred are mapped to [`StoreError`](echocache_core::StoreError)s at the store's boundary
//! (backend errors; bytes that cannot be decoded are decode errors).
//!
//! # Go interop
//!
//! A Rust service and a Go service using the [Go echocache](https://github.com/logocomune/echocache)
//! (v1.2.x, go-redis v9) can share one Redis cache, so that services migrate one at a time
//! with no cold cache and no double refreshes. Two constructors, one per Go store, make a
//! [`RedisStore`] that reads and writes exactly what the Go library does:
//!
//! | Go constructor | Rust store | Redis value |
//! |---|---|---|
//! | `store.NewStaleWhileRevalidateRedisCache(db, prefix, ttl)` | [`RedisStore::go_echocache_compatible`] | `{"Value":…,"CreatedAt":"2025-02-21T21:01:30.123456789Z"}` |
//! | `store.NewRedisCache(db, prefix, ttl)` | [`RedisStore::go_echocache_compatible_plain`] | the JSON of the value alone: `"hello"` |
//!
//! Give them the prefix and TTL the Go services use. Then:
//!
//! - **Keys** are the Go layout: the entry `{prefix}:{key}`, the refresh lock
//!   `{prefix}:lock:{key}`, the prefix used as given (only a prefix over 256 bytes or with
//!   control characters is refused).
//! - **Writing** gives JSON the Go library decodes into the same value: the field names
//!   `Value` and `CreatedAt` in Go's order, `CreatedAt` in Go's form (RFC 3339, UTC `Z`,
//!   nanoseconds with trailing zeros trimmed, no fraction when they are zero), `<`, `>`,
//!   `&`, U+2028 and U+2029 escaped as Go escapes them; `SET … EX secs` when the TTL is a
//!   whole number of seconds, `PX ms` otherwise, as go-redis sends it.
//! - **Reading** accepts what Go writes and what Go's decoder accepts: `CreatedAt` with 0
//!   to 9 fractional digits, `Z` or a `±hh:mm` offset; field names in any case; unknown
//!   fields ignored; Go's escapes. Go's zero time (`0001-01-01T00:00:00Z`, also what a
//!   missing or `null` `CreatedAt` means) and any time before 1970 read as
//!   [`UNIX_EPOCH`](std::time::SystemTime::UNIX_EPOCH): always stale, as in Go.
//! - **Locks** are `SET {prefix}:lock:{key} token NX EX|PX ttl` with the token as a plain
//!   string, as the Go library takes them: while a Go instance refreshes a key, a Rust
//!   [`LazyEchoCache`](echocache_core::LazyEchoCache) skips it, and the other way round.
//!   A Rust instance releases its lock with an atomic compare-and-delete; the Go code's
//!   `GET` then `DEL` releases its own. Unlike the Go code, a lock TTL of zero still
//!   expires (after 1 ms, Go bug 19).
//! - **The plain format has no timestamp.** Its entries read with `written_at` =
//!   `UNIX_EPOCH` (age unknown, taken as the oldest): fine for
//!   [`EchoCache`](echocache_core::EchoCache), which ignores ages, but a
//!   [`LazyEchoCache`](echocache_core::LazyEchoCache) needs the envelope format, so the
//!   plain store's `try_lock` returns an error saying so and its background refreshes
//!   fail visibly (counted in `stats().refresh_errors`).
//!
//! **The Go layout's key collision.** User key `lock:x` and the lock of `x` are the same
//! Redis key, `{prefix}:lock:x`, in Go and therefore here (Go bug 21; the native layout
//! has no such collision). Writing `lock:x` overwrites the refresh lock of `x` (and no
//! one, Go or Rust, can take that lock while the entry lives), and while `x` is being
//! refreshed `lock:x` reads as a decode error (the lock token is not JSON). The store cannot fix this without breaking the format Go
//! services read: keep user keys that start with `lock:` out of Go-compatible stores.
//!
//! **The value type** must have the JSON of the Go type, which serde gives with a few
//! attributes:
//!
//! - Go writes exported field names as declared (`City`), and reads them in any case:
//!   `#[serde(rename_all = "PascalCase")]` (or `rename` per field) on the Rust struct.
//! - A nil Go slice or map is `null`: model it as `Option<Vec<T>>` / `Option<HashMap<…>>`
//!   (or `#[serde(default)]` with a `deserialize_with` that maps `null` to empty).
//! - Go decodes `null`, or a missing `Value`, into the zero value of any type; serde only
//!   accepts it for `Option` and `()`-like types: elsewhere it is a decode error (the
//!   caches then reload and overwrite the entry).
//! - A Go `[]byte` is a base64 string in JSON, a Rust `Vec<u8>` an array of numbers: use a
//!   `String` holding base64, or a base64 serde adapter.
//! - Byte for byte, serde's JSON can differ from Go's where JSON allows it (float
//!   formatting such as `1.0` vs `1` and `1e21` vs `1e+21`, map key order unless the map
//!   is a `BTreeMap` (Go sorts keys), `\b`/`\f` where Go before 1.22 writes
//!   `\u0008`/`\u000c`): Go decodes both the same way.
//!
//! Do not share a prefix between a native and a Go-compatible store, nor between the two
//! Go formats (as in Go, each reads the other's entries as garbage).
//!
//! ```no_run
//! use std::time::Duration;
//! use echocache_core::LazyEchoCache;
//! use echocache_redis::{Json, RedisStore};
//! use echocache_redis::fred::prelude::*;
//!
//! /// Go: `type Weather struct { City string; Temperature int; Tags []string }`.
//! #[derive(Clone, serde::Serialize, serde::Deserialize)]
//! #[serde(rename_all = "PascalCase")]
//! struct Weather {
//!     city: String,
//!     temperature: i64,
//!     tags: Option<Vec<String>>,
//! }
//!
//! # async fn fetch_weather(city: &str) -> Result<Weather, std::io::Error> { unimplemented!() }
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Builder::from_config(Config::from_url("redis://127.0.0.1:6379")?)
//!     .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
//!     .build()?;
//! client.init().await?;
//!
//! // Go: store.NewStaleWhileRevalidateRedisCache[Weather](rdb, "weather", 24*time.Hour)
//! let store: RedisStore<Weather, Json> =
//!     RedisStore::go_echocache_compatible(client, "weather", Duration::from_secs(24 * 3600))?;
//! let cache = LazyEchoCache::builder(store)
//!     .refresh_after(Duration::from_secs(10 * 60))
//!     .build()?;
//! let oslo = cache.fetch("oslo", || fetch_weather("oslo")).await?;
//! println!("{} °C in {}", oslo.temperature, oslo.city);
//! # Ok(()) }
//! ```
//!
//! # Cargo features
//!
//! This crate has none; fred's own features (TLS, Sentinel, …) can be enabled by adding
//! `fred` to your own `Cargo.toml` with the same major version.

mod go_json;
mod go_time;
mod keys;
mod lock;
mod store;

pub use echocache_core::codec::{Codec, DEFAULT_MAX_VALUE_BYTES, Json, MessagePack};
/// The fred crate this store is built on, re-exported so that your client comes from the
/// same version.
pub use fred;
pub use store::{RedisConnection, RedisStore};
