//! How cache keys become NATS KV keys, and prefix validation.
//!
//! NATS KV keys must match `^[-/_=.a-zA-Z0-9]+$` and must not start or end with `.`; a
//! `.` separates subject tokens, so `..` (an empty token) is not allowed either. Cache keys
//! are any UTF-8 string, so every key is encoded (Go bug 24, which hashed keys with
//! `md5("lock:" + key)` and so let a data key collide with a lock key, is avoided by
//! namespaces; Go's md5 is avoided by a reversible encoding):
//!
//! - The KV key is `{prefix}.v.{encoded}` for data and `{prefix}.l.{encoded}` for locks:
//!   the namespace token comes right after the validated prefix and the encoded key is a
//!   single token, so no data key equals a lock key.
//! - **Plain encoding.** Each byte of the key's UTF-8 that is one of `[-/_a-zA-Z0-9]` is
//!   kept as is; every other byte, including `=` and `.`, becomes `=` followed by two
//!   upper-case hexadecimal digits (`.` → `=2E`, `=` → `=3D`, space → `=20`, `ü` →
//!   `=C3=BC`). The empty key is written `=`. So `user-42/profile` stays
//!   `user-42/profile`, and `user.42` becomes `user=2E42`.
//! - **Hashed encoding.** When the plain encoding would be longer than
//!   [`MAX_ENCODED_KEY_LEN`] (512) bytes, the key is written `==` followed by the 32
//!   lower-case hex digits of its 128-bit FNV-1a hash. Such entries carry the full key in
//!   the stored value, and a read checks it, so two long keys whose hashes collide never
//!   read each other's value (a collision only costs a miss).
//!
//! Why this is injective: a plain encoding is a sequence of single safe characters and
//! three-character `=XX` escapes, and it can be decoded left to right without ambiguity
//! (a `=` always starts an escape because `=` itself is escaped), so distinct keys get
//! distinct plain encodings. The empty-key marker `=` is not a complete escape, and the
//! hashed marker `==` can never occur in a plain encoding (an escape's `=` is followed by
//! a hex digit), so the three forms never meet. The encoding never emits `.`, so it never
//! forms a leading, trailing or empty token.

use echocache_core::BuildError;

/// The longest encoded key written as is; longer encodings are hashed.
///
/// The whole subject (`$KV.{bucket}.{prefix}.v.{encoded}`) must fit in the NATS protocol's
/// control line (4 KiB by default) together with the other protocol fields; 512 bytes for
/// the key plus at most [`MAX_PREFIX_LEN`] for the prefix leaves ample room.
pub const MAX_ENCODED_KEY_LEN: usize = 512;

/// The longest accepted prefix, in bytes.
pub const MAX_PREFIX_LEN: usize = 256;

/// The marker that starts a hashed key.
const HASH_MARKER: &str = "==";
/// The encoding of the empty key.
const EMPTY_MARKER: &str = "=";
const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// A key's encoded form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EncodedKey {
    /// The KV key token.
    pub(crate) token: String,
    /// Whether the token is a hash (the stored value then carries the full key).
    pub(crate) hashed: bool,
}

/// Whether `b` is kept as is by the plain encoding.
fn is_plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'/' | b'_')
}

/// Encodes a cache key into one KV key token (see the module docs).
pub(crate) fn encode_key(key: &str) -> EncodedKey {
    if key.is_empty() {
        return EncodedKey {
            token: EMPTY_MARKER.to_owned(),
            hashed: false,
        };
    }
    let mut token = String::with_capacity(key.len());
    for &b in key.as_bytes() {
        if is_plain(b) {
            token.push(char::from(b));
        } else {
            token.push('=');
            token.push(char::from(HEX_UPPER[usize::from(b >> 4)]));
            token.push(char::from(HEX_UPPER[usize::from(b & 0x0f)]));
        }
        if token.len() > MAX_ENCODED_KEY_LEN {
            return EncodedKey {
                token: format!("{HASH_MARKER}{:032x}", fnv1a_128(key.as_bytes())),
                hashed: true,
            };
        }
    }
    EncodedKey {
        token,
        hashed: false,
    }
}

