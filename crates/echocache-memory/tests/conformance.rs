//! The `Store` conformance checks of echocache-core, run on each in-memory store.

use std::time::Duration;

use echocache_core::test_util::{check_data_ops, check_granting_lock};
use echocache_core::{BoxStore, EchoCache, ManualClock, Store};
use echocache_memory::{ExpiringLruStore, LruStore, ShardedLruStore, SingleStore};

async fn conforms<S: Store<String>>(store: S) {
    check_data_ops(&store, "mem:").await;
    check_granting_lock(&store, "mem:").await;
}

#[tokio::test]
async fn lru_store_conforms() {
    conforms(LruStore::new(16).unwrap()).await;
}

#[tokio::test]
async fn lru_store_of_one_conforms() {
    conforms(LruStore::new(1).unwrap()).await;
}

#[tokio::test]
async fn expiring_lru_store_conforms() {
    // The checks write entries with a `written_at` in 2023: the TTL counts from the
    // store's own clock at `set`, so they are live.
    conforms(ExpiringLruStore::new(16, Duration::from_secs(3_600)).unwrap()).await;
}

#[tokio::test]
async fn expiring_lru_store_on_a_manual_clock_conforms() {
    let clock = ManualClock::new(std::time::SystemTime::UNIX_EPOCH);
    conforms(
        ExpiringLruStore::new(16, Duration::from_millis(1))
            .unwrap()
            .with_clock(clock),
    )
    .await;
}

#[tokio::test]
async fn single_store_conforms() {
    conforms(SingleStore::new(Duration::from_secs(3_600)).unwrap()).await;
}

#[tokio::test]
async fn sharded_lru_store_conforms() {
    conforms(ShardedLruStore::new(64).unwrap()).await;
    conforms(ShardedLruStore::with_shards(3, 8).unwrap()).await;
}

#[tokio::test]
async fn a_type_erased_store_conforms_and_serves_a_cache() {
    // A store chosen at run time (from configuration, say) behind one type.
    let pick = |sharded: bool| -> BoxStore<String> {
        if sharded {
            BoxStore::new(ShardedLruStore::new(64).unwrap())
        } else {
            BoxStore::new(LruStore::new(16).unwrap())
        }
    };
    conforms(pick(false)).await;
    conforms(pick(true)).await;
    let cache: EchoCache<String, BoxStore<String>> = EchoCache::new(pick(true));
    let v = cache
        .fetch("k", || async { Ok::<_, std::io::Error>("v".to_owned()) })
        .await
        .unwrap();
    assert_eq!(v, "v");
    assert_eq!(cache.get("k").await.unwrap().as_deref(), Some("v"));
    assert!(
        !cache.store().shares_locks(),
        "a memory store behind the box still says its locks are local"
    );
}
