//! The versioned envelope remote stores write, and the [`Codec`]s for the value inside it.
//!
//! Envelope layout (all stores that use this module agree on it, so Redis and NATS entries
//! read the same way):
//!
//! | bytes | meaning |
//! |---|---|
//! | 0 | envelope version, [`ENVELOPE_VERSION`] (1) |
//! | 1 | codec id ([`Codec::ID`]: 1 MessagePack, 2 JSON) |
//! | 2..10 | `written_at`, nanoseconds since the Unix epoch, big-endian `u64` |
//! | 10.. | the value, encoded by the codec |
//!
//! Decoding never panics and never allocates beyond the bytes it is given and the value it
//! builds: the whole envelope is checked against a size limit before the codec runs, and
//! serde caps pre-allocation from length prefixes.

use std::fmt;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Entry, StoreError};

/// The envelope format this version writes.
pub const ENVELOPE_VERSION: u8 = 1;
/// Bytes before the payload.
pub const HEADER_LEN: usize = 10;
/// The default limit on an encoded entry: 16 MiB.
pub const DEFAULT_MAX_VALUE_BYTES: usize = 16 * 1024 * 1024;

/// Turns values into bytes and back. Implemented by [`MessagePack`] and [`Json`]; a
/// custom codec picks an [`ID`](Codec::ID) of 128 or above.
pub trait Codec: Send + Sync + 'static {
    /// The byte that names this codec in the envelope.
    const ID: u8;

    /// Encodes `value`.
    ///
    /// # Errors
    ///
    /// When the value cannot be represented (e.g. a map with non-string keys in JSON).
    fn encode<V: Serialize>(&self, value: &V) -> Result<Vec<u8>, CodecError>;

    /// Decodes a value from `bytes`.
    ///
    /// # Errors
    ///
    /// When the bytes are not a valid encoding of `V`.
    fn decode<V: DeserializeOwned>(&self, bytes: &[u8]) -> Result<V, CodecError>;
}

/// MessagePack through `rmp-serde`, with field names (so that adding an optional field to
/// a struct does not break entries already stored). The default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MessagePack;

/// JSON through `serde_json`: larger and slower than MessagePack, readable in `redis-cli`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Json;

impl Codec for MessagePack {
    const ID: u8 = 1;

    fn encode<V: Serialize>(&self, value: &V) -> Result<Vec<u8>, CodecError> {
        rmp_serde::to_vec_named(value).map_err(|e| CodecError::new(e.to_string()))
    }

    fn decode<V: DeserializeOwned>(&self, bytes: &[u8]) -> Result<V, CodecError> {
        // Checked before serde sees the bytes: every length fits in what is left and the
        // nesting is bounded, so no claimed length can make serde reserve memory the
        // input doesn't back, and no nesting can overflow the stack.
        check_msgpack_shape(bytes, MAX_DEPTH)?;
        let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
        de.set_max_depth(MAX_DEPTH);
        V::deserialize(&mut de).map_err(|e| CodecError::new(e.to_string()))
    }
}

/// The deepest nesting a MessagePack value may have (serde_json's own limit is the same).
const MAX_DEPTH: usize = 128;

/// Walks one MessagePack value without decoding it: every string, binary and extension
/// length fits in the bytes left, every array or map claims no more items than bytes left
/// (each item takes at least one byte), and nesting stays within `max_depth`. Iterative:
/// hostile input cannot recurse.
fn check_msgpack_shape(bytes: &[u8], max_depth: usize) -> Result<(), CodecError> {
    let bad = |what: &str| CodecError::new(format!("malformed MessagePack: {what}"));
    // Items still to read at each open level; the outer level holds the one value.
    let mut pending: Vec<u64> = vec![1];
    let mut at = 0usize;
    let read = |at: &mut usize, n: usize| -> Result<u64, CodecError> {
        let end = at
            .checked_add(n)
            .filter(|&e| e <= bytes.len())
            .ok_or_else(|| bad("truncated"))?;
        let v = bytes[*at..end]
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        *at = end;
        Ok(v)
    };
    while let Some(top) = pending.last_mut() {
        if *top == 0 {
            pending.pop();
            continue;
        }
        *top -= 1;
        let marker = read(&mut at, 1)? as u8;
        // (bytes of payload to skip, items of a container opened)
        let (skip, items): (u64, u64) = match marker {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0),
            0x80..=0x8f => (0, 2 * u64::from(marker & 0x0f)),
            0x90..=0x9f => (0, u64::from(marker & 0x0f)),
            0xa0..=0xbf => (u64::from(marker & 0x1f), 0),
            0xc1 => return Err(bad("reserved marker 0xc1")),
            0xc4 | 0xd9 => (read(&mut at, 1)?, 0),
            0xc5 | 0xda => (read(&mut at, 2)?, 0),
            0xc6 | 0xdb => (read(&mut at, 4)?, 0),
            0xc7 => (read(&mut at, 1)? + 1, 0),
            0xc8 => (read(&mut at, 2)? + 1, 0),
            0xc9 => (read(&mut at, 4)? + 1, 0),
            0xca | 0xce | 0xd2 => (4, 0),
            0xcb | 0xcf | 0xd3 => (8, 0),
            0xcc | 0xd0 => (1, 0),
            0xcd | 0xd1 => (2, 0),
            0xd4 => (2, 0),
            0xd5 => (3, 0),
            0xd6 => (5, 0),
            0xd7 => (9, 0),
            0xd8 => (17, 0),
            0xdc => (0, read(&mut at, 2)?),
            0xdd => (0, read(&mut at, 4)?),
            0xde => (0, 2 * read(&mut at, 2)?),
            0xdf => (0, 2 * read(&mut at, 4)?),
        };
        let left = (bytes.len() - at) as u64;
        if skip > left {
            return Err(bad("a length runs past the end"));
        }
        at += skip as usize;
        if items > 0 {
            if items > left {
                return Err(bad("a container claims more items than there are bytes"));
            }
            if pending.len() > max_depth {
                return Err(bad("nested too deeply"));
            }
            pending.push(items);
        }
    }
    Ok(())
}

