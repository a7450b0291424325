//! Tenant isolation in one NATS KV bucket: two stores (and two caches) with different
//! prefixes never see, overwrite, purge or lock each other's entries, even for keys crafted
//! to look like the other's namespace (`v.x`, `l.x`, encoded forms such as `=2E` and
//! `v=2Ex`, the other's whole KV key, keys long enough to be hashed) and for prefixes that
//! extend each other (`app` and `app.v`, `app.l`, `app.v.x`, `apps`). Prefixes that are not
//! legal KV key prefixes are refused when the store is made.
//!
//! Needs a server: ignored by `cargo test`, run by `cargo xtask test` (or `cargo test --
//! --include-ignored` with `ECHOCACHE_NATS_URL`, default `nats://127.0.0.1:4222`). Every
//! test creates its own bucket and deletes only that bucket at the end, even when it fails.

use std::collections::BTreeSet;
use std::time::SystemTime;

use echocache_core::codec::{DEFAULT_MAX_VALUE_BYTES, MessagePack, decode_entry};
use echocache_core::{BuildError, Entry, Store};
use echocache_nats::NatsStore;
use echocache_testkit::isolation;

mod bucket;
use bucket::with_bucket;

/// Keys that look like a namespace, a separator or an encoding, plus, for a second prefix
/// that extends the first by `extension` (`.v`, `.l`, …), keys spelling the second's
/// namespaces from the first and the second's whole KV keys.
fn crafted_keys(other_prefix: &str, extension: &str) -> Vec<String> {
    let mut keys: BTreeSet<String> = [
        "", "x", "v", "l", "v.x", "l.x", ".v.x", ".l.x", "v.", ".", "..", "=", "==", "=2E", "=2e",
        "v=2Ex", "l=2Ex", "=3D", ":", "v:x", "l:x", "a:v", "*", ">", "a.*", "a.>", " ", "ü", "\n",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    let trimmed = extension.trim_start_matches('.');
    for k in ["x", "", "=2E"] {
        for ns in ["v", "l"] {
            keys.insert(format!("{extension}.{ns}.{k}"));
            keys.insert(format!("{trimmed}.{ns}.{k}"));
            keys.insert(format!("{other_prefix}.{ns}.{k}"));
        }
    }
    // Long enough to be hashed (an encoding over 512 bytes), alone and after the other's
    // namespace.
    let long = ".".repeat(200);
    keys.insert(long.clone());
    keys.insert(format!("{trimmed}.v.{long}"));
    keys.into_iter().collect()
}

/// Prefix pairs where the second extends the first.
const PREFIX_PAIRS: &[(&str, &str, &str)] = &[
    ("app", "app.v", ".v"),
    ("app", "app.l", ".l"),
    ("app", "app.v.x", ".v.x"),
    ("app", "apps", "s"),
    ("app.v", "app.v.v", ".v"),
    ("=2E", "=2E.v", ".v"),
];

#[tokio::test]
#[ignore = "needs NATS: cargo xtask test"]
async fn stores_with_different_prefixes_never_share_entries_or_locks() {
    with_bucket("stores", |_, kv| async move {
        for (i, &(pa, pb, extension)) in PREFIX_PAIRS.iter().enumerate() {
            let keys = crafted_keys(pb, extension);
            // The first pair bare, as given; every other check under a token of its own,
            // so that none meets the entries an earlier one left under the same prefix.
            let forward = if i == 0 {
                (pa.to_owned(), pb.to_owned())
            } else {
                (format!("f{i}.{pa}"), format!("f{i}.{pb}"))
            };
            let reverse = (format!("r{i}.{pb}"), format!("r{i}.{pa}"));
            for (first, second) in [forward, reverse] {
                let a: NatsStore<String> = NatsStore::new(kv.clone(), &first).unwrap();
                let b: NatsStore<String> = NatsStore::new(kv.clone(), &second).unwrap();
                isolation::stores_are_isolated(&a, &b, &keys).await;
            }
        }
    })
    .await;
}

#[tokio::test]
#[ignore = "needs NATS: cargo xtask test"]
async fn kv_keys_of_two_prefixes_never_coincide() {
    with_bucket("raw", |_, kv| async move {
        for (i, &(pa, pb, extension)) in PREFIX_PAIRS.iter().enumerate() {
            let keys = crafted_keys(pb, extension);
            let (pa, pb) = (format!("t{i}.{pa}"), format!("t{i}.{pb}"));
            let a: NatsStore<String> = NatsStore::new(kv.clone(), &pa).unwrap();
            let b: NatsStore<String> = NatsStore::new(kv.clone(), &pb).unwrap();
            let at = SystemTime::now();
            for k in &keys {
                a.set(k, &Entry::new(format!("a|{k}"), at)).await.unwrap();
                b.set(k, &Entry::new(format!("b|{k}"), at)).await.unwrap();
            }
            // 2 stores × n keys: 2n distinct KV keys, none a lock key, and each holds the
            // value its own store wrote.
            let data: BTreeSet<String> = keys
                .iter()
                .flat_map(|k| [a.data_key(k), b.data_key(k)])
                .collect();
            assert_eq!(data.len(), 2 * keys.len(), "{pa:?} / {pb:?}");
            let locks: BTreeSet<String> = keys
                .iter()
                .flat_map(|k| [a.lock_key(k), b.lock_key(k)])
                .collect();
            assert!(data.is_disjoint(&locks));
            for k in keys.iter().filter(|k| !a.data_key(k).contains(".==")) {
                // Plain (not hashed) keys hold the bare envelope.
                for (store, tag) in [(&a, "a"), (&b, "b")] {
                    let raw = kv.get(store.data_key(k)).await.unwrap().expect("stored");
                    let entry: Entry<String> =
                        decode_entry(&MessagePack, &raw, DEFAULT_MAX_VALUE_BYTES).unwrap();
                    assert_eq!(entry.value, format!("{tag}|{k}"));
                }
            }
        }
    })
    .await;
}

#[tokio::test]
#[ignore = "needs NATS: cargo xtask test"]
async fn caches_with_different_prefixes_never_see_each_other() {
    with_bucket("caches", |_, kv| async move {
        for (i, &(pa, pb, extension)) in PREFIX_PAIRS.iter().enumerate() {
            let keys = crafted_keys(pb, extension);
            let store = |prefix: &str| NatsStore::<String>::new(kv.clone(), prefix).unwrap();
            // Each check under a token of its own, so that none meets the entries an
            // earlier one left under the same prefix; both directions.
            let (fa, fb) = (format!("f{i}.{pa}"), format!("f{i}.{pb}"));
            isolation::caches_are_isolated(store(&fa), store(&fb), &keys).await;
            let (ra, rb) = (format!("r{i}.{pb}"), format!("r{i}.{pa}"));
            isolation::caches_are_isolated(store(&ra), store(&rb), &keys).await;
        }
    })
    .await;
}

#[tokio::test]
#[ignore = "needs NATS: cargo xtask test"]
async fn prefixes_that_are_not_legal_kv_keys_are_refused() {
    with_bucket("refused", |_, kv| async move {
        for prefix in [
            "", ".", "app.", ".app", "app..v", "app:v", "app v", "app.*", "app.>", "ü",
        ] {
            match NatsStore::<String>::new(kv.clone(), prefix) {
                Err(BuildError::InvalidSetting { setting, .. }) => {
                    assert_eq!(setting, "prefix", "{prefix:?}");
                }
                Err(other) => panic!("{prefix:?}: {other:?}"),
                Ok(store) => panic!("{prefix:?} was accepted: {}", store.data_key("k")),
            }
        }
        // `app.` would have put its data key for `k` on `app..v.k`; `app` and `app.v` stay
        // apart because the encoded key is always exactly one token.
        let app: NatsStore<String> = NatsStore::new(kv.clone(), "app").unwrap();
        let app_v: NatsStore<String> = NatsStore::new(kv.clone(), "app.v").unwrap();
        assert_eq!(app.data_key("v.x"), "app.v.v=2Ex");
        assert_eq!(app_v.data_key("x"), "app.v.v.x");
    })
    .await;
}
