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
//! [`RedisStore::connect`] builds a fred client with safe defaults (timeouts, reconnection
//! for ever, start while Redis is down) and makes the store:
//!
//! ```no_run
//! use std::time::Duration;
//! use echocache_core::EchoCache;
//! use echocache_redis::RedisStore;
//!
//! #[derive(Clone, serde::Serialize, serde::Deserialize)]
//! struct User {
//!     name: String,
//! }
//!
//! # async fn load_user(id: &str) -> Result<User, std::io::Error> { Ok(User { name: id.into() }) }
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Returns even while Redis is down: the store is used as soon as Redis answers.
//! let store = RedisStore::connect("redis://127.0.0.1:6379", "myapp:users", Duration::from_secs(3600)).await?;
//! let cache = EchoCache::new(store);
//!
//! // Concurrent misses of "42", in this process, run `load_user` once; the value is then
//! // shared through Redis with every other process using the prefix "myapp:users".
//! let user = cache.fetch("42", || load_user("42")).await?;
//! println!("{}", user.name);
//! # Ok(()) }
//! ```
//!
//! For a client of your own (a pool, TLS certificates, other timeouts, the
//! [Go-compatible](#go-interop) stores), use [`RedisStore::new`]: see
//! [Your own fred client](#your-own-fred-client).
//!
//! # Key layout
//!
//! | Redis key | holds |
//! |---|---|
//! | `{prefix}:v:{key}` | the entry: the [envelope](echocache_core::codec) (version, codec, `written_at`, value), with `PX ttl` |
//! | `{prefix}:l:{key}` | the refresh lock: a random owner token, with `PX lock_ttl` |
//! | `{prefix}:v:{key}` after `remove` | a tombstone (`\xff` `echocache:tombstone:` token), with `PX tombstone_ttl`: read as a miss |
//!
//! Data and locks live in distinct namespaces, so a user key such as `l:x` never touches
//! the lock of `x`. The prefix is checked when the store is made (non-empty, at most 256
//! bytes, no whitespace or control characters, no `:`-separated segment `v` or `l`), so
//! two stores with different prefixes never share a key. Every command names one key:
//! the store works on Redis Cluster, and spreads over its slots (a `{hash tag}` in the
//! prefix would pin every key to one slot).
//!
//! # Ordered writes
//!
//! A value a cache loaded is written with [`set_if_version`](echocache_core::Store::set_if_version):
//! one Lua compare-and-set on the data key, which writes only if the key still holds the
//! bytes read before the load began (or is still absent). So a load in one process never
//! lands over an `insert` or an `invalidate` another process made while it ran: its write
//! is refused (counted in `stats().stale_writes_refused`) and the next fetch reads (or
//! loads) the newer state. For this to cover removals, the native format's `remove`
//! leaves a tombstone for [`tombstone_ttl`](RedisStore::tombstone_ttl) (60 s by default,
//! above the caches' 30 s `load_timeout`) instead of deleting the key.
//!
//! The Go formats order writes over writes the same way (the compare is on bytes, which
//! Go's JSON carries), but `remove` is a `DEL`, as the Go echocache does and expects: an
//! `invalidate` of a key that was absent when another process's load began cannot be told
//! from "still absent", and that load may still write its value after the invalidation.
//!
//! `insert` and `invalidate` themselves write unconditionally (last writer wins, by the
//! order Redis receives them).
//!
//! # Resilience
//!
//! A cache outage must not become an application outage: the caches treat a failing store
//! as a miss (counted in `stats().store_errors`) and still return the loaded value. For
//! that to be cheap, a store call must fail quickly while Redis is down or slow, and the
//! store must work again by itself once Redis is back:
//!
//! - **While the client is not connected** (Redis down, unreachable, restarting), every
//!   store call fails at once: the store sends its commands with fred's per-command
//!   `fail_fast`, whatever the client's settings. fred would otherwise keep them in its
//!   buffer until it reconnects, and a write the caller gave up on (the caches give up on
//!   a slow store call) would land later, over a value written meanwhile.
//! - **While Redis is stalled** (connected, not answering), a call waits for its reply up
//!   to the client's command timeout; the caches cut it short with their own store timeout.
//! - **Reconnection** follows the client's reconnect policy.
//!
//! [`RedisStore::connect`] sets the client up for all of this (its docs list the settings).
//!
//! # Your own fred client
//!
//! [`RedisStore::new`] (and the [Go-compatible](#go-interop) constructors) take a fred
//! [`Client`](fred::clients::Client) or [`Pool`](fred::clients::Pool) you build, for what
//! `connect` does not cover: a pool, TLS certificates, Sentinel credentials, other
//! timeouts, one client shared by several stores. These settings matter:
//!
//! - **A command timeout** (`default_command_timeout`): without one, a command sent to a
//!   stalled server waits for ever (fred's default is no timeout). The caches bound their
//!   calls themselves; the timeout is the second line, for everything else.
//! - **A reconnect policy that retries for ever**, with a short maximum delay: without a
//!   policy, fred gives up on the first broken connection and every later command fails;
//!   with a long maximum delay, Redis is used again only that long after it is back.
//! - **`fail_fast: false`** in the [`Config`](fred::types::config::Config), and
//!   `client.connect()` rather than `client.init().await?`, if the process must start
//!   while Redis is down: fred's default gives up on a first connection that fails, for
//!   good, and `init` returns that error.
//!
//! ```no_run
//! use std::time::Duration;
//! use echocache_redis::RedisStore;
//! use echocache_redis::fred::prelude::*;
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = Config {
//!     // The first connection follows the reconnect policy too.
//!     fail_fast: false,
//!     ..Config::from_url("redis://127.0.0.1:6379")?
//! };
//! let pool = Builder::from_config(config)
//!     .with_performance_config(|c| c.default_command_timeout = Duration::from_secs(2))
//!     .with_connection_config(|c| {
//!         // A TCP connect (or TLS handshake) that hangs is given up after this.
//!         c.connection_timeout = Duration::from_secs(2);
//!         c.internal_command_timeout = Duration::from_secs(2);
//!     })
//!     // Reconnect for ever (0 = no limit), waiting 100 ms, 200 ms, 400 ms ... up to 2 s.
//!     .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2))
//!     .build_pool(4)?;
//! // Start the connection tasks without waiting for them (`init` would wait, and fail
//! // while Redis is down): until Redis answers, store calls fail at once and the caches
//! // load from the source.
//! let _connection = pool.connect();
//!
//! let users = RedisStore::<String>::new(&pool, "myapp:users", Duration::from_secs(3600))?;
//! let pages = RedisStore::<Vec<u8>>::new(&pool, "myapp:pages", Duration::from_secs(60))?;
//! # drop((users, pages));
//! # Ok(()) }
//! ```
//!
//! Errors from fred are mapped to [`StoreError`](echocache_core::StoreError)s at the
//! store's boundary (backend errors; bytes that cannot be decoded are decode errors).
//!
//! # Go interop
//!
//! A Rust service and a Go service using the [Go echocache](https://github.com/logocomune/echocache)
//! (v1.2.x, go-redis v9) can share one Redis cache, so that services migrate one at a time
//! with no cold cache. Two constructors, one per Go store, make a
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
//!   `{prefix}:lock:{key}`, the prefix used as given (only a prefix over 256 bytes, with
//!   control characters, or with a `:`-separated segment `v` or `l`, which would reach
//!   into a native store's namespaces, is refused). Which prefixes are kept apart from
//!   which is in SECURITY.md ("Prefixes").
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
//!   expires (after 1 ms, Go bug 19). **But Go v1.2.0's lazy cache never takes the lock**
//!   (its worker does not call `TryAcquireRefreshLock`): its refreshes are deduplicated
//!   neither with ours nor among Go instances; only Go code that takes the lock itself is
//!   seen (and sees ours). Rust instances still dedupe among themselves.
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
//! // A client of your own, as in "Your own fred client" above.
//! let config = Config { fail_fast: false, ..Config::from_url("redis://127.0.0.1:6379")? };
//! let client = Builder::from_config(config)
//!     .with_performance_config(|c| c.default_command_timeout = Duration::from_secs(2))
//!     .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2))
//!     .build()?;
//! let _connection = client.connect();
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

mod backplane;
mod connect;
mod connection;
mod format;
mod go;
mod keys;
mod lock;
mod store;

pub use backplane::RedisBackplane;
pub use connect::ConnectError;
pub use connection::RedisConnection;
pub use echocache_core::codec::{Codec, DEFAULT_MAX_VALUE_BYTES, Json, MessagePack};
/// The fred crate this store is built on, re-exported so that your client comes from the
/// same version.
pub use fred;
pub use store::{DEFAULT_TOMBSTONE_TTL, RedisStore};
