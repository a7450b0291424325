//! What the fuzz targets under `fuzz/` check, shared with `tests/fuzz_corpus.rs`: the
//! fuzz package includes these files with `#[path]`, so `cargo test` replays the committed
//! corpus through exactly the assertions the fuzzer runs.

pub(crate) mod counting_alloc;
pub(crate) mod envelope;
