//! [`NatsStore`]: the [`Store`] over a NATS JetStream key-value bucket.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_nats::jetstream::kv;
// The value formats are core's, shared with Redis.
use echocache_core::codec::ValueFormat as Format;
use echocache_core::codec::{Codec, DEFAULT_MAX_VALUE_BYTES, Json, MessagePack};
use echocache_core::{BuildError, Entry, LockToken, Store, StoreError, Version};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::frame::{frame_hashed, unframe_hashed};
use crate::handle::BucketHandle;
use crate::key::KeySpace;
use crate::lock::{self, LockFormat};

/// The error of a lock call on a store in the Go plain format.
const GO_PLAIN_NO_LOCK: &str = "a NatsStore in the Go plain format has no refresh lock \
     (the Go `NewNatsCache` has none): use `go_echocache_compatible` for a LazyEchoCache";

/// A [`Store`] keeping entries in a NATS JetStream key-value bucket, shared by every
/// process that opens the same bucket with the same prefix.
///
/// - **Keys.** Any UTF-8 key works. Data lives at `{prefix}.v.{encoded key}`, refresh
///   locks at `{prefix}.l.{encoded key}`; the encoding is injective and keeps keys made
///   of `[-/_a-zA-Z0-9]` readable (see the [crate docs](crate#keys)).
/// - **Values.** The envelope of [`echocache_core::codec`] (format byte, `written_at`,
///   payload) with a [`Codec`]: [`MessagePack`] by default, [`Json`](echocache_core::codec::Json)
///   with [`codec`](Self::codec). An entry larger than [`max_value_bytes`](Self::max_value_bytes),
///   or bytes that do not decode, are a decode error ([`StoreError::is_decode`]), which
///   the caches count and overwrite with a fresh load. Note that the NATS server refuses
///   messages above its `max_payload` (1 MiB by default): such a `set` fails as a backend
///   error.
/// - **Expiry.** With [`ttl`](Self::ttl), an entry older than the ttl (by its
///   `written_at`) reads as missing, on every server version. The bucket's own `max_age`
///   (see [`BucketOptions::max_age`](crate::BucketOptions::max_age)) removes old messages
///   on the server.
/// - **Lock.** `try_lock` creates the lock key holding a random token and a deadline; an
///   expired lock (a crashed holder) is taken over with a revision-checked update;
///   `unlock` purges the key only when it still holds the caller's token, checked by
///   revision. Both retry at most three times. `extend_lock` moves the deadline of a live
///   lock that still holds the caller's token, by a revision-checked update.
/// - **Outages.** A store made by [`connect`](Self::connect) starts while the server is
///   down, fails at once while disconnected, opens its bucket when the server answers and
///   re-creates it when the server has lost it. A store made by [`new`](NatsStore::new)
///   works with the client and bucket it is given (see there).
///
/// Clones share the bucket handle (and its re-creation), and are cheap.
///
/// # Examples
///
/// ```no_run
/// use echocache_core::EchoCache;
/// use echocache_core::codec::Json;
/// use echocache_nats::NatsStore;
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = NatsStore::connect("nats://127.0.0.1:4222", "cache", "users")
///     .await?
///     .codec(Json)
///     .ttl(Duration::from_secs(600))?;
/// let cache = EchoCache::new(store);
/// let name = cache
///     .fetch("user:42", || async { Ok::<_, std::io::Error>("Ada".to_string()) })
///     .await?;
/// assert_eq!(name, "Ada");
/// # Ok(())
/// # }
/// ```
pub struct NatsStore<V, C = MessagePack> {
    /// Shared by clones, so that they open and re-create the bucket once.
    bucket: Arc<BucketHandle>,
    keys: KeySpace,
    codec: C,
    max_value_bytes: usize,
    ttl: Option<Duration>,
    format: Format,
    /// Publishes entries with a per-message TTL (NATS ≥ 2.11).
    #[cfg(feature = "server-2-11")]
    server_ttl: Option<async_nats::jetstream::Context>,
    _value: PhantomData<fn() -> V>,
}

