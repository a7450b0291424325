//! The bucket fixture of the tests on the shared server (`ECHOCACHE_NATS_URL`, default
//! `nats://127.0.0.1:4222`): every test gets a bucket of its own, in memory, and deletes
//! only that bucket at the end, even when it fails.
#![allow(dead_code)]

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

use async_nats::jetstream::{self, kv, stream::StorageType};
use echocache_nats::{BucketOptions, open_or_create_bucket};

pub(crate) fn nats_url() -> String {
    std::env::var("ECHOCACHE_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

pub(crate) async fn jetstream() -> jetstream::Context {
    let url = nats_url();
    let client = async_nats::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to NATS at {url}: {e}"));
    jetstream::new(client)
}

/// A bucket name no other test run uses.
pub(crate) fn unique_bucket(test: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "echocache-test-{test}-{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs `body` with a fresh in-memory bucket (max age 10 min), then deletes that bucket
/// whatever happened.
pub(crate) async fn with_bucket<F, Fut>(test: &str, body: F)
where
    F: FnOnce(jetstream::Context, kv::Store) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let options = BucketOptions::new().max_age(Duration::from_secs(600));
    with_bucket_options(test, options, body).await;
}

/// [`with_bucket`] with more bucket options.
pub(crate) async fn with_bucket_options<F, Fut>(test: &str, options: BucketOptions, body: F)
where
    F: FnOnce(jetstream::Context, kv::Store) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let js = jetstream().await;
    let bucket = unique_bucket(test);
    let kv = open_or_create_bucket(&js, &bucket, &options.storage(StorageType::Memory))
        .await
        .expect("create the test bucket");
    let outcome = tokio::spawn(body(js.clone(), kv)).await;
    js.delete_stream(format!("KV_{bucket}"))
        .await
        .expect("delete the test bucket");
    if let Err(err) = outcome {
        std::panic::resume_unwind(err.into_panic());
    }
}
