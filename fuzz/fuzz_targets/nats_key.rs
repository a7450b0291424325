//! NATS KV key encoding: round trip, injectivity, legality, prefixes; see
//! `crates/echocache-nats/tests/fuzz_support/mod.rs` for what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| echocache_fuzz::nats_key(data));
