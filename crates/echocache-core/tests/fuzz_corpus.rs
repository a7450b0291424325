//! Replays the committed fuzz corpus (`tests/corpus/envelope_msgpack/`,
//! `tests/corpus/envelope_json/`, inside the crate so the packaged crate has it too) and deterministic mutations of it through the checks the
//! fuzz targets run (`tests/fuzz_support/envelope.rs`), so that `cargo test` covers them
//! without a fuzzer. `cargo xtask fuzz --seconds N` runs the real fuzzer.
//!
//! The seed files are made by `fuzz_support::envelope::seeds`; after changing it, rewrite
//! them with `ECHOCACHE_BLESS_CORPUS=1 cargo test -p echocache-core --test fuzz_corpus`.

// A `GlobalAlloc` needs `unsafe impl`: this test binary allows it for its counting
// allocator (the library forbids unsafe code).
#![allow(unsafe_code)]

mod fuzz_support;

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use echocache_core::Entry;
use echocache_core::codec::{
    Codec, DEFAULT_MAX_VALUE_BYTES, Json, MessagePack, decode_entry, encode_entry,
};
use fuzz_support::counting_alloc::{self, CountingAlloc};
use fuzz_support::envelope;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(target)
}

/// The files of a corpus directory, sorted by name.
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir(target);
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

