//! The values the Go echocache (v1.2.0) writes to Redis and to NATS JetStream KV, for stores
//! that share entries with Go services (`echocache-redis`, `echocache-nats`):
//! `json.Marshal(StaleValue[T])`, that is
//! `{"Value":…,"CreatedAt":"<RFC 3339>"}`, for its stale-while-revalidate stores, and
//! `json.Marshal(T)` alone for its plain stores.
//!
//! Reading follows Go's `encoding/json`: field names match case-insensitively, unknown
//! fields are ignored, a repeated field keeps its last value, a missing or `null` `CreatedAt` is
//! Go's zero time (read as the epoch: always stale). Writing gives the bytes Go's encoder
//! gives for the same value as far as serde allows: field names and order, `CreatedAt` in
//! UTC with trailing zeros trimmed, and Go's HTML-safe escapes of `<`, `>`, `&`, U+2028
//! and U+2029.

use std::fmt;
use std::marker::PhantomData;
use std::time::SystemTime;

use crate::codec::{Codec, Json};
use crate::{Entry, StoreError};
use serde::de::{self, DeserializeOwned, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

mod time;

use self::time as go_time;

pub use self::time::TimeError;

/// Go's `StaleValue[T]` as its encoder writes it: the Go field names (the struct has no
/// JSON tags), in the struct's order.
#[derive(Serialize)]
struct EnvelopeOut<'a, V> {
    #[serde(rename = "Value")]
    value: &'a V,
    #[serde(rename = "CreatedAt")]
    created_at: &'a str,
}

/// Go's `StaleValue[T]` as read.
struct EnvelopeIn<V> {
    value: V,
    created_at: SystemTime,
}

/// A key of the envelope object, matched as Go matches field names.
enum Field {
    Value,
    CreatedAt,
    Other,
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldVisitor;

        impl Visitor<'_> for FieldVisitor {
            type Value = Field;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }

            fn visit_str<E: de::Error>(self, name: &str) -> Result<Field, E> {
                // Go folds case with Unicode simple folding; for these two all-ASCII names
                // without `k` or `s` (which fold with U+212A and U+017F) that is ASCII
                // case-insensitivity.
                Ok(if name.eq_ignore_ascii_case("Value") {
                    Field::Value
                } else if name.eq_ignore_ascii_case("CreatedAt") {
                    Field::CreatedAt
                } else {
                    Field::Other
                })
            }
        }

        deserializer.deserialize_identifier(FieldVisitor)
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for EnvelopeIn<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EnvelopeVisitor<V>(PhantomData<fn() -> V>);

        impl<'de, V: Deserialize<'de>> Visitor<'de> for EnvelopeVisitor<V> {
            type Value = EnvelopeIn<V>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"a Go echocache entry {"Value":…,"CreatedAt":…}"#)
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut value = None;
                // Go's zero time when absent or null.
                let mut created_at = SystemTime::UNIX_EPOCH;
                while let Some(field) = map.next_key::<Field>()? {
                    match field {
                        Field::Value => value = Some(map.next_value::<V>()?),
                        Field::CreatedAt => {
                            created_at = match map.next_value::<Option<String>>()? {
                                Some(text) => go_time::parse(&text).map_err(|e| {
                                    de::Error::custom(format_args!("CreatedAt: {e}"))
                                })?,
                                None => SystemTime::UNIX_EPOCH,
                            };
                        }
                        Field::Other => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                let value = match value {
                    Some(value) => value,
                    // Go leaves the zero value of T; the closest serde has is what `null`
                    // gives (`None` for an `Option`), else the field is missing.
                    None => V::deserialize(de::value::UnitDeserializer::<A::Error>::new())
                        .map_err(|_| de::Error::missing_field("Value"))?,
                };
                Ok(EnvelopeIn { value, created_at })
            }
        }

        deserializer.deserialize_map(EnvelopeVisitor(PhantomData))
    }
}

