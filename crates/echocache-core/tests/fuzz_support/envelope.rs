//! The checks of the envelope fuzz targets (`fuzz/fuzz_targets/envelope_msgpack.rs` and
//! `envelope_json.rs`), shared with the corpus replay test `tests/fuzz_corpus.rs` so that
//! `cargo test` runs the very same assertions on the committed corpus.
//!
//! For each input, with the codec of the target:
//!
//! 1. **Hostile bytes.** The input is decoded as an envelope holding a `String`, a
//!    `Vec<u64>`, a struct ([`Record`]: strings, a list, floats, a map, an enum) and a
//!    `serde_json::Value`. Whatever the bytes: no panic; any error is a decode error; the
//!    memory held at once during the call (measured by the counting global allocator) stays
//!    under [`alloc_bound`], which grows with the input's length and never with the lengths
//!    the bytes claim; with a limit one byte below the input's length the bytes are refused
//!    before any decoding, allocating next to nothing; a value that decodes encodes again
//!    and decodes to the same value and timestamp.
//! 2. **Round trip.** The input drives a generator ([`Gen`]) that builds one value of each
//!    type and a timestamp; `decode_entry(encode_entry(entry)) == entry`, the header is as
//!    documented, and a limit one byte below the encoded length refuses the entry.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::{Duration, SystemTime};

use echocache_core::Entry;
use echocache_core::codec::{
    Codec, DEFAULT_MAX_VALUE_BYTES, ENVELOPE_VERSION, HEADER_LEN, Json, MessagePack, decode_entry,
    encode_entry,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::counting_alloc::peak_bytes;

/// serde's cap on the capacity it reserves from a length hint (`size_hint::cautious`):
/// 1 MiB per sequence being decoded. rmp-serde passes a MessagePack array's or map's
/// claimed length as that hint, so a tiny entry claiming 2^32 elements makes serde reserve
/// up to 1 MiB before the missing elements fail the decode. This is bounded (it does not
/// grow with the claim) and allowed here once per nested level of pre-sized sequences;
/// `serde_json` gives no hints, so JSON gets no such allowance.
pub(crate) const SERDE_PREALLOC: usize = 1024 * 1024;

/// Bytes any decode may hold whatever the input: error values with their messages, the
/// decoder's state.
const BASE: usize = 16 * 1024;

/// Bytes a refusal of an oversized input may hold: the error and its message.
const REFUSAL: usize = 1024;

/// The most memory a decode of `len` bytes as `V` with codec `C` may hold at once.
///
/// `V::AMP` bytes per input byte covers the value built (each element's in-memory size
/// over its smallest encoding), the `Vec` growth that doubles capacity and the moving
/// `realloc` that holds old and new blocks at once; see each [`Subject`] impl.
pub(crate) fn alloc_bound<V: Subject, C: Codec>(len: usize) -> usize {
    let presized = if C::ID == MessagePack::ID {
        V::PRESIZED_LEVELS * SERDE_PREALLOC
    } else {
        0
    };
    V::AMP * len + BASE + presized
}

/// A value type decoded by the targets.
pub(crate) trait Subject: Serialize + DeserializeOwned + Debug {
    /// A name for messages.
    const NAME: &'static str;
    /// Bytes of memory the decoded value (with its transient growth) may take per byte of
    /// input; see [`alloc_bound`].
    const AMP: usize;
    /// How many sequences serde may pre-size at once from MessagePack length prefixes
    /// while decoding this type (the depth of nested `Vec`s or `HashMap`s).
    const PRESIZED_LEVELS: usize;
    /// Equality, with floats compared bit for bit (so that `NaN` equals itself).
    fn same(&self, other: &Self) -> bool;
    /// A value built from the generator's bytes; `json` avoids what JSON cannot hold.
    fn generate(g: &mut Gen<'_>, json: bool) -> Self;
}

impl Subject for String {
    const NAME: &'static str = "String";
    // The string (at most the input's length), serde_json's scratch buffer for escapes
    // (doubling growth, 2x) and a moving realloc of it.
    const AMP: usize = 4;
    const PRESIZED_LEVELS: usize = 0;

    fn same(&self, other: &Self) -> bool {
        self == other
    }

    fn generate(g: &mut Gen<'_>, _json: bool) -> Self {
        g.string(48)
    }
}

impl Subject for Vec<u64> {
    const NAME: &'static str = "Vec<u64>";
    // 8 bytes per element of at least one byte, doubled by growth, plus the old block
    // during a moving realloc: 24.
    const AMP: usize = 24;
    const PRESIZED_LEVELS: usize = 1;

    fn same(&self, other: &Self) -> bool {
        self == other
    }

    fn generate(g: &mut Gen<'_>, _json: bool) -> Self {
        let len = g.below(12);
        (0..len).map(|_| g.u64()).collect()
    }
}

/// A struct with the shapes user values have: strings, a list, floats, an optional
/// float, a map, an enum and a byte list.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Record {
    id: u64,
    name: String,
    tags: Vec<String>,
    score: f64,
    ratio: Option<f64>,
    attrs: BTreeMap<String, i64>,
    kind: Kind,
    blob: Vec<u8>,
}

/// The three enum shapes serde knows: unit, newtype and struct variants.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Kind {
    Plain,
    Tagged(u32),
    Named { label: String, weight: i16 },
}

