//! [`NatsStore`]: the [`Store`] over a NATS JetStream key-value bucket.

use std::fmt;
use std::marker::PhantomData;
use std::time::{Duration, SystemTime};

use async_nats::jetstream::kv;
use echocache_core::codec::{
    Codec, DEFAULT_MAX_VALUE_BYTES, MessagePack, decode_entry, encode_entry,
};
use echocache_core::{BuildError, Entry, LockToken, Store, StoreError};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::key::KeySpace;
use crate::lock;

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
///
/// # Examples
///
/// ```no_run
/// use echocache_core::EchoCache;
/// use echocache_core::codec::Json;
/// use echocache_nats::{BucketOptions, NatsStore, open_or_create_bucket};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let client = async_nats::connect("nats://127.0.0.1:4222").await?;
/// let js = async_nats::jetstream::new(client);
/// let kv = open_or_create_bucket(&js, "cache", &BucketOptions::new()).await?;
/// let store = NatsStore::new(kv, "users")?
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
    kv: kv::Store,
    keys: KeySpace,
    codec: C,
    max_value_bytes: usize,
    ttl: Option<Duration>,
    /// Publishes entries with a per-message TTL (NATS ≥ 2.11).
    #[cfg(feature = "server-2-11")]
    server_ttl: Option<async_nats::jetstream::Context>,
    _value: PhantomData<fn() -> V>,
}

impl<V> NatsStore<V, MessagePack> {
    /// Makes a store over the bucket `kv`, with keys under `prefix`.
    ///
    /// The prefix names this store's part of the bucket: several stores (or services) can
    /// share one bucket with different prefixes. It is made of dot-separated tokens of
    /// `[-/_=a-zA-Z0-9]`, for example `orders` or `svc.users`.
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
        Ok(Self {
            kv,
            keys: KeySpace::new(prefix)?,
            codec: MessagePack,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            ttl: None,
            #[cfg(feature = "server-2-11")]
            server_ttl: None,
            _value: PhantomData,
        })
    }
}