/// Encodes `entry` as the Go stale-while-revalidate JSON, at most `max_bytes` long.
///
/// # Errors
///
/// A decode-kind [`StoreError`] (as the envelope codecs give) when the value does not
/// serialize to JSON, `written_at` lies outside the years 0000–9999 that Go's JSON time
/// holds, or the JSON is longer than `max_bytes`.
pub fn encode_envelope<V: Serialize>(
    entry: &Entry<V>,
    max_bytes: usize,
) -> Result<Vec<u8>, StoreError> {
    let created_at = go_time::format(entry.written_at)
        .map_err(|e| StoreError::decode_msg(format!("written_at: {e}")))?;
    let out = EnvelopeOut {
        value: &entry.value,
        created_at: &created_at,
    };
    let json = Json.encode(&out).map_err(StoreError::decode)?;
    limit(escape_like_go(json), max_bytes)
}

/// Decodes the Go stale-while-revalidate JSON; a `CreatedAt` before 1970 (Go's zero time)
/// reads as [`SystemTime::UNIX_EPOCH`].
///
/// # Errors
///
/// A decode-kind [`StoreError`] when the bytes are longer than `max_bytes`, not JSON, not
/// an object, hold a `Value` that is not a `V` or a `CreatedAt` that is not an RFC 3339
/// string.
pub fn decode_envelope<V: DeserializeOwned>(
    bytes: &[u8],
    max_bytes: usize,
) -> Result<Entry<V>, StoreError> {
    check_len(bytes.len(), max_bytes)?;
    let envelope: EnvelopeIn<V> = Json.decode(bytes).map_err(StoreError::decode)?;
    Ok(Entry::new(envelope.value, envelope.created_at))
}

/// Encodes `value` as the Go plain stores do: its JSON alone.
///
/// # Errors
///
/// A decode-kind [`StoreError`] when the value does not serialize to JSON or its JSON is
/// longer than `max_bytes`.
pub fn encode_plain<V: Serialize>(value: &V, max_bytes: usize) -> Result<Vec<u8>, StoreError> {
    let json = Json.encode(value).map_err(StoreError::decode)?;
    limit(escape_like_go(json), max_bytes)
}

/// Decodes the JSON of a value written by a Go plain store.
///
/// # Errors
///
/// A decode-kind [`StoreError`] when the bytes are longer than `max_bytes` or not the JSON
/// of a `V`.
pub fn decode_plain<V: DeserializeOwned>(bytes: &[u8], max_bytes: usize) -> Result<V, StoreError> {
    check_len(bytes.len(), max_bytes)?;
    Json.decode(bytes).map_err(StoreError::decode)
}

/// `t` as Go's `time.Time` JSON writes it in UTC (`2025-02-21T21:01:30.123456789Z`,
/// trailing zeros trimmed).
///
/// # Errors
///
/// A time outside the years 0000–9999, which Go's JSON cannot hold.
pub fn format_time(t: SystemTime) -> Result<String, TimeError> {
    go_time::format(t)
}

/// Parses an RFC 3339 time as Go's `time.Parse(time.RFC3339, …)` and its JSON do (any
/// offset, up to nine fractional digits).
///
/// # Errors
///
/// Text that Go would refuse.
pub fn parse_time(text: &str) -> Result<SystemTime, TimeError> {
    go_time::parse(text)
}

fn check_len(len: usize, max_bytes: usize) -> Result<(), StoreError> {
    if len > max_bytes {
        return Err(StoreError::decode_msg(format!(
            "entry of {len} bytes exceeds the limit of {max_bytes} bytes"
        )));
    }
    Ok(())
}

fn limit(json: Vec<u8>, max_bytes: usize) -> Result<Vec<u8>, StoreError> {
    check_len(json.len(), max_bytes)?;
    Ok(json)
}

