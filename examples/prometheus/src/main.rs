//! An `EchoCache` reporting through the `metrics` crate, served in Prometheus text format.
//!
//! ```sh
//! cargo run -p echocache-example-prometheus            # serves http://127.0.0.1:9898/metrics
//! cargo run -p echocache-example-prometheus -- --once  # prints the metrics once and exits
//! ```
//!
//! `ECHOCACHE_METRICS_ADDR` changes the address. The exporter only renders the text; a
//! real service would answer `/metrics` from its own HTTP router (axum, hyper…) with
//! `handle.render()`, as the small listener below does.

use std::convert::Infallible;
use std::time::Duration;

use echocache::EchoCache;
use echocache::store::LruStore;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The recorder first: a cache takes its handles when it is built.
    let handle = PrometheusBuilder::new()
        // Latencies as Prometheus histograms (buckets in seconds) rather than summaries.
        .set_buckets_for_metric(
            Matcher::Suffix("duration_seconds".into()),
            &[1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0],
        )?
        .install_recorder()?;

    let users: EchoCache<String, LruStore<String>> = EchoCache::builder(LruStore::new(10_000)?)
        .metrics("users")
        .build()?;
    // Some traffic: 3 users, each fetched 10 times (3 loads, 27 hits).
    for round in 0..10 {
        for id in 0..3 {
            let name = users
                .fetch(&format!("user:{id}"), || async move {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    Ok::<_, Infallible>(format!("user {id}"))
                })
                .await?;
            if round == 0 {
                println!("loaded {name}");
            }
        }
    }
    // The counters are set every METRICS_INTERVAL by the cache's reporting task.
    tokio::time::sleep(echocache::METRICS_INTERVAL + Duration::from_millis(100)).await;

    if std::env::args().any(|a| a == "--once") {
        print!("{}", handle.render());
        return Ok(());
    }
    let addr = std::env::var("ECHOCACHE_METRICS_ADDR").unwrap_or_else(|_| "127.0.0.1:9898".into());
    serve(&addr, handle).await
}

/// Answers every request with the metrics (a real service would route `/metrics`).
async fn serve(addr: &str, handle: PrometheusHandle) -> Result<(), Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!(
        "serving http://{}/metrics (Ctrl-C to stop)",
        listener.local_addr()?
    );
    loop {
        let (mut socket, _) = tokio::select! {
            accepted = listener.accept() => accepted?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let body = handle.render();
        tokio::spawn(async move {
            let mut request = [0u8; 1024];
            let _ = socket.read(&mut request).await;
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\n\
                 content-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
        });
    }
}