impl<V> NatsStore<V, MessagePack> {
    /// Makes a store over the bucket `kv`, opened through a client of your own, with keys
    /// under `prefix`.
    ///
    /// Use it when you build the client yourself (credentials files, NKeys, custom TLS, a
    /// connection shared with the rest of the service); otherwise
    /// [`connect`](Self::connect) builds one with safe defaults and also starts while the
    /// server is down. The prefix names this store's part of the bucket: several stores
    /// (or services) can share one bucket with different prefixes. It is made of
    /// dot-separated tokens of `[-/_=a-zA-Z0-9]`, for example `orders` or `svc.users`.
    ///
    /// # The client settings that matter
    ///
    /// The store uses the handle as it is, so the client's settings decide what an outage
    /// costs. The caches bound every store call with their own store timeout, but a client
    /// at its defaults still holds resources for longer. What [`connect`](Self::connect)
    /// sets, and what we suggest:
    ///
    /// - [`ConnectOptions::request_timeout`](async_nats::ConnectOptions::request_timeout)
    ///   (default 10 s) and the JetStream context's
    ///   [`ContextBuilder::timeout`](async_nats::jetstream::ContextBuilder::timeout)
    ///   (publish acks wait 5 s without it): 2 s each.
    /// - [`ConnectOptions::retry_on_initial_connect`](async_nats::ConnectOptions::retry_on_initial_connect),
    ///   so the client starts while the server is down. The bucket still has to be opened
    ///   before `new` is called, which needs the server: `connect` has no such step.
    /// - Reconnection: async-nats reconnects for ever by default
    ///   ([`max_reconnects`](async_nats::ConnectOptions::max_reconnects) `None`), waiting up
    ///   to 4 s between attempts; `connect` waits at most 1 s.
    /// - [`ConnectOptions::ping_interval`](async_nats::ConnectOptions::ping_interval)
    ///   (default 60 s): 10 s, to drop a connection to a server that stopped answering.
    ///
    /// While the client is disconnected, each operation of this store waits for the
    /// request timeout (a `connect` store fails at once), and a write may be sent after
    /// the reconnection.
    ///
    /// A bucket that the server loses (memory storage, server restart) is re-created only
    /// with [`recreate_lost_bucket`](Self::recreate_lost_bucket), which needs the JetStream
    /// context; without it, every operation fails until the bucket is created again.
    ///
    /// # Default
    ///
    /// [`MessagePack`] codec, [`DEFAULT_MAX_VALUE_BYTES`], no ttl.
    ///
    /// # Errors
    ///
    /// [`BuildError::InvalidSetting`] with setting `prefix` when the prefix is empty,
    /// longer than [`MAX_PREFIX_LEN`](crate::MAX_PREFIX_LEN) bytes, starts or ends with a
    /// dot, contains `..`, or contains any other character (Go bug 25: the Go store took
    /// any prefix and then failed on every operation).
    pub fn new(kv: kv::Store, prefix: &str) -> Result<Self, BuildError> {
        Ok(Self::from_handle(
            BucketHandle::fixed(kv),
            KeySpace::new(prefix)?,
        ))
    }

    /// A store over `bucket` with the default settings.
    pub(crate) fn from_handle(bucket: BucketHandle, keys: KeySpace) -> Self {
        Self {
            bucket: Arc::new(bucket),
            keys,
            codec: MessagePack,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            ttl: None,
            format: Format::Native,
            #[cfg(feature = "server-2-11")]
            server_ttl: None,
            _value: PhantomData,
        }
    }
}

impl<V> NatsStore<V, Json> {
    /// A store in one of the Go formats (the constructors are in `go.rs`).
    pub(crate) fn go(kv: kv::Store, prefix: &str, format: Format) -> Result<Self, BuildError> {
        let store = NatsStore::from_handle(BucketHandle::fixed(kv), KeySpace::go(prefix)?);
        Ok(NatsStore {
            format,
            ..store.codec(Json)
        })
    }
}

impl<V, C> NatsStore<V, C> {
    /// How this store's locks are written.
    fn lock_format(&self) -> LockFormat {
        match self.format {
            Format::Native => LockFormat::Native,
            Format::GoEnvelope | Format::GoPlain => LockFormat::Go,
        }
    }

    /// Whether `set` gives entries a server-side TTL.
    fn uses_server_ttl(&self) -> bool {
        #[cfg(feature = "server-2-11")]
        {
            self.ttl.is_some() && self.server_ttl.is_some()
        }
        #[cfg(not(feature = "server-2-11"))]
        {
            false
        }
    }
}

impl<V, C: Clone> Clone for NatsStore<V, C> {
    fn clone(&self) -> Self {
        Self {
            bucket: self.bucket.clone(),
            keys: self.keys.clone(),
            codec: self.codec.clone(),
            max_value_bytes: self.max_value_bytes,
            ttl: self.ttl,
            format: self.format,
            #[cfg(feature = "server-2-11")]
            server_ttl: self.server_ttl.clone(),
            _value: PhantomData,
        }
    }
}