/// Asserts that every seed is in the corpus with its current bytes (or writes it, with
/// `ECHOCACHE_BLESS_CORPUS=1`).
fn assert_seeds_committed(target: &str, seeds: Vec<(String, Vec<u8>)>) {
    let dir = corpus_dir(target);
    let bless = std::env::var_os("ECHOCACHE_BLESS_CORPUS").is_some();
    for (name, bytes) in seeds {
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
        assert_eq!(
            committed,
            bytes,
            "seed {} is stale: run with ECHOCACHE_BLESS_CORPUS=1",
            path.display()
        );
    }
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

/// A libFuzzer-like mutation of `input`: flip, set, insert, delete, duplicate or splice
/// in "interesting" bytes (length-prefix headers, 0xff runs).
fn mutate(input: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..=rng.below(4) {
        let at = if out.is_empty() {
            0
        } else {
            rng.below(out.len())
        };
        match rng.below(6) {
            0 if !out.is_empty() => out[at] ^= 1 << rng.below(8),
            1 if !out.is_empty() => out[at] = rng.next() as u8,
            2 => out.insert(at, rng.next() as u8),
            3 if !out.is_empty() => {
                out.remove(at);
            }
            4 => {
                let interesting: &[&[u8]] = &[
                    &[0xdd, 0xff, 0xff, 0xff, 0xff],
                    &[0xdf, 0x7f, 0xff, 0xff, 0xff],
                    &[0xdb, 0xff, 0xff, 0xff, 0xff],
                    &[0x91, 0x91, 0x91, 0x91],
                    b"[[[[",
                    b"\"\\u",
                    &[0xff; 8],
                ];
                let chunk = interesting[rng.below(interesting.len())];
                out.splice(at..at, chunk.iter().copied());
            }
            _ => {
                let end = (at + 1 + rng.below(16)).min(out.len());
                let copy = out[at.min(end)..end].to_vec();
                out.splice(at..at, copy);
            }
        }
    }
    out
}

/// Runs `f` on a thread with a 16 MiB stack, as the fuzzer's main thread has 8 MiB in
/// release: rmp-serde accepts 1024 levels of nesting, and decoding that deep into a
/// `serde_json::Value` needs about 3.5 MiB of stack in a debug build (under 512 KiB in
/// release), more than a test thread's 2 MiB.
fn on_big_stack(f: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new()
        .stack_size(16 * 1024 * 1024)
        .spawn(f)
        .expect("spawn")
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
}

fn replay<C: Codec + Default>(target: &'static str) {
    on_big_stack(move || {
        let files = corpus(target);
        assert!(
            files.len() >= 10,
            "{target}: the corpus has {} files",
            files.len()
        );
        for (name, bytes) in &files {
            eprintln!("{target}/{name}");
            envelope::check::<C>(bytes);
        }
    });
}

fn replay_mutations<C: Codec + Default>(target: &'static str, seed: u64) {
    on_big_stack(move || {
        let mut rng = Rng(seed);
        for (_, bytes) in corpus(target) {
            for _ in 0..100 {
                envelope::check::<C>(&mutate(&bytes, &mut rng));
            }
        }
    });
}

#[test]
fn the_allocator_counts() {
    assert!(counting_alloc::is_installed());
}

#[test]
fn seed_corpus_is_committed() {
    assert_seeds_committed("envelope_msgpack", envelope::seeds::<MessagePack>());
    assert_seeds_committed("envelope_json", envelope::seeds::<Json>());
}

#[test]
fn msgpack_corpus_passes_the_fuzz_checks() {
    replay::<MessagePack>("envelope_msgpack");
}

#[test]
fn json_corpus_passes_the_fuzz_checks() {
    replay::<Json>("envelope_json");
}

#[test]
fn mutated_msgpack_corpus_passes_the_fuzz_checks() {
    replay_mutations::<MessagePack>("envelope_msgpack", 0x9e37_79b9_7f4a_7c15);
}

#[test]
fn mutated_json_corpus_passes_the_fuzz_checks() {
    replay_mutations::<Json>("envelope_json", 0x2545_f491_4f6c_dd1d);
}

#[test]
fn a_hostile_length_prefix_costs_its_bytes_not_its_claim() {
    // The bound the checks enforce, on the worst seed: a 16-byte entry whose array claims
    // 2^32-1 elements holds at most serde's 1 MiB pre-allocation, not 32 GiB.
    let bytes = corpus("envelope_msgpack")
        .into_iter()
        .find(|(name, _)| name == "hostile-array32-claim")
        .expect("seed")
        .1;
    let (result, peak) = counting_alloc::peak_bytes(|| {
        decode_entry::<Vec<u64>, _>(&MessagePack, &bytes, DEFAULT_MAX_VALUE_BYTES)
    });
    assert!(result.unwrap_err().is_decode());
    assert!(peak <= envelope::SERDE_PREALLOC + 16 * 1024, "{peak}");
}

#[test]
fn json_cannot_hold_non_finite_floats() {
    // Known limit of the JSON codec (why the generator gives JSON finite floats only):
    // serde_json writes NaN and infinities as `null`. A plain `f64` then fails to decode
    // (a decode error: the caches count it and reload), and an `Option<f64>` reads back
    // as `None`.
    let at = SystemTime::UNIX_EPOCH;
    let bytes = encode_entry(&Json, &Entry::new(f64::INFINITY, at), 1024).unwrap();
    assert_eq!(&bytes[10..], b"null");
    assert!(
        decode_entry::<f64, _>(&Json, &bytes, 1024)
            .unwrap_err()
            .is_decode()
    );
    let bytes = encode_entry(&Json, &Entry::new(Some(f64::NAN), at), 1024).unwrap();
    assert_eq!(
        decode_entry::<Option<f64>, _>(&Json, &bytes, 1024)
            .unwrap()
            .value,
        None
    );
    // MessagePack keeps them, bit for bit.
    let bytes = encode_entry(&MessagePack, &Entry::new(f64::NAN, at), 1024).unwrap();
    let back: Entry<f64> = decode_entry(&MessagePack, &bytes, 1024).unwrap();
    assert_eq!(back.value.to_bits(), f64::NAN.to_bits());
}

#[test]
fn json_round_trips_floats_exactly() {
    // Found by the envelope_json target: without serde_json's `float_roundtrip` feature
    // (now on in the workspace), this came back as 2.186409303314336e-94.
    let x = 2.186_409_303_314_335_8e-94_f64;
    let bytes = encode_entry(&Json, &Entry::new(x, SystemTime::UNIX_EPOCH), 1024).unwrap();
    let back: Entry<f64> = decode_entry(&Json, &bytes, 1024).unwrap();
    assert_eq!(back.value.to_bits(), x.to_bits());
}
