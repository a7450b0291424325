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
//! # Cargo features
//!
//! This crate has none; fred's own features (TLS, Sentinel, …) can be enabled by adding
//! `fred` to your own `Cargo.toml` with the same major version.

mod keys;
mod lock;
mod store;

pub use echocache_core::codec::{Codec, DEFAULT_MAX_VALUE_BYTES, Json, MessagePack};
/// The fred crate this store is built on, re-exported so that your client comes from the
/// same version.
pub use fred;
pub use store::{RedisConnection, RedisStore};
