//! A stalled Redis (SIGSTOP: sockets open, nothing answers) under a fred client at its
//! defaults (no command timeout) costs a fetch almost nothing, and the store is used
//! again on its own after SIGCONT; read-your-writes across two clients. The scenarios are
//! `echocache_testkit::outage`'s, shared with the NATS store. Each test runs its own
//! `redis-server` on a free loopback port, never the shared one; ignored by `cargo test`,
//! run by `cargo xtask test`.

mod own_client;

use std::time::Duration;

use echocache_redis::RedisStore;
use echocache_testkit::{Kind, OwnServer, outage};
use own_client::store;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server: cargo xtask test"]
async fn a_stalled_redis_costs_a_fetch_the_loader_and_recovers_on_its_own() {
    let server = OwnServer::redis();
    outage::a_stall_costs_a_fetch_the_loader_and_recovers_on_its_own(&server, |p| {
        store(&server, p)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server: cargo xtask test"]
async fn after_fetch_returns_this_cache_and_other_processes_see_the_value() {
    let server = OwnServer::redis();
    outage::after_fetch_returns_this_cache_and_other_processes_see_the_value(|p| store(&server, p))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server: cargo xtask test"]
async fn a_refresh_and_shutdown_are_bounded_while_redis_stalls() {
    let server = OwnServer::redis();
    outage::a_refresh_and_shutdown_are_bounded_while_the_store_stalls(&server, |p| {
        store(&server, p)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server: cargo xtask test"]
async fn a_service_started_while_redis_is_down_uses_it_once_up() {
    outage::a_service_started_while_the_server_is_down(Kind::Redis, |url| async move {
        RedisStore::<String>::connect(&url, "late", Duration::from_secs(60))
            .await
            .unwrap()
    })
    .await;
}
