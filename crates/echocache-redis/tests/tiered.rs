//! `TieredStore` over Redis: an `LruStore` L1 per process in front of `RedisStore`, kept
//! coherent by `RedisBackplane` (pub/sub). Each cache has clients of its own (another
//! "process"). The scenarios are `echocache_testkit::tiered`'s, shared with NATS. Each
//! test runs its own `redis-server` on a free loopback port; ignored by `cargo test`, run
//! by `cargo xtask test`.

use std::time::Duration;

use echocache_core::{Backplane, L1Entry, TieredStore};
use echocache_memory::LruStore;
use echocache_redis::{RedisBackplane, RedisStore};
use echocache_testkit::{OwnServer, tiered};

type Tiered = TieredStore<String, LruStore<L1Entry<String>>, RedisStore<String>, RedisBackplane>;

async fn tiered_store(url: &str) -> Tiered {
    tiered_under(url, "tiered").await
}

/// The L1 TTL of the run through a restart: what bounds a stale L1 copy while the
/// backplane is down.
const SHORT_L1_TTL: Duration = Duration::from_secs(2);

/// A tiered store under `prefix`, on clients of its own (another "process"), once its
/// backplane has subscribed.
async fn tiered_under(url: &str, prefix: &str) -> Tiered {
    let l2 = RedisStore::connect(url, prefix, Duration::from_secs(600))
        .await
        .expect("store");
    let backplane = RedisBackplane::connect(url, prefix)
        .await
        .expect("backplane");
    tiered::subscribed(TieredStore::new(
        LruStore::new(1_000).unwrap(),
        l2,
        backplane,
    ))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server: cargo xtask test"]
async fn the_fleet_guarantees_hold_through_tiered_stores() {
    // Issue 15 through the tiered store: ordered writes, the fleet-wide single-flight.
    let server = OwnServer::redis();
    let url = server.url();
    tiered::fleet_guarantees_hold(|p| tiered_under(&url, p)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server: cargo xtask test"]
async fn values_are_never_older_than_the_bound_across_four_processes() {
    let server = OwnServer::redis();
    let url = server.url();
    tiered::assert_coherent(|| tiered_store(&url)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server: cargo xtask test"]
async fn values_stay_within_the_l1_ttl_through_a_server_restart() {
    let mut server = OwnServer::redis();
    let url = server.url();
    tiered::assert_coherent_through_a_restart(&mut server, SHORT_L1_TTL, || async {
        // Made before the kill: a store need not wait for its backplane to subscribe.
        let l2 = RedisStore::connect(&url, "tiered", Duration::from_secs(600))
            .await
            .expect("store");
        let backplane = RedisBackplane::connect(&url, "tiered")
            .await
            .expect("backplane");
        TieredStore::new(LruStore::new(1_000).unwrap(), l2, backplane).l1_ttl(SHORT_L1_TTL)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server: cargo xtask test"]
async fn l1_copies_are_dropped_when_the_backplane_reconnects() {
    let mut server = OwnServer::redis();
    tiered::l1_copies_are_dropped_when_the_backplane_reconnects(
        &mut server,
        |url| async move { tiered_store(&url).await },
        |url| async move {
            RedisStore::<String>::connect(&url, "tiered", Duration::from_secs(600))
                .await
                .unwrap()
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server: cargo xtask test"]
async fn a_fresh_backplane_announces_its_first_write() {
    // Its publisher used to be still connecting: the first PUBLISH failed at once.
    let server = OwnServer::redis();
    let backplane = RedisBackplane::connect(&server.url(), "tiered")
        .await
        .expect("backplane");
    backplane
        .publish("k")
        .await
        .expect("the first announcement");
}
