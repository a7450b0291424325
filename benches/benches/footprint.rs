//! Memory per entry (DESIGN §7: "bytes per entry for each memory store (beyond the key's
//! and value's own bytes) reported in the bench report, and `LruStore` within 1.5× of a
//! bare `hashlink::LruCache` holding the same keys and values").
//!
//! Not timed: each store is filled with [`N`] entries of `u64` values under keys of
//! [`KEY_LEN`] bytes, and the live heap bytes (the counting allocator's, as requested
//! from the allocator) are read before and after. `bytes_per_entry/{store}` is that
//! growth divided by `N`, minus the key's own `KEY_LEN` bytes: what the store spends per
//! entry on top of the key's text, the `u64` value (8 bytes, held inline) included.
//! The hash table grows by doubling, so the figure depends a little on where `N` falls
//! (100 000 entries use a table of 131 072 slots).

use std::mem::size_of;
use std::time::{Duration, SystemTime};

use criterion::Criterion;
use echocache::Entry;
use echocache::Store;
use echocache::store::{ExpiringLruStore, LruStore, SingleStore};
use echocache_benches::{live_bytes, record};

use crate::ready;

/// Entries per store.
const N: usize = 100_000;
/// Bytes of each key (`key-00000042`).
const KEY_LEN: usize = 12;

fn keys() -> Vec<String> {
    let keys: Vec<String> = (0..N).map(|i| format!("key-{i:08}")).collect();
    assert!(keys.iter().all(|k| k.len() == KEY_LEN));
    keys
}

/// Heap bytes per entry beyond the key's text, after `fill` has added `entries` entries.
fn per_entry(entries: usize, fill: impl FnOnce()) -> f64 {
    let before = live_bytes();
    fill();
    let grown = live_bytes().wrapping_sub(before) as isize;
    grown as f64 / entries as f64 - KEY_LEN as f64
}

pub(crate) fn memory_footprint(_: &mut Criterion) {
    let keys = keys();
    let now = SystemTime::now();
    let ttl = Duration::from_secs(3600);

    let lru = LruStore::<u64>::new(N).expect("capacity > 0");
    let lru_bytes = per_entry(N, || {
        for (i, k) in keys.iter().enumerate() {
            ready(lru.set(k, &Entry::new(i as u64, now))).expect("memory store");
        }
    });
    assert_eq!(lru.len(), N);
    drop(lru);

    let expiring = ExpiringLruStore::<u64>::new(N, ttl).expect("capacity > 0");
    let expiring_bytes = per_entry(N, || {
        for (i, k) in keys.iter().enumerate() {
            ready(expiring.set(k, &Entry::new(i as u64, now))).expect("memory store");
        }
    });
    assert_eq!(expiring.len(), N);
    drop(expiring);

    // One slot: its entry lives inside the store; only the key's text is on the heap.
    let single = SingleStore::<u64>::new(ttl).expect("ttl > 0");
    let single_bytes = per_entry(1, || {
        ready(single.set(&keys[0], &Entry::new(0, now))).expect("memory store");
    });
    drop(single);

    let mut bare = hashlink::LruCache::<Box<str>, u64>::new(N);
    let bare_bytes = per_entry(N, || {
        for (i, k) in keys.iter().enumerate() {
            bare.insert(Box::from(k.as_str()), i as u64);
        }
    });
    assert_eq!(bare.len(), N);
    drop(bare);

    eprintln!(
        "memory: bytes per entry beyond the {KEY_LEN}-byte key, {N} u64 entries: LruStore \
         {lru_bytes:.1}, ExpiringLruStore {expiring_bytes:.1}, SingleStore {single_bytes:.1} \
         (+ {} inline), bare hashlink::LruCache {bare_bytes:.1}",
        size_of::<SingleStore<u64>>()
    );
    record("bytes_per_entry/lru_store", lru_bytes);
    record("bytes_per_entry/expiring_lru_store", expiring_bytes);
    record("bytes_per_entry/single_store", single_bytes);
    record(
        "bytes_per_entry/single_store_inline",
        size_of::<SingleStore<u64>>() as f64,
    );
    record("bytes_per_entry/bare_hashlink_lru", bare_bytes);
    record("bytes_per_entry/key_len", KEY_LEN as f64);
    record("bytes_per_entry/value_len", size_of::<u64>() as f64);
    record("bytes_per_entry/entries", N as f64);
    record(
        "bytes_per_entry/ratio_lru_store_to_bare_hashlink",
        lru_bytes / bare_bytes,
    );
}
