//! `cargo run --example nats --features nats`: an `EchoCache` over NATS JetStream KV.
//!
//! The server is `ECHOCACHE_NATS_URL` (default `nats://127.0.0.1:4222`, started with `-js`).
//! The example creates its own bucket (this works on NATS 2.9 as well as on current
//! servers) and deletes it at the end.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use echocache::EchoCache;
use echocache::async_nats;
use echocache::store::{BucketOptions, NatsStore, open_or_create_bucket};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url =
        std::env::var("ECHOCACHE_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let client = async_nats::connect(&url).await?;
    let js = async_nats::jetstream::new(client);
    let bucket = format!("echocache-example-{}", std::process::id());
    let kv = open_or_create_bucket(
        &js,
        &bucket,
        &BucketOptions::new().max_age(Duration::from_secs(600)),
    )
    .await?;
    println!("connected to {url}, bucket {bucket}");

    // Entries older than ten minutes read as missing, on every server version.
    let store = NatsStore::<String>::new(kv, "users")?.ttl(Duration::from_secs(600))?;
    let cache = EchoCache::new(store);

    let loads = Arc::new(AtomicUsize::new(0));
    let slow_query = |loads: Arc<AtomicUsize>| {
        move || async move {
            loads.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok::<_, std::io::Error>("Grace Hopper".to_string())
        }
    };
    // Any key works: NATS subjects' special characters are escaped.
    let key = "user: 7 > *.admin";
    let t = Instant::now();
    let user = cache.fetch(key, slow_query(loads.clone())).await?;
    println!("miss: {user:?} in {:?} (loader ran)", t.elapsed());
    // The value is handed to the caller before it is written: wait for the write.
    while cache.loads_in_flight() > 0 {
        tokio::task::yield_now().await;
    }
    let t = Instant::now();
    let user = cache.fetch(key, slow_query(loads.clone())).await?;
    println!(
        "hit:  {user:?} in {:?} (one KV get, loader not called)",
        t.elapsed()
    );
    println!("stored under {}", cache.store().data_key(key));
    println!(
        "loader calls: {}, stats: {:?}",
        loads.load(Ordering::SeqCst),
        cache.stats()
    );

    js.delete_stream(format!("KV_{bucket}")).await?;
    Ok(())
}
