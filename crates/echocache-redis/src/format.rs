//! [`Format`]: the value format of a [`RedisStore`](crate::RedisStore), and
//! [`RedisFormat`]: what else differs between the formats in Redis (expiries, locks,
//! removal).

use std::fmt;
use std::time::Duration;

use echocache_core::StoreError;
use echocache_core::codec::Codec;
use fred::types::Expiration;

use crate::lock;

/// What the lock operations of a Go plain store return: that format has no timestamp, so a
/// [`LazyEchoCache`](echocache_core::LazyEchoCache) cannot work on it.
pub(crate) const GO_PLAIN_NO_LOCK: &str = "the Go echocache plain format has no timestamps and no refresh \
    lock: a LazyEchoCache needs RedisStore::go_echocache_compatible (the envelope format)";

/// The value format of a [`RedisStore`](crate::RedisStore) (core's: encoding and decoding
/// are shared with NATS); the key layout follows it (`keys.rs`).
pub(crate) use echocache_core::codec::ValueFormat as Format;

/// What else differs between the formats in Redis, each decided here once.
pub(crate) trait RedisFormat {
    /// The expiry an entry of `ttl` (`ttl_ms` in whole milliseconds) is written with:
    /// `PX ms`, or as go-redis sends it (`EX secs` for whole seconds) for the Go formats.
    fn entry_expiration(self, ttl: Duration, ttl_ms: i64) -> Expiration;
    /// The expiry a refresh lock of `ttl` is taken with.
    fn lock_expiration(self, ttl: Duration) -> Expiration;
    /// Whether the format has a refresh lock (all but the Go plain format); the error the
    /// lock calls return otherwise.
    fn lock_support(self) -> Result<(), StoreError>;
    /// Whether `remove` writes a tombstone (native) rather than `DEL` (the Go formats,
    /// whose readers would take a tombstone for a corrupt entry).
    fn removes_with_tombstone(self) -> bool;
    /// What `Debug` shows of the format: the codec's id for the native one.
    fn describe<C: Codec>(self) -> (&'static str, &'static dyn fmt::Debug);
}

impl RedisFormat for Format {
    fn entry_expiration(self, ttl: Duration, ttl_ms: i64) -> Expiration {
        match self {
            Format::Native => Expiration::PX(ttl_ms),
            Format::GoEnvelope | Format::GoPlain => lock::go_expiration(ttl),
        }
    }

    fn lock_expiration(self, ttl: Duration) -> Expiration {
        match self {
            Format::Native => Expiration::PX(lock::px_millis(ttl)),
            Format::GoEnvelope | Format::GoPlain => lock::go_expiration(ttl),
        }
    }

    fn lock_support(self) -> Result<(), StoreError> {
        match self {
            Format::GoPlain => Err(StoreError::backend_msg(GO_PLAIN_NO_LOCK)),
            Format::Native | Format::GoEnvelope => Ok(()),
        }
    }

    fn removes_with_tombstone(self) -> bool {
        self == Format::Native
    }

    fn describe<C: Codec>(self) -> (&'static str, &'static dyn fmt::Debug) {
        match self {
            Format::Native => ("codec_id", &C::ID),
            Format::GoEnvelope => ("format", &"go-echocache-envelope"),
            Format::GoPlain => ("format", &"go-echocache-plain"),
        }
    }
}
