//! RedisStore against a real Redis. Every test here needs a server: they are ignored by
//! `cargo test` and run by `cargo xtask test` (or `cargo test -- --include-ignored` with
//! `ECHOCACHE_REDIS_URL` pointing at a server; default `redis://127.0.0.1:6379`).
//!
//! Each test works under its own random prefix, deletes only the keys under it, and writes
//! every raw key with a TTL, so a failed test leaves nothing behind for long.

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use echocache_core::codec::{Codec, ENVELOPE_VERSION, HEADER_LEN};
use echocache_core::test_util::{check_data_ops, check_exclusive_lock};
use echocache_core::{EchoCache, Entry, LazyEchoCache, LockToken, ManualClock, Store};
use echocache_redis::fred::prelude::*;
use echocache_redis::{Json, MessagePack, RedisStore};

mod ns;

use ns::{Ns, connect, url};

const TTL: Duration = Duration::from_secs(60);

/// A client as the crate docs recommend: reconnects for ever, commands time out.
/// `start_while_down`: the first connection follows the reconnect policy too (use
/// `connect`, not `init`).
fn builder(url: &str, command_timeout: Duration, start_while_down: bool) -> Builder {
    let config = Config {
        fail_fast: !start_while_down,
        ..Config::from_url(url).expect("redis url")
    };
    let mut builder = Builder::from_config(config);
    builder
        .with_connection_config(|c| {
            c.connection_timeout = Duration::from_secs(2);
            c.internal_command_timeout = Duration::from_secs(2);
            c.max_command_attempts = 2;
        })
        .with_performance_config(|c| c.default_command_timeout = command_timeout)
        .set_policy(ReconnectPolicy::new_constant(0, 50));
    builder
}

impl Ns {
    fn store<V>(&self) -> RedisStore<V> {
        RedisStore::new(&self.client, &self.prefix, TTL).expect("store")
    }

    async fn raw_set(&self, key: &str, bytes: Vec<u8>) {
        self.client
            .set::<(), _, _>(
                key,
                Value::Bytes(bytes.into()),
                Some(Expiration::PX(60_000)),
                None,
                false,
            )
            .await
            .expect("raw SET");
    }

    async fn exists(&self, key: &str) -> bool {
        self.client.exists::<i64, _>(key).await.expect("EXISTS") == 1
    }
}

