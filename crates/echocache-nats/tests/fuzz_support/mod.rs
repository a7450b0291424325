//! The checks of the `nats_key` fuzz target (`fuzz/fuzz_targets/nats_key.rs`), shared with
//! the corpus replay test `tests/fuzz_corpus.rs`: the fuzz package includes this file with
//! `#[path]`, so `cargo test` runs the very assertions the fuzzer runs.
//!
//! An input is split at `0xFF` bytes (never part of UTF-8): with two or more parts, the
//! first is a candidate prefix and the others are cache keys; otherwise the whole input is
//! one key. Bytes become text with `String::from_utf8_lossy`. For each key, under `app`,
//! under one more prefix of [`PREFIXES`] (which include prefixes of one another: `app`,
//! `app.v`, `app.l`, `app.v.x`; the input's length picks it) and under the candidate prefix
//! when the store accepts it:
//!
//! - the data and lock keys are legal NATS KV keys (`^[-/_=.a-zA-Z0-9]+$`, no leading or
//!   trailing dot, no empty token), written without the fuzz target's help by
//!   [`is_legal_kv_key`];
//! - they parse back, by [`parse_kv_key`], into exactly the prefix, the namespace (`v` or
//!   `l`) and the key (or, for a key whose plain encoding exceeds 512 bytes, the hashed
//!   marker `==` and 32 hex digits). Since every KV key parses back into the triple it came
//!   from, no two distinct (prefix, namespace, key) triples share a KV key: keys are
//!   injective, data never meets a lock, and two prefixes never see each other's entries;
//! - the token equals a reference encoding written here independently;
//! - the store accepts a prefix exactly when it is a legal KV key of at most 256 bytes.

use std::collections::HashMap;
use std::fmt::Write as _;

use echocache_nats::__fuzz::kv_keys;

/// Prefixes every key is also checked under: ordinary ones, ones made of the namespace
/// letters, ones that are prefixes of others, and one made of encoded-looking text.
pub(crate) const PREFIXES: &[&str] = &[
    "app",
    "app.v",
    "app.l",
    "app.v.x",
    "v",
    "l",
    "=2E",
    "a-b/c_d=e.F9",
];

/// The longest plain encoding; longer ones are hashed (`MAX_ENCODED_KEY_LEN`).
const MAX_PLAIN: usize = echocache_nats::MAX_ENCODED_KEY_LEN;

/// NATS KV's key rule (async-nats `is_valid_key`, nats.go `keyValid`) plus the subject rule
/// that no token is empty.
pub(crate) fn is_legal_kv_key(key: &str) -> bool {
    !key.is_empty()
        && !key.starts_with('.')
        && !key.ends_with('.')
        && !key.contains("..")
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-/_=.".contains(&b))
}

fn is_plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-/_".contains(&b)
}

/// The documented plain encoding, or `None` when it would exceed 512 bytes (the key is
/// then hashed).
pub(crate) fn reference_token(key: &str) -> Option<String> {
    if key.is_empty() {
        return Some("=".to_owned());
    }
    let mut token = String::new();
    for &b in key.as_bytes() {
        if is_plain(b) {
            token.push(char::from(b));
        } else {
            let _ = write!(token, "={b:02X}");
        }
    }
    (token.len() <= MAX_PLAIN).then_some(token)
}

/// Decodes a plain token back into its key; `None` when it is not a canonical encoding.
pub(crate) fn decode_token(token: &str) -> Option<String> {
    if token == "=" {
        return Some(String::new());
    }
    let bytes = token.as_bytes();
    if bytes.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if is_plain(bytes[i]) {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let hex = bytes.get(i + 1..i + 3)?;
        if bytes[i] != b'=' || !hex.iter().all(|h| matches!(h, b'0'..=b'9' | b'A'..=b'F')) {
            return None;
        }
        let byte = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
        if is_plain(byte) {
            return None;
        }
        out.push(byte);
        i += 3;
    }
    String::from_utf8(out).ok()
}

/// What a KV key names.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Name {
    /// A key with a plain encoding.
    Plain {
        prefix: String,
        ns: String,
        key: String,
    },
    /// A hashed key: its 32 hex digits.
    Hashed {
        prefix: String,
        ns: String,
        hash: String,
    },
}

/// Parses a KV key back: the last token is the encoded key (the encoding never writes a
/// `.`), the one before it the namespace, the rest the prefix.
pub(crate) fn parse_kv_key(kv_key: &str) -> Option<Name> {
    let mut parts = kv_key.rsplitn(3, '.');
    let token = parts.next()?;
    let ns = parts.next()?.to_owned();
    let prefix = parts.next()?.to_owned();
    if let Some(hash) = token.strip_prefix("==") {
        let hex = hash.len() == 32 && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        return hex.then(|| Name::Hashed {
            prefix,
            ns,
            hash: hash.to_owned(),
        });
    }
    Some(Name::Plain {
        prefix,
        ns,
        key: decode_token(token)?,
    })
}

/// Whether the store must accept `prefix`.
fn prefix_is_legal(prefix: &str) -> bool {
    prefix.len() <= echocache_nats::MAX_PREFIX_LEN && is_legal_kv_key(prefix)
}

