//! The store the fleet and outage tests make on a server of their own: each call a new
//! fred client at its defaults (no command timeout: the user's own setup at its worst),
//! i.e. another "process".

use std::time::Duration;

use echocache_redis::RedisStore;
use echocache_redis::fred::prelude::*;
use echocache_testkit::OwnServer;

pub(crate) async fn store(server: &OwnServer, prefix: &str) -> RedisStore<String> {
    RedisStore::new(client(server).await, prefix, Duration::from_secs(60)).unwrap()
}

/// A new fred client at its defaults, connected to `server`.
pub(crate) async fn client(server: &OwnServer) -> Client {
    let client = Builder::from_config(Config::from_url(&server.url()).unwrap())
        .build()
        .unwrap();
    client
        .init()
        .await
        .expect("connect to the test's own redis");
    client
}
