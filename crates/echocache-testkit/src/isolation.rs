//! Tenant isolation through any remote store: two stores (and two caches) with different
//! prefixes never see, overwrite, remove or lock each other's entries. Redis and NATS run
//! these with the keys and prefix pairs crafted for their own key layouts.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use echocache_core::{EchoCache, Entry, Store};

/// The TTL of the refresh locks the checks take.
const LOCK_TTL: Duration = Duration::from_secs(30);

/// Through the `Store` trait: `a` and `b` never read, overwrite, remove or lock each
/// other's entries, for any of `keys`.
pub async fn stores_are_isolated<S: Store<String>>(a: &S, b: &S, keys: &[String]) {
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
pub async fn caches_are_isolated<S: Store<String>>(a: S, b: S, keys: &[String]) {
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

/// Waits until `cache` has no load running (a load another caller gave up on may still
/// write), so that no write lands after the test's cleanup. The timeout only keeps a
/// broken build from hanging CI.
async fn settle<S: Store<String>>(cache: &EchoCache<String, S>) {
    tokio::time::timeout(Duration::from_secs(30), async {
        while cache.loads_in_flight() > 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the cache's loads finish");
}