impl Codec for Json {
    const ID: u8 = 2;

    fn encode<V: Serialize>(&self, value: &V) -> Result<Vec<u8>, CodecError> {
        serde_json::to_vec(value).map_err(|e| CodecError::new(e.to_string()))
    }

    fn decode<V: DeserializeOwned>(&self, bytes: &[u8]) -> Result<V, CodecError> {
        serde_json::from_slice(bytes).map_err(|e| CodecError::new(e.to_string()))
    }
}

/// Encoding or decoding failed; the message says why (never the value's bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecError(String);

impl CodecError {
    /// An error with `message`.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CodecError {}

/// Encodes `entry` into an envelope of at most `max_bytes`.
///
/// # Errors
///
/// A [`StoreError`] marked as decode error (see [`StoreError::is_decode`]) when the codec
/// fails or the envelope would exceed `max_bytes`.
///
/// # Examples
///
/// ```
/// use std::time::SystemTime;
/// use echocache_core::Entry;
/// use echocache_core::codec::{decode_entry, encode_entry, MessagePack, DEFAULT_MAX_VALUE_BYTES};
///
/// let entry = Entry::new(vec![1u32, 2, 3], SystemTime::UNIX_EPOCH);
/// let bytes = encode_entry(&MessagePack, &entry, DEFAULT_MAX_VALUE_BYTES).unwrap();
/// let back: Entry<Vec<u32>> = decode_entry(&MessagePack, &bytes, DEFAULT_MAX_VALUE_BYTES).unwrap();
/// assert_eq!(back, entry);
/// assert!(decode_entry::<Vec<u32>, _>(&MessagePack, b"garbage", 1024).unwrap_err().is_decode());
/// ```
pub fn encode_entry<V: Serialize, C: Codec>(
    codec: &C,
    entry: &Entry<V>,
    max_bytes: usize,
) -> Result<Vec<u8>, StoreError> {
    let nanos = entry
        .written_at
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()
        .and_then(|d| u64::try_from(d.as_nanos()).ok())
        .ok_or_else(|| {
            StoreError::decode_msg("written_at is outside the envelope's range (1970..2554)")
        })?;
    let payload = codec.encode(&entry.value).map_err(StoreError::decode)?;
    let len = HEADER_LEN + payload.len();
    if len > max_bytes {
        return Err(StoreError::decode(TooLarge {
            len,
            max: max_bytes,
        }));
    }
    let mut out = Vec::with_capacity(len);
    out.push(ENVELOPE_VERSION);
    out.push(C::ID);
    out.extend_from_slice(&nanos.to_be_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Decodes an envelope written by [`encode_entry`] with the same codec.
///
/// # Errors
///
/// A [`StoreError`] marked as decode error when the bytes are longer than `max_bytes`,
/// too short, of another envelope version or codec, or not a valid value.
pub fn decode_entry<V: DeserializeOwned, C: Codec>(
    codec: &C,
    bytes: &[u8],
    max_bytes: usize,
) -> Result<Entry<V>, StoreError> {
    if bytes.len() > max_bytes {
        return Err(StoreError::decode(TooLarge {
            len: bytes.len(),
            max: max_bytes,
        }));
    }
    let Some((header, payload)) = bytes.split_first_chunk::<HEADER_LEN>() else {
        return Err(StoreError::decode_msg(format!(
            "entry too short: {} bytes, the envelope header alone is {HEADER_LEN}",
            bytes.len()
        )));
    };
    if header[0] != ENVELOPE_VERSION {
        return Err(StoreError::decode_msg(format!(
            "unknown envelope version {} (this build reads {ENVELOPE_VERSION})",
            header[0]
        )));
    }
    if header[1] != C::ID {
        return Err(StoreError::decode_msg(format!(
            "entry was written with codec id {}, this store reads codec id {}",
            header[1],
            C::ID
        )));
    }
    let mut nanos = [0u8; 8];
    nanos.copy_from_slice(&header[2..10]);
    let written_at = SystemTime::UNIX_EPOCH
        .checked_add(Duration::from_nanos(u64::from_be_bytes(nanos)))
        .ok_or_else(|| StoreError::decode_msg("written_at out of range"))?;
    let value = codec.decode(payload).map_err(StoreError::decode)?;
    Ok(Entry::new(value, written_at))
}

/// The bytes a remote store writes for its entries: echocache's envelope with a codec
/// ([`encode_entry`]), or one of the Go echocache's JSON formats
/// ([`go_format`](crate::go_format)), for stores shared with Go services. The Redis and
/// NATS stores both choose theirs with it, so that each format is encoded and decoded in
/// one place.
///
/// # Examples
///
/// ```
/// use std::time::SystemTime;
/// use echocache_core::Entry;
/// use echocache_core::codec::{MessagePack, ValueFormat};
///
/// let entry = Entry::new(7u32, SystemTime::UNIX_EPOCH);
/// let bytes = ValueFormat::GoPlain.encode(&MessagePack, &entry, 1024).unwrap();
/// assert_eq!(bytes, b"7", "the Go plain format: the value's JSON alone");
/// let back: Entry<u32> = ValueFormat::GoPlain.decode(&MessagePack, &bytes, 1024).unwrap();
/// assert_eq!(back.value, 7);
/// assert!(!ValueFormat::GoPlain.has_timestamps());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueFormat {
    /// echocache's versioned envelope, the value encoded by the store's codec.
    Native,
    /// The Go echocache's stale-while-revalidate stores: `{"Value":…,"CreatedAt":…}`.
    GoEnvelope,
    /// The Go echocache's plain stores: the value's JSON alone, no timestamp (and no
    /// refresh lock in Go).
    GoPlain,
}

impl ValueFormat {
    /// The bytes stored for `entry`; `codec` is used by [`Native`](Self::Native) only.
    ///
    /// # Errors
    ///
    /// A decode [`StoreError`] when the value cannot be encoded or its bytes exceed
    /// `max_bytes`.
    pub fn encode<V: Serialize, C: Codec>(
        self,
        codec: &C,
        entry: &Entry<V>,
        max_bytes: usize,
    ) -> Result<Vec<u8>, StoreError> {
        match self {
            ValueFormat::Native => encode_entry(codec, entry, max_bytes),
            ValueFormat::GoEnvelope => crate::go_format::encode_envelope(entry, max_bytes),
            ValueFormat::GoPlain => crate::go_format::encode_plain(&entry.value, max_bytes),
        }
    }

    /// The entry stored as `bytes`. The Go plain format holds no time: its entries are
    /// written at the Unix epoch, the oldest time, never "fresh" by mistake.
    ///
    /// # Errors
    ///
    /// A decode [`StoreError`] when the bytes exceed `max_bytes` or do not decode.
    pub fn decode<V: DeserializeOwned, C: Codec>(
        self,
        codec: &C,
        bytes: &[u8],
        max_bytes: usize,
    ) -> Result<Entry<V>, StoreError> {
        match self {
            ValueFormat::Native => decode_entry(codec, bytes, max_bytes),
            ValueFormat::GoEnvelope => crate::go_format::decode_envelope(bytes, max_bytes),
            ValueFormat::GoPlain => crate::go_format::decode_plain(bytes, max_bytes)
                .map(|value| Entry::new(value, SystemTime::UNIX_EPOCH)),
        }
    }

    /// Whether entries carry the time they were written (all but
    /// [`GoPlain`](Self::GoPlain)): without it there is no age, so no TTL by age and no
    /// stale-while-revalidate.
    pub fn has_timestamps(self) -> bool {
        self != ValueFormat::GoPlain
    }
}

/// An entry larger than the configured limit.
#[derive(Debug)]
struct TooLarge {
    len: usize,
    max: usize,
}

impl fmt::Display for TooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "entry of {} bytes exceeds the limit of {} bytes",
            self.len, self.max
        )
    }
}

