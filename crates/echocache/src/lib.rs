#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
//! A generic, async, concurrency-safe read-through cache that protects slow or costly
//! upstreams (databases, HTTP APIs) from redundant work.
//!
//! - **Single-flight**: concurrent misses of one key run the loader once, and every caller
//!   gets that one result. The load runs as its own task, so it completes and is stored
//!   even if every caller goes away.
//! - **Two modes**: [`EchoCache`] (callers wait for the value) and [`LazyEchoCache`]
//!   (stale-while-revalidate: a stale value comes back at once and is refreshed in the
//!   background, one refresh per key, and fleet-wide one per key through the store's lock).
//! - **Pluggable stores**, the same for both modes: in memory ([`store::LruStore`],
//!   [`store::ExpiringLruStore`], [`store::SingleStore`]), Redis and NATS JetStream KV
//!   (behind their features), or your own [`Store`].
//!
//! Store failures fail open: a store that is down or holds undecodable bytes is counted
//! in [`Stats`] and treated as a miss, so a cache outage does not become an outage.
//!
//! # Examples
//!
//! ```
//! use echocache::store::LruStore;
//! use echocache::{EchoCache, Error};
//!
//! #[derive(Debug)]
//! struct DbError;
//!
//! async fn load_user(id: u64) -> Result<String, DbError> {
//!     Ok(format!("user #{id}")) // a database query, in real life
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Error<DbError>> {
//! let cache = EchoCache::new(LruStore::new(10_000).expect("capacity > 0"));
//!
//! // A miss: the loader runs once, its value is stored and returned.
//! let user = cache.fetch("user:42", || load_user(42)).await?;
//! assert_eq!(user, "user #42");
//!
//! // A hit: the stored value, the loader is not called.
//! let again = cache.fetch("user:42", || load_user(42)).await?;
//! assert_eq!(again, user);
//! assert_eq!((cache.stats().hits, cache.stats().loads), (1, 1));
//! # Ok(())
//! # }
//! ```
//!
//! `cargo run --example tour` shows single-flight and stale-while-revalidate with timings.
//!
//! # Cargo features
//!
//! | Feature | Default | Description |
//! |---|---|---|
//! | `memory` | yes | the in-memory stores: [`store::LruStore`], [`store::ShardedLruStore`], [`store::ExpiringLruStore`], [`store::SingleStore`] |
//! | `redis` | no | `store::RedisStore`, over Redis (single, replicas or Cluster) with `fred` |
//! | `nats` | no | `store::NatsStore`, over NATS JetStream KV with `async-nats` |
//! | `full` | no | `memory`, `redis` and `nats` |
//! | `tracing` | no | `tracing` events (target `echocache`): store errors and timeouts, the circuit breaker opening and closing, loader panics and timeouts, dropped and locked-out refreshes; never on the hit path |
//! | `serde` | no | [`Stats`] implements `serde::Serialize` and `Deserialize` |
//! | `metrics` | no | a cache built with `.metrics("name")` reports a counter per [`Stats`] field, gauges of loads in flight and pending refreshes, and load and store-call latency histograms through the [`metrics`](https://docs.rs/metrics) crate (README, "Observability") |

pub use echocache_core::DynStore;
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub use echocache_core::METRICS_INTERVAL;
pub use echocache_core::{Backplane, DEFAULT_L1_TTL, L1Entry, Listener, MAX_L1_TTL, TieredStore};
pub use echocache_core::{
    BoxStore, BuildError, CLOCK_SKEW_ALLOWANCE, Clock, DEFAULT_BREAKER_COOL_DOWN,
    DEFAULT_BREAKER_THRESHOLD, DEFAULT_LOAD_TIMEOUT, DEFAULT_QUEUE_CAPACITY, DEFAULT_REFRESH_AFTER,
    DEFAULT_STORE_TIMEOUT, DEFAULT_WORKERS, EchoCacheBuilder, Entry, Error, LazyEchoCacheBuilder,
    LockToken, ManualClock, Stats, Store, StoreError, Version,
};

/// # Examples with a real store
///
/// A read-through cache over the in-memory [`LruStore`](store::LruStore); a
/// `RedisStore` or `NatsStore` (features `redis`, `nats`) takes its place unchanged.
///
/// ```
/// use echocache::store::LruStore;
/// use echocache::{EchoCache, Error};
///
/// #[derive(Debug)]
/// struct DbError;
///
/// /// `None`: no such user. Cached like any value (negative caching), so a flood of
/// /// requests for a missing id costs the database one query, not one per request.
/// async fn find_user(id: u64) -> Result<Option<String>, DbError> {
///     Ok((id == 42).then(|| "Ada".to_string())) // a database query, in real life
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Error<DbError>> {
/// let users: EchoCache<Option<String>, _> = EchoCache::new(LruStore::new(10_000).unwrap());
///
/// assert_eq!(users.fetch("user:42", || find_user(42)).await?.as_deref(), Some("Ada"));
/// assert_eq!(users.fetch("user:7", || find_user(7)).await?, None); // loaded once…
/// assert_eq!(users.fetch("user:7", || find_user(7)).await?, None); // …then a hit
/// assert_eq!((users.stats().loads, users.stats().hits), (2, 1));
///
/// // Errors are never cached: the next fetch of the key loads again.
/// let failed = users.fetch("user:9", || async { Err(DbError) }).await;
/// assert!(matches!(failed, Err(Error::Load(_))));
/// assert_eq!(users.fetch("user:9", || find_user(9)).await?, None);
/// # Ok(())
/// # }
/// ```
#[doc(inline)]
pub use echocache_core::EchoCache;

/// # Examples with a real store
///
/// Stale-while-revalidate over the in-memory [`LruStore`](store::LruStore): a value older
/// than `refresh_after` is served at once and refreshed in the background.
///
/// ```
/// use std::time::Duration;
/// use echocache::LazyEchoCache;
/// use echocache::store::LruStore;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let prices = LazyEchoCache::builder(LruStore::new(10_000)?)
///     .refresh_after(Duration::from_secs(30))
///     // Without `expire_after`, a value is served (and refreshed) however old it is,
///     // for as long as the store keeps it: set it when an old value is worse than
///     // waiting for a load.
///     .expire_after(Duration::from_secs(600))
///     .build()?;
///
/// let price = prices
///     .fetch("EURUSD", || async { Ok::<_, std::io::Error>(1.08_f64) })
///     .await?;
/// assert_eq!(price, 1.08);
/// prices.shutdown().await; // stops refreshing; waits for the running refreshes
/// # Ok(())
/// # }
/// ```
#[doc(inline)]
pub use echocache_core::LazyEchoCache;

/// The codecs of the remote stores' envelope (features `redis` and `nats`).
#[cfg(any(feature = "redis", feature = "nats"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "redis", feature = "nats"))))]
pub mod codec {
    pub use echocache_core::codec::{
        Codec, CodecError, DEFAULT_MAX_VALUE_BYTES, Json, MessagePack,
    };
}

/// The `fred` Redis client the Redis store is built on, to build its client with.
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use echocache_redis::fred;

/// The `async-nats` client the NATS store is built on, to build its client with.
#[cfg(feature = "nats")]
#[cfg_attr(docsrs, doc(cfg(feature = "nats")))]
pub use echocache_nats::async_nats;

/// The stores, each behind its Cargo feature.
///
/// Any type implementing [`Store`] works as well: the caches take the store
/// as a type parameter.
pub mod store {
    #[cfg(feature = "memory")]
    #[cfg_attr(docsrs, doc(cfg(feature = "memory")))]
    pub use echocache_memory::{ExpiringLruStore, LruStore, ShardedLruStore, SingleStore};

    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub use echocache_redis::{ConnectError, RedisBackplane, RedisConnection, RedisStore};

    #[cfg(feature = "nats")]
    #[cfg_attr(docsrs, doc(cfg(feature = "nats")))]
    pub use echocache_nats::{
        BucketOptions, ConnectError as NatsConnectError, NatsBackplane, NatsStore,
        open_or_create_bucket,
    };
}

/// The README's examples, compiled and run as doctests (they need every store and the
/// `metrics` feature).
#[cfg(all(doctest, feature = "full", feature = "metrics"))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