fn same_f64(a: f64, b: f64) -> bool {
    a.to_bits() == b.to_bits()
}

impl Subject for Record {
    const NAME: &'static str = "Record";
    // The worst element is a tag: an empty string of one input byte becomes a 24-byte
    // `String` in `tags`, tripled by growth and realloc (72); map entries cost less per
    // byte (a distinct key takes at least two bytes, a B-tree slot about 40).
    const AMP: usize = 96;
    // `tags`, `blob` (and their elements) are never open at once with another pre-sized
    // sequence: one level.
    const PRESIZED_LEVELS: usize = 1;

    fn same(&self, other: &Self) -> bool {
        let kind = match (&self.kind, &other.kind) {
            (Kind::Plain, Kind::Plain) => true,
            (Kind::Tagged(a), Kind::Tagged(b)) => a == b,
            (
                Kind::Named { label, weight },
                Kind::Named {
                    label: label2,
                    weight: weight2,
                },
            ) => label == label2 && weight == weight2,
            _ => false,
        };
        let ratio = match (self.ratio, other.ratio) {
            (Some(a), Some(b)) => same_f64(a, b),
            (a, b) => a.is_none() && b.is_none(),
        };
        kind && ratio
            && self.id == other.id
            && self.name == other.name
            && self.tags == other.tags
            && same_f64(self.score, other.score)
            && self.attrs == other.attrs
            && self.blob == other.blob
    }

    fn generate(g: &mut Gen<'_>, json: bool) -> Self {
        let tags = (0..g.below(5)).map(|_| g.string(12)).collect();
        let attrs = (0..g.below(5))
            .map(|_| (g.string(8), g.u64() as i64))
            .collect();
        let kind = match g.below(3) {
            0 => Kind::Plain,
            1 => Kind::Tagged(g.u64() as u32),
            _ => Kind::Named {
                label: g.string(8),
                weight: g.u64() as i16,
            },
        };
        let ratio = if g.byte().is_multiple_of(2) {
            None
        } else {
            Some(g.f64(json))
        };
        Self {
            id: g.u64(),
            name: g.string(16),
            tags,
            score: g.f64(json),
            ratio,
            attrs,
            kind,
            blob: (0..g.below(16)).map(|_| g.byte()).collect(),
        }
    }
}

impl Subject for serde_json::Value {
    const NAME: &'static str = "serde_json::Value";
    // A `Value` is 32 bytes; the costliest shape per input byte is an array of one-entry
    // objects (`{"":0}` is 3 bytes of MessagePack): each allocates a B-tree leaf of about
    // 600 bytes, about 220 bytes per input byte.
    const AMP: usize = 256;
    // serde_json builds arrays and objects by pushing, without size hints.
    const PRESIZED_LEVELS: usize = 0;

    fn same(&self, other: &Self) -> bool {
        self == other
    }

    fn generate(g: &mut Gen<'_>, _json: bool) -> Self {
        g.value(3)
    }
}

/// Builds values from fuzz input bytes: every byte string gives some value (bytes past
/// the end read as zero), and small changes to the bytes give small changes to the value,
/// which is what a coverage-guided fuzzer needs to explore.
#[derive(Debug)]
pub(crate) struct Gen<'a> {
    data: &'a [u8],
    pos: usize,
}

/// Characters that stress encoders: quotes, escapes, controls, multi-byte and the largest
/// code points.
const AWKWARD_CHARS: &[char] = &[
    '"',
    '\\',
    '/',
    '\n',
    '\r',
    '\t',
    '\0',
    '\u{1f}',
    '\u{7f}',
    'é',
    'ß',
    '€',
    '日',
    '\u{2028}',
    '\u{FEFF}',
    '\u{FFFD}',
    '\u{FFFF}',
    '\u{1F600}',
    '\u{10FFFF}',
    ' ',
];

