//! Fleet-wide correctness on Redis, across caches on clients of their own (separate
//! "processes"): a cold key loaded once, no load or refresh landing over another
//! process's newer `insert` or `invalidate`, bounded waits on a dead or failed lock
//! holder. The scenarios are `echocache_testkit::fleet`'s, shared with the NATS store.
//! Each test runs its own `redis-server` on a free loopback port, never the shared one;
//! ignored by `cargo test`, run by `cargo xtask test`.

mod own_client;

use echocache_testkit::OwnServer;
use echocache_testkit::fleet::{self, CacheKind};
use own_client::store;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server: cargo xtask test"]
async fn a_load_never_lands_over_another_process_write() {
    let server = OwnServer::redis();
    for kind in CacheKind::ALL {
        fleet::a_load_never_lands_over_another_process_write(kind, |p| store(&server, p), 200)
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server: cargo xtask test"]
async fn a_refresh_never_lands_over_another_process_write() {
    let server = OwnServer::redis();
    fleet::a_refresh_never_lands_over_another_process_write(|p| store(&server, p), 200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server: cargo xtask test"]
async fn a_cold_key_is_loaded_once_across_processes() {
    let server = OwnServer::redis();
    for kind in CacheKind::ALL {
        fleet::a_cold_key_is_loaded_once_across_processes(kind, |p| store(&server, p), 3, 10, 50)
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server: cargo xtask test"]
async fn a_dead_lock_holder_costs_a_waiter_its_load_timeout() {
    let server = OwnServer::redis();
    for kind in CacheKind::ALL {
        fleet::a_dead_lock_holder_costs_a_waiter_its_load_timeout(kind, |p| store(&server, p))
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server: cargo xtask test"]
async fn a_failed_holder_hands_the_key_to_a_waiter() {
    let server = OwnServer::redis();
    for kind in CacheKind::ALL {
        fleet::a_failed_holder_hands_the_key_to_a_waiter(kind, |p| store(&server, p)).await;
    }
}

/// A store in the Go echocache's envelope format (its `{prefix}:lock:{key}` lock) over a
/// new fred client.
async fn go_store(
    server: &OwnServer,
    prefix: &str,
) -> echocache_redis::RedisStore<String, echocache_redis::Json> {
    echocache_redis::RedisStore::go_echocache_compatible(
        own_client::client(server).await,
        prefix,
        std::time::Duration::from_secs(60),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server: cargo xtask test"]
async fn a_cold_key_is_loaded_once_across_go_format_processes() {
    // The fleet lock is the Go layout's lock key in the Go format.
    let server = OwnServer::redis();
    for kind in CacheKind::ALL {
        fleet::a_cold_key_is_loaded_once_across_processes(
            kind,
            |p| go_store(&server, p),
            3,
            10,
            50,
        )
        .await;
    }
}
