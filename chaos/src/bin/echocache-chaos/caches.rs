//! The caches under load (`EchoCache` and `LazyEchoCache` on Redis and on NATS; on each
//! server a second `EchoCache` on a client of its own sharing the first one's prefix:
//! another "process" of the same fleet; and on each server two `EchoCache`s over tiered
//! stores, an L1 each and a backplane between them, two more "processes"), the value they
//! hold, and the clients they use.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use echocache_core::{
    EchoCache, Error, L1Entry, LazyEchoCache, Stats, Store, StoreError, TieredStore,
};
use echocache_memory::LruStore;
use echocache_nats::{NatsBackplane, NatsStore};
use echocache_redis::fred::prelude::{
    Builder, Client as RedisClient, ClientLike, Config, ReconnectPolicy,
};
use echocache_redis::{RedisBackplane, RedisStore};
use serde::{Deserialize, Serialize};

/// fred's `default_command_timeout`, as the echocache-redis docs recommended for clients of
/// one's own (the caches bound their store calls tighter, at their store timeout).
pub(crate) const REDIS_COMMAND_TIMEOUT: Duration = Duration::from_millis(500);
/// async-nats: the JetStream request timeout and the client's request timeout.
pub(crate) const NATS_REQUEST_TIMEOUT: Duration = Duration::from_secs(1);

/// The cached value: the key it belongs to and the version the loader read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Versioned {
    pub(crate) key: String,
    pub(crate) version: u64,
    /// When the loader read the version, in ms since the load started (diagnostics).
    pub(crate) loaded_at_ms: u64,
}

/// The loaders' error type; the loaders never fail, the stores do.
#[derive(Debug)]
pub(crate) struct LoadFailed;

impl std::fmt::Display for LoadFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("load failed")
    }
}

impl std::error::Error for LoadFailed {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    Redis,
    Nats,
}

impl Backend {
    pub(crate) const ALL: [Backend; 2] = [Backend::Redis, Backend::Nats];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Backend::Redis => "redis",
            Backend::Nats => "nats",
        }
    }

    /// The indexes of its two caches (EchoCache, LazyEchoCache) in [`NAMES`]: the ones
    /// whose recovery after a fault is timed.
    pub(crate) fn caches(self) -> [usize; 2] {
        match self {
            Backend::Redis => [0, 1],
            Backend::Nats => [2, 3],
        }
    }

    /// Every cache on its server: the two of [`caches`](Self::caches), the
    /// second-process EchoCache and the two tiered ones.
    pub(crate) fn all_caches(self) -> [usize; 5] {
        match self {
            Backend::Redis => [0, 1, 4, 6, 7],
            Backend::Nats => [2, 3, 5, 8, 9],
        }
    }
}

pub(crate) const CACHES: usize = 10;
pub(crate) const NAMES: [&str; CACHES] = [
    "redis/EchoCache",
    "redis/LazyEchoCache",
    "nats/EchoCache",
    "nats/LazyEchoCache",
    "redis/EchoCache, 2nd process",
    "nats/EchoCache, 2nd process",
    "redis/tiered EchoCache A",
    "redis/tiered EchoCache B",
    "nats/tiered EchoCache A",
    "nats/tiered EchoCache B",
];

/// The caches that share cache `c`'s entries (its store and prefix), `c` included: a
/// backend's two EchoCaches, on clients of their own (two "processes" of one fleet); its
/// two tiered EchoCaches; each lazy cache alone.
pub(crate) fn sharing_store(c: usize) -> &'static [usize] {
    match c {
        0 | 4 => &[0, 4],
        2 | 5 => &[2, 5],
        6 | 7 => &[6, 7],
        8 | 9 => &[8, 9],
        1 => &[1],
        _ => &[3],
    }
}

/// The L1 TTL of the tiered caches: what bounds a stale L1 copy while a backplane is
/// down or an announcement was lost.
pub(crate) const L1_TTL: Duration = Duration::from_secs(2);
/// How long after another process's invalidation returned a tiered cache may still serve
/// the older value while its server is healthy: the backplane's delay (p99 ≈1–3 ms on
/// loopback, docs/ARCHITECTURE.md) with room for a loaded machine.
pub(crate) const PROPAGATION_BOUND: Duration = Duration::from_millis(250);

/// Whether cache `c` is never invalidated directly: the B tiered caches learn of the
/// invalidations made through A from their backplane.
pub(crate) fn told_by_backplane(c: usize) -> bool {
    matches!(c, 7 | 9)
}

/// Whether cache `c` reads through a tiered store (an invalidation made by another
/// process reaches it through the backplane, within a bound).
pub(crate) fn is_tiered(c: usize) -> bool {
    matches!(c, 6..=9)
}

/// The tiered caches' L1.
pub(crate) type L1 = LruStore<L1Entry<Versioned>>;
pub(crate) type RedisTiered = TieredStore<Versioned, L1, RedisStore<Versioned>, RedisBackplane>;
pub(crate) type NatsTiered = TieredStore<Versioned, L1, NatsStore<Versioned>, NatsBackplane>;

