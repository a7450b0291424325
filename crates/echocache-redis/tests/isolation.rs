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
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use echocache_core::{BuildError, EchoCache, Entry, LockToken, Store};
use echocache_redis::RedisStore;
use echocache_redis::fred::prelude::*;

const TTL: Duration = Duration::from_secs(60);
const LOCK_TTL: Duration = Duration::from_secs(30);

fn url() -> String {
    std::env::var("ECHOCACHE_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

async fn connect() -> Client {
    let config = Config::from_url(&url()).expect("redis url");
    let client = Builder::from_config(config)
        .with_performance_config(|c| c.default_command_timeout = Duration::from_secs(5))
        .build()
        .expect("client");
    client.init().await.expect("connect to redis");
    client
}

/// One test's corner of the server: every key it makes starts with `base`.
struct Area {
    client: Client,
    base: String,
}

impl Area {
    async fn new(test: &str) -> Self {
        let random = LockToken::generate();
        let area = Self {
            client: connect().await,
            base: format!("echocache-iso-{test}-{}", &random.as_str()[..16]),
        };
        area.cleanup().await;
        area
    }

    fn store(&self, prefix: &str) -> RedisStore<String> {
        assert!(prefix.starts_with(&self.base), "{prefix}");
        RedisStore::new(&self.client, prefix, TTL).expect("store")
    }

    /// Every raw key under this test's base.
    async fn raw_keys(&self) -> BTreeSet<String> {
        // The base is made of `[-a-z0-9]`, none of which is a glob character.
        let pattern = format!("{}*", self.base);
        let mut keys = BTreeSet::new();
        let mut cursor = "0".to_owned();
        loop {
            let (next, page): (String, Vec<String>) = self
                .client
                .scan_page(cursor, pattern.clone(), Some(1000), None)
                .await
                .expect("SCAN");
            keys.extend(page);
            if next == "0" {
                return keys;
            }
            cursor = next;
        }
    }

    /// The keys under this test's base: those holding an entry, and those holding the
    /// tombstone a native store's `remove` leaves.
    async fn raw_keys_by_kind(&self) -> (BTreeSet<String>, BTreeSet<String>) {
        let (mut live, mut tombstones) = (BTreeSet::new(), BTreeSet::new());
        for key in self.raw_keys().await {
            let bytes: Vec<u8> = self.client.get(&key).await.expect("GET");
            if bytes.starts_with(b"\xffechocache:tombstone:") {
                tombstones.insert(key);
            } else {
                live.insert(key);
            }
        }
        (live, tombstones)
    }

    /// Deletes the keys under this test's base, and only those.
    async fn cleanup(&self) {
        for key in self.raw_keys().await {
            assert!(key.starts_with(&self.base), "{key}");
            self.client.del::<(), _>(key).await.expect("DEL");
        }
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

/// Through the `Store` trait: `a` and `b` never read, overwrite, remove or lock each
/// other's entries, for any of `keys`.
async fn check_stores_isolated<S: Store<String>>(a: &S, b: &S, keys: &[String]) {
    let at = SystemTime::now();
    for k in keys {
        a.set(k, &Entry::new(format!("a|{k}"), at)).await.unwrap();
    }
    for k in keys {
        assert_eq!(b.get(k).await.unwrap(), None, "b sees a's {k:?}");
    }
    for k in keys {
        b.set(k, &Entry::new(format!("b|{k}"), at)).await.unwrap();
    }
    for k in keys {
        let got_a = a.get(k).await.unwrap().map(|e| e.value);
        let got_b = b.get(k).await.unwrap().map(|e| e.value);
        assert_eq!(got_a, Some(format!("a|{k}")), "a's {k:?}");
        assert_eq!(got_b, Some(format!("b|{k}")), "b's {k:?}");
    }
    // Locks are per prefix too, and taking or releasing one leaves the data alone.
    for k in keys {
        let token_a = a.try_lock(k, LOCK_TTL).await.unwrap().expect("a locks");
        let token_b = b
            .try_lock(k, LOCK_TTL)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("a's lock on {k:?} blocks b"));
        assert!(a.try_lock(k, LOCK_TTL).await.unwrap().is_none(), "{k:?}");
        // b's token does not release a's lock.
        a.unlock(k, &token_b).await.unwrap();
        assert!(a.try_lock(k, LOCK_TTL).await.unwrap().is_none(), "{k:?}");
        b.unlock(k, &token_b).await.unwrap();
        assert!(a.try_lock(k, LOCK_TTL).await.unwrap().is_none(), "{k:?}");
        a.unlock(k, &token_a).await.unwrap();
    }
    // Removing b's entries leaves a's.
    for k in keys {
        b.remove(k).await.unwrap();
    }
    for k in keys {
        assert_eq!(b.get(k).await.unwrap(), None, "b's {k:?} after remove");
        let got_a = a.get(k).await.unwrap().map(|e| e.value);
        assert_eq!(got_a, Some(format!("a|{k}")), "a's {k:?} after b's remove");
    }
}

/// Through `EchoCache`: what one cache inserts, the other never returns; the other loads
/// every key itself, and its invalidations leave the first cache's entries alone.
async fn check_caches_isolated<S: Store<String>>(a: S, b: S, keys: &[String]) {
    let cache_a = EchoCache::new(a);
    let cache_b = EchoCache::new(b);
    for k in keys {
        cache_a.insert(k, format!("A|{k}")).await.unwrap();
    }
    let loads = Arc::new(AtomicUsize::new(0));
    for k in keys {
        let loads = loads.clone();
        let value = format!("B|{k}");
        let got = cache_b
            .fetch(k, move || async move {
                loads.fetch_add(1, Ordering::SeqCst);
                Ok::<_, std::io::Error>(value)
            })
            .await
            .unwrap();
        assert_eq!(got, format!("B|{k}"), "b's fetch of {k:?}");
    }
    assert_eq!(
        loads.load(Ordering::SeqCst),
        keys.len(),
        "b loads every key"
    );
    let stats = cache_b.stats();
    assert_eq!(stats.hits, 0, "{stats:?}");
    for k in keys {
        cache_b.invalidate(k).await.unwrap();
        assert_eq!(
            cache_a.get(k).await.unwrap(),
            Some(format!("A|{k}")),
            "a's {k:?} after b's invalidate"
        );
    }
    // a still hits its own entries: its loader never runs.
    for k in keys {
        let got = cache_a
            .fetch(k, || async {
                Err::<String, _>(std::io::Error::other("a's entry should have been a hit"))
            })
            .await
            .unwrap();
        assert_eq!(got, format!("A|{k}"));
    }
    assert_eq!(cache_a.stats().loads, 0);
    settle(&cache_b).await;
}

/// Waits until `cache` has written every loaded value (a cache hands the value to its
/// callers before it writes it), so that no write lands after the test's cleanup. The
/// timeout only keeps a broken build from hanging CI.
async fn settle<S: Store<String>>(cache: &EchoCache<String, S>) {
    tokio::time::timeout(Duration::from_secs(30), async {
        while cache.loads_in_flight() > 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the cache's loads finish");
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
    let area = Area::new("stores").await;
    for (pa, pb, extension) in prefix_pairs(&area.base) {
        let (a, b) = (area.store(&pa), area.store(&pb));
        let keys = crafted_keys(&pb, extension);
        // Both directions: the shorter prefix first, then the longer one.
        check_stores_isolated(&a, &b, &keys).await;
        area.cleanup().await;
        check_stores_isolated(&b, &a, &keys).await;
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
    let area = Area::new("raw").await;
    for (pa, pb, extension) in prefix_pairs(&area.base) {
        let (a, b) = (area.store(&pa), area.store(&pb));
        let keys = crafted_keys(&pb, extension);
        let at = SystemTime::now();
        for k in &keys {
            a.set(k, &Entry::new("a".into(), at)).await.unwrap();
            b.set(k, &Entry::new("b".into(), at)).await.unwrap();
        }
        // 2 stores × n keys wrote 2n distinct raw keys: none overwrote another.
        let raw = area.raw_keys().await;
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
    let area = Area::new("caches").await;
    for (pa, pb, extension) in prefix_pairs(&area.base) {
        let keys = crafted_keys(&pb, extension);
        check_caches_isolated(area.store(&pa), area.store(&pb), &keys).await;
        area.cleanup().await;
        check_caches_isolated(area.store(&pb), area.store(&pa), &keys).await;
        area.cleanup().await;
    }
    assert!(area.raw_keys().await.is_empty());
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask test"]
async fn prefixes_that_would_overlap_another_are_refused() {
    let area = Area::new("refused").await;
    let base = &area.base;
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
    assert!(area.raw_keys().await.is_empty());
}
