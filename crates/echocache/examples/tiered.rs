//! `cargo run --example tiered --features redis`: two instances of a service, each with an
//! in-memory L1 in front of one shared Redis, kept coherent by a Redis pub/sub backplane.
//!
//! The server is `ECHOCACHE_REDIS_URL` (default `redis://127.0.0.1:6379`). The example
//! writes only under its own prefix, with a one-minute TTL, and removes what it wrote.

use std::time::{Duration, Instant};

use echocache::store::{LruStore, RedisBackplane, RedisStore};
use echocache::{EchoCache, L1Entry, TieredStore};

type Cache = EchoCache<
    String,
    TieredStore<String, LruStore<L1Entry<String>>, RedisStore<String>, RedisBackplane>,
>;

/// One instance: its own clients, its own L1 of 10 000 entries.
async fn instance(url: &str, prefix: &str) -> Result<Cache, Box<dyn std::error::Error>> {
    let l2 = RedisStore::connect(url, prefix, Duration::from_secs(60)).await?;
    let backplane = RedisBackplane::connect(url, prefix).await?;
    let tiered = TieredStore::new(LruStore::new(10_000)?, l2, backplane)
        // The most an L1 copy can live unchecked, should an announcement be lost unnoticed.
        .l1_ttl(Duration::from_secs(30));
    Ok(EchoCache::new(tiered))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url =
        std::env::var("ECHOCACHE_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("echocache-tiered-example-{}", std::process::id());
    let a = instance(&url, &prefix).await?;
    let b = instance(&url, &prefix).await?;
    // Let both backplanes subscribe (a fresh instance reads Redis until then).
    tokio::time::sleep(Duration::from_millis(200)).await;

    let query = || async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        Ok::<_, std::io::Error>("Ada Lovelace".to_owned())
    };
    let t = Instant::now();
    let user = a.fetch("user:42", query).await?;
    println!(
        "A, miss:        {user:?} in {:?} (loaded, written to Redis)",
        t.elapsed()
    );
    let t = Instant::now();
    let user = b.fetch("user:42", query).await?;
    println!(
        "B, first read:  {user:?} in {:?} (from Redis, fills B's L1)",
        t.elapsed()
    );
    // (Had A's announcement of its write still been on its way during that read, its
    // copy would not be served, and the next read would fill L1 again.)
    b.fetch("user:42", query).await?;
    let t = Instant::now();
    for _ in 0..10_000 {
        b.fetch("user:42", query).await?;
    }
    println!(
        "B, 10 000 hits: {:?} each (from B's L1: no round trip)",
        t.elapsed() / 10_000
    );

    a.insert("user:42", "Ada King".to_owned()).await?;
    let t = Instant::now();
    loop {
        if b.get("user:42").await?.as_deref() == Some("Ada King") {
            break;
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    println!(
        "B sees A's insert {:?} after it returned (the backplane's delay)",
        t.elapsed()
    );

    a.invalidate("user:42").await?;
    tokio::time::sleep(Duration::from_millis(20)).await;
    println!(
        "after A's invalidate, B reads {:?}",
        b.get("user:42").await?
    );
    Ok(())
}