/// The caches under load, in the order of [`NAMES`].
pub(crate) enum Cache {
    RedisEcho(EchoCache<Versioned, RedisStore<Versioned>>),
    RedisLazy(LazyEchoCache<Versioned, RedisStore<Versioned>>),
    NatsEcho(EchoCache<Versioned, NatsStore<Versioned>>),
    NatsLazy(LazyEchoCache<Versioned, NatsStore<Versioned>>),
    RedisTiered(EchoCache<Versioned, RedisTiered>),
    NatsTiered(EchoCache<Versioned, NatsTiered>),
}

/// Runs `$body` with `$c` bound to whichever cache `$cache` is.
macro_rules! each {
    ($cache:expr, $c:ident => $body:expr) => {
        match $cache {
            Cache::RedisEcho($c) => $body,
            Cache::RedisLazy($c) => $body,
            Cache::NatsEcho($c) => $body,
            Cache::NatsLazy($c) => $body,
            Cache::RedisTiered($c) => $body,
            Cache::NatsTiered($c) => $body,
        }
    };
}

pub(crate) type LoadFuture = Pin<Box<dyn Future<Output = Result<Versioned, LoadFailed>> + Send>>;

impl Cache {
    pub(crate) async fn fetch(
        &self,
        key: &str,
        loader: impl FnOnce() -> LoadFuture + Send + 'static,
    ) -> Result<Versioned, Error<LoadFailed>> {
        each!(self, c => c.fetch(key, loader).await)
    }

    /// A read through the cache: bounded by its store timeout, skipped while its circuit
    /// breaker is open.
    pub(crate) async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        each!(self, c => c.get(key).await)
    }

    pub(crate) async fn invalidate(&self, key: &str) -> Result<(), StoreError> {
        each!(self, c => c.invalidate(key).await)
    }

    /// One read straight from the store, past the cache's timeout and breaker: whether
    /// the server answers the client again.
    pub(crate) async fn probe(&self, key: &str) -> Result<(), StoreError> {
        each!(self, c => c.store().get(key).await.map(drop))
    }

    /// For a tiered cache, whether its L1 serves (its backplane is connected).
    pub(crate) fn l1_serving(&self) -> Option<bool> {
        match self {
            Cache::RedisTiered(c) => Some(c.store().is_l1_serving()),
            Cache::NatsTiered(c) => Some(c.store().is_l1_serving()),
            _ => None,
        }
    }

    pub(crate) fn stats(&self) -> Stats {
        each!(self, c => c.stats())
    }

    /// Store trouble so far (errors, timeouts, skipped calls, fleet waits given up): a
    /// load that overlaps a change of it may have failed open, without the store's lock.
    pub(crate) fn trouble(&self) -> u64 {
        let s = self.stats();
        s.store_errors + s.store_timeouts + s.store_calls_skipped + s.fleet_wait_timeouts
    }

    pub(crate) fn loads_in_flight(&self) -> usize {
        each!(self, c => c.loads_in_flight())
    }

    pub(crate) fn refreshes_pending(&self) -> usize {
        match self {
            Cache::RedisLazy(c) => c.refreshes_pending(),
            Cache::NatsLazy(c) => c.refreshes_pending(),
            _ => 0,
        }
    }

    pub(crate) async fn shutdown(&self) {
        match self {
            Cache::RedisLazy(c) => c.shutdown().await,
            Cache::NatsLazy(c) => c.shutdown().await,
            _ => {}
        }
    }
}

pub(crate) async fn redis_client(url: &str) -> Result<RedisClient, String> {
    // Reconnect for ever, time commands out.
    let config = Config {
        fail_fast: false,
        ..Config::from_url(url).map_err(|e| format!("redis url: {e}"))?
    };
    let client = Builder::from_config(config)
        .with_connection_config(|c| {
            c.connection_timeout = Duration::from_secs(2);
            c.internal_command_timeout = Duration::from_secs(2);
            c.max_command_attempts = 2;
        })
        .with_performance_config(|c| c.default_command_timeout = REDIS_COMMAND_TIMEOUT)
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
        .build()
        .map_err(|e| format!("redis client: {e}"))?;
    match tokio::time::timeout(Duration::from_secs(10), client.init()).await {
        Ok(Ok(_)) => Ok(client),
        Ok(Err(e)) => Err(format!("cannot connect to Redis at {url}: {e}")),
        Err(_) => Err(format!("no answer from Redis at {url} within 10 s")),
    }
}

pub(crate) async fn nats_context(url: &str) -> Result<async_nats::jetstream::Context, String> {
    let client = tokio::time::timeout(
        Duration::from_secs(10),
        async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(2))
            .request_timeout(Some(NATS_REQUEST_TIMEOUT))
            .connect(url),
    )
    .await
    .map_err(|_| format!("no answer from NATS at {url} within 10 s"))?
    .map_err(|e| format!("cannot connect to NATS at {url}: {e}"))?;
    Ok(async_nats::jetstream::ContextBuilder::new()
        .timeout(NATS_REQUEST_TIMEOUT)
        .build(client))
}
