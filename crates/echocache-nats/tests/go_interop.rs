//! The Go-compatible NatsStore against a real NATS server, with the golden keys and bytes
//! of `go-wire-format.md` (what the Go echocache v1.2.0 writes through nats.go) written and
//! read by raw KV calls, as a Go service would.
//!
//! Needs a server: ignored by `cargo test`, run by `cargo xtask test`. Every test creates
//! its own bucket and deletes only that bucket at the end.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use async_nats::jetstream::kv;
use echocache_core::test_util::{check_data_ops, check_exclusive_lock};
use echocache_core::{EchoCache, Entry, LazyEchoCache, ManualClock, Store};
use echocache_nats::NatsStore;
use serde::{Deserialize, Serialize};

mod bucket;
use bucket::with_bucket;

/// Go: `type Weather struct { City string; Temperature int; Tags []string }`, no tags.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Weather {
    city: String,
    temperature: i64,
    tags: Option<Vec<String>>,
}

/// What Go's `NewStaleWhileRevalidateNatsCache[Weather]` stored for `w1` (111 bytes).
const GO_WEATHER: &str = r#"{"Value":{"City":"Rome","Temperature":22,"Tags":["sunny","warm"]},"CreatedAt":"2025-02-21T21:01:30.123456789Z"}"#;

/// 2025-02-21T21:01:30.123456789Z.
fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::new(1_740_171_690, 123_456_789)
}

fn rome() -> Weather {
    Weather {
        city: "Rome".into(),
        temperature: 22,
        tags: Some(vec!["sunny".into(), "warm".into()]),
    }
}

async fn raw(kv: &kv::Store, key: &str) -> Option<Vec<u8>> {
    kv.get(key).await.expect("raw get").map(|b| b.to_vec())
}

