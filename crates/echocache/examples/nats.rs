//! `cargo run --example nats --features nats`: an `EchoCache` over NATS JetStream KV.
//!
//! The server is `ECHOCACHE_NATS_URL` (default `nats://127.0.0.1:4222`, started with `-js`).
//! The example uses a bucket of its own (created by the store; this works on NATS 2.9 as
//! well as on current servers) and deletes it at the end.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use echocache::EchoCache;
use echocache::store::{BucketOptions, NatsStore};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url =
        std::env::var("ECHOCACHE_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let bucket = format!("echocache-example-{}", std::process::id());
    // An async-nats client with safe defaults: it starts while NATS is down, reconnects for
    // ever, and store calls fail at once instead of waiting while NATS is unreachable. The
    // bucket is opened (or created) as soon as NATS answers, and created again if NATS
    // loses it.
    let options = BucketOptions::new().max_age(Duration::from_secs(600));
    let store = NatsStore::<String>::connect_with(&url, &bucket, "users", options)
        .await?
        // Entries older than ten minutes read as missing, on every server version.
        .ttl(Duration::from_secs(600))?;
    println!(
        "{url}, bucket {bucket}: {}",
        if store.kv().is_some() {
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
            Ok::<_, std::io::Error>("Grace Hopper".to_string())
        }
    };
    // Any key works: NATS subjects' special characters are escaped.
    let key = "user: 7 > *.admin";
    let t = Instant::now();
    let user = cache.fetch(key, slow_query(loads.clone())).await?;
    println!("miss: {user:?} in {:?} (loader ran)", t.elapsed());
    let t = Instant::now();
    let before = loads.load(Ordering::SeqCst);
    let user = cache.fetch(key, slow_query(loads.clone())).await?;
    if loads.load(Ordering::SeqCst) == before {
        println!(
            "hit:  {user:?} in {:?} (one KV get, loader not called)",
            t.elapsed()
        );
    } else {
        println!(
            "miss: {user:?} in {:?} (NATS not reachable: loader ran again)",
            t.elapsed()
        );
    }
    println!("stored under {}", cache.store().data_key(key));
    println!(
        "loader calls: {}, stats: {:?}",
        loads.load(Ordering::SeqCst),
        cache.stats()
    );

    // Delete the example's bucket, if NATS was reached and the bucket created.
    if let (Some(js), Some(_)) = (cache.store().jetstream(), cache.store().kv()) {
        js.delete_stream(format!("KV_{bucket}")).await?;
    }
    Ok(())
}
