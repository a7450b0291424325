//! Tenant isolation on one Redis: two stores (and two caches) with different prefixes never
//! see, overwrite, delete or lock each other's entries, even for keys crafted to look like
//! the other's namespace (`v:x`, `l:x`, `:`, `a:v`, the other's whole data key, …) and for
//! prefixes that are string prefixes of each other (`p` and `p:x`, `p` and `px`, `p:` and
//! `p`). Prefixes that would make two stores overlap (`p:v`, `p:l`, …) are refused when the
//! store is made.
//!
//! Needs a server: ignored by `cargo test`, run by `cargo xtask test` (or `cargo test --
//! --include-ignored` with `ECHOCACHE_REDIS_URL`, default `redis://127.0.0.1:6379`). Each
//! test works under its own random prefix, writes every key with a 60 s TTL and deletes
//! only the keys under its prefix.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use echocache_core::{BuildError, Entry, Store};
use echocache_redis::RedisStore;
use echocache_redis::fred::prelude::*;
use echocache_testkit::isolation;

mod ns;

use ns::Ns;

const TTL: Duration = Duration::from_secs(60);

/// Isolation's use of a test's corner: stores under prefixes that start with its own.
impl Ns {
    fn store(&self, prefix: &str) -> RedisStore<String> {
        assert!(prefix.starts_with(&self.prefix), "{prefix}");
        RedisStore::new(&self.client, prefix, TTL).expect("store")
    }

    /// The keys under this test's prefix: those holding an entry, and those holding the
    /// tombstone a native store's `remove` leaves.
    async fn raw_keys_by_kind(&self) -> (BTreeSet<String>, BTreeSet<String>) {
        let (mut live, mut tombstones) = (BTreeSet::new(), BTreeSet::new());
        for key in self.keys().await {
            let bytes: Vec<u8> = self.client.get(&key).await.expect("GET");
            if bytes.starts_with(b"\xffechocache:tombstone:") {
                tombstones.insert(key);
            } else {
                live.insert(key);
            }
        }
        (live, tombstones)
    }
}

/// Keys that look like a namespace or a separator, plus, for a second prefix that extends
/// the first by `extension`, keys that spell the second's namespaces from the first
/// (`{extension}:v:x`) and the second's whole data and lock keys.
fn crafted_keys(other_prefix: &str, extension: &str) -> Vec<String> {
    let mut keys: BTreeSet<String> = [
        "", "x", "v", "l", "v:x", "l:x", ":v:x", ":l:x", "v:", "l:", ":", "::", "a:v", "a:l",
        "a:v:x", "lock:x", "x:v", "v.x", "l.x", "=2E", "=3A", "*", "?", "[a]", "{x}", " ", "ü",
        "\n",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    let trimmed = extension.trim_start_matches(':');
    for k in ["x", ""] {
        for ns in ["v", "l"] {
            keys.insert(format!("{extension}:{ns}:{k}"));
            keys.insert(format!("{trimmed}:{ns}:{k}"));
            keys.insert(format!("{other_prefix}:{ns}:{k}"));
        }
    }
    keys.into_iter().collect()
}

/// Prefix pairs where the second is a string prefix of, or extends, the first.
fn prefix_pairs(base: &str) -> Vec<(String, String, &'static str)> {
    vec![
        (base.to_owned(), format!("{base}:x"), ":x"),
        (base.to_owned(), format!("{base}x"), "x"),
        (base.to_owned(), format!("{base}:"), ":"),
        (format!("{base}:a"), format!("{base}:a:b:c"), ":b:c"),
    ]
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask test"]
async fn stores_with_different_prefixes_never_share_entries_or_locks() {
    let area = Ns::new("stores").await;
    for (pa, pb, extension) in prefix_pairs(&area.prefix) {
        let (a, b) = (area.store(&pa), area.store(&pb));
        let keys = crafted_keys(&pb, extension);
        // Both directions: the shorter prefix first, then the longer one.
        isolation::stores_are_isolated(&a, &b, &keys).await;
        area.cleanup().await;
        isolation::stores_are_isolated(&b, &a, &keys).await;
        // Every (store, key) pair had a raw key of its own: b's entries are all there, a's
        // were removed (each left a tombstone on its own key), and nothing else was
        // written.
        let (live, tombstones) = area.raw_keys_by_kind().await;
        let expected: BTreeSet<String> = keys.iter().map(|k| b.data_key(k)).collect();
        assert_eq!(live, expected, "{pa:?} / {pb:?}");
        let removed: BTreeSet<String> = keys.iter().map(|k| a.data_key(k)).collect();
        assert_eq!(tombstones, removed, "{pa:?} / {pb:?}");
        area.cleanup().await;
    }
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask test"]
async fn raw_keys_of_two_prefixes_never_coincide() {
    let area = Ns::new("raw").await;
    for (pa, pb, extension) in prefix_pairs(&area.prefix) {
        let (a, b) = (area.store(&pa), area.store(&pb));
        let keys = crafted_keys(&pb, extension);
        let at = SystemTime::now();
        for k in &keys {
            a.set(k, &Entry::new("a".into(), at)).await.unwrap();
            b.set(k, &Entry::new("b".into(), at)).await.unwrap();
        }
        // 2 stores × n keys wrote 2n distinct raw keys: none overwrote another.
        let raw = area.keys().await;
        assert_eq!(raw.len(), 2 * keys.len(), "{pa:?} / {pb:?}");
        for k in &keys {
            assert!(raw.contains(&a.data_key(k)) && raw.contains(&b.data_key(k)));
            assert_ne!(a.data_key(k), b.lock_key(k));
        }
        area.cleanup().await;
    }
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask test"]
async fn caches_with_different_prefixes_never_see_each_other() {
    let area = Ns::new("caches").await;
    for (pa, pb, extension) in prefix_pairs(&area.prefix) {
        let keys = crafted_keys(&pb, extension);
        isolation::caches_are_isolated(area.store(&pa), area.store(&pb), &keys).await;
        area.cleanup().await;
        isolation::caches_are_isolated(area.store(&pb), area.store(&pa), &keys).await;
        area.cleanup().await;
    }
    assert!(area.keys().await.is_empty());
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask test"]
async fn prefixes_that_would_overlap_another_are_refused() {
    let area = Ns::new("refused").await;
    let base = &area.prefix;
    // `{base}:v` would put its data key for `k` (`{base}:v:v:k`) on the data key of `v:k`
    // under `{base}`; the same holds for `l` and for any segment equal to `v` or `l`.
    for prefix in [
        format!("{base}:v"),
        format!("{base}:l"),
        format!("{base}:v:x"),
        format!("{base}:l:x"),
        format!("v:{base}"),
        "v".to_owned(),
        "l".to_owned(),
        String::new(),
    ] {
        match RedisStore::<String>::new(&area.client, &prefix, TTL) {
            Err(BuildError::InvalidSetting { setting, .. }) => {
                assert_eq!(setting, "prefix", "{prefix:?}");
            }
            other => panic!(
                "{prefix:?} was accepted: {:?}",
                other.map(|s| s.data_key("k"))
            ),
        }
    }
    // The refused prefix's would-be keys are exactly the other store's keys.
    let store = area.store(base);
    assert_eq!(store.data_key("v:k"), format!("{base}:v:v:k"));
    assert!(area.keys().await.is_empty());
}
