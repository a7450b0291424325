//! A stalled NATS (SIGSTOP: sockets open, nothing answers) under an async-nats client at
//! its defaults (5 s JetStream request timeout) costs a fetch almost nothing, and the
//! store is used again on its own after SIGCONT; read-your-writes across two clients. The
//! scenarios are `echocache_testkit::outage`'s, shared with the Redis store. Each test runs
//! its own `nats-server -js` on a free loopback port, never the shared one; ignored by
//! `cargo test`, run by `cargo xtask test`.

mod own_client;

use echocache_nats::NatsStore;
use echocache_testkit::{Kind, OwnServer, outage};
use own_client::store;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server: cargo xtask test"]
async fn a_stalled_nats_costs_a_fetch_the_loader_and_recovers_on_its_own() {
    let server = OwnServer::nats();
    outage::a_stall_costs_a_fetch_the_loader_and_recovers_on_its_own(&server, |p| {
        store(&server, p)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server: cargo xtask test"]
async fn after_fetch_returns_this_cache_and_other_processes_see_the_value() {
    let server = OwnServer::nats();
    outage::after_fetch_returns_this_cache_and_other_processes_see_the_value(|p| store(&server, p))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server: cargo xtask test"]
async fn a_refresh_and_shutdown_are_bounded_while_nats_stalls() {
    let server = OwnServer::nats();
    outage::a_refresh_and_shutdown_are_bounded_while_the_store_stalls(&server, |p| {
        store(&server, p)
    })
    .await;
}

/// A store made by `NatsStore::connect` (its own client, the crate's defaults), on the
/// server's `connected` bucket.
async fn connected_store(server: &OwnServer, prefix: &str) -> NatsStore<String> {
    NatsStore::connect(&server.url(), "connected", prefix)
        .await
        .expect("connect to the test's own nats")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server: cargo xtask test"]
async fn a_stalled_nats_costs_a_fetch_the_loader_under_a_connect_store() {
    let server = OwnServer::nats();
    outage::a_stall_costs_a_fetch_the_loader_and_recovers_on_its_own(&server, |p| {
        connected_store(&server, p)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server: cargo xtask test"]
async fn after_fetch_returns_other_connect_stores_see_the_value() {
    let server = OwnServer::nats();
    outage::after_fetch_returns_this_cache_and_other_processes_see_the_value(|p| {
        connected_store(&server, p)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server: cargo xtask test"]
async fn a_refresh_and_shutdown_are_bounded_while_nats_stalls_under_a_connect_store() {
    let server = OwnServer::nats();
    outage::a_refresh_and_shutdown_are_bounded_while_the_store_stalls(&server, |p| {
        connected_store(&server, p)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server: cargo xtask test"]
async fn a_service_started_while_nats_is_down_uses_it_once_up() {
    let dir = std::env::temp_dir().join(format!(
        "echocache-nats-started-down-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("a folder for JetStream");
    outage::a_service_started_while_the_server_is_down(Kind::Nats(dir), |url| async move {
        NatsStore::<String>::connect(&url, "late", "svc")
            .await
            .expect("connect while the server is down")
    })
    .await;
}