/// Decodes a plain encoding back into the key; `None` for a hashed or malformed token.
///
/// Only the tests need it: it is the proof that the plain encoding is injective.
#[cfg(test)]
pub(crate) fn decode_key(token: &str) -> Option<String> {
    if token == EMPTY_MARKER {
        return Some(String::new());
    }
    if token.is_empty() {
        return None;
    }
    let bytes = token.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if is_plain(b) {
            out.push(b);
            i += 1;
        } else if b == b'=' {
            let hex = |c: u8| HEX_UPPER.iter().position(|&h| h == c);
            let hi = hex(*bytes.get(i + 1)?)?;
            let lo = hex(*bytes.get(i + 2)?)?;
            let byte = u8::try_from(hi << 4 | lo).ok()?;
            if is_plain(byte) {
                // Safe bytes are never escaped: this token is not a canonical encoding.
                return None;
            }
            out.push(byte);
            i += 3;
        } else {
            return None;
        }
    }
    String::from_utf8(out).ok()
}

/// 128-bit FNV-1a: stable across Rust versions and platforms (unlike `DefaultHasher`),
/// which matters because every process sharing the bucket must compute the same key.
fn fnv1a_128(bytes: &[u8]) -> u128 {
    const OFFSET_BASIS: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    bytes.iter().fold(OFFSET_BASIS, |hash, &b| {
        (hash ^ u128::from(b)).wrapping_mul(PRIME)
    })
}

/// Checks a store prefix: non-empty, at most [`MAX_PREFIX_LEN`] bytes, dot-separated
/// tokens of `[-/_=a-zA-Z0-9]`, no leading, trailing or doubled dot (Go bug 25).
pub(crate) fn validate_prefix(prefix: &str) -> Result<(), BuildError> {
    let invalid = |reason| BuildError::InvalidSetting {
        setting: "prefix",
        reason,
    };
    if prefix.is_empty() {
        return Err(invalid("the prefix must not be empty"));
    }
    if prefix.len() > MAX_PREFIX_LEN {
        return Err(invalid("the prefix must be at most 256 bytes long"));
    }
    if prefix.starts_with('.') || prefix.ends_with('.') {
        return Err(invalid("the prefix must not start or end with `.`"));
    }
    if prefix.contains("..") {
        return Err(invalid("the prefix must not contain an empty token (`..`)"));
    }
    if !prefix
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'/' | b'_' | b'=' | b'.'))
    {
        return Err(invalid(
            "the prefix may only contain `-/_=`, ASCII letters, digits and inner dots",
        ));
    }
    Ok(())
}

/// Checks a prefix for the Go echocache's layout: the Go library trims every trailing dot
/// (`test.1.` is `test.1`), and what is left must be a valid prefix ([`validate_prefix`]:
/// Go accepted any prefix and then failed on every operation, bug 25) whose last token is
/// not `v` or `l`: the Go keys `{prefix}.{md5}` of the prefix `app.v` would be data keys of
/// the native store `app` (a 32-hex-digit key encodes to itself).
pub(crate) fn validate_go_prefix(prefix: &str) -> Result<&str, BuildError> {
    let trimmed = prefix.trim_end_matches('.');
    validate_prefix(trimmed)?;
    if matches!(trimmed.rsplit('.').next(), Some("v" | "l")) {
        return Err(BuildError::InvalidSetting {
            setting: "prefix",
            reason: "the last token must not be `v` or `l`: the Go keys would land in the \
                     namespaces of a native store (`{prefix}.v.`, `{prefix}.l.`)",
        });
    }
    Ok(trimmed)
}

/// The lower-case hex of the MD5 of `text`: the Go echocache's key token.
fn md5_hex(text: &str) -> String {
    use md5::{Digest, Md5};
    const HEX_LOWER: &[u8; 16] = b"0123456789abcdef";
    let digest = Md5::digest(text.as_bytes());
    let mut out = String::with_capacity(32);
    for byte in digest {
        out.push(char::from(HEX_LOWER[usize::from(byte >> 4)]));
        out.push(char::from(HEX_LOWER[usize::from(byte & 0x0f)]));
    }
    out
}

/// Which keys a [`KeySpace`] builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// `{prefix}.v.{encoded}` and `{prefix}.l.{encoded}`.
    Native,
    /// The Go echocache's `{prefix}.{md5(key)}` and `{prefix}.{md5("lock:" + key)}`, the
    /// prefix without its trailing dots.
    Go,
}

