//! A short tour of echocache, in memory: `cargo run --example tour`.
//!
//! 1. a miss then a hit: the loader runs once;
//! 2. ten concurrent callers of one cold key share one load (single-flight);
//! 3. stale-while-revalidate: a stale value comes back at once while it is refreshed.

use std::error::Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use echocache::store::LruStore;
use echocache::{EchoCache, LazyEchoCache};

/// A duration, readably: microseconds below a millisecond.
fn took(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        format!("{} µs", d.as_micros())
    } else {
        format!("{:.1} ms", d.as_secs_f64() * 1e3)
    }
}

/// The "upstream": counts its calls and takes `delay`, as a database query would.
async fn load(
    calls: Arc<AtomicUsize>,
    delay: Duration,
    name: &'static str,
) -> Result<String, std::io::Error> {
    let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
    tokio::time::sleep(delay).await;
    Ok(format!("{name} v{n}"))
}

async fn miss_then_hit() -> Result<(), Box<dyn Error>> {
    println!("1. A miss, then a hit");
    let cache = EchoCache::new(LruStore::new(1_000)?);
    let calls = Arc::new(AtomicUsize::new(0));
    for attempt in ["first ", "second"] {
        let start = Instant::now();
        let counter = Arc::clone(&calls);
        let loader = move || load(counter, Duration::from_millis(50), "user:42");
        let value = cache.fetch("user:42", loader).await?;
        println!(
            "   {attempt} fetch: {value:?} in {:>9}   loader calls so far: {}",
            took(start.elapsed()),
            calls.load(Ordering::SeqCst)
        );
    }
    Ok(())
}

async fn single_flight() -> Result<(), Box<dyn Error>> {
    println!("2. Ten concurrent callers, one cold key, a 200 ms loader");
    let cache = EchoCache::new(LruStore::new(1_000)?);
    let calls = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let callers: Vec<_> = (0..10)
        .map(|_| {
            let cache = cache.clone();
            let calls = Arc::clone(&calls);
            let loader = move || load(calls, Duration::from_millis(200), "report");
            tokio::spawn(async move {
                let start = Instant::now();
                let value = cache.fetch("report", loader).await;
                (value, start.elapsed())
            })
        })
        .collect();
    let mut waits = Vec::new();
    let mut values = Vec::new();
    for caller in callers {
        let (value, waited) = caller.await?;
        values.push(value?);
        waits.push(format!("{:.0}", waited.as_secs_f64() * 1e3));
    }
    values.dedup();
    println!("   each caller waited (ms): {}", waits.join(" "));
    println!(
        "   values: {values:?}   loader calls: {}   total: {}   (one load, not ten)",
        calls.load(Ordering::SeqCst),
        took(start.elapsed())
    );
    let stats = cache.stats();
    println!(
        "   stats: {} load, {} callers coalesced onto it",
        stats.loads, stats.coalesced
    );
    Ok(())
}

async fn stale_while_revalidate() -> Result<(), Box<dyn Error>> {
    println!("3. Stale-while-revalidate (LazyEchoCache, refresh_after = 300 ms, 100 ms loader)");
    let cache = LazyEchoCache::builder(LruStore::new(1_000)?)
        .refresh_after(Duration::from_millis(300))
        .build()?;
    let calls = Arc::new(AtomicUsize::new(0));
    let delay = Duration::from_millis(100);

    let fetch = |label: &'static str| {
        let cache = cache.clone();
        let calls = Arc::clone(&calls);
        let loader = move || load(calls, delay, "price");
        async move {
            let start = Instant::now();
            let value = cache.fetch("price", loader).await?;
            println!("   {label:<32} {value:?} in {:>9}", took(start.elapsed()));
            Ok::<_, Box<dyn Error>>(())
        }
    };

    fetch("miss (waits for the load):").await?;
    fetch("fresh hit:").await?;
    tokio::time::sleep(Duration::from_millis(350)).await;
    fetch("stale hit (served at once):").await?;
    println!(
        "   refresh running in the background: {}",
        cache.refreshes_pending() > 0
    );
    while cache.refreshes_pending() > 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    fetch("after the refresh:").await?;
    let stats = cache.stats();
    println!(
        "   loader calls: {}   stale hits: {}   background refreshes: {}",
        calls.load(Ordering::SeqCst),
        stats.stale_hits,
        stats.refreshes
    );
    cache.shutdown().await;
    println!("   shut down: background refreshes stopped");
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    miss_then_hit().await?;
    println!();
    single_flight().await?;
    println!();
    stale_while_revalidate().await?;
    Ok(())
}
