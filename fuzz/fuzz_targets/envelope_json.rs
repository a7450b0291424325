//! Envelope decoding and round trips with the JSON codec; see
//! `crates/echocache-core/tests/fuzz_support/envelope.rs` for what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(
    init: echocache_fuzz::assert_counting_allocator(),
    |data: &[u8]| echocache_fuzz::envelope_json(data)
);