/// The KV keys of one store: `{prefix}.v.` for data, `{prefix}.l.` for locks (or the Go
/// layout).
#[derive(Debug, Clone)]
pub(crate) struct KeySpace {
    prefix: String,
    /// The prefix the keys start with (the Go layout trims trailing dots).
    base: String,
    layout: Layout,
}

impl KeySpace {
    /// A key space for a prefix that passed [`validate_prefix`].
    pub(crate) fn new(prefix: &str) -> Result<Self, BuildError> {
        validate_prefix(prefix)?;
        Ok(Self {
            prefix: prefix.to_owned(),
            base: prefix.to_owned(),
            layout: Layout::Native,
        })
    }

    /// The Go echocache's layout, for a prefix that passed [`validate_go_prefix`].
    pub(crate) fn go(prefix: &str) -> Result<Self, BuildError> {
        let base = validate_go_prefix(prefix)?;
        Ok(Self {
            base: base.to_owned(),
            prefix: prefix.to_owned(),
            layout: Layout::Go,
        })
    }

    /// The prefix, as given.
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The data key of `key` and whether it is hashed (the stored value then carries the
    /// full key; never in the Go layout, whose values are Go's).
    pub(crate) fn data_key(&self, key: &str) -> (String, bool) {
        match self.layout {
            Layout::Native => self.key_in("v", key),
            Layout::Go => (format!("{}.{}", self.base, md5_hex(key)), false),
        }
    }

    /// The lock key of `key` (in the Go layout, also the data key of `lock:{key}`: Go bug
    /// 24, kept because it is what Go services use).
    pub(crate) fn lock_key(&self, key: &str) -> String {
        match self.layout {
            Layout::Native => self.key_in("l", key).0,
            Layout::Go => format!("{}.{}", self.base, md5_hex(&format!("lock:{key}"))),
        }
    }

    fn key_in(&self, namespace: &str, key: &str) -> (String, bool) {
        let encoded = encode_key(key);
        (
            format!("{}.{namespace}.{}", self.base, encoded.token),
            encoded.hashed,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn go_keys_are_the_go_librarys_golden_keys() {
        // From a running Go echocache v1.2.0 (docs: go-wire-format.md, go-echocache-spec.md).
        let gonats = KeySpace::go("gonats").unwrap();
        assert_eq!(
            gonats.data_key("w1").0,
            "gonats.a95dcb8aebb202efeedb10d5538edeb9"
        );
        assert_eq!(
            gonats.lock_key("w1"),
            "gonats.880c82243b6db5c1231aad15b0b937f9"
        );
        let plain = KeySpace::go("gonatsp").unwrap();
        assert_eq!(
            plain.data_key("s1").0,
            "gonatsp.8ddf878039b70767c4a5bcf4f0c4f65e"
        );
        let dotted = KeySpace::go("test.1.").unwrap();
        assert_eq!(dotted.prefix(), "test.1.");
        assert_eq!(
            dotted.data_key("test01").0,
            "test.1.0e698a8ffc1a0af622c7b4db3cb750cc"
        );
        let t1est = KeySpace::go("t1est").unwrap();
        assert_eq!(
            t1est.lock_key("FirstKey"),
            "t1est.ff7f8b0e4f85390274070b66e54b430e"
        );
        // Go bug 24, kept: the data of `lock:x` is the lock of `x`.
        assert_eq!(t1est.data_key("lock:x").0, t1est.lock_key("x"));
        assert!(!t1est.data_key("x").1, "Go values carry no key frame");
    }

    #[test]
    fn go_prefixes_that_reach_into_a_native_store_or_are_invalid_are_refused() {
        for prefix in [
            "app.v", "app.l", "v", "l.", "app.v..", "", "...", "a b", "a..b",
        ] {
            assert!(KeySpace::go(prefix).is_err(), "{prefix:?}");
        }
        for prefix in ["app", "app.vv", "v.app", "test.1.", "lock"] {
            assert!(KeySpace::go(prefix).is_ok(), "{prefix:?}");
        }
    }

    /// Every store (layout, prefix) the constructors accept among short prefixes, with
    /// every KV key it writes for short keys (and the 32-hex-digit keys that look like
    /// Go's tokens): no two different stores share a KV key. Without the Go prefix rule
    /// they do (checked by the last assertion).
    #[test]
    fn brute_force_finds_no_collision_between_stores() {
        const PARTS: [&str; 5] = ["a", "v", "l", ".", "lock"];
        let strings = |max| echocache_testkit::concatenations(&PARTS, max);
        let prefixes = strings(4);
        let mut keys = strings(3);
        keys.extend(["a", "lock:a", "x"].map(md5_hex));
        keys.extend(["a", "x"].map(|k| md5_hex(&format!("lock:{k}"))));
        let collisions = |stores: &[(String, KeySpace)]| {
            let mut owners: HashMap<String, usize> = HashMap::new();
            let mut met = Vec::new();
            for (i, (_, space)) in stores.iter().enumerate() {
                for key in &keys {
                    for physical in [space.data_key(key).0, space.lock_key(key)] {
                        match owners.insert(physical, i) {
                            Some(j) if j != i => {
                                met.push((stores[j].0.clone(), stores[i].0.clone()))
                            }
                            _ => {}
                        }
                    }
                }
            }
            met
        };
        let mut stores = Vec::new();
        for prefix in &prefixes {
            if let Ok(native) = KeySpace::new(prefix) {
                stores.push((format!("native {prefix}"), native));
            }
            // Go prefixes that differ only by trailing dots are one Go store.
            if !prefix.ends_with('.')
                && let Ok(go) = KeySpace::go(prefix)
            {
                stores.push((format!("go {prefix}"), go));
            }
        }
        assert!(stores.len() > 100, "{} stores", stores.len());
        let met = collisions(&stores);
        assert!(met.is_empty(), "{:?}", &met[..met.len().min(5)]);
        // The brute force has teeth: a Go store `a.v` (refused) meets the native `a`.
        let unchecked = KeySpace {
            prefix: "a.v".into(),
            base: "a.v".into(),
            layout: Layout::Go,
        };
        stores.push(("go a.v (unchecked)".into(), unchecked));
        assert!(!collisions(&stores).is_empty());
    }

    /// NATS KV's own rule (async-nats `is_valid_key`, nats.go `keyValid`), plus the
    /// subject rule that tokens are non-empty.
    fn is_legal_kv_key(key: &str) -> bool {
        !key.is_empty()
            && !key.starts_with('.')
            && !key.ends_with('.')
            && !key.contains("..")
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-/_=.".contains(&b))
    }

    /// A small xorshift generator: deterministic, std only.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            usize::try_from(self.next() % n as u64).unwrap()
        }
    }

    /// Encodes every key, checks legality and round trip, and that no two keys share a
    /// token.
    fn check_all<'a>(keys: impl IntoIterator<Item = &'a str>) -> usize {
        let mut seen: HashMap<String, String> = HashMap::new();
        let space = KeySpace::new("app.cache").unwrap();
        for key in keys {
            let encoded = encode_key(key);
            let (data, hashed) = space.data_key(key);
            assert_eq!(hashed, encoded.hashed);
            assert!(
                is_legal_kv_key(&data),
                "illegal data key {data:?} for {key:?}"
            );
            assert!(is_legal_kv_key(&space.lock_key(key)));
            assert!(!encoded.token.contains('.'), "{key:?}");
            if encoded.hashed {
                assert_eq!(encoded.token.len(), 2 + 32);
                assert_eq!(decode_key(&encoded.token), None);
            } else {
                assert!(encoded.token.len() <= MAX_ENCODED_KEY_LEN);
                assert_eq!(
                    decode_key(&encoded.token).as_deref(),
                    Some(key),
                    "round trip"
                );
            }
            if let Some(other) = seen.insert(encoded.token.clone(), key.to_owned()) {
                assert_eq!(other, key, "{other:?} and {key:?} collide");
            }
        }
        seen.len()
    }

