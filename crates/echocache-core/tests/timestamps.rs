//! An entry's `written_at` is never before the call that wrote it began: other processes
//! (and Go services) compare it with their own clocks. The default clock reads the coarse
//! real-time clock for ages, which lags by up to a tick; stamping it on writes made fresh
//! entries look up to a tick older than the fetch that loaded them.

use std::time::SystemTime;

use echocache_core::test_util::TestStore;
use echocache_core::{EchoCache, LazyEchoCache};

/// Asserts that `key`'s entry in `store` was stamped no earlier than `began`.
fn stamped_after(store: &TestStore<u32>, key: &str, began: SystemTime, what: &str) {
    let written_at = store.peek(key).expect("stored").written_at;
    assert!(
        written_at >= began,
        "{what} {key}: stamped {written_at:?} < began {began:?}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_loaded_or_inserted_entry_is_stamped_no_earlier_than_its_call_began() {
    let store = TestStore::<u32>::new();
    let cache = EchoCache::new(store.clone());
    for i in 0..200 {
        let key = format!("k{i}");
        let began = SystemTime::now();
        let load = move || async move { Ok::<_, std::io::Error>(i) };
        cache.fetch(&key, load).await.unwrap();
        stamped_after(&store, &key, began, "fetch");

        let began = SystemTime::now();
        cache.insert(&key, i + 1).await.unwrap();
        stamped_after(&store, &key, began, "insert");
    }
}

#[tokio::test(flavor = "current_thread")]
async fn the_lazy_cache_stamps_precisely_too() {
    let store = TestStore::<u32>::new();
    let cache = LazyEchoCache::builder(store.clone()).build().unwrap();
    for i in 0..200 {
        let key = format!("k{i}");
        let began = SystemTime::now();
        let load = move || async move { Ok::<_, std::io::Error>(i) };
        cache.fetch(&key, load).await.unwrap();
        stamped_after(&store, &key, began, "lazy fetch");
    }
    cache.shutdown().await;
}