impl<'a> Gen<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    pub(crate) fn byte(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    pub(crate) fn u64(&mut self) -> u64 {
        let mut bytes = [0u8; 8];
        for b in &mut bytes {
            *b = self.byte();
        }
        u64::from_le_bytes(bytes)
    }

    /// A number in `0..n` (`n` ≤ 256).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        usize::from(self.byte()) % n
    }

    /// Any `f64`, or only finite ones (JSON has no NaN or infinities).
    pub(crate) fn f64(&mut self, finite: bool) -> f64 {
        let x = f64::from_bits(self.u64());
        if finite && !x.is_finite() {
            // Clear the exponent's top bit: a finite number with the same mantissa.
            f64::from_bits(x.to_bits() & !(1 << 62))
        } else {
            x
        }
    }

    pub(crate) fn char(&mut self) -> char {
        match self.byte() {
            b @ 0x20..=0x7e => char::from(b),
            b @ 0x80..=0xbf => AWKWARD_CHARS[usize::from(b) % AWKWARD_CHARS.len()],
            b @ 0xc0..=0xff => {
                let code = u32::from(b & 0x3f) << 16 | u32::from(self.byte()) << 8;
                char::from_u32(code | u32::from(self.byte())).unwrap_or('\u{FFFD}')
            }
            b => char::from(b),
        }
    }

    pub(crate) fn string(&mut self, max_chars: usize) -> String {
        let len = self.below(max_chars + 1);
        (0..len).map(|_| self.char()).collect()
    }

    /// A time the envelope can hold: any `u64` of nanoseconds after the Unix epoch.
    pub(crate) fn time(&mut self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_nanos(self.u64())
    }

    pub(crate) fn value(&mut self, depth: usize) -> serde_json::Value {
        use serde_json::Value;
        let choices = if depth == 0 { 6 } else { 8 };
        match self.below(choices) {
            0 => Value::Null,
            1 => Value::Bool(self.byte() % 2 == 1),
            2 => Value::from(self.u64()),
            3 => Value::from(self.u64() as i64),
            4 => serde_json::Number::from_f64(self.f64(true)).map_or(Value::Null, Value::Number),
            5 => Value::String(self.string(16)),
            6 => Value::Array((0..self.below(5)).map(|_| self.value(depth - 1)).collect()),
            _ => Value::Object(
                (0..self.below(5))
                    .map(|_| (self.string(8), self.value(depth - 1)))
                    .collect(),
            ),
        }
    }
}

/// Every check of a fuzz target for codec `C`, on one input.
pub(crate) fn check<C: Codec + Default>(data: &[u8]) {
    check_bytes::<C>(data);
    check_round_trip::<C>(data);
}

/// Check 1: `data` as a hostile envelope, decoded as every [`Subject`].
pub(crate) fn check_bytes<C: Codec + Default>(data: &[u8]) {
    decode_as::<String, C>(data);
    decode_as::<Vec<u64>, C>(data);
    decode_as::<Record, C>(data);
    decode_as::<serde_json::Value, C>(data);
}

fn decode_as<V: Subject, C: Codec + Default>(data: &[u8]) {
    let codec = C::default();
    let name = V::NAME;
    let (result, peak) = peak_bytes(|| decode_entry::<V, C>(&codec, data, DEFAULT_MAX_VALUE_BYTES));
    let bound = alloc_bound::<V, C>(data.len());
    assert!(
        peak <= bound,
        "{name}, codec {}: decoding {} bytes held {peak} bytes at once (bound {bound})",
        C::ID,
        data.len()
    );

    // Bytes over the limit are refused before the codec sees them.
    if let Some(short) = data.len().checked_sub(1) {
        let (refused, peak) = peak_bytes(|| decode_entry::<V, C>(&codec, data, short));
        let err = refused.expect_err("bytes longer than the limit must be refused");
        assert!(err.is_decode(), "{name}: a refusal is a decode error");
        assert!(
            peak <= REFUSAL,
            "{name}: refusing {} bytes held {peak} bytes",
            data.len()
        );
    }

    let entry = match result {
        Err(err) => {
            assert!(err.is_decode(), "{name}: every failure is a decode error");
            return;
        }
        Ok(entry) => entry,
    };
    // A limit equal to the length accepts the same entry.
    let exact = decode_entry::<V, C>(&codec, data, data.len())
        .expect("a limit equal to the length must accept the entry");
    assert!(exact.value.same(&entry.value) && exact.written_at == entry.written_at);
    // Only a well-formed header decodes.
    assert!(data.len() >= HEADER_LEN);
    assert_eq!(data[0], ENVELOPE_VERSION);
    assert_eq!(data[1], C::ID);
    let nanos = u64::from_be_bytes(data[2..HEADER_LEN].try_into().expect("8 bytes"));
    assert_eq!(
        entry.written_at,
        SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos)
    );
    // What decodes encodes again, to bytes that decode to the same entry.
    let again = encode_entry(&codec, &entry, DEFAULT_MAX_VALUE_BYTES)
        .unwrap_or_else(|e| panic!("{name}: a decoded value must encode again: {e}"));
    let back: Entry<V> = decode_entry(&codec, &again, DEFAULT_MAX_VALUE_BYTES)
        .unwrap_or_else(|e| panic!("{name}: a re-encoded value must decode: {e}"));
    assert!(
        back.value.same(&entry.value),
        "{name}: re-encoding changed the value: {:?} became {:?}",
        entry.value,
        back.value
    );
    assert_eq!(back.written_at, entry.written_at);
}

