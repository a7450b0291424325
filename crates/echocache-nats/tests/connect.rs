//! `NatsStore::connect` through outages, on servers these tests start, kill and restart
//! themselves (`echocache_testkit::OwnServer`: a private `nats-server -js` on a free
//! loopback port, its JetStream folder a fresh temporary one): a store made while no
//! server listens, and a bucket with memory storage that a restart loses. The shared
//! server is never touched.
//!
//! Needs the `nats-server` binary: ignored by `cargo test`, run by `cargo xtask test` (or
//! `cargo test -- --include-ignored`).

use std::future::Future;
use std::time::{Duration, Instant, SystemTime};

use async_nats::jetstream::{self, stream::StorageType};
use echocache_core::{EchoCache, Entry, Store};
use echocache_nats::{BucketOptions, NatsStore, open_or_create_bucket};
use echocache_testkit::{Kind, OwnServer, free_port};

/// The bound on a call that must not hang.
const NO_HANG: Duration = Duration::from_secs(10);

/// How long a store may take to use a server that has come up, with no user action.
const RECOVERY: Duration = Duration::from_secs(5);

fn url(port: u16) -> String {
    format!("nats://127.0.0.1:{port}")
}

/// A new JetStream folder for a server started later (removed by the server's drop).
fn jetstream_dir(test: &str, port: u16) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "echocache-nats-{test}-{}-{port}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("a folder for JetStream");
    dir
}

/// Runs `op` under [`NO_HANG`]; panics if it hangs; returns its outcome and duration.
async fn bounded<T>(what: &str, op: impl Future<Output = T>) -> (T, Duration) {
    let start = Instant::now();
    let outcome = tokio::time::timeout(NO_HANG, op)
        .await
        .unwrap_or_else(|_| panic!("{what} hung for {NO_HANG:?}"));
    (outcome, start.elapsed())
}

/// Polls every 50 ms, for at most [`RECOVERY`], until a `set` of a fresh value and a `get`
/// reading it back both succeed; returns how long that took.
async fn until_set_and_get_work(store: &NatsStore<String>, key: &str) -> Duration {
    let start = Instant::now();
    let mut last = String::new();
    let mut round = 0u32;
    while start.elapsed() < RECOVERY {
        round += 1;
        let value = format!("value-{round}");
        let (set, _) = bounded(
            "set",
            store.set(key, &Entry::new(value.clone(), SystemTime::now())),
        )
        .await;
        match set {
            Ok(()) => {
                let (got, _) = bounded("get", store.get(key)).await;
                match got {
                    Ok(Some(entry)) if entry.value == value => return start.elapsed(),
                    other => last = format!("get: {other:?}"),
                }
            }
            Err(err) => last = format!("set: {err:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("set and get did not work within {RECOVERY:?} of the server coming up; last: {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs NATS: cargo xtask test"]
async fn a_store_made_while_the_server_is_down_uses_it_once_it_is_up() {
    let port = free_port();

    // Nothing listens: `connect` still makes the store, in about half a second.
    let (store, took) = bounded(
        "connect",
        NatsStore::<String>::connect(&url(port), "late", "app"),
    )
    .await;
    let store = store.expect("connect while the server is down");
    assert!(took < Duration::from_millis(1_500), "connect took {took:?}");
    assert!(store.kv().is_none(), "no bucket yet");
    eprintln!("connect with no server: {took:?}");

    // Operations fail, fast, and never hang.
    for _ in 0..3 {
        let (got, took) = bounded("get while down", store.get("k")).await;
        assert!(got.is_err(), "no server: {got:?}");
        assert!(
            took < Duration::from_millis(100),
            "get while down took {took:?}"
        );
        eprintln!("get while down: {took:?}: {:?}", got.unwrap_err());
        let (set, took) = bounded(
            "set while down",
            store.set("k", &Entry::new("v".into(), SystemTime::now())),
        )
        .await;
        assert!(set.is_err(), "no server: {set:?}");
        assert!(
            took < Duration::from_millis(100),
            "set while down took {took:?}"
        );
    }
    // A cache over it fails open: the loader's value is served.
    let cache = EchoCache::new(store.clone());
    let (value, _) = bounded(
        "fetch while down",
        cache.fetch("f", || async {
            Ok::<_, std::io::Error>("loaded".to_string())
        }),
    )
    .await;
    assert_eq!(value.unwrap(), "loaded");

    // The server comes up: the store uses it, with no user action.
    let _server = OwnServer::start(Kind::Nats(jetstream_dir("late", port)), port);
    let took = until_set_and_get_work(&store, "k").await;
    eprintln!("set + get work {took:?} after the server came up");
    assert!(store.kv().is_some(), "the bucket was created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs NATS: cargo xtask test"]
async fn a_memory_bucket_lost_in_a_restart_is_created_again() {
    let mut server = OwnServer::nats();
    let options = BucketOptions::new()
        .storage(StorageType::Memory)
        .max_age(Duration::from_secs(600));
    let (store, _) = bounded(
        "connect",
        NatsStore::<String>::connect_with(&server.url(), "mem", "app", options),
    )
    .await;
    let store = store.expect("connect");
    store
        .set("k", &Entry::new("before".into(), SystemTime::now()))
        .await
        .unwrap();
    assert!(store.get("k").await.unwrap().is_some());

    server.kill();
    let (got, took) = bounded("get while down", store.get("k")).await;
    assert!(got.is_err(), "no server: {got:?}");
    eprintln!("get while down: {took:?}");

    // Same port, same JetStream folder: the memory bucket is gone all the same.
    server.restart();
    let took = until_set_and_get_work(&store, "other").await;
    eprintln!("set + get work {took:?} after the restart");
    let stream = store
        .jetstream()
        .unwrap()
        .get_stream("KV_mem")
        .await
        .expect("the bucket exists again");
    let config = &stream.cached_info().config;
    assert_eq!(config.storage, StorageType::Memory, "with its own options");
    assert_eq!(config.max_age, Duration::from_secs(600));
    assert!(
        store.get("k").await.unwrap().is_none(),
        "the memory bucket lost its entries: a miss, not an error"
    );
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs NATS: cargo xtask test"]
async fn a_users_memory_bucket_is_created_again_with_recreate_lost_bucket() {
    let mut server = OwnServer::nats();
    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .request_timeout(Some(Duration::from_secs(1)))
        .connect(server.url())
        .await
        .expect("connect");
    let js = jetstream::context::ContextBuilder::new()
        .timeout(Duration::from_secs(1))
        .build(client);
    let options = BucketOptions::new()
        .storage(StorageType::Memory)
        .history(3)
        .description("users' bucket");
    let kv = open_or_create_bucket(&js, "mine", &options)
        .await
        .expect("bucket");
    let store = NatsStore::<String>::new(kv, "app")
        .unwrap()
        .recreate_lost_bucket(js.clone());
    store
        .set("k", &Entry::new("before".into(), SystemTime::now()))
        .await
        .unwrap();

    server.kill();
    let (got, _) = bounded("get while down", store.get("k")).await;
    assert!(got.is_err(), "no server: {got:?}");

    server.restart();
    let took = until_set_and_get_work(&store, "other").await;
    eprintln!("set + get work {took:?} after the restart");
    let stream = js.get_stream("KV_mine").await.expect("re-created");
    let config = &stream.cached_info().config;
    assert_eq!(config.storage, StorageType::Memory);
    assert_eq!(
        config.max_messages_per_subject, 3,
        "the handle's own configuration"
    );
    assert_eq!(config.description.as_deref(), Some("users' bucket"));
    drop(server);
}
