//! What the fuzz targets run. The checks themselves live beside the tests that replay the
//! committed corpus through them (`crates/echocache-core/tests/fuzz_support/`,
//! `crates/echocache-nats/tests/fuzz_support/`) and are included here by path, so the
//! fuzzer and `cargo test` assert exactly the same things.
//!
//! The counting global allocator below lets the envelope checks measure the memory a
//! decode holds at once.

use echocache_core::codec::{Json, MessagePack};

// The test binaries use every helper; each target uses only some.
#[allow(dead_code)]
#[path = "../../crates/echocache-core/tests/fuzz_support/mod.rs"]
mod envelope_support;

#[allow(dead_code)]
#[path = "../../crates/echocache-nats/tests/fuzz_support/mod.rs"]
mod nats_key_support;

use envelope_support::counting_alloc::{self, CountingAlloc};
use envelope_support::envelope;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Panics unless the counting allocator is in place (the memory checks would otherwise
/// pass vacuously). Called once by each envelope target.
pub fn assert_counting_allocator() {
    assert!(
        counting_alloc::is_installed(),
        "the counting allocator is not the global allocator"
    );
}

/// The `envelope_msgpack` target: hostile bytes and round trips with [`MessagePack`].
pub fn envelope_msgpack(data: &[u8]) {
    envelope::check::<MessagePack>(data);
}

/// The `envelope_json` target: hostile bytes and round trips with [`Json`].
pub fn envelope_json(data: &[u8]) {
    envelope::check::<Json>(data);
}

/// The `nats_key` target: NATS KV key encoding.
pub fn nats_key(data: &[u8]) {
    nats_key_support::check(data);
}
