//! The public futures and handles are `Send` (they cross tasks) and handles are `Sync`.

use echocache_core::test_util::TestStore;
use echocache_core::{EchoCache, LazyEchoCache};

fn is_send<T: Send>(_: &T) {}
fn is_send_sync<T: Send + Sync + Clone + 'static>() {}

#[test]
fn handles_are_send_sync_clone() {
    is_send_sync::<EchoCache<String, TestStore<String>>>();
    is_send_sync::<LazyEchoCache<String, TestStore<String>>>();
}

#[tokio::test]
async fn futures_are_send() {
    let cache = EchoCache::new(TestStore::<String>::new());
    let loader = || async { Ok::<_, std::io::Error>(String::new()) };
    is_send(&cache.fetch("k", loader));
    is_send(&cache.get("k"));
    is_send(&cache.insert("k", String::new()));
    is_send(&cache.invalidate("k"));
    let lazy = LazyEchoCache::builder(TestStore::<String>::new())
        .build()
        .unwrap();
    is_send(&lazy.fetch("k", loader));
    is_send(&lazy.shutdown());
}
