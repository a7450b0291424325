#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
//! A NATS JetStream key-value store for [echocache](https://docs.rs/echocache):
//! [`NatsStore`] keeps the entries of an [`EchoCache`](echocache_core::EchoCache) or a
//! [`LazyEchoCache`](echocache_core::LazyEchoCache) in a KV bucket shared by every process
//! that opens it, and gives the lazy cache a cross-process refresh lock.
//!
//! It works on NATS 2.9 (the version Debian ships) as on current servers:
//! [`open_or_create_bucket`] creates buckets without the account query that async-nats's
//! `create_key_value` makes first and whose NATS 2.9 answer it cannot parse.
//!
//! # Making a store
//!
//! - [`NatsStore::connect`] (or [`NatsStore::connect_with`] for bucket options): the
//!   recommended way. It builds the client with settings for a cache (bounded requests,
//!   reconnection for ever, no failure at start-up), opens or creates the bucket when the
//!   server answers, and re-creates it when the server has lost it. A service starts
//!   while NATS is down and uses it as soon as it is up.
//! - [`NatsStore::new`] over a bucket handle opened through a client of your own
//!   (credentials files, NKeys, custom TLS, a shared connection). The client's settings
//!   then decide what an outage costs: [`NatsStore::new`] lists those that matter, and
//!   [`NatsStore::recreate_lost_bucket`] adds the re-creation of a lost bucket.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use echocache_core::LazyEchoCache;
//! use echocache_nats::{BucketOptions, NatsStore};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let bucket = BucketOptions::new().max_age(Duration::from_secs(24 * 3600));
//! // Entries older than ten minutes are never served; after one minute they are
//! // refreshed in the background, once across all processes sharing the bucket.
//! let store = NatsStore::connect_with("nats://127.0.0.1:4222", "echocache", "prices", bucket)
//!     .await?
//!     .ttl(Duration::from_secs(600))?;
//! let cache = LazyEchoCache::builder(store)
//!     .refresh_after(Duration::from_secs(60))
//!     .build()?;
//! let price: u64 = cache
//!     .fetch("EUR/USD", || async { Ok::<_, std::io::Error>(108) })
//!     .await?;
//! # let _ = price;
//! cache.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! With a client of your own:
//!
//! ```no_run
//! use std::time::Duration;
//! use echocache_nats::{BucketOptions, NatsStore, open_or_create_bucket};
//! use echocache_nats::async_nats::{self, jetstream::ContextBuilder};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let client = async_nats::ConnectOptions::with_credentials_file("service.creds")
//!     .await?
//!     .request_timeout(Some(Duration::from_secs(2)))
//!     .ping_interval(Duration::from_secs(10))
//!     .connect("tls://nats.internal:4222")
//!     .await?;
//! let js = ContextBuilder::new().timeout(Duration::from_secs(2)).build(client);
//! let kv = open_or_create_bucket(&js, "echocache", &BucketOptions::new()).await?;
//! let store = NatsStore::<u64>::new(kv, "prices")?.recreate_lost_bucket(js);
//! # let _ = store;
//! # Ok(())
//! # }
//! ```
//!
//! # Keys
//!
//! Any UTF-8 key works, including the empty key and keys with spaces, dots, `*`, `>`, `:`
//! or non-ASCII characters. A key becomes the KV key `{prefix}.v.{encoded}` (data) or
//! `{prefix}.l.{encoded}` (its refresh lock), so data and locks never collide (Go bug 24).
//! The encoding keeps bytes of `[-/_a-zA-Z0-9]` and writes every other byte, `=` and `.`
//! included, as `=` and two upper-case hex digits: `user-42` stays `user-42`, `user.42`
//! becomes `user=2E42`, `ü` becomes `=C3=BC`, the empty key is `=`. The encoding is
//! injective (it decodes back unambiguously), so distinct keys never share an entry.
//!
//! An encoded key longer than [`MAX_ENCODED_KEY_LEN`] bytes is replaced by `==` and a
//! 128-bit FNV-1a hash of the key, to keep subjects short. Such entries store the full
//! key alongside the value and a read checks it, so a hash collision costs a miss, never
//! another key's value. Two long keys with colliding hashes would share a refresh lock.
//! [`NatsStore::data_key`] and [`NatsStore::lock_key`] show where a key lives.
//!
//! The prefix is checked when the store is made (Go bug 25): non-empty, at most
//! [`MAX_PREFIX_LEN`] bytes, dot-separated non-empty tokens of `[-/_=a-zA-Z0-9]`.
//!
//! # Values and expiry
//!
//! Values are written in echocache's versioned envelope
//! ([`echocache_core::codec`]: format byte, `written_at`, payload) with MessagePack
//! (default) or JSON, the same bytes the Redis store writes. With [`NatsStore::ttl`],
//! expiry is enforced when reading, from the entry's `written_at`, so even a server
//! without per-key TTL never serves an expired entry. The server removes old messages by
//! the bucket's `max_age` ([`BucketOptions::max_age`], counted in whole seconds: round a
//! sub-second ttl up).
//!
//! # Refresh lock
//!
//! `try_lock` creates the lock key with a random token and a deadline (milliseconds since
//! the Unix epoch, payload `{deadline}|{token}`). A lock past its deadline, left by a
//! crashed holder, is taken over by an update that expects the revision just read, so
//! only one contender wins (Go bug 23). `unlock` purges the key only while it still
//! holds the caller's token, again checked by revision; releasing an absent or foreign
//! lock is `Ok` (Go bug 22). `extend_lock` writes a new deadline into a live lock that
//! still holds the caller's token, expecting the revision just read, and reports whether
//! it did. Every loop is bounded (three attempts) and nothing recurses.
//! Deadlines compare the wall clocks of different hosts: keep them synchronised.
//!
//! # Ordered writes
//!
//! A value a cache loaded is written with [`set_if_version`](echocache_core::Store::set_if_version):
//! a KV `update` carrying the key's revision read before the load began (0 when the key
//! never held a message). JetStream refuses it when anyone wrote, deleted or purged the
//! key since, so a load in one process never lands over an `insert` or an `invalidate`
//! another process made while it ran: the write is refused (counted in
//! `stats().stale_writes_refused`) and the next fetch reads (or loads) the newer state.
//! `remove` purges the key, which leaves a purge marker with a new revision (the marker
//! is what a `create` would ignore, so the check is an `update` at revision 0, never a
//! `create`). With the `server-2-11` feature and a per-message TTL, the same check is the
//! publish's expected last subject sequence.
//!
//! `insert` and `invalidate` themselves write unconditionally (last writer wins, in the
//! stream's order).
//!
//! # Outages
//!
//! The caches bound every store call with their store timeout and skip a failing store
//! for a while (their circuit breaker); the store adds what only it can do. A store made
//! by [`NatsStore::connect`]:
//!
//! - fails every operation at once while its client is not connected (no request
//!   timeout to wait for, no write queued to land after the reconnection);
//! - checks its bucket after each reconnection, and when an operation finds the bucket
//!   missing (a write's "no responders", a direct get's 503, the JetStream API's "stream
//!   not found"), creates it again with its options and retries the operation once, one
//!   re-creation at a time.
//!
//! A bucket with [`Memory`](async_nats::jetstream::stream::StorageType::Memory) storage
//! loses its entries when the server restarts; the store starts again from an empty
//! bucket, which the caches refill on misses. File storage keeps them.
//!
//! # Go interop
//!
//! [`NatsStore::go_echocache_compatible`] and
//! [`NatsStore::go_echocache_compatible_plain`] share a bucket with Go services using the Go
//! echocache v1.2.0's `store.NewStaleWhileRevalidateNatsCache` / `store.NewNatsCache`:
//!
//! - **Keys**: `{prefix}.{md5(key)}`, 32 lower-case hex digits, the prefix's trailing dots
//!   trimmed (`test.1.` and key `test01` → `test.1.0e698a8ffc1a0af622c7b4db3cb750cc`);
//!   locks at `{prefix}.{md5("lock:" + key)}`. What it means: the data of the key `lock:x`
//!   is the lock of `x` (Go bug 24, kept); two keys with the same MD5 share an entry, and
//!   MD5 collisions can be computed, so untrusted input must not choose whole keys; the
//!   bucket's key list shows hashes, never cache keys (no listing or prefix scan by key).
//! - **Values**: the JSON Go writes (the same as in Redis, see
//!   [`go_format`](echocache_core::go_format)), with `kv.Put` and no per-key TTL.
//! - **Locks**: `{token}|{RFC 3339 second}` created with a revision-0 write (Go's
//!   `kv.Create`); taken over only when older than the ttl (Go never reclaims another
//!   owner's lock, bug 23); released by their owner only, with a revision-checked purge (Go's
//!   check-then-delete is not atomic). Go v1.2.0's lazy cache never takes the lock, so its
//!   refreshes are not deduplicated with ours; Go code that takes it is respected both
//!   ways.
//! - **Prefixes**: a prefix whose last token (after trimming dots) is `v` or `l` is refused:
//!   its keys `{prefix}.{md5}` would be data or lock keys of the native store one token up
//!   (see SECURITY.md, "Prefixes").
//!
//! # Cargo features
//!
//! | Feature | Default | Description |
//! |---|---|---|
//! | `server-2-11` | no | per-key TTL on the server (NATS ≥ 2.11): `BucketOptions::limit_markers` and `NatsStore::server_ttl`, so that expired entries leave the bucket before its `max_age` |