    #[test]
    fn safe_keys_stay_readable() {
        assert_eq!(encode_key("user-42/profile_A").token, "user-42/profile_A");
        assert_eq!(encode_key("user.42").token, "user=2E42");
        assert_eq!(encode_key("a=b").token, "a=3Db");
        assert_eq!(encode_key("").token, "=");
        assert_eq!(encode_key(" *>:").token, "=20=2A=3E=3A");
        assert_eq!(encode_key("ü").token, "=C3=BC");
        let space = KeySpace::new("svc.cache").unwrap();
        assert_eq!(space.data_key("k").0, "svc.cache.v.k");
        assert_eq!(space.lock_key("k"), "svc.cache.l.k");
    }

    #[test]
    fn awkward_keys_do_not_collide() {
        let keys = [
            "",
            " ",
            ".",
            "..",
            "...",
            ".a",
            "a.",
            "a..b",
            "*",
            ">",
            "a.*",
            "a.>",
            ":",
            "=",
            "==",
            "=2E",
            "=3D",
            "lock:x",
            "x",
            "l.x",
            "v.x",
            "spaces and * > . : ünï/☃",
            "\0",
            "\u{7f}",
            "tab\tnew\nline",
            "日本語",
            "=C3=BC",
            "ü",
            "A",
            "a",
        ];
        assert_eq!(check_all(keys), keys.len());
    }