impl<V, C: fmt::Debug> fmt::Debug for NatsStore<V, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsStore")
            .field("bucket", &self.bucket.name())
            .field("prefix", &self.keys.prefix())
            .field("codec", &self.codec)
            .field("format", &self.format)
            .field("max_value_bytes", &self.max_value_bytes)
            .field("ttl", &self.ttl)
            .field("server_ttl", &self.uses_server_ttl())
            .finish_non_exhaustive()
    }
}

/// A server-side TTL: `remaining` rounded up to whole seconds, at least one second (the
/// server counts whole seconds, and `Nats-TTL: 0` would not mean "expire now").
#[cfg(any(test, feature = "server-2-11"))]
fn server_ttl_secs(remaining: Duration) -> Duration {
    let secs = remaining
        .as_secs()
        .saturating_add(u64::from(remaining.subsec_nanos() > 0));
    Duration::from_secs(secs.max(1))
}

impl<V, C> NatsStore<V, C>
where
    V: Serialize + DeserializeOwned,
    C: Codec,
{
    /// The entry the bytes stored for `key` hold (`None` for another key's entry with
    /// the same hash, or one older than the store's `ttl`).
    fn entry_of(
        &self,
        key: &str,
        hashed: bool,
        bytes: &[u8],
    ) -> Result<Option<Entry<V>>, StoreError> {
        let envelope = if hashed {
            match unframe_hashed(key, bytes)? {
                Some(envelope) => envelope,
                // Another key with the same hash: for this key, a miss.
                None => return Ok(None),
            }
        } else {
            bytes
        };
        let entry: Entry<V> = self
            .format
            .decode(&self.codec, envelope, self.max_value_bytes)?;
        if !self.format.has_timestamps() {
            // No time in these bytes (read as the oldest one): no ttl by age either.
            return Ok(Some(entry));
        }
        if let Some(ttl) = self.ttl
            && entry.age(SystemTime::now()) >= ttl
        {
            return Ok(None);
        }
        Ok(Some(entry))
    }

    /// With a server-side TTL (`server_ttl`): publishes `bytes` on the subject of
    /// `data_key` with `entry`'s remaining TTL and, with `expected`, the expected last
    /// subject sequence; whether it was written (`false`: the sequence did not match).
    /// `None` when the store uses no server-side TTL.
    #[cfg(feature = "server-2-11")]
    async fn publish_with_ttl(
        &self,
        data_key: &str,
        bytes: &bytes::Bytes,
        entry: &Entry<V>,
        expected: Option<u64>,
    ) -> Option<Result<bool, StoreError>> {
        use async_nats::jetstream::context::PublishErrorKind;
        use async_nats::jetstream::message::PublishMessage;

        let (Some(ttl), Some(js)) = (self.ttl, &self.server_ttl) else {
            return None;
        };
        let remaining = ttl.saturating_sub(entry.age(SystemTime::now()));
        let written = self
            .bucket
            .run(|kv| async move {
                let subject = format!("{}{data_key}", kv.prefix);
                let mut message = PublishMessage::build()
                    .payload(bytes.clone())
                    .ttl(server_ttl_secs(remaining));
                if let Some(sequence) = expected {
                    message = message.expected_last_subject_sequence(sequence);
                }
                let ack = js
                    .send_publish(subject, message)
                    .await
                    .map_err(StoreError::backend)?
                    .await;
                match ack {
                    Ok(_) => Ok(true),
                    Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => Ok(false),
                    Err(e) => Err(StoreError::backend(e)),
                }
            })
            .await;
        Some(written)
    }

    /// The bucket key for `key` and the bytes stored there for `entry`.
    fn stored(&self, key: &str, entry: &Entry<V>) -> Result<(String, bytes::Bytes), StoreError> {
        let (data_key, hashed) = self.keys.data_key(key);
        let envelope = self
            .format
            .encode(&self.codec, entry, self.max_value_bytes)?;
        let bytes = if hashed {
            frame_hashed(key, &envelope)
        } else {
            envelope
        };
        Ok((data_key, bytes.into()))
    }
}

