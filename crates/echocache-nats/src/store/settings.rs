//! The setters and accessors of [`NatsStore`] (a child module of `store`, so that it sees
//! the store's fields).

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self as js, kv};
use echocache_core::BuildError;
use echocache_core::codec::Codec;

use super::NatsStore;
use crate::handle::BucketHandle;

impl<V, C: Codec> NatsStore<V, C> {
    /// Encodes values with `codec` instead.
    ///
    /// Every process sharing the prefix must use the same codec: an entry written with
    /// another codec reads as a decode error (and is then overwritten by a fresh load).
    ///
    /// # Default
    ///
    /// [`MessagePack`](echocache_core::codec::MessagePack).
    #[must_use]
    pub fn codec<C2: Codec>(self, codec: C2) -> NatsStore<V, C2> {
        NatsStore {
            bucket: self.bucket,
            keys: self.keys,
            codec,
            max_value_bytes: self.max_value_bytes,
            ttl: self.ttl,
            format: self.format,
            #[cfg(feature = "server-2-11")]
            server_ttl: self.server_ttl,
            _value: PhantomData,
        }
    }

    /// Limits an encoded entry to `max` bytes: a larger value is not written, and larger
    /// stored bytes are not decoded (both are decode errors).
    ///
    /// # Default
    ///
    /// [`DEFAULT_MAX_VALUE_BYTES`](echocache_core::codec::DEFAULT_MAX_VALUE_BYTES) (16 MiB).
    ///
    /// A limit below the envelope's header (10 bytes) admits no entry: every `set` and
    /// every `get` of a present key then fails with a decode error, which the caches
    /// count and survive.
    #[must_use]
    pub fn max_value_bytes(self, max: usize) -> Self {
        Self {
            max_value_bytes: max,
            ..self
        }
    }

    /// Makes entries older than `ttl` (by their `written_at`) read as missing.
    ///
    /// Expiry is enforced when an entry is read, so it holds on every server version,
    /// including NATS 2.9 which has no per-key TTL. The server keeps the bytes until the
    /// bucket's `max_age` removes them or a later `set` replaces them; give the bucket a
    /// `max_age` (see [`BucketOptions::max_age`](crate::BucketOptions::max_age)) to bound
    /// its size. Server-side ages are counted in whole seconds: a bucket `max_age` for a
    /// sub-second ttl should be rounded up to the next second.
    ///
    /// # Default
    ///
    /// None: entries never expire on read.
    ///
    /// # Errors
    ///
    /// [`BuildError::InvalidSetting`] with setting `ttl` when `ttl` is zero.
    pub fn ttl(self, ttl: Duration) -> Result<Self, BuildError> {
        if ttl.is_zero() {
            return Err(BuildError::InvalidSetting {
                setting: "ttl",
                reason: "must be greater than zero",
            });
        }
        Ok(Self {
            ttl: Some(ttl),
            ..self
        })
    }

    /// Also has the server remove each entry when its [`ttl`](Self::ttl) has passed, by a
    /// per-message TTL (the `Nats-TTL` header), so that expired entries do not occupy the
    /// bucket until its `max_age`. Needs NATS 2.11 or later and a bucket created with
    /// [`BucketOptions::limit_markers`](crate::BucketOptions::limit_markers). `js` is the
    /// JetStream context the entries are published through (the bucket handle cannot
    /// publish with headers of its own choosing); for a store made by
    /// [`connect`](NatsStore::connect), pass [`jetstream`](Self::jetstream)'s.
    ///
    /// The server counts TTLs in whole seconds: each entry gets the time it has left
    /// (its ttl minus its age) rounded up to the next second, and at least one second.
    /// Reads still enforce the exact ttl. Without [`ttl`](Self::ttl) this setting does
    /// nothing.
    ///
    /// # Default
    ///
    /// Off: entries are removed on the server only by the bucket's `max_age`.
    ///
    /// # Errors
    ///
    /// [`BuildError::InvalidSetting`] with setting `server_ttl` when the bucket does not
    /// allow per-message TTLs (created without `limit_markers`, or on a server older than
    /// 2.11, which ignores that setting), or when it is reached through a JetStream
    /// domain or API prefix.
    #[cfg(feature = "server-2-11")]
    #[cfg_attr(docsrs, doc(cfg(feature = "server-2-11")))]
    pub fn server_ttl(self, js: async_nats::jetstream::Context) -> Result<Self, BuildError> {
        if !self.bucket.allows_message_ttl() {
            return Err(BuildError::InvalidSetting {
                setting: "server_ttl",
                reason: "the bucket does not allow per-message TTLs: create it with \
                         `limit_markers` on NATS 2.11 or later",
            });
        }
        if let Some(kv) = self.bucket.current()
            && (kv.use_jetstream_prefix || kv.put_prefix.is_some())
        {
            return Err(BuildError::InvalidSetting {
                setting: "server_ttl",
                reason: "per-message TTLs are not supported for buckets reached through a \
                         JetStream domain, API prefix or mirror",
            });
        }
        Ok(Self {
            server_ttl: Some(js),
            ..self
        })
    }