/// Check 2: values generated from `data` survive `encode_entry` → `decode_entry`.
pub(crate) fn check_round_trip<C: Codec + Default>(data: &[u8]) {
    let json = C::ID == Json::ID;
    let mut g = Gen::new(data);
    let written_at = g.time();
    round_trip::<String, C>(String::generate(&mut g, json), written_at);
    round_trip::<Vec<u64>, C>(Vec::generate(&mut g, json), written_at);
    round_trip::<Record, C>(Record::generate(&mut g, json), written_at);
    round_trip::<serde_json::Value, C>(serde_json::Value::generate(&mut g, json), written_at);
    // A time before the epoch has no envelope form: refused, as a decode error.
    let before = Entry::new(0u8, SystemTime::UNIX_EPOCH - Duration::from_nanos(1));
    assert!(
        encode_entry(&C::default(), &before, DEFAULT_MAX_VALUE_BYTES)
            .expect_err("a time before 1970 must be refused")
            .is_decode()
    );
}

fn round_trip<V: Subject, C: Codec + Default>(value: V, written_at: SystemTime) {
    let codec = C::default();
    let name = V::NAME;
    let entry = Entry::new(value, written_at);
    let bytes = encode_entry(&codec, &entry, DEFAULT_MAX_VALUE_BYTES)
        .unwrap_or_else(|e| panic!("{name}: {:?} must encode: {e}", entry.value));
    assert_eq!(bytes[0], ENVELOPE_VERSION);
    assert_eq!(bytes[1], C::ID);
    let back: Entry<V> = decode_entry(&codec, &bytes, bytes.len())
        .unwrap_or_else(|e| panic!("{name}: {:?} must decode after encoding: {e}", entry.value));
    assert!(
        back.value.same(&entry.value),
        "{name}, codec {}: {:?} came back as {:?}",
        C::ID,
        entry.value,
        back.value
    );
    assert_eq!(back.written_at, entry.written_at, "{name}: written_at");
    let refused = encode_entry(&codec, &entry, bytes.len() - 1)
        .expect_err("an entry over the limit must be refused");
    assert!(refused.is_decode());
}