    #[test]
    fn exhaustive_short_keys_round_trip() {
        // Every string of up to three characters over an alphabet mixing safe, escaped and
        // multi-byte characters: 1 + 12 + 144 + 1728 keys.
        let alphabet = ['a', 'Z', '0', '-', '/', '_', '=', '.', ' ', '*', 'E', 'é'];
        let mut keys = vec![String::new()];
        let mut last = vec![String::new()];
        for _ in 0..3 {
            let next: Vec<String> = last
                .iter()
                .flat_map(|p| alphabet.iter().map(move |c| format!("{p}{c}")))
                .collect();
            keys.extend(next.iter().cloned());
            last = next;
        }
        assert_eq!(check_all(keys.iter().map(String::as_str)), keys.len());
    }

    #[test]
    fn random_keys_round_trip() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let pool: Vec<char> = (0u32..0x80)
            .filter_map(char::from_u32)
            .chain(['é', 'ß', '€', '☃', '日', '\u{1F600}', '\u{10FFFF}'])
            .collect();
        let mut keys = Vec::new();
        for _ in 0..20_000 {
            let len = rng.below(24);
            keys.push(
                (0..len)
                    .map(|_| pool[rng.below(pool.len())])
                    .collect::<String>(),
            );
        }
        keys.sort();
        keys.dedup();
        assert_eq!(check_all(keys.iter().map(String::as_str)), keys.len());
    }

    #[test]
    fn long_keys_are_hashed_with_a_distinct_marker() {
        let fits = "k".repeat(MAX_ENCODED_KEY_LEN);
        assert_eq!(encode_key(&fits).token, fits);
        let long = "k".repeat(MAX_ENCODED_KEY_LEN + 1);
        let escaped = ".".repeat(MAX_ENCODED_KEY_LEN / 3 + 1);
        let unicode = "日".repeat(200);
        let also_long = format!("{long}x");
        let keys = [fits.as_str(), &long, &escaped, &unicode, &also_long];
        assert_eq!(check_all(keys), keys.len());
        for key in &keys[1..] {
            let encoded = encode_key(key);
            assert!(encoded.hashed);
            assert!(encoded.token.starts_with("=="));
        }
        // Deterministic across calls and processes.
        assert_eq!(encode_key(&long), encode_key(&long));
        assert_eq!(
            format!("{:032x}", fnv1a_128(b"")),
            "6c62272e07bb014262b821756295c58d"
        );
        assert_eq!(
            format!("{:032x}", fnv1a_128(b"a")),
            "d228cb696f1a8caf78912b704e4a8964"
        );
    }

    #[test]
    fn decode_rejects_non_canonical_tokens() {
        for token in ["", "==", "=2", "=zz", "=61", "a.b", "=2e", "a b"] {
            assert_eq!(decode_key(token), None, "{token:?}");
        }
    }

    #[test]
    fn prefixes_are_validated() {
        for good in ["a", "app", "app.cache", "a-b/c_d=e.F9", "x.y.z"] {
            assert!(validate_prefix(good).is_ok(), "{good:?}");
        }
        for bad in [
            "",
            ".",
            "..",
            ".a",
            "a.",
            "a..b",
            "a b",
            "a*",
            "a>",
            "a:b",
            "ü",
            "a\n",
            &"p".repeat(MAX_PREFIX_LEN + 1),
        ] {
            let err = validate_prefix(bad).unwrap_err();
            assert!(
                matches!(
                    err,
                    BuildError::InvalidSetting {
                        setting: "prefix",
                        ..
                    }
                ),
                "{bad:?}: {err:?}"
            );
        }
        assert_eq!(
            validate_prefix("").unwrap_err().to_string(),
            "invalid setting `prefix`: the prefix must not be empty"
        );
    }
}