/// Rewrites serde_json's output with the escapes Go's encoder adds: `<`, `>`, `&` as
/// `\u003c`, `\u003e`, `\u0026`, and U+2028, U+2029 as `\u2028`, `\u2029`.
///
/// Exact on any serde_json output: these characters can only occur inside strings (JSON's
/// own syntax uses none of them, and serde_json writes them unescaped), and in UTF-8 a byte
/// below 0x80 is always a whole character, so no multi-byte character is split.
fn escape_like_go(json: Vec<u8>) -> Vec<u8> {
    const LINE_SEPARATOR: &[u8] = "\u{2028}".as_bytes();
    const PARAGRAPH_SEPARATOR: &[u8] = "\u{2029}".as_bytes();
    if !json.iter().any(|b| matches!(b, b'<' | b'>' | b'&' | 0xE2)) {
        return json;
    }
    let mut out = Vec::with_capacity(json.len() + 16);
    let mut rest = json.as_slice();
    while let Some((&byte, tail)) = rest.split_first() {
        match byte {
            b'<' => out.extend_from_slice(br"\u003c"),
            b'>' => out.extend_from_slice(br"\u003e"),
            b'&' => out.extend_from_slice(br"\u0026"),
            _ if rest.starts_with(LINE_SEPARATOR) => {
                out.extend_from_slice(br"\u2028");
                rest = &rest[LINE_SEPARATOR.len()..];
                continue;
            }
            _ if rest.starts_with(PARAGRAPH_SEPARATOR) => {
                out.extend_from_slice(br"\u2029");
                rest = &rest[PARAGRAPH_SEPARATOR.len()..];
                continue;
            }
            _ => out.push(byte),
        }
        rest = tail;
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;

    /// 2025-02-21T21:01:30.123456789Z.
    fn t0() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::new(1_740_171_690, 123_456_789)
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Person {
        name: String,
        age: u32,
    }

    fn read<V: DeserializeOwned>(json: &str) -> Result<Entry<V>, StoreError> {
        decode_envelope(json.as_bytes(), 1 << 20)
    }

    #[test]
    fn reads_field_names_as_go_does() {
        for json in [
            r#"{"Value":"hi","CreatedAt":"2025-02-21T21:01:30.123456789Z"}"#,
            r#"{"value":"hi","createdAt":"2025-02-21T21:01:30.123456789Z"}"#,
            r#"{"VALUE":"hi","CREATEDAT":"2025-02-21T21:01:30.123456789Z"}"#,
            r#"{"CreatedAt":"2025-02-21T21:01:30.123456789Z","Value":"hi"}"#,
            r#"{"\u0056alue":"hi","CreatedAt":"2025-02-21T21:01:30.123456789Z"}"#,
            r#" { "Value" : "hi" , "Other" : [1, {"x": null}], "CreatedAt" : "2025-02-21T21:01:30.123456789Z" } "#,
            r#"{"Value":"old","CreatedAt":"1999-01-01T00:00:00Z","value":"hi","createdat":"2025-02-21T21:01:30.123456789Z"}"#,
        ] {
            let entry: Entry<String> = read(json).unwrap();
            assert_eq!(entry.value, "hi", "{json}");
            assert_eq!(entry.written_at, t0(), "{json}");
        }
    }

    #[test]
    fn a_missing_or_null_created_at_is_go_zero_time() {
        for json in [
            r#"{"Value":"hi"}"#,
            r#"{"Value":"hi","CreatedAt":null}"#,
            r#"{"Value":"hi","CreatedAt":"0001-01-01T00:00:00Z"}"#,
        ] {
            let entry: Entry<String> = read(json).unwrap();
            assert_eq!(entry.value, "hi");
            assert_eq!(entry.written_at, SystemTime::UNIX_EPOCH, "{json}");
        }
    }

    #[test]
    fn a_missing_value_is_none_for_an_option_and_an_error_otherwise() {
        let entry: Entry<Option<u32>> = read(r#"{"CreatedAt":"2025-02-21T21:01:30Z"}"#).unwrap();
        assert_eq!(entry.value, None);
        let err = read::<String>(r#"{"CreatedAt":"2025-02-21T21:01:30Z"}"#).unwrap_err();
        assert!(err.is_decode());
        assert!(
            format!("{err:?}").contains("missing field `Value`"),
            "{err:?}"
        );
        // A null Value is Go's zero value in Go; serde cannot make a `String` from it.
        assert!(read::<String>(r#"{"Value":null}"#).unwrap_err().is_decode());
        assert_eq!(
            read::<Option<String>>(r#"{"Value":null}"#).unwrap().value,
            None
        );
    }

    #[test]
    fn what_go_could_not_decode_is_a_decode_error() {
        for json in [
            r#""hello""#,
            "null",
            "[]",
            r#"["hi","2025-02-21T21:01:30Z"]"#,
            r#"{"Value":"hi","CreatedAt":"yesterday"}"#,
            r#"{"Value":"hi","CreatedAt":1740171690}"#,
            r#"{"Value":42,"CreatedAt":"2025-02-21T21:01:30Z"}"#,
            r#"{"Value":"hi","CreatedAt":"2025-02-21T21:01:30Z"} x"#,
            r#"{"Value":"hi""#,
            "",
            "\u{feff}{}",
        ] {
            let err = read::<String>(json).unwrap_err();
            assert!(err.is_decode(), "{json}: {err:?}");
        }
    }

    #[test]
    fn writes_go_bytes() {
        let entry = Entry::new("a<b>&c \"q\" \\ é ☃\n\t".to_owned(), t0());
        let bytes = encode_envelope(&entry, 1 << 20).unwrap();
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            r#"{"Value":"a\u003cb\u003e\u0026c \"q\" \\ é ☃\n\t","CreatedAt":"2025-02-21T21:01:30.123456789Z"}"#
        );
        let entry = Entry::new(
            Person {
                name: "John".into(),
                age: 30,
            },
            t0() - Duration::from_nanos(3_456_789),
        );
        assert_eq!(
            encode_envelope(&entry, 1 << 20).unwrap(),
            br#"{"Value":{"name":"John","age":30},"CreatedAt":"2025-02-21T21:01:30.12Z"}"#
        );
        assert_eq!(
            encode_plain(&"hello", 1 << 20).unwrap(),
            br#""hello""#.to_vec()
        );
        assert_eq!(
            encode_plain(&"\u{2028}<\u{2029}", 1 << 20).unwrap(),
            br#""\u2028\u003c\u2029""#.to_vec()
        );
    }

    #[test]
    fn round_trips() {
        let values = [
            String::new(),
            "plain".to_owned(),
            "<script>&amp;</script> \u{2028}\u{2029}\u{2027}\u{202a} ☃ \\u003c \"\0\u{1f}"
                .to_owned(),
        ];
        for value in values {
            let entry = Entry::new(value, t0());
            let bytes = encode_envelope(&entry, 1 << 20).unwrap();
            assert!(!bytes.contains(&b'<') && !bytes.contains(&b'&'));
            assert_eq!(
                read::<String>(std::str::from_utf8(&bytes).unwrap()).unwrap(),
                entry
            );
            let plain = encode_plain(&entry.value, 1 << 20).unwrap();
            assert_eq!(
                decode_plain::<String>(&plain, 1 << 20).unwrap(),
                entry.value
            );
        }
        let map: BTreeMap<String, Vec<Option<i64>>> = [("a&b".to_owned(), vec![Some(-3), None])]
            .into_iter()
            .collect();
        let bytes = encode_plain(&map, 1 << 20).unwrap();
        assert_eq!(bytes, br#"{"a\u0026b":[-3,null]}"#.to_vec());
        assert_eq!(
            decode_plain::<BTreeMap<String, Vec<Option<i64>>>>(&bytes, 1 << 20).unwrap(),
            map
        );
    }

    #[test]
    fn sizes_are_limited_both_ways() {
        let entry = Entry::new("x".repeat(100), t0());
        assert!(encode_envelope(&entry, 50).unwrap_err().is_decode());
        assert!(encode_plain(&entry.value, 50).unwrap_err().is_decode());
        assert!(encode_plain(&entry.value, 0).unwrap_err().is_decode());
        let bytes = encode_envelope(&entry, 1 << 20).unwrap();
        assert!(
            decode_envelope::<String>(&bytes, bytes.len() - 1)
                .unwrap_err()
                .is_decode()
        );
        assert!(decode_envelope::<String>(&bytes, bytes.len()).is_ok());
        assert!(
            decode_plain::<String>(br#""abc""#, 4)
                .unwrap_err()
                .is_decode()
        );
    }

    #[test]
    fn times_go_cannot_write_are_refused() {
        let far = Entry::new(
            1u8,
            SystemTime::UNIX_EPOCH + Duration::from_secs(300_000_000_000),
        );
        let err = encode_envelope(&far, 1 << 20).unwrap_err();
        assert!(err.is_decode());
        assert!(format!("{err:?}").contains("written_at"), "{err:?}");
    }
}