fn entry(value: &str) -> Entry<String> {
    Entry::new(value.to_owned(), SystemTime::now())
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask test"]
async fn conformance_messagepack() {
    let ns = Ns::new("conf-msgpack").await;
    let store = ns.store::<String>();
    check_data_ops(&store, "").await;
    check_exclusive_lock(&store, "").await;
    ns.cleanup().await;
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask test"]
async fn conformance_json() {
    let ns = Ns::new("conf-json").await;
    let store = ns.store::<String>().codec(Json);
    check_data_ops(&store, "").await;
    check_exclusive_lock(&store, "").await;
    // The JSON payload is readable after the 10-byte envelope header.
    store.set("k", &entry("hello")).await.unwrap();
    let raw: Vec<u8> = ns.client.get(store.data_key("k")).await.unwrap();
    assert_eq!(&raw[HEADER_LEN..], br#""hello""#);
    assert_eq!(&raw[..2], &[ENVELOPE_VERSION, Json::ID]);
    ns.cleanup().await;
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask test"]
async fn conformance_through_a_pool() {
    let ns = Ns::new("conf-pool").await;
    let pool = builder(&url(), Duration::from_secs(5), false)
        .build_pool(2)
        .expect("pool");
    pool.init().await.expect("connect pool");
    let store: RedisStore<String> = RedisStore::new(&pool, &ns.prefix, TTL).unwrap();
    check_data_ops(&store, "").await;
    check_exclusive_lock(&store, "").await;
    ns.cleanup().await;
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask test"]
async fn entries_get_the_store_ttl() {
    let ns = Ns::new("ttl").await;
    let store = ns.store::<String>();
    store.set("k", &entry("v")).await.unwrap();
    let pttl = ns.pttl(&format!("{}:v:k", ns.prefix)).await;
    assert!(pttl > 0 && pttl <= TTL.as_millis() as i64, "PTTL {pttl}");
    ns.cleanup().await;
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask test"]
async fn corrupt_bytes_are_a_decode_error_and_fetch_heals_them() {
    let ns = Ns::new("corrupt").await;
    let data_key = format!("{}:v:k", ns.prefix);
    ns.raw_set(&data_key, b"\x07 not an envelope at all".to_vec())
        .await;
    let store = ns.store::<String>();
    let err = store.get("k").await.unwrap_err();
    assert!(err.is_decode(), "{err:?}");

    let cache = EchoCache::new(store);
    let value = cache
        .fetch("k", || async {
            Ok::<_, std::io::Error>("fresh".to_owned())
        })
        .await
        .unwrap();
    assert_eq!(value, "fresh");
    let stats = cache.stats();
    assert_eq!(stats.decode_errors, 1, "{stats:?}");
    assert_eq!(stats.loads, 1, "{stats:?}");
    // The loaded value overwrote the bad bytes.
    assert_eq!(cache.get("k").await.unwrap().as_deref(), Some("fresh"));
    ns.cleanup().await;
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask test"]
async fn a_value_written_with_another_codec_is_a_decode_error() {
    let ns = Ns::new("codec-mismatch").await;
    ns.store::<String>().set("k", &entry("v")).await.unwrap();
    let err = ns.store::<String>().codec(Json).get("k").await.unwrap_err();
    assert!(err.is_decode(), "{err:?}");
    ns.cleanup().await;
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask test"]
async fn values_over_the_limit_fail_on_set_and_on_get() {
    let ns = Ns::new("too-large").await;
    let small = ns.store::<String>().max_value_bytes(64);
    let big = "x".repeat(1000);
    assert!(small.set("k", &entry(&big)).await.is_err());
    assert!(
        !ns.exists(&small.data_key("k")).await,
        "nothing was written"
    );
    assert!(small.set("k", &entry("fits")).await.is_ok());

    // Written by a store with a larger limit, read by the small one.
    ns.store::<String>().set("k", &entry(&big)).await.unwrap();
    let err = small.get("k").await.unwrap_err();
    assert!(err.is_decode(), "{err:?}");
    ns.cleanup().await;
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask test"]
async fn a_hostile_length_prefix_is_a_decode_error() {
    let ns = Ns::new("hostile").await;
    // A valid envelope header, then a MessagePack array header claiming 2^32-1 elements.
    let mut bytes = vec![ENVELOPE_VERSION, MessagePack::ID, 0, 0, 0, 0, 0, 0, 0, 0];
    bytes.extend_from_slice(&[0xdd, 0xff, 0xff, 0xff, 0xff]);
    ns.raw_set(&format!("{}:v:k", ns.prefix), bytes).await;
    let err = ns.store::<Vec<u64>>().get("k").await.unwrap_err();
    assert!(err.is_decode(), "{err:?}");
    ns.cleanup().await;
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask test"]
async fn unlock_with_a_foreign_token_leaves_the_lock() {
    let ns = Ns::new("foreign-unlock").await;
    let store = ns.store::<String>();
    let lock_key = format!("{}:l:k", ns.prefix);
    let token = store
        .try_lock("k", Duration::from_secs(30))
        .await
        .unwrap()
        .expect("free lock");
    store
        .unlock("k", &LockToken::new("someone-else"))
        .await
        .unwrap();
    assert_eq!(
        ns.raw_get(&lock_key).await.as_deref(),
        Some(token.as_str()),
        "the owner's lock is still there"
    );
    assert!(
        !store
            .extend_lock(
                "k",
                &LockToken::new("someone-else"),
                Duration::from_secs(60)
            )
            .await
            .unwrap(),
        "a foreign token extends nothing"
    );
    store.unlock("k", &token).await.unwrap();
    assert!(!ns.exists(&lock_key).await, "the owner's unlock deletes it");
    ns.cleanup().await;
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask test"]
async fn locks_expire_and_can_be_extended_by_their_owner() {
    let ns = Ns::new("lock-ttl").await;
    let store = ns.store::<String>();
    let lock_key = store.lock_key("k");
    let token = store
        .try_lock("k", Duration::from_secs(5))
        .await
        .unwrap()
        .expect("free lock");
    let pttl = ns.pttl(&lock_key).await;
    assert!(pttl > 0 && pttl <= 5_000, "PTTL {pttl}");

    assert!(
        store
            .extend_lock("k", &token, Duration::from_secs(20))
            .await
            .unwrap()
    );
    let pttl = ns.pttl(&lock_key).await;
    assert!(pttl > 5_000 && pttl <= 20_000, "PTTL after extend {pttl}");
    store.unlock("k", &token).await.unwrap();
    assert!(
        !store
            .extend_lock("k", &token, Duration::from_secs(20))
            .await
            .unwrap(),
        "a released lock cannot be extended"
    );

    // A zero TTL still makes a lock that expires (Go bug 19).
    let token = store.try_lock("z", Duration::ZERO).await.unwrap();
    assert!(token.is_some(), "a free lock is granted");
    let pttl = ns.pttl(&store.lock_key("z")).await;
    // 0 or 1 ms left, or already expired (-2); never -1, "no expiry".
    assert!(pttl == -2 || (0..=1).contains(&pttl), "PTTL {pttl}");
    ns.cleanup().await;
}

/// `extend_lock` as the caches call it: through the `Store` trait, not the inherent method.
async fn extend_through_the_trait<S: Store<String>>(
    store: &S,
    key: &str,
    token: &LockToken,
    ttl: Duration,
) -> bool {
    store.extend_lock(key, token, ttl).await.expect("extend")
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask test"]
async fn the_trait_extends_the_owners_lock_only() {
    let ns = Ns::new("trait-extend").await;
    let store = ns.store::<String>();
    let lock_key = store.lock_key("k");
    let owner = store
        .try_lock("k", Duration::from_secs(5))
        .await
        .unwrap()
        .expect("free lock");
    let before = ns.pttl(&lock_key).await;
    assert!(before > 0 && before <= 5_000, "PTTL {before}");

    assert!(
        extend_through_the_trait(&store, "k", &owner, Duration::from_secs(30)).await,
        "the owner extends its lock (not the trait's default `Ok(false)`)"
    );
    let after = ns.pttl(&lock_key).await;
    assert!(
        after > before && after <= 30_000,
        "PTTL {before} -> {after}"
    );

    let stranger = LockToken::generate();
    assert!(
        !extend_through_the_trait(&store, "k", &stranger, Duration::from_secs(60)).await,
        "another token does not extend the lock"
    );
    let untouched = ns.pttl(&lock_key).await;
    assert!(untouched <= after, "PTTL {after} -> {untouched}");
    assert_eq!(
        ns.raw_get(&lock_key).await.as_deref(),
        Some(owner.as_str()),
        "the owner still holds the lock"
    );

    // Gone once released: nothing left to extend.
    store.unlock("k", &owner).await.unwrap();
    assert!(!extend_through_the_trait(&store, "k", &owner, Duration::from_secs(30)).await);
    assert!(
        !ns.exists(&lock_key).await,
        "extend did not re-create the lock"
    );
    ns.cleanup().await;
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask test"]
async fn user_keys_do_not_collide_with_locks() {
    let ns = Ns::new("collide").await;
    let store = ns.store::<String>();
    let token = store
        .try_lock("x", Duration::from_secs(30))
        .await
        .unwrap()
        .expect("free lock");
    // Go bug 21: the data of `lock:x` was stored in the lock key of `x`.
    store.set("l:x", &entry("data")).await.unwrap();
    store.set("lock:x", &entry("data")).await.unwrap();
    assert!(
        store
            .try_lock("x", Duration::from_secs(30))
            .await
            .unwrap()
            .is_none(),
        "writing `l:x` did not touch the lock of `x`"
    );
    assert_eq!(
        ns.raw_get(&store.lock_key("x")).await.as_deref(),
        Some(token.as_str())
    );
    store.unlock("x", &token).await.unwrap();
    assert_eq!(
        store.get("l:x").await.unwrap().map(|e| e.value).as_deref(),
        Some("data"),
        "unlocking `x` did not delete `l:x`"
    );
    assert!(store.get("x").await.unwrap().is_none());
    ns.cleanup().await;
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask test"]
async fn a_dead_server_fails_open_without_hanging() {
    // Port 1 on loopback: nothing listens, every connect is refused.
    let client = builder("redis://127.0.0.1:1", Duration::from_millis(300), true)
        .build()
        .expect("client");
    let _connection = client.connect(); // not `init`: it would report the refusal
    let store: RedisStore<String> = RedisStore::new(&client, "echocache-test-dead", TTL).unwrap();
    let cache = EchoCache::new(store);
    let loads = Arc::new(AtomicUsize::new(0));

    let run = async {
        for key in ["k1", "k2"] {
            let loads = Arc::clone(&loads);
            let value = cache
                .fetch(key, move || async move {
                    loads.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, std::io::Error>("loaded".to_owned())
                })
                .await
                .expect("fetch fails open");
            assert_eq!(value, "loaded");
        }
        let err = cache.get("k1").await.unwrap_err();
        assert!(!err.is_decode(), "{err:?}");
    };
    // A hang guard, not a timing assertion: each command times out after 300 ms.
    tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("a dead server must not hang the cache");
    assert_eq!(loads.load(Ordering::SeqCst), 2, "every fetch loaded");
    let stats = cache.stats();
    assert!(stats.store_errors > 0, "{stats:?}");
    assert_eq!(stats.decode_errors, 0, "{stats:?}");
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask test"]
async fn a_lazy_refresh_is_skipped_while_another_process_holds_the_lock() {
    let ns = Ns::new("lazy-locked").await;
    let clock = ManualClock::new(SystemTime::now());
    let cache = LazyEchoCache::builder(ns.store::<String>())
        .refresh_after(Duration::from_secs(60))
        .clock(clock.clone())
        .build()
        .unwrap();
    cache.insert("k", "v1".to_owned()).await.unwrap();
    clock.advance(Duration::from_secs(61));

    // Another process takes the refresh lock first.
    let lock_key = format!("{}:l:k", ns.prefix);
    let taken: Option<String> = ns
        .client
        .set(
            &lock_key,
            "other-process",
            Some(Expiration::PX(60_000)),
            Some(SetOptions::NX),
            false,
        )
        .await
        .unwrap();
    assert!(taken.is_some());

    let loads = Arc::new(AtomicUsize::new(0));
    let loader = |value: &'static str| {
        let loads = Arc::clone(&loads);
        move || async move {
            loads.fetch_add(1, Ordering::SeqCst);
            Ok::<_, std::io::Error>(value.to_owned())
        }
    };
    assert_eq!(cache.fetch("k", loader("v2")).await.unwrap(), "v1");
    wait_for_refreshes(&cache).await;
    let stats = cache.stats();
    assert_eq!(stats.refreshes_locked_out, 1, "{stats:?}");
    assert_eq!(stats.refreshes, 0, "{stats:?}");
    assert_eq!(loads.load(Ordering::SeqCst), 0, "the loader did not run");
    assert_eq!(
        ns.raw_get(&lock_key).await.as_deref(),
        Some("other-process"),
        "the other process's lock is untouched"
    );
    assert_eq!(cache.get("k").await.unwrap().as_deref(), Some("v1"));

    // Once the other process lets go, the next stale hit refreshes.
    ns.client.del::<(), _>(&lock_key).await.unwrap();
    assert_eq!(cache.fetch("k", loader("v2")).await.unwrap(), "v1");
    wait_for_refreshes(&cache).await;
    assert_eq!(cache.stats().refreshes, 1, "{:?}", cache.stats());
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    assert_eq!(cache.get("k").await.unwrap().as_deref(), Some("v2"));
    assert!(
        !ns.exists(&lock_key).await,
        "the refresher released its lock"
    );
    cache.shutdown().await;
    ns.cleanup().await;
}

async fn wait_for_refreshes<V, S>(cache: &LazyEchoCache<V, S>)
where
    V: Clone + Send + Sync + 'static,
    S: Store<V>,
{
    tokio::time::timeout(Duration::from_secs(10), async {
        while cache.refreshes_pending() > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the refresh ends");
}

/// A `redis-server` child of this test, killed when dropped.
struct OwnServer {
    child: Child,
    port: u16,
}

impl OwnServer {
    fn start(port: u16) -> std::io::Result<Self> {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let server = Self { child, port };
        server.wait_until_listening();
        Ok(server)
    }

    fn wait_until_listening(&self) {
        for _ in 0..500 {
            if TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("redis-server on port {} did not start", self.port);
    }

    fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis: cargo xtask test"]
async fn the_store_connects_late_and_recovers_after_a_restart() {
    if Command::new("redis-server")
        .arg("--version")
        .output()
        .is_err()
    {
        panic!(
            "this test starts and kills its own Redis: it needs the redis-server binary \
             (Debian/Ubuntu: apt-get install redis-server)"
        );
    }
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let client = builder(&url, Duration::from_millis(500), true)
        .build()
        .unwrap();
    // Redis is not up yet: the process starts all the same.
    let _connection = client.connect();
    let store: RedisStore<String> =
        RedisStore::new(&client, "echocache-test-restart", TTL).unwrap();
    assert!(
        store.get("k").await.is_err(),
        "no server yet: an error, not a hang"
    );

    let server = OwnServer::start(port).expect("start redis-server");
    assert!(
        works_again(&store, "first").await,
        "the store did not connect once the server came up"
    );

    server.stop();
    assert!(
        store.get("k").await.is_err(),
        "a stopped server gives an error, not a hang"
    );

    let server = OwnServer::start(port).expect("restart redis-server");
    assert!(
        works_again(&store, "after").await,
        "the store did not recover after the restart"
    );
    // The restart emptied the script cache: EVALSHA falls back to EVAL.
    let token = store
        .try_lock("k", Duration::from_secs(5))
        .await
        .unwrap()
        .expect("free lock");
    store.unlock("k", &token).await.unwrap();
    assert!(
        store
            .try_lock("k", Duration::from_secs(5))
            .await
            .unwrap()
            .is_some()
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), client.quit()).await;
    drop(server);
}

/// Polls (bounded) until a write and a read through `store` succeed: no user action, the
/// client reconnects by its policy.
async fn works_again(store: &RedisStore<String>, value: &str) -> bool {
    // A bound, not a timing assertion: reconnecting takes a few 50 ms policy delays.
    let give_up = tokio::time::Instant::now() + Duration::from_secs(15);
    while tokio::time::Instant::now() < give_up {
        if store.set("k", &entry(value)).await.is_ok() {
            let got = store.get("k").await.unwrap().map(|e| e.value);
            assert_eq!(got.as_deref(), Some(value));
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct User {
    id: u64,
    name: String,
    tags: Vec<String>,
    manager: Option<Box<User>>,
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask test"]
async fn a_struct_round_trips_through_both_codecs() {
    let ns = Ns::new("struct").await;
    let ada = User {
        id: 42,
        name: "Ada \u{2603}".into(),
        tags: vec!["admin".into(), String::new()],
        manager: Some(Box::new(User {
            id: 1,
            name: "Grace".into(),
            tags: vec![],
            manager: None,
        })),
    };
    let written = SystemTime::UNIX_EPOCH + Duration::from_nanos(1_732_000_000_123_456_789);
    let msgpack: RedisStore<User> = ns.store();
    let json: RedisStore<User, Json> =
        RedisStore::new(&ns.client, &format!("{}:json", ns.prefix), TTL)
            .unwrap()
            .codec(Json);
    msgpack
        .set("ada", &Entry::new(ada.clone(), written))
        .await
        .unwrap();
    json.set("ada", &Entry::new(ada.clone(), written))
        .await
        .unwrap();
    for got in [
        msgpack.get("ada").await.unwrap(),
        json.get("ada").await.unwrap(),
    ] {
        let got = got.expect("the entry");
        assert_eq!(got.value, ada);
        assert_eq!(
            got.written_at, written,
            "written_at round-trips to the nanosecond"
        );
    }
    ns.cleanup().await;
}

/// Two processes (two clients, two caches) share one Redis: a stale key is refreshed once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis: cargo xtask test"]
async fn two_lazy_caches_sharing_redis_refresh_a_stale_key_once() {
    let ns = Ns::new("fleet").await;
    let other_client = connect().await;
    let clock = ManualClock::new(SystemTime::now());
    let cache = |client: &Client| {
        LazyEchoCache::builder(RedisStore::<String>::new(client, &ns.prefix, TTL).unwrap())
            .refresh_after(Duration::from_secs(60))
            .clock(clock.clone())
            .build()
            .unwrap()
    };
    let (a, b) = (cache(&ns.client), cache(&other_client));
    a.insert("k", "v1".to_owned()).await.unwrap();
    clock.advance(Duration::from_secs(61));

    let loads = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let loader = |value: &'static str| {
        let (loads, gate) = (Arc::clone(&loads), Arc::clone(&gate));
        move || async move {
            loads.fetch_add(1, Ordering::SeqCst);
            gate.acquire().await.expect("gate").forget();
            Ok::<_, std::io::Error>(value.to_owned())
        }
    };
    // Process A's refresh takes the lock and is held inside its loader.
    assert_eq!(a.fetch("k", loader("from a")).await.unwrap(), "v1");
    tokio::time::timeout(Duration::from_secs(10), async {
        while loads.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .expect("A's refresh starts");
    // Process B sees the same stale entry; its refresh finds the lock taken.
    assert_eq!(b.fetch("k", loader("from b")).await.unwrap(), "v1");
    wait_for_refreshes(&b).await;
    assert_eq!(b.stats().refreshes_locked_out, 1, "{:?}", b.stats());
    gate.add_permits(10);
    wait_for_refreshes(&a).await;
    assert_eq!(loads.load(Ordering::SeqCst), 1, "one refresh fleet-wide");
    assert_eq!(b.get("k").await.unwrap().as_deref(), Some("from a"));
    a.shutdown().await;
    b.shutdown().await;
    ns.cleanup().await;
}

/// Panics with a clear message when `redis-server` is not on the PATH.
fn require_redis_server() {
    if Command::new("redis-server")
        .arg("--version")
        .output()
        .is_err()
    {
        panic!(
            "this test starts and kills its own Redis: it needs the redis-server binary \
             (Debian/Ubuntu: apt-get install redis-server)"
        );
    }
}

/// Quits the client a store made by `connect` owns, bounded.
async fn quit(store: &RedisStore<String>) {
    if let echocache_redis::RedisConnection::Client(client) = store.connection() {
        let _ = tokio::time::timeout(Duration::from_secs(2), client.quit()).await;
    }
}

/// A service that starts while its Redis is down: `connect` returns at once, calls fail
/// (bounded) meanwhile, and the store is used as soon as Redis is up, with no user action.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis: cargo xtask test"]
async fn connect_starts_while_redis_is_down_and_uses_it_once_up() {
    require_redis_server();
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");

    let started = tokio::time::Instant::now();
    let store = tokio::time::timeout(
        Duration::from_secs(1),
        RedisStore::<String>::connect(&url, "echocache-test-connect-late", TTL),
    )
    .await
    .expect("connect returns within 1 s while Redis is down")
    .expect("a server that is down is no error");
    eprintln!("connect while down: {:?}", started.elapsed());
    assert!(!store.connection().is_connected());

    for _ in 0..3 {
        let started = tokio::time::Instant::now();
        let got = tokio::time::timeout(Duration::from_secs(5), store.get("k"))
            .await
            .expect("a get while Redis is down does not hang");
        let took = started.elapsed();
        eprintln!("get while down: {took:?} -> {got:?}");
        assert!(got.is_err(), "no server: an error");
        // Not buffered until the reconnection: no wait for the 2 s command timeout.
        assert!(took < Duration::from_secs(1), "fails at once: {took:?}");
    }

    let server = OwnServer::start(port).expect("start redis-server");
    let up = tokio::time::Instant::now();
    let mut used = None;
    while up.elapsed() < Duration::from_secs(5) {
        if store.set("k", &entry("late")).await.is_ok()
            && let Ok(Some(got)) = store.get("k").await
        {
            assert_eq!(got.value, "late");
            used = Some(up.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let used = used.expect("the store is used within 5 s of Redis coming up");
    eprintln!("store used {used:?} after Redis came up");
    quit(&store).await;
    server.stop();
}

/// A write its caller gave up on while Redis was down (as the caches give up on a store
/// call after their store timeout) must not land once Redis is back, over what others
/// wrote meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis: cargo xtask test"]
async fn a_write_given_up_on_while_down_never_lands_later() {
    require_redis_server();
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let store = RedisStore::<String>::connect(&url, "echocache-test-abandoned", TTL)
        .await
        .unwrap();
    // Given up on after 250 ms, while nothing listens.
    let given_up =
        tokio::time::timeout(Duration::from_millis(250), store.set("k", &entry("old"))).await;
    assert!(
        matches!(given_up, Err(_) | Ok(Err(_))),
        "no server: {given_up:?}"
    );

    let server = OwnServer::start(port).expect("start redis-server");
    // Another process writes the newer value as soon as Redis is up.
    let other = builder(&url, Duration::from_secs(2), false)
        .build()
        .unwrap();
    other.init().await.expect("connect");
    let newer: RedisStore<String> =
        RedisStore::new(&other, "echocache-test-abandoned", TTL).unwrap();
    newer.set("k", &entry("new")).await.unwrap();

    // This store reconnects by itself ...
    let up = tokio::time::Instant::now();
    while !store.connection().is_connected() {
        assert!(up.elapsed() < Duration::from_secs(5), "reconnected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ... and (give a replayed command time to land) the newer value stays.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = newer.get("k").await.unwrap().map(|e| e.value);
    assert_eq!(
        got.as_deref(),
        Some("new"),
        "the abandoned write landed later"
    );
    let _ = other.quit().await;
    quit(&store).await;
    server.stop();
}

/// Sends `signal` (`STOP`, `CONT`) to the server process.
fn signal(server: &OwnServer, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &server.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{signal}");
}

/// A stalled server (SIGSTOP: sockets open, no replies). While commands keep coming, each
/// waits out the command timeout (2 s; the caches bound their calls tighter). Once no
/// command was written for the unresponsive limit (4 s; e.g. while the caches' circuit
/// breaker skips the store), the connection is dropped and calls fail at once. After
/// SIGCONT the store works again by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis: cargo xtask test"]
async fn connect_survives_a_stalled_server() {
    require_redis_server();
    let port = free_port();
    let server = OwnServer::start(port).expect("start redis-server");
    let url = format!("redis://127.0.0.1:{port}");
    let store = RedisStore::<String>::connect(&url, "echocache-test-stall", TTL)
        .await
        .unwrap();
    assert!(store.connection().is_connected());
    store.set("k", &entry("before")).await.unwrap();

    signal(&server, "STOP");
    let timed_get = || async {
        let started = tokio::time::Instant::now();
        let got = tokio::time::timeout(Duration::from_secs(5), store.get("k"))
            .await
            .expect("a get from a stalled server is bounded by the command timeout");
        assert!(got.is_err(), "{got:?}");
        started.elapsed()
    };
    let under_traffic = [timed_get().await, timed_get().await];
    eprintln!("stalled, under traffic: get took {under_traffic:?}");
    // Idle past the unresponsive limit (4 s since the last write, checked every second).
    tokio::time::sleep(Duration::from_secs(6)).await;
    let mut after_idle = Vec::new();
    for _ in 0..5 {
        after_idle.push(timed_get().await);
    }
    eprintln!("stalled, after 6 s idle: get took {after_idle:?}");
    assert!(
        after_idle.iter().all(|took| *took < Duration::from_secs(1)),
        "the unresponsive connection was dropped: calls fail at once ({after_idle:?})"
    );

    signal(&server, "CONT");
    let resumed = tokio::time::Instant::now();
    let mut used = None;
    while resumed.elapsed() < Duration::from_secs(5) {
        if let Ok(Some(got)) = store.get("k").await {
            assert_eq!(got.value, "before");
            used = Some(resumed.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let used = used.expect("the store is used again within 5 s of SIGCONT");
    eprintln!("store used {used:?} after SIGCONT");
    quit(&store).await;
    server.stop();
}
