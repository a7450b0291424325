//! One test's corner of the shared Redis (`ECHOCACHE_REDIS_URL`, default
//! `redis://127.0.0.1:6379`): a client and a prefix unique to the test. Every key the test
//! makes starts with the prefix; `cleanup` deletes those keys and only those. Shared by the
//! suites that run on the shared server (each test file uses part of it).
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::time::Duration;

use echocache_core::LockToken;
use echocache_redis::fred::prelude::*;

/// The shared server's URL.
pub(crate) fn url() -> String {
    std::env::var("ECHOCACHE_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A new client of the shared server, connected, its commands timing out after 5 s.
pub(crate) async fn connect() -> Client {
    let client = Builder::from_config(Config::from_url(&url()).expect("redis url"))
        .with_performance_config(|c| c.default_command_timeout = Duration::from_secs(5))
        .build()
        .expect("client");
    client.init().await.expect("connect to redis");
    client
}

pub(crate) struct Ns {
    pub(crate) client: Client,
    /// `echocache-test-{label}-{16 random hex}`: made of `[-a-z0-9]`, no glob character.
    pub(crate) prefix: String,
}

impl Ns {
    /// A corner named after `label`, on a client of its own, empty.
    pub(crate) async fn new(label: &str) -> Self {
        let random = LockToken::generate();
        let ns = Self {
            client: connect().await,
            prefix: format!("echocache-test-{label}-{}", &random.as_str()[..16]),
        };
        ns.cleanup().await;
        ns
    }

    /// Every key that starts with the prefix.
    pub(crate) async fn keys(&self) -> BTreeSet<String> {
        let pattern = format!("{}*", self.prefix);
        let mut keys = BTreeSet::new();
        let mut cursor = "0".to_owned();
        loop {
            let (next, page): (String, Vec<String>) = self
                .client
                .scan_page(cursor, pattern.clone(), Some(1000), None)
                .await
                .expect("SCAN");
            keys.extend(page);
            if next == "0" {
                return keys;
            }
            cursor = next;
        }
    }

    /// Deletes the keys that start with the prefix, and only those.
    pub(crate) async fn cleanup(&self) {
        for key in self.keys().await {
            assert!(key.starts_with(&self.prefix), "{key}");
            self.client.del::<(), _>(key).await.expect("DEL");
        }
    }

    pub(crate) async fn raw_get(&self, key: &str) -> Option<String> {
        self.client.get(key).await.expect("raw GET")
    }

    pub(crate) async fn pttl(&self, key: &str) -> i64 {
        self.client.pttl(key).await.expect("PTTL")
    }
}