impl<V, C> Store<V> for NatsStore<V, C>
where
    V: Serialize + DeserializeOwned + Send + Sync + 'static,
    C: Codec,
{
    /// `false` for the Go plain format, which has no lock; `true` otherwise.
    fn shares_locks(&self) -> bool {
        self.format != Format::GoPlain
    }

    async fn get(&self, key: &str) -> Result<Option<Entry<V>>, StoreError> {
        let (data_key, hashed) = self.keys.data_key(key);
        let data_key = data_key.as_str();
        // `get` reads a deleted or purged key as `None`.
        let read = self
            .bucket
            .run(|kv| async move { kv.get(data_key).await.map_err(StoreError::backend) })
            .await?;
        match read {
            Some(bytes) => self.entry_of(key, hashed, &bytes),
            None => Ok(None),
        }
    }

    /// The entry and the key's revision in the bucket (that of a delete or purge marker
    /// too; 0 for a key never written), for [`set_if_version`](Store::set_if_version).
    async fn get_versioned(&self, key: &str) -> Result<(Option<Entry<V>>, Version), StoreError> {
        let (data_key, hashed) = self.keys.data_key(key);
        let data_key = data_key.as_str();
        let read = self
            .bucket
            .run(|kv| async move { kv.entry(data_key).await.map_err(StoreError::backend) })
            .await?;
        let Some(read) = read else {
            return Ok((None, Version::revision(0)));
        };
        let entry = match read.operation {
            // Bytes that do not decode read as no entry, at their revision: `get` reports
            // the decode error; the caches load and overwrite them conditionally.
            kv::Operation::Put => self.entry_of(key, hashed, &read.value).unwrap_or(None),
            kv::Operation::Delete | kv::Operation::Purge => None,
        };
        Ok((entry, Version::revision(read.revision)))
    }

    /// A revision-checked write (`update` with the revision read, which for 0 means "no
    /// message for this key"): refused, `false`, when anyone wrote, deleted or purged the
    /// key since. [`Version::UNKNOWN`] (or a version this store did not make) writes as
    /// `set` does.
    async fn set_if_version(
        &self,
        key: &str,
        entry: &Entry<V>,
        version: &Version,
    ) -> Result<bool, StoreError> {
        let Some(revision) = version.as_revision() else {
            return self.set(key, entry).await.map(|()| true);
        };
        let (data_key, bytes) = self.stored(key, entry)?;
        let data_key = data_key.as_str();
        let bytes = &bytes;
        #[cfg(feature = "server-2-11")]
        if let Some(written) = self
            .publish_with_ttl(data_key, bytes, entry, Some(revision))
            .await
        {
            return written;
        }
        self.bucket
            .run(|kv| async move {
                match kv.update(data_key, bytes.clone(), revision).await {
                    Ok(_) => Ok(true),
                    Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(false),
                    Err(e) => Err(StoreError::backend(e)),
                }
            })
            .await
    }

    async fn set(&self, key: &str, entry: &Entry<V>) -> Result<(), StoreError> {
        let (data_key, bytes) = self.stored(key, entry)?;
        let data_key = data_key.as_str();
        let bytes = &bytes;
        #[cfg(feature = "server-2-11")]
        if let Some(written) = self.publish_with_ttl(data_key, bytes, entry, None).await {
            return written.map(drop);
        }
        self.bucket
            .run(|kv| async move {
                kv.put(data_key, bytes.clone())
                    .await
                    .map_err(StoreError::backend)?;
                Ok(())
            })
            .await
    }

    async fn remove(&self, key: &str) -> Result<(), StoreError> {
        let data_key = self.keys.data_key(key).0;
        let data_key = data_key.as_str();
        // A purge drops every stored revision of the key, whatever the bucket's history.
        self.bucket
            .run(|kv| async move { kv.purge(data_key).await.map_err(StoreError::backend) })
            .await
    }

    async fn try_lock(&self, key: &str, ttl: Duration) -> Result<Option<LockToken>, StoreError> {
        if self.format == Format::GoPlain {
            return Err(StoreError::backend_msg(GO_PLAIN_NO_LOCK));
        }
        let lock_key = self.keys.lock_key(key);
        let lock_key = lock_key.as_str();
        self.bucket
            .run(|kv| async move { lock::try_lock(&kv, self.lock_format(), lock_key, ttl).await })
            .await
    }

    async fn unlock(&self, key: &str, token: &LockToken) -> Result<(), StoreError> {
        if self.format == Format::GoPlain {
            // No lock was ever taken through this store: nothing to release.
            return Ok(());
        }
        let lock_key = self.keys.lock_key(key);
        let lock_key = lock_key.as_str();
        self.bucket
            .run(|kv| async move { lock::unlock(&kv, self.lock_format(), lock_key, token).await })
            .await
    }

    async fn extend_lock(
        &self,
        key: &str,
        token: &LockToken,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        if self.format == Format::GoPlain {
            return Err(StoreError::backend_msg(GO_PLAIN_NO_LOCK));
        }
        let lock_key = self.keys.lock_key(key);
        let lock_key = lock_key.as_str();
        self.bucket
            .run(|kv| async move { lock::extend(&kv, self.lock_format(), lock_key, token, ttl).await })
            .await
    }
}

mod settings;
#[cfg(test)]
mod tests;