    /// Has the store create its bucket again, through `js`, when the server has lost it
    /// (a bucket with memory storage after a server restart), with the stream
    /// configuration the bucket had when its handle was opened; the failed operation is
    /// then retried once. The store also checks that the bucket exists after the client
    /// reconnects.
    ///
    /// `js` must be the context the bucket was opened through (the handle does not give
    /// access to it). Stores made by [`connect`](NatsStore::connect) do this by
    /// themselves, and ignore this setting.
    ///
    /// # Default
    ///
    /// Off for stores made by [`new`](NatsStore::new): a lost bucket stays lost.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use echocache_nats::{BucketOptions, NatsStore, open_or_create_bucket};
    /// use echocache_nats::async_nats::jetstream::stream::StorageType;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let client = async_nats::connect("nats://127.0.0.1:4222").await?;
    /// let js = async_nats::jetstream::new(client);
    /// let options = BucketOptions::new().storage(StorageType::Memory);
    /// let kv = open_or_create_bucket(&js, "cache", &options).await?;
    /// let store = NatsStore::<String>::new(kv, "users")?.recreate_lost_bucket(js);
    /// # let _ = store;
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn recreate_lost_bucket(self, js: js::Context) -> Self {
        let bucket = match Arc::try_unwrap(self.bucket) {
            Ok(handle) => Arc::new(handle.recreating_with(js)),
            // Shared with a clone: this store gets a handle of its own.
            Err(shared) => match (shared.jetstream(), shared.current()) {
                (None, Some(kv)) => {
                    Arc::new(BucketHandle::fixed(Arc::unwrap_or_clone(kv)).recreating_with(js))
                }
                _ => shared,
            },
        };
        Self { bucket, ..self }
    }

    /// The prefix given to [`new`](NatsStore::new) or [`connect`](NatsStore::connect).
    pub fn prefix(&self) -> &str {
        self.keys.prefix()
    }

    /// The name of the bucket.
    pub fn bucket(&self) -> &str {
        self.bucket.name()
    }

    /// The bucket, or `None` while a store made by [`connect`](NatsStore::connect) has
    /// not opened it yet (the server has not answered since the store was made).
    pub fn kv(&self) -> Option<kv::Store> {
        self.bucket.current().map(Arc::unwrap_or_clone)
    }

    /// The JetStream context of a store made by [`connect`](NatsStore::connect) (or given
    /// one with [`recreate_lost_bucket`](Self::recreate_lost_bucket)), for instance to
    /// manage the bucket; `None` for a store made by [`new`](NatsStore::new) alone.
    pub fn jetstream(&self) -> Option<&js::Context> {
        self.bucket.jetstream()
    }

    /// The KV key where the entry for `key` is stored: `{prefix}.v.{encoded key}`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(kv: async_nats::jetstream::kv::Store) {
    /// let store = echocache_nats::NatsStore::<String>::new(kv, "app").unwrap();
    /// assert_eq!(store.data_key("user-42"), "app.v.user-42");
    /// assert_eq!(store.data_key("user.42"), "app.v.user=2E42");
    /// assert_eq!(store.lock_key("user-42"), "app.l.user-42");
    /// # }
    /// ```
    pub fn data_key(&self, key: &str) -> String {
        self.keys.data_key(key).0
    }

    /// The KV key of the refresh lock for `key`: `{prefix}.l.{encoded key}`.
    pub fn lock_key(&self, key: &str) -> String {
        self.keys.lock_key(key)
    }
}