/// Go's RFC 3339 (to the second) of `t`, as its lock payload holds it.
fn rfc3339_secs(t: SystemTime) -> String {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    echocache_core::go_format::format_time(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
        .unwrap()
}

#[tokio::test]
#[ignore = "needs NATS: cargo xtask test"]
async fn the_envelope_format_reads_and_writes_gos_bytes_at_gos_keys() {
    with_bucket("go-envelope", |_, kv| async move {
        let store = NatsStore::<Weather, _>::go_echocache_compatible(kv.clone(), "gonats").unwrap();
        assert_eq!(
            store.data_key("w1"),
            "gonats.a95dcb8aebb202efeedb10d5538edeb9"
        );
        assert_eq!(
            store.lock_key("w1"),
            "gonats.880c82243b6db5c1231aad15b0b937f9"
        );
        assert_eq!(GO_WEATHER.len(), 111);

        // A Go service wrote it: Rust reads the value and its age to the nanosecond.
        kv.put(store.data_key("w1"), GO_WEATHER.into())
            .await
            .unwrap();
        let entry = store.get("w1").await.unwrap().expect("Go's entry");
        assert_eq!(entry.value, rome());
        assert_eq!(entry.written_at, t0());

        // Rust writes what Go writes for the same entry, byte for byte.
        store.set("w2", &Entry::new(rome(), t0())).await.unwrap();
        assert_eq!(
            raw(&kv, "gonats.62d7d5184b7a313dc64255bdb8187847")
                .await
                .as_deref(),
            Some(GO_WEATHER.as_bytes()),
            "the key of w2 is md5(\"w2\")"
        );
        assert_eq!(
            store.data_key("w2"),
            "gonats.62d7d5184b7a313dc64255bdb8187847"
        );

        // Bytes Go could not decode are a decode error, not a panic.
        kv.put(store.data_key("bad"), "{\"Value\":".into())
            .await
            .unwrap();
        assert!(store.get("bad").await.unwrap_err().is_decode());

        // The Store contract holds in this format too.
        let own =
            NatsStore::<String, _>::go_echocache_compatible(kv.clone(), "gonats.own.").unwrap();
        check_data_ops(&own, "").await;
        check_exclusive_lock(&own, "").await;
    })
    .await;
}

#[tokio::test]
#[ignore = "needs NATS: cargo xtask test"]
async fn the_plain_format_reads_and_writes_the_bare_json_and_has_no_lock() {
    with_bucket("go-plain", |_, kv| async move {
        let store =
            NatsStore::<String, _>::go_echocache_compatible_plain(kv.clone(), "gonatsp").unwrap();
        assert_eq!(
            store.data_key("s1"),
            "gonatsp.8ddf878039b70767c4a5bcf4f0c4f65e"
        );
        kv.put(store.data_key("s1"), "\"hello\"".into())
            .await
            .unwrap();
        let entry = store.get("s1").await.unwrap().expect("Go's value");
        assert_eq!(entry.value, "hello");
        assert_eq!(
            entry.written_at,
            SystemTime::UNIX_EPOCH,
            "no time in these bytes"
        );

        store
            .set("s2", &Entry::new("a<b".to_string(), t0()))
            .await
            .unwrap();
        assert_eq!(
            raw(&kv, &store.data_key("s2")).await.as_deref(),
            Some(&b"\"a\\u003cb\""[..]),
            "Go's escapes"
        );
        assert!(!store.shares_locks());
        assert!(store.try_lock("s1", Duration::from_secs(5)).await.is_err());

        // An EchoCache over it loads once, then hits Go's value.
        let cache = EchoCache::new(store);
        assert_eq!(
            cache
                .fetch("s1", || async {
                    Ok::<_, std::io::Error>("loaded".to_string())
                })
                .await
                .unwrap(),
            "hello"
        );
        assert_eq!(cache.stats().loads, 0);
    })
    .await;
}

#[tokio::test]
#[ignore = "needs NATS: cargo xtask test"]
async fn a_lock_taken_by_go_blocks_the_rust_refresh_and_ours_blocks_go() {
    with_bucket("go-lock", |_, kv| async move {
        let store = NatsStore::<String, _>::go_echocache_compatible(kv.clone(), "gonats").unwrap();
        kv.put(
            store.data_key("k"),
            r#"{"Value":"from go","CreatedAt":"2025-02-21T21:01:30.123456789Z"}"#.into(),
        )
        .await
        .unwrap();
        // Go's TryAcquireRefreshLock: kv.Create(lockKey, "token|now").
        let go_lock = format!("gotoken|{}", rfc3339_secs(SystemTime::now()));
        kv.create(store.lock_key("k"), go_lock.clone().into())
            .await
            .unwrap();

        let clock = ManualClock::new(t0() + Duration::from_secs(61));
        let cache = LazyEchoCache::builder(store.clone())
            .refresh_after(Duration::from_secs(60))
            .clock(clock)
            .build()
            .unwrap();
        let loads = Arc::new(AtomicUsize::new(0));
        let counted = loads.clone();
        let stale = cache
            .fetch("k", move || async move {
                counted.fetch_add(1, Ordering::SeqCst);
                Ok::<_, std::io::Error>("from rust".to_string())
            })
            .await
            .unwrap();
        assert_eq!(stale, "from go", "the stale Go value at once");
        echocache_testkit::eventually("the refresh ends", Duration::from_secs(10), || {
            let done = cache.refreshes_pending() == 0;
            async move { done.then_some(()) }
        })
        .await;
        let stats = cache.stats();
        assert_eq!(stats.refreshes_locked_out, 1, "{stats:?}");
        assert_eq!(loads.load(Ordering::SeqCst), 0, "the loader did not run");
        assert_eq!(
            raw(&kv, &store.lock_key("k")).await,
            Some(go_lock.into_bytes()),
            "the Go lock is untouched"
        );
        cache.shutdown().await;

        // Ours, as Go sees it: `{token}|{RFC 3339}` at Go's lock key, and Go's
        // kv.Create fails on it (TryAcquireRefreshLock returns false for another token).
        let token = store
            .try_lock("k2", Duration::from_secs(30))
            .await
            .unwrap()
            .expect("free");
        let payload = String::from_utf8(raw(&kv, &store.lock_key("k2")).await.unwrap()).unwrap();
        let (held_by, at) = payload.split_once('|').unwrap();
        assert_eq!(held_by, token.as_str());
        let at = echocache_core::go_format::parse_time(at).unwrap();
        let age = SystemTime::now().duration_since(at).unwrap_or_default();
        assert!(
            age < Duration::from_secs(5),
            "taken now, to the second: {payload}"
        );
        assert!(
            kv.create(store.lock_key("k2"), "gotoken|x".into())
                .await
                .is_err()
        );
        store.unlock("k2", &token).await.unwrap();
        assert_eq!(raw(&kv, &store.lock_key("k2")).await, None, "released");
    })
    .await;
}

#[tokio::test]
#[ignore = "needs NATS: cargo xtask test"]
async fn a_go_lock_is_released_by_its_owner_only_and_taken_over_once_expired() {
    with_bucket("go-lock-owner", |_, kv| async move {
        let store = NatsStore::<String, _>::go_echocache_compatible(kv.clone(), "gonats").unwrap();
        let ttl = Duration::from_secs(30);
        let token = store.try_lock("k", ttl).await.unwrap().expect("free");
        // Someone else's lock now stands there (a Go service deleted ours and took it).
        let theirs = format!("other|{}", rfc3339_secs(SystemTime::now()));
        kv.put(store.lock_key("k"), theirs.clone().into())
            .await
            .unwrap();
        store.unlock("k", &token).await.unwrap();
        assert_eq!(
            raw(&kv, &store.lock_key("k")).await,
            Some(theirs.into_bytes()),
            "not ours: left alone"
        );
        assert!(store.try_lock("k", ttl).await.unwrap().is_none(), "held");
        assert!(!store.extend_lock("k", &token, ttl).await.unwrap());

        // A Go lock older than the ttl (a crashed holder; Go itself never reclaims it).
        let old = SystemTime::now() - Duration::from_secs(3_600);
        kv.put(
            store.lock_key("k"),
            format!("dead|{}", rfc3339_secs(old)).into(),
        )
        .await
        .unwrap();
        let taken = store.try_lock("k", ttl).await.unwrap().expect("taken over");
        assert!(store.extend_lock("k", &taken, ttl).await.unwrap());
        store.unlock("k", &taken).await.unwrap();
        assert_eq!(raw(&kv, &store.lock_key("k")).await, None);
    })
    .await;
}
