//! Replays the committed corpus of the `nats_key` fuzz target (`tests/corpus/nats_key/`)
//! and deterministic mutations of it through the target's checks
//! (`tests/fuzz_support/mod.rs`), so that `cargo test` covers them without a fuzzer.
//! `cargo xtask fuzz --seconds N` runs the real fuzzer.
//!
//! The seed files are made by `fuzz_support::seeds`; after changing it, rewrite them with
//! `ECHOCACHE_BLESS_CORPUS=1 cargo test -p echocache-nats --test fuzz_corpus`.

mod fuzz_support;

use std::path::{Path, PathBuf};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/nats_key")
}

fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir();
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read the corpus {}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("corpus entry").path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).expect("read a corpus file"))
        })
        .collect();
    files.sort();
    files
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
        (self.next() % n as u64) as usize
    }
}

/// Flips, replaces, inserts or deletes a few bytes, favouring the bytes that matter to
/// the encoding (`.`, `=`, `:`, hex digits, the 0xFF splitter, multi-byte lead bytes).
fn mutate(input: &[u8], rng: &mut Rng) -> Vec<u8> {
    const INTERESTING: &[u8] = b".=:vlA2E\xff\xc3\xe6 ";
    let mut out = input.to_vec();
    for _ in 0..=rng.below(3) {
        let at = if out.is_empty() {
            0
        } else {
            rng.below(out.len())
        };
        let byte = if rng.below(2) == 0 {
            INTERESTING[rng.below(INTERESTING.len())]
        } else {
            rng.next() as u8
        };
        match rng.below(3) {
            0 if !out.is_empty() => out[at] = byte,
            1 if !out.is_empty() => {
                out.remove(at);
            }
            _ => out.insert(at, byte),
        }
    }
    out
}

#[test]
fn seed_corpus_is_committed() {
    let dir = corpus_dir();
    let bless = std::env::var_os("ECHOCACHE_BLESS_CORPUS").is_some();
    for (name, bytes) in fuzz_support::seeds() {
        let path = dir.join(&name);
        if bless {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        }
        let committed = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "seed {} is missing ({e}): run with ECHOCACHE_BLESS_CORPUS=1",
                path.display()
            )
        });
        assert_eq!(committed, bytes, "seed {} is stale", path.display());
    }
}

#[test]
fn corpus_passes_the_fuzz_checks() {
    let files = corpus();
    assert!(files.len() >= 20, "the corpus has {} files", files.len());
    for (name, bytes) in files {
        eprintln!("nats_key/{name}");
        fuzz_support::check(&bytes);
    }
}

#[test]
fn mutated_corpus_passes_the_fuzz_checks() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for (_, bytes) in corpus() {
        for _ in 0..200 {
            fuzz_support::check(&mutate(&bytes, &mut rng));
        }
    }
}

#[test]
fn the_checks_catch_what_they_should() {
    use fuzz_support::{Name, decode_token, is_legal_kv_key, parse_kv_key, reference_token};
    // The independent decoder and legality rule agree with the documented examples.
    assert_eq!(reference_token("user.42").as_deref(), Some("user=2E42"));
    assert_eq!(reference_token("").as_deref(), Some("="));
    assert_eq!(reference_token(&".".repeat(171)), None);
    assert_eq!(decode_token("=C3=BC").as_deref(), Some("ü"));
    for bad in ["", "==", "=2", "=2e", "=61", "a.b", "a b"] {
        assert_eq!(decode_token(bad), None, "{bad:?}");
    }
    for bad in ["", ".a", "a.", "a..b", "a b", "a:b", "a*", "ü"] {
        assert!(!is_legal_kv_key(bad), "{bad:?}");
    }
    assert_eq!(
        parse_kv_key("app.v.v.v=2Ex"),
        Some(Name::Plain {
            prefix: "app.v".into(),
            ns: "v".into(),
            key: "v.x".into()
        })
    );
    // `app` + key `v.x` and `app.v` + key `x` live at different KV keys.
    let a = echocache_nats::__fuzz::kv_keys("app", "v.x").unwrap().0;
    let b = echocache_nats::__fuzz::kv_keys("app.v", "x").unwrap().0;
    assert_eq!((a.as_str(), b.as_str()), ("app.v.v=2Ex", "app.v.v.x"));
}
