//! [`Format`]: the layout and value format of a [`RedisStore`](crate::RedisStore), and
//! everything that differs between them (encoding, expiries, locks, removal).

use std::fmt;
use std::time::{Duration, SystemTime};

use echocache_core::codec::{Codec, decode_entry, encode_entry};
use echocache_core::{Entry, StoreError, go_format};
use fred::types::Expiration;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::lock;

/// What the lock operations of a Go plain store return: that format has no timestamp, so a
/// [`LazyEchoCache`](echocache_core::LazyEchoCache) cannot work on it.
pub(crate) const GO_PLAIN_NO_LOCK: &str = "the Go echocache plain format has no timestamps and no refresh \
    lock: a LazyEchoCache needs RedisStore::go_echocache_compatible (the envelope format)";

/// The layout and value format of a [`RedisStore`]: one store type, one set of commands;
/// only the key builders and the (de)serialisation look at it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    /// `{prefix}:v:` / `{prefix}:l:` keys, echocache's versioned envelope, the codec `C`.
    Native,
    /// The Go echocache's `{prefix}:` / `{prefix}:lock:` keys and the JSON of its
    /// stale-while-revalidate stores, `{"Value":…,"CreatedAt":…}`.
    GoEnvelope,
    /// The Go echocache's keys and the JSON of its plain stores: the value alone, no
    /// timestamp; no refresh lock.
    GoPlain,
}

impl Format {
    /// The bytes stored for `entry` (`codec` is the native format's).
    pub(crate) fn encode<V: Serialize, C: Codec>(
        self,
        codec: &C,
        entry: &Entry<V>,
        max_value_bytes: usize,
    ) -> Result<Vec<u8>, StoreError> {
        match self {
            Format::Native => encode_entry(codec, entry, max_value_bytes),
            Format::GoEnvelope => go_format::encode_envelope(entry, max_value_bytes),
            Format::GoPlain => go_format::encode_plain(&entry.value, max_value_bytes),
        }
    }

    /// The entry stored as `bytes`.
    pub(crate) fn decode<V: DeserializeOwned, C: Codec>(
        self,
        codec: &C,
        bytes: &[u8],
        max_value_bytes: usize,
    ) -> Result<Entry<V>, StoreError> {
        match self {
            Format::Native => decode_entry(codec, bytes, max_value_bytes),
            Format::GoEnvelope => go_format::decode_envelope(bytes, max_value_bytes),
            // No timestamp in this format: the oldest time, never "fresh" by mistake.
            Format::GoPlain => go_format::decode_plain(bytes, max_value_bytes)
                .map(|value| Entry::new(value, SystemTime::UNIX_EPOCH)),
        }
    }

    /// The expiry an entry of `ttl` (`ttl_ms` in whole milliseconds) is written with:
    /// `PX ms`, or as go-redis sends it (`EX secs` for whole seconds) for the Go formats.
    pub(crate) fn entry_expiration(self, ttl: Duration, ttl_ms: i64) -> Expiration {
        match self {
            Format::Native => Expiration::PX(ttl_ms),
            Format::GoEnvelope | Format::GoPlain => lock::go_expiration(ttl),
        }
    }

    /// The expiry a refresh lock of `ttl` is taken with.
    pub(crate) fn lock_expiration(self, ttl: Duration) -> Expiration {
        match self {
            Format::Native => Expiration::PX(lock::px_millis(ttl)),
            Format::GoEnvelope | Format::GoPlain => lock::go_expiration(ttl),
        }
    }

    /// Whether the format has a refresh lock (all but the Go plain format); the error the
    /// lock calls return otherwise.
    pub(crate) fn lock_support(self) -> Result<(), StoreError> {
        match self {
            Format::GoPlain => Err(StoreError::backend_msg(GO_PLAIN_NO_LOCK)),
            Format::Native | Format::GoEnvelope => Ok(()),
        }
    }

    /// Whether `remove` writes a tombstone (native) rather than `DEL` (the Go formats,
    /// whose readers would take a tombstone for a corrupt entry).
    pub(crate) fn removes_with_tombstone(self) -> bool {
        self == Format::Native
    }

    /// What `Debug` shows of the format: the codec's id for the native one.
    pub(crate) fn describe<C: Codec>(self) -> (&'static str, &'static dyn fmt::Debug) {
        match self {
            Format::Native => ("codec_id", &C::ID),
            Format::GoEnvelope => ("format", &"go-echocache-envelope"),
            Format::GoPlain => ("format", &"go-echocache-plain"),
        }
    }
}