impl std::error::Error for TooLarge {}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry<(String, u32)> {
        Entry::new(
            ("ada".into(), 36),
            SystemTime::UNIX_EPOCH + Duration::from_nanos(1_234_567_890_123),
        )
    }

    #[test]
    fn round_trips_with_both_codecs() {
        let bytes = encode_entry(&MessagePack, &entry(), 1024).unwrap();
        assert_eq!(&bytes[..2], &[ENVELOPE_VERSION, MessagePack::ID]);
        assert_eq!(decode_entry(&MessagePack, &bytes, 1024).unwrap(), entry());
        let bytes = encode_entry(&Json, &entry(), 1024).unwrap();
        assert_eq!(&bytes[HEADER_LEN..], br#"["ada",36]"#);
        assert_eq!(decode_entry(&Json, &bytes, 1024).unwrap(), entry());
    }

    #[test]
    fn rejects_foreign_short_and_oversized_bytes() {
        let bytes = encode_entry(&Json, &entry(), 1024).unwrap();
        let wrong_codec = decode_entry::<(String, u32), _>(&MessagePack, &bytes, 1024).unwrap_err();
        assert!(wrong_codec.is_decode());
        assert!(
            decode_entry::<u8, _>(&Json, &[1, 2, 3], 1024)
                .unwrap_err()
                .is_decode()
        );
        assert!(
            decode_entry::<u8, _>(&Json, &[9; 20], 1024)
                .unwrap_err()
                .is_decode()
        );
        assert!(
            decode_entry::<(String, u32), _>(&Json, &bytes, bytes.len() - 1)
                .unwrap_err()
                .is_decode()
        );
        let big = Entry::new(vec![0u8; 100], SystemTime::UNIX_EPOCH);
        assert!(
            encode_entry(&MessagePack, &big, 50)
                .unwrap_err()
                .is_decode()
        );
    }

    #[test]
    fn hostile_length_prefix_does_not_allocate_its_claim() {
        // A MessagePack array header claiming 2^32-1 elements, then nothing.
        let mut bytes = vec![ENVELOPE_VERSION, MessagePack::ID, 0, 0, 0, 0, 0, 0, 0, 0];
        bytes.extend_from_slice(&[0xdd, 0xff, 0xff, 0xff, 0xff]);
        assert!(
            decode_entry::<Vec<u64>, _>(&MessagePack, &bytes, 1024)
                .unwrap_err()
                .is_decode()
        );
        // A bin header claiming 4 GiB.
        let mut bytes = bytes[..HEADER_LEN].to_vec();
        bytes.extend_from_slice(&[0xc6, 0xff, 0xff, 0xff, 0xff]);
        assert!(decode_entry::<serde_bytes_like::Bytes, _>(&MessagePack, &bytes, 1024).is_err());
    }

    #[test]
    fn msgpack_shape_check_refuses_lies_and_depth() {
        // Valid values of many shapes pass.
        let nested = vec![vec![1u64, 2], vec![], vec![u64::MAX]];
        let bytes = rmp_serde::to_vec_named(&(nested, "s", 1.5f64, Some(true), -3i8)).unwrap();
        assert!(check_msgpack_shape(&bytes, 8).is_ok());
        // An array claiming 3 items with 2 bytes left, a string running past the end.
        assert!(check_msgpack_shape(&[0x93, 0x01, 0x02], 8).is_err());
        assert!(check_msgpack_shape(&[0xa5, b'a'], 8).is_err());
        assert!(check_msgpack_shape(&[0xdd, 0xff, 0xff, 0xff, 0xff, 0x01], 8).is_err());
        assert!(check_msgpack_shape(&[0xc1], 8).is_err());
        assert!(check_msgpack_shape(&[], 8).is_err());
        // 200 nested one-element arrays: fine at depth 256, refused at 128.
        let mut deep = vec![0x91u8; 200];
        deep.push(0x01);
        assert!(check_msgpack_shape(&deep, 256).is_ok());
        assert!(check_msgpack_shape(&deep, 128).is_err());
        let mut envelope = vec![ENVELOPE_VERSION, MessagePack::ID, 0, 0, 0, 0, 0, 0, 0, 0];
        envelope.extend_from_slice(&deep);
        assert!(
            decode_entry::<serde_json::Value, _>(&MessagePack, &envelope, 1 << 20)
                .unwrap_err()
                .is_decode()
        );
    }

    mod serde_bytes_like {
        #[derive(Debug, serde::Deserialize)]
        pub(super) struct Bytes(#[allow(dead_code)] pub(super) Vec<u8>);
    }
}