/// The seed corpus of the target for codec `C`: valid envelopes of each type, of the other
/// codec, truncated ones, bad headers and hostile payloads. `tests/fuzz_corpus.rs` checks
/// that `tests/corpus/envelope_{msgpack,json}/` holds exactly these files.
pub(crate) fn seeds<C: Codec + Default>() -> Vec<(String, Vec<u8>)> {
    let codec = C::default();
    let at = SystemTime::UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
    let mut seeds = Vec::new();
    let mut valid = |name: &str, bytes: Vec<u8>| {
        seeds.push((format!("valid-{name}"), bytes.clone()));
        seeds.push((
            format!("truncated-{name}"),
            bytes[..bytes.len() / 2 + 5].to_vec(),
        ));
        bytes
    };
    let string = valid(
        "string",
        encode_entry(
            &codec,
            &Entry::new("héllo \"wörld\"\n".to_owned(), at),
            1024,
        )
        .unwrap(),
    );
    valid(
        "vec-u64",
        encode_entry(&codec, &Entry::new(vec![0, 1, 300, u64::MAX], at), 1024).unwrap(),
    );
    let record = Record {
        id: 42,
        name: "Ada".into(),
        tags: vec!["a".into(), "".into(), "日本".into()],
        score: -1.5e-300,
        ratio: Some(0.25),
        attrs: [("x".to_owned(), -7), ("y".to_owned(), i64::MAX)].into(),
        kind: Kind::Named {
            label: "n".into(),
            weight: -3,
        },
        blob: vec![0, 255, 7],
    };
    valid(
        "record",
        encode_entry(&codec, &Entry::new(record, at), 1024).unwrap(),
    );
    let value = serde_json::json!({"a": [1, -2, 3.5, null, true], "b": {"c": "d"}, "": []});
    valid(
        "value",
        encode_entry(&codec, &Entry::new(value, at), 1024).unwrap(),
    );

    let header = |id: u8| {
        let mut h = vec![ENVELOPE_VERSION, id];
        h.extend_from_slice(&1_700_000_000_000_000_000u64.to_be_bytes());
        h
    };
    let with_payload = |payload: &[u8]| [&header(C::ID)[..], payload].concat();
    let mut wrong_version = string.clone();
    wrong_version[0] = ENVELOPE_VERSION + 1;
    let mut max_time = string.clone();
    max_time[2..HEADER_LEN].copy_from_slice(&u64::MAX.to_be_bytes());
    let other_id = if C::ID == MessagePack::ID {
        Json::ID
    } else {
        MessagePack::ID
    };
    let mut other_codec = string.clone();
    other_codec[1] = other_id;
    seeds.extend([
        ("empty".to_owned(), Vec::new()),
        ("short-header".to_owned(), header(C::ID)[..5].to_vec()),
        ("header-only".to_owned(), header(C::ID)),
        ("wrong-version".to_owned(), wrong_version),
        ("other-codec-id".to_owned(), other_codec),
        ("max-written-at".to_owned(), max_time),
    ]);

    let hostile: Vec<(&str, Vec<u8>)> = if C::ID == MessagePack::ID {
        vec![
            // array32, map32, str32, bin32 and ext32 headers claiming 2^32-1, then little.
            ("array32-claim", vec![0xdd, 0xff, 0xff, 0xff, 0xff, 0x01]),
            (
                "map32-claim",
                vec![0xdf, 0xff, 0xff, 0xff, 0xff, 0xa1, b'a', 0x01],
            ),
            ("str32-claim", vec![0xdb, 0xff, 0xff, 0xff, 0xff, b'a']),
            ("bin32-claim", vec![0xc6, 0xff, 0xff, 0xff, 0xff, 0x00]),
            ("ext32-claim", vec![0xc9, 0xff, 0xff, 0xff, 0xff, 0x01]),
            // Nested claims: each level would pre-size a sequence.
            (
                "nested-array32-claims",
                [[0xdd, 0xff, 0xff, 0xff, 0xff]; 8].concat(),
            ),
            // A struct whose string list claims 2^32-1 entries.
            (
                "record-tags-claim",
                [
                    &[0x82, 0xa2, b'i', b'd', 0x01, 0xa4, b't', b'a', b'g', b's'][..],
                    &[0xdd, 0xff, 0xff, 0xff, 0xff, 0xa0],
                ]
                .concat(),
            ),
            // Nested one-element arrays around a nil: rmp-serde's depth limit is 1024, so
            // 1023 levels decode (as a `serde_json::Value`) and 1100 are refused.
            ("nested-200", [vec![0x91; 200], vec![0xc0]].concat()),
            ("nested-1023", [vec![0x91; 1023], vec![0xc0]].concat()),
            ("nested-1100", [vec![0x91; 1100], vec![0xc0]].concat()),
            // Many one-entry maps: the costliest shape per byte for serde_json::Value.
            (
                "array-of-small-maps",
                [vec![0xdc, 0x01, 0x00], [0x81, 0xa0, 0xc0].repeat(256)].concat(),
            ),
            (
                "nan-and-inf",
                vec![
                    0x92, 0xcb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0, 0xca, 0x7f, 0x80, 0, 0,
                ],
            ),
        ]
    } else {
        vec![
            ("nested-100", [b"[".repeat(100), b"]".repeat(100)].concat()),
            ("nested-unclosed-5000", b"[".repeat(5000)),
            (
                "escapes",
                br#""\u0000\ud83d\ude00\"\\\/\b\f\n\r\t\u00e9""#.to_vec(),
            ),
            ("lone-surrogate", br#""\ud800""#.to_vec()),
            ("huge-exponent", b"1e999999".to_vec()),
            ("huge-integer", b"184467440737095516160".to_vec()),
            ("duplicate-keys", br#"{"a":1,"a":2}"#.to_vec()),
            (
                "array-of-small-objects",
                [b"[".to_vec(), b"{\"\":0},".repeat(200), b"{}]".to_vec()].concat(),
            ),
            ("trailing-garbage", br#""ok" x"#.to_vec()),
        ]
    };
    seeds.extend(
        hostile
            .into_iter()
            .map(|(name, payload)| (format!("hostile-{name}"), with_payload(&payload))),
    );
    seeds
}