impl<V, C: Codec> NatsStore<V, C> {
    /// Encodes values with `codec` instead.
    ///
    /// Every process sharing the prefix must use the same codec: an entry written with
    /// another codec reads as a decode error (and is then overwritten by a fresh load).
    ///
    /// # Default
    ///
    /// [`MessagePack`].
    #[must_use]
    pub fn codec<C2: Codec>(self, codec: C2) -> NatsStore<V, C2> {
        NatsStore {
            kv: self.kv,
            keys: self.keys,
            codec,
            max_value_bytes: self.max_value_bytes,
            ttl: self.ttl,
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
    /// [`DEFAULT_MAX_VALUE_BYTES`] (16 MiB).
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
    /// publish with headers of its own choosing).
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
        if !self.kv.stream.cached_info().config.allow_message_ttl {
            return Err(BuildError::InvalidSetting {
                setting: "server_ttl",
                reason: "the bucket does not allow per-message TTLs: create it with \
                         `limit_markers` on NATS 2.11 or later",
            });
        }
        if self.kv.use_jetstream_prefix || self.kv.put_prefix.is_some() {
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

    /// The prefix given to [`new`](NatsStore::new).
    pub fn prefix(&self) -> &str {
        self.keys.prefix()
    }

    /// The bucket.
    pub fn kv(&self) -> &kv::Store {
        &self.kv
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

impl<V, C> NatsStore<V, C> {
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
            kv: self.kv.clone(),
            keys: self.keys.clone(),
            codec: self.codec.clone(),
            max_value_bytes: self.max_value_bytes,
            ttl: self.ttl,
            #[cfg(feature = "server-2-11")]
            server_ttl: self.server_ttl.clone(),
            _value: PhantomData,
        }
    }
}

impl<V, C: fmt::Debug> fmt::Debug for NatsStore<V, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsStore")
            .field("bucket", &self.kv.name)
            .field("prefix", &self.keys.prefix())
            .field("codec", &self.codec)
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

/// Length of the key-length field in front of a hashed key's value.
const KEY_LEN_BYTES: usize = 8;

/// A hashed key's stored value: its full key first, so that a read can tell a hash
/// collision from its own entry. Layout: key length (`u64` big-endian), key, envelope.
fn frame_hashed(key: &str, envelope: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(KEY_LEN_BYTES + key.len() + envelope.len());
    out.extend_from_slice(&(key.len() as u64).to_be_bytes());
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(envelope);
    out
}

/// The envelope inside a hashed key's value, or `None` when the value belongs to another
/// key with the same hash.
fn unframe_hashed<'a>(key: &str, bytes: &'a [u8]) -> Result<Option<&'a [u8]>, StoreError> {
    let malformed = || StoreError::decode_msg("hashed-key entry has no valid key header");
    let (len, rest) = bytes
        .split_first_chunk::<KEY_LEN_BYTES>()
        .ok_or_else(malformed)?;
    let len = usize::try_from(u64::from_be_bytes(*len)).map_err(|_| malformed())?;
    if len > rest.len() {
        return Err(malformed());
    }
    let (stored_key, envelope) = rest.split_at(len);
    Ok((stored_key == key.as_bytes()).then_some(envelope))
}

impl<V, C> Store<V> for NatsStore<V, C>
where
    V: Serialize + DeserializeOwned + Send + Sync + 'static,
    C: Codec,
{
    async fn get(&self, key: &str) -> Result<Option<Entry<V>>, StoreError> {
        let (data_key, hashed) = self.keys.data_key(key);
        // `get` reads a deleted or purged key as `None`.
        let Some(bytes) = self.kv.get(data_key).await.map_err(StoreError::backend)? else {
            return Ok(None);
        };
        let envelope = if hashed {
            match unframe_hashed(key, &bytes)? {
                Some(envelope) => envelope,
                // Another key with the same hash: for this key, a miss.
                None => return Ok(None),
            }
        } else {
            &bytes[..]
        };
        let entry: Entry<V> = decode_entry(&self.codec, envelope, self.max_value_bytes)?;
        if let Some(ttl) = self.ttl
            && entry.age(SystemTime::now()) >= ttl
        {
            return Ok(None);
        }
        Ok(Some(entry))
    }

    async fn set(&self, key: &str, entry: &Entry<V>) -> Result<(), StoreError> {
        let (data_key, hashed) = self.keys.data_key(key);
        let envelope = encode_entry(&self.codec, entry, self.max_value_bytes)?;
        let bytes = if hashed {
            frame_hashed(key, &envelope)
        } else {
            envelope
        };
        #[cfg(feature = "server-2-11")]
        if let (Some(ttl), Some(js)) = (self.ttl, &self.server_ttl) {
            let remaining = ttl.saturating_sub(entry.age(SystemTime::now()));
            let subject = format!("{}{data_key}", self.kv.prefix);
            let message = async_nats::jetstream::message::PublishMessage::build()
                .payload(bytes.into())
                .ttl(server_ttl_secs(remaining));
            js.send_publish(subject, message)
                .await
                .map_err(StoreError::backend)?
                .await
                .map_err(StoreError::backend)?;
            return Ok(());
        }
        self.kv
            .put(data_key, bytes.into())
            .await
            .map_err(StoreError::backend)?;
        Ok(())
    }

    async fn remove(&self, key: &str) -> Result<(), StoreError> {
        // A purge drops every stored revision of the key, whatever the bucket's history.
        self.kv
            .purge(self.keys.data_key(key).0)
            .await
            .map_err(StoreError::backend)
    }

    async fn try_lock(&self, key: &str, ttl: Duration) -> Result<Option<LockToken>, StoreError> {
        lock::try_lock(&self.kv, &self.keys.lock_key(key), ttl).await
    }

    async fn unlock(&self, key: &str, token: &LockToken) -> Result<(), StoreError> {
        lock::unlock(&self.kv, &self.keys.lock_key(key), token).await
    }

    async fn extend_lock(
        &self,
        key: &str,
        token: &LockToken,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        lock::extend(&self.kv, &self.keys.lock_key(key), token, ttl).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_ttls_round_up_to_whole_seconds() {
        assert_eq!(server_ttl_secs(Duration::ZERO), Duration::from_secs(1));
        assert_eq!(
            server_ttl_secs(Duration::from_millis(1)),
            Duration::from_secs(1)
        );
        assert_eq!(
            server_ttl_secs(Duration::from_secs(1)),
            Duration::from_secs(1)
        );
        assert_eq!(
            server_ttl_secs(Duration::from_millis(1_001)),
            Duration::from_secs(2)
        );
        assert_eq!(
            server_ttl_secs(Duration::from_secs(60)),
            Duration::from_secs(60)
        );
        assert_eq!(
            server_ttl_secs(Duration::MAX),
            Duration::from_secs(u64::MAX)
        );
    }

    #[test]
    fn hashed_frames_carry_the_key() {
        let framed = frame_hashed("long-key", b"ENVELOPE");
        assert_eq!(
            unframe_hashed("long-key", &framed).unwrap(),
            Some(&b"ENVELOPE"[..])
        );
        assert_eq!(unframe_hashed("other-key", &framed).unwrap(), None);
        assert_eq!(unframe_hashed("long-ke", &framed).unwrap(), None);
        assert!(unframe_hashed("k", b"short").unwrap_err().is_decode());
        let mut lying = framed.clone();
        lying[..8].copy_from_slice(&u64::MAX.to_be_bytes());
        assert!(unframe_hashed("long-key", &lying).unwrap_err().is_decode());
    }
}
