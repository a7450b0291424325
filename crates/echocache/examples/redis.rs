//! `cargo run --example redis --features redis`: an `EchoCache` and a `LazyEchoCache` over
//! one Redis, as two instances of a service would share it.
//!
//! The server is `ECHOCACHE_REDIS_URL` (default `redis://127.0.0.1:6379`). The example
//! writes only under its own prefix, with a one-minute TTL, and deletes what it wrote.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use echocache::fred::prelude::*;
use echocache::store::{RedisConnection, RedisStore};
use echocache::{EchoCache, LazyEchoCache};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url =
        std::env::var("ECHOCACHE_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("echocache-example-{}", std::process::id());
    let ttl = Duration::from_secs(60);
    // A fred client with safe defaults: it starts while Redis is down, reconnects for ever,
    // and its commands fail at once instead of waiting while Redis is unreachable.
    let store = RedisStore::<String>::connect(&url, &prefix, ttl).await?;
    println!(
        "{url}: {}",
        if store.connection().is_connected() {
            "connected"
        } else {
            "not reachable yet (the cache loads from the source meanwhile)"
        }
    );
    let cache = EchoCache::new(store);

    let loads = Arc::new(AtomicUsize::new(0));
    let slow_query = |loads: Arc<AtomicUsize>| {
        move || async move {
            loads.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok::<_, std::io::Error>("Ada Lovelace".to_string())
        }
    };

    let t = Instant::now();
    let user = cache.fetch("user:42", slow_query(loads.clone())).await?;
    println!("miss: {user:?} in {:?} (loader ran)", t.elapsed());
    let t = Instant::now();
    let user = cache.fetch("user:42", slow_query(loads.clone())).await?;
    println!(
        "hit:  {user:?} in {:?} (one Redis round trip, loader not called)",
        t.elapsed()
    );

    // Two instances of a service, each with its own client, share the entry.
    let second = LazyEchoCache::builder(RedisStore::<String>::connect(&url, &prefix, ttl).await?)
        .refresh_after(Duration::from_secs(30))
        .build()?;
    let t = Instant::now();
    let user = second.fetch("user:42", slow_query(loads.clone())).await?;
    println!(
        "another instance: {user:?} in {:?} (shared entry, no load)",
        t.elapsed()
    );
    println!("loader calls: {}", loads.load(Ordering::SeqCst));
    println!("stats: {:?}", cache.stats());

    second.shutdown().await;
    cache.invalidate("user:42").await?;
    // The clients `connect` made are the stores': close them.
    for connection in [cache.store().connection(), second.store().connection()] {
        if let RedisConnection::Client(client) = connection {
            client.quit().await?;
        }
    }
    Ok(())
}