/// Every check of the `nats_key` target, on one input.
pub(crate) fn check(data: &[u8]) {
    let parts: Vec<String> = data
        .split(|&b| b == 0xff)
        .map(|part| String::from_utf8_lossy(part).into_owned())
        .collect();
    let (candidate, keys) = match parts.split_first() {
        Some((first, rest)) if !rest.is_empty() => (Some(first.as_str()), rest),
        _ => (None, &parts[..]),
    };
    // "app", one more prefix of the list (chosen by the input's length, so that a run
    // covers them all) and the candidate when the store accepts it.
    let mut prefixes = vec!["app", PREFIXES[data.len() % PREFIXES.len()]];
    if let Some(candidate) = candidate {
        let accepted = kv_keys(candidate, "k").is_ok();
        assert_eq!(
            accepted,
            prefix_is_legal(candidate),
            "prefix {candidate:?}: accepted {accepted}"
        );
        if accepted {
            prefixes.push(candidate);
        }
    }
    let mut tokens: HashMap<String, &str> = HashMap::new();
    for key in keys {
        for &prefix in &prefixes {
            let token = check_key(prefix, key);
            // Distinct keys, distinct tokens (hashed tokens may collide: a read then
            // checks the key stored beside the value).
            if prefix == "app"
                && !token.starts_with("==")
                && let Some(other) = tokens.insert(token, key)
            {
                assert_eq!(other, key, "{other:?} and {key:?} share a token");
            }
        }
    }
}

/// Checks one key under one accepted prefix; returns its token.
fn check_key(prefix: &str, key: &str) -> String {
    let (data, lock, hashed) =
        kv_keys(prefix, key).unwrap_or_else(|e| panic!("prefix {prefix:?} refused: {e}"));
    for kv_key in [&data, &lock] {
        assert!(
            is_legal_kv_key(kv_key),
            "illegal KV key {kv_key:?} for {key:?}"
        );
    }
    assert_ne!(data, lock, "{key:?}: data and lock share a KV key");
    let expected = reference_token(key);
    assert_eq!(hashed, expected.is_none(), "{key:?}: hashed {hashed}");
    for (kv_key, ns) in [(&data, "v"), (&lock, "l")] {
        let parsed = parse_kv_key(kv_key)
            .unwrap_or_else(|| panic!("{kv_key:?} (for {key:?}) does not parse back"));
        match (parsed, &expected) {
            (
                Name::Plain {
                    prefix: p,
                    ns: n,
                    key: k,
                },
                Some(token),
            ) => {
                assert_eq!((p.as_str(), n.as_str(), k.as_str()), (prefix, ns, key));
                assert_eq!(kv_key, &format!("{prefix}.{ns}.{token}"));
            }
            (
                Name::Hashed {
                    prefix: p, ns: n, ..
                },
                None,
            ) => {
                assert_eq!((p.as_str(), n.as_str()), (prefix, ns));
            }
            (parsed, _) => panic!("{kv_key:?} for {key:?} parsed as {parsed:?}"),
        }
    }
    let token = data.rsplit('.').next().expect("a token").to_owned();
    // Hashing is deterministic.
    assert_eq!(kv_keys(prefix, key).expect("accepted").0, data);
    token
}

/// The seed corpus of the `nats_key` target: awkward keys (namespace look-alikes, encoded
/// forms, separators, the hashing boundary) and prefix/key splits.
pub(crate) fn seeds() -> Vec<(String, Vec<u8>)> {
    let keys: &[(&str, &str)] = &[
        ("empty", ""),
        ("dot", "."),
        ("dots", ".."),
        ("namespace-v", "v.x"),
        ("namespace-l", "l.x"),
        ("redis-namespace-v", "v:x"),
        ("redis-namespace-l", "l:x"),
        ("colon", ":"),
        ("redis-prefix-like", "a:v"),
        ("encoded-dot", "=2E"),
        ("hash-marker", "=="),
        ("escape-marker", "="),
        ("wildcards", "a.*.>"),
        ("unicode", "ünï ☃ 日本 \u{1F600}"),
        ("controls", "\0\t\n\u{7f}"),
        ("lowercase-escape", "=2e"),
        ("plain", "user-42/profile_A"),
    ];
    let mut seeds: Vec<(String, Vec<u8>)> = keys
        .iter()
        .map(|(name, key)| (format!("key-{name}"), key.as_bytes().to_vec()))
        .collect();
    seeds.extend([
        // The hashing boundary: 512 encoded bytes stay plain, 513 are hashed.
        ("key-512-plain".to_owned(), b"k".repeat(512)),
        ("key-513-plain".to_owned(), b"k".repeat(513)),
        ("key-170-dots".to_owned(), b".".repeat(170)),
        ("key-171-dots".to_owned(), b".".repeat(171)),
        ("key-57-cjk".to_owned(), "日".repeat(57).into_bytes()),
        (
            "invalid-utf8".to_owned(),
            vec![b'a', 0xc3, 0x28, 0xe2, 0x82],
        ),
        // Prefix candidate, then keys.
        ("prefix-app.v".to_owned(), b"app.v\xffx\xffv.x".to_vec()),
        (
            "prefix-app-keys".to_owned(),
            b"app\xffv.x\xffl.x\xffx".to_vec(),
        ),
        ("prefix-double-dot".to_owned(), b"a..b\xffk".to_vec()),
        ("prefix-leading-dot".to_owned(), b".app\xffk".to_vec()),
        ("prefix-trailing-dot".to_owned(), b"app.\xffk".to_vec()),
        ("prefix-colon".to_owned(), b"app:v\xffk".to_vec()),
        ("prefix-empty".to_owned(), b"\xff".to_vec()),
        (
            "prefix-257".to_owned(),
            [b"p".repeat(257), b"\xffk".to_vec()].concat(),
        ),
        (
            "prefix-256".to_owned(),
            [b"p".repeat(256), b"\xffk".to_vec()].concat(),
        ),
    ]);
    seeds
}
