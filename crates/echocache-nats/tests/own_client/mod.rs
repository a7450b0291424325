//! The store the fleet and outage tests make on a server of their own: each call a new
//! async-nats client at its defaults (another "process"), on the server's `cache` bucket.

use echocache_nats::{BucketOptions, NatsStore, open_or_create_bucket};
use echocache_testkit::OwnServer;

pub(crate) async fn store(server: &OwnServer, prefix: &str) -> NatsStore<String> {
    let client = async_nats::connect(server.url())
        .await
        .expect("connect to the test's own nats");
    let js = async_nats::jetstream::new(client);
    let kv = open_or_create_bucket(&js, "cache", &BucketOptions::new())
        .await
        .expect("bucket");
    NatsStore::new(kv, prefix).unwrap()
}
