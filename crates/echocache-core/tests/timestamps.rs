//! An entry's `written_at` is never before the call that wrote it began: other processes
//! (and Go services) compare it with their own clocks. The default clock reads the coarse
//! real-time clock for ages, which lags by up to a tick; stamping it on writes made fresh
//! entries look up to a tick older than the fetch that loaded them.

use std::time::SystemTime;

use echocache_core::test_util::TestStore;
use echocache_core::{EchoCache, LazyEchoCache};

#[tokio::test(flavor = "current_thread")]
async fn a_loaded_or_inserted_entry_is_stamped_no_earlier_than_its_call_began() {
    let store = TestStore::<u32>::new();
    let cache = EchoCache::new(store.clone());
    for i in 0..200 {
        let key = format!("k{i}");
        let began = SystemTime::now();
        cache
            .fetch(&key, move || async move { Ok::<_, std::io::Error>(i) })
            .await
            .unwrap();
        let written_at = store.peek(&key).expect("stored").written_at;
        assert!(
            written_at >= began,
            "fetch {i}: stamped {written_at:?} < began {began:?}"
        );

        let began = SystemTime::now();
        cache.insert(&key, i + 1).await.unwrap();
        let written_at = store.peek(&key).expect("stored").written_at;
        assert!(
            written_at >= began,
            "insert {i}: stamped {written_at:?} < began {began:?}"
        );
    }
}

#[tokio::test(flavor = "current_thread")]
async fn the_lazy_cache_stamps_precisely_too() {
    let store = TestStore::<u32>::new();
    let cache = LazyEchoCache::builder(store.clone()).build().unwrap();
    for i in 0..200 {
        let key = format!("k{i}");
        let began = SystemTime::now();
        cache
            .fetch(&key, move || async move { Ok::<_, std::io::Error>(i) })
            .await
            .unwrap();
        let written_at = store.peek(&key).expect("stored").written_at;
        assert!(
            written_at >= began,
            "fetch {i}: stamped {written_at:?} < began {began:?}"
        );
    }
    cache.shutdown().await;
}
