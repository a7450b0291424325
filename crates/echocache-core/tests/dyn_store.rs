//! `BoxStore`: a store chosen at run time keeps what makes the store itself (its locks,
//! lock extension, conditional writes, whether its locks are shared) behind the erasure.

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use echocache_core::test_util::TestStore;
use echocache_core::{BoxStore, EchoCache, Entry, Store, Version};

#[tokio::test]
async fn a_boxed_store_forwards_every_store_call() {
    let inner = TestStore::<String>::new();
    let store = BoxStore::new(inner.clone());

    store
        .set("k", &Entry::new("v".to_string(), SystemTime::now()))
        .await
        .unwrap();
    assert_eq!(inner.peek("k").unwrap().value, "v");
    assert_eq!(store.get("k").await.unwrap().unwrap().value, "v");

    let token = store
        .try_lock("k", Duration::from_secs(5))
        .await
        .unwrap()
        .expect("granted");
    assert!(inner.is_locked("k"), "the lock reached the inner store");
    assert!(
        store
            .extend_lock("k", &token, Duration::from_secs(5))
            .await
            .unwrap(),
        "the inner store's extend_lock answers, not the trait's default Ok(false)"
    );
    assert_eq!(inner.extends.load(Ordering::SeqCst), 1);
    store.unlock("k", &token).await.unwrap();
    assert!(!inner.is_locked("k"));

    let (entry, _version) = store.get_versioned("k").await.unwrap();
    assert_eq!(entry.unwrap().value, "v");
    assert!(
        store
            .set_if_version(
                "k",
                &Entry::new("w".to_string(), SystemTime::now()),
                &Version::UNKNOWN
            )
            .await
            .unwrap()
    );
    assert_eq!(inner.peek("k").unwrap().value, "w");
    assert_eq!(store.shares_locks(), Store::<String>::shares_locks(&inner));

    store.remove("k").await.unwrap();
    assert!(inner.peek("k").is_none());
}

#[tokio::test]
async fn a_cache_over_a_boxed_store_loads_once_and_hits() {
    let inner = TestStore::<String>::new();
    let cache: EchoCache<String, BoxStore<String>> = EchoCache::new(BoxStore::new(inner.clone()));
    for _ in 0..3 {
        let v = cache
            .fetch("k", || async { Ok::<_, std::io::Error>("v".to_string()) })
            .await
            .unwrap();
        assert_eq!(v, "v");
    }
    assert_eq!(cache.stats().loads, 1);
    assert_eq!(inner.peek("k").unwrap().value, "v");
    assert!(cache.store().downcast_ref::<TestStore<String>>().is_some());
    assert!(cache.store().downcast_ref::<BoxStore<String>>().is_none());
    assert!(format!("{:?}", cache.store()).contains("TestStore"));
}