mod backplane;
mod bucket;
mod connect;
mod frame;
mod go;
mod handle;
mod key;
mod lock;
mod store;

/// The `async-nats` this crate is built on, so a client is built from the same version.
pub use async_nats;
pub use backplane::NatsBackplane;
pub use bucket::{BucketError, BucketErrorKind, BucketOptions, MAX_HISTORY, open_or_create_bucket};
pub use connect::{ConnectError, ConnectErrorKind};
pub use key::{MAX_ENCODED_KEY_LEN, MAX_PREFIX_LEN};
pub use store::NatsStore;

/// Key encoding internals for the fuzz targets (`fuzz/`) and their corpus tests: **not
/// part of the API**, exempt from semver, may change in any release.
#[doc(hidden)]
pub mod __fuzz {
    use echocache_core::BuildError;

    /// The KV keys of `key` in a store with `prefix`: `(data key, lock key, hashed)`, as
    /// [`NatsStore::data_key`](crate::NatsStore::data_key) and
    /// [`NatsStore::lock_key`](crate::NatsStore::lock_key) give them, without a bucket.
    ///
    /// # Errors
    ///
    /// The [`BuildError`] that [`NatsStore::new`](crate::NatsStore::new) gives for an
    /// invalid `prefix`.
    pub fn kv_keys(prefix: &str, key: &str) -> Result<(String, String, bool), BuildError> {
        let space = crate::key::KeySpace::new(prefix)?;
        let (data, hashed) = space.data_key(key);
        Ok((data, space.lock_key(key), hashed))
    }
}
