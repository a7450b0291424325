//! NatsStore against a real NATS server with JetStream (`cargo xtask test`).
//!
//! The server comes from `ECHOCACHE_NATS_URL` (default `nats://127.0.0.1:4222`). Every test
//! creates its own bucket and deletes only that bucket at the end, even when it fails.

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use async_nats::jetstream::{self, kv, stream::StorageType};
use echocache_core::codec::{Json, MessagePack};
use echocache_core::test_util::{check_data_ops, check_exclusive_lock};
use echocache_core::{EchoCache, Entry, LockToken, Store};
use echocache_nats::{BucketErrorKind, BucketOptions, NatsStore, open_or_create_bucket};
use echocache_testkit::OwnServer;

mod bucket;
use bucket::*;

/// Waits (boundedly) until `in_flight` reports no running load: a cache hands the value to
/// its callers before it writes it to the store.
async fn settled(in_flight: impl Fn() -> usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while in_flight() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a load never finished"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `n` distinct keys mixing the characters NATS gives meaning to (`.`, `*`, `>`), the
/// escape character `=`, separators, whitespace and non-ASCII (a fixed pseudo-random walk).
fn generated_awkward_keys(n: usize) -> Vec<String> {
    const ALPHABET: [&str; 16] = [
        ".", "*", ">", ":", "=", " ", "a", "Z", "0", "/", "-", "_", "é", "☃", "\t", "=2E",
    ];
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut keys = std::collections::BTreeSet::new();
    while keys.len() < n {
        let mut key = String::new();
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let len = 1 + (state % 7) as usize;
        for i in 0..len {
            key.push_str(ALPHABET[((state >> (i * 4)) & 15) as usize]);
        }
        keys.insert(key);
    }
    keys.into_iter().collect()
}

fn ago(secs: u64) -> SystemTime {
    SystemTime::now() - Duration::from_secs(secs)
}

#[tokio::test]
#[ignore = "needs NATS: cargo xtask test"]
async fn conformance_with_messagepack() {
    with_bucket("conf-msgpack", |_, kv| async move {
        let store: NatsStore<String> = NatsStore::new(kv, "conf").unwrap();
        check_data_ops(&store, "").await;
        check_exclusive_lock(&store, "").await;
    })
    .await;
}

#[tokio::test]
#[ignore = "needs NATS: cargo xtask test"]
async fn conformance_with_json() {
    with_bucket("conf-json", |_, kv| async move {
        let store = NatsStore::<String>::new(kv.clone(), "conf.json")
            .unwrap()
            .codec(Json);
        check_data_ops(&store, "").await;
        check_exclusive_lock(&store, "").await;
        // The bytes really are the JSON envelope.
        store
            .set("k", &Entry::new("v".into(), SystemTime::UNIX_EPOCH))
            .await
            .unwrap();
        let raw = kv.get(store.data_key("k")).await.unwrap().unwrap();
        assert_eq!(raw[1], 2, "codec id of JSON");
        assert_eq!(&raw[10..], br#""v""#);
    })
    .await;
}

#[tokio::test]
#[ignore = "needs NATS: cargo xtask test"]
async fn awkward_keys_round_trip_without_collisions() {
    with_bucket("awkward-keys", |_, kv| async move {
        let store: NatsStore<String> = NatsStore::new(kv.clone(), "awk").unwrap();
        let long = "x".repeat(600);
        let long_unicode = "日本".repeat(100);
        let keys: Vec<String> = [
            "",
            " ",
            ".",
            "..",
            ".a",
            "a.",
            "a.b",
            "a..b",
            "*",
            ">",
            "a.*",
            "a.>",
            ":",
            "=",
            "==",
            "=2E",
            "a=2Eb",
            "lock:x",
            "x",
            "l.x",
            "v.x",
            "with space",
            "tab\there",
            "ünïcödé",
            "☃",
            "\u{1F600}",
            "A",
            "a",
        ]
        .into_iter()
        .map(str::to_owned)
        .chain([long.clone(), format!("{long}y"), long_unicode.clone()])
        .chain(generated_awkward_keys(200))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
        assert!(keys.len() >= 200, "{} distinct keys", keys.len());
        for (i, key) in keys.iter().enumerate() {
            store
                .set(key, &Entry::new(format!("value-{i}"), SystemTime::now()))
                .await
                .unwrap_or_else(|e| panic!("set {key:?}: {e:?}"));
        }
        for (i, key) in keys.iter().enumerate() {
            let got = store
                .get(key)
                .await
                .unwrap_or_else(|e| panic!("get {key:?}: {e:?}"));
            assert_eq!(got.map(|e| e.value), Some(format!("value-{i}")), "{key:?}");
        }
        // Safe keys are readable in the bucket; the others are escaped.
        assert_eq!(store.data_key("user-42/a_b"), "awk.v.user-42/a_b");
        assert_eq!(store.data_key("a.b"), "awk.v.a=2Eb");
        assert!(kv.get("awk.v.a=2Eb").await.unwrap().is_some());
        // Removing one key leaves its look-alikes.
        store.remove("a.b").await.unwrap();
        assert!(store.get("a.b").await.unwrap().is_none());
        assert!(store.get("a=2Eb").await.unwrap().is_some());
        assert!(store.get("a..b").await.unwrap().is_some());
        // A data key never answers for a lock and vice versa (Go bug 24).
        let token = store.try_lock("x", Duration::from_secs(30)).await.unwrap();
        assert!(
            token.is_some(),
            "the lock of `x` is free although `lock:x` has data"
        );
        assert_eq!(
            store.get("x").await.unwrap().map(|e| e.value),
            Some(format!(
                "value-{}",
                keys.iter().position(|k| k == "x").unwrap()
            ))
        );
        store.unlock("x", &token.unwrap()).await.unwrap();
    })
    .await;
}

#[tokio::test]
#[ignore = "needs NATS: cargo xtask test"]
async fn a_hashed_key_never_reads_another_keys_value() {
    with_bucket("hash-collision", |_, kv| async move {
        let store: NatsStore<String> = NatsStore::new(kv.clone(), "h").unwrap();
        let a = "a".repeat(1000);
        let b = "b".repeat(1000);
        assert!(
            store.data_key(&a).starts_with("h.v.=="),
            "long keys are hashed"
        );
        store
            .set(&a, &Entry::new("value-a".into(), SystemTime::now()))
            .await
            .unwrap();
        // Simulate a hash collision: a's stored bytes at b's KV key.
        let raw = kv.get(store.data_key(&a)).await.unwrap().unwrap();
        kv.put(store.data_key(&b), raw).await.unwrap();
        assert!(
            store.get(&b).await.unwrap().is_none(),
            "a collision reads as a miss"
        );
        assert_eq!(store.get(&a).await.unwrap().unwrap().value, "value-a");
    })
    .await;
}

#[tokio::test]
#[ignore = "needs NATS: cargo xtask test"]
async fn an_expired_or_malformed_lock_is_taken_over() {
    with_bucket("lock-takeover", |_, kv| async move {
        let store: NatsStore<String> = NatsStore::new(kv.clone(), "lk").unwrap();
        let ttl = Duration::from_secs(30);
        // A crashed holder's lock: its deadline (1 ms after the epoch) has long passed.
        kv.put(store.lock_key("k"), "1|dead-owner".into())
            .await
            .unwrap();
        let token = store
            .try_lock("k", ttl)
            .await
            .unwrap()
            .expect("an expired lock is taken over (Go bug 23)");
        assert!(
            store.try_lock("k", ttl).await.unwrap().is_none(),
            "and then held"
        );
        // The dead owner's late release leaves the new owner's lock.
        store
            .unlock("k", &LockToken::new("dead-owner"))
            .await
            .unwrap();
        assert!(store.try_lock("k", ttl).await.unwrap().is_none());
        let raw = kv.get(store.lock_key("k")).await.unwrap().unwrap();
        let payload = String::from_utf8(raw.to_vec()).unwrap();
        assert!(
            payload.ends_with(&format!("|{}", token.as_str())),
            "{payload}"
        );
        store.unlock("k", &token).await.unwrap();
        assert!(store.try_lock("k", ttl).await.unwrap().is_some());

        // A malformed payload is taken over too, without recursion.
        for garbage in ["", "garbage", "|", "x|y", "\u{1F600}"] {
            kv.put(store.lock_key("m"), garbage.to_owned().into())
                .await
                .unwrap();
            assert!(
                store.try_lock("m", ttl).await.unwrap().is_some(),
                "{garbage:?}"
            );
        }
        // A live foreign lock is respected.
        let live = format!("{}|alive", u64::MAX);
        kv.put(store.lock_key("live"), live.into()).await.unwrap();
        assert!(store.try_lock("live", ttl).await.unwrap().is_none());
        store
            .unlock("live", &LockToken::new("someone"))
            .await
            .unwrap();
        assert!(kv.get(store.lock_key("live")).await.unwrap().is_some());
    })
    .await;
}

#[tokio::test]
#[ignore = "needs NATS: cargo xtask test"]
async fn a_lock_with_zero_ttl_expires_at_once() {
    with_bucket("lock-zero-ttl", |_, kv| async move {
        let store: NatsStore<String> = NatsStore::new(kv, "lz").unwrap();
        let first = store.try_lock("k", Duration::ZERO).await.unwrap();
        assert!(first.is_some());
        // Its deadline is "now", so the next contender takes it over.
        let second = store.try_lock("k", Duration::from_secs(30)).await.unwrap();
        assert!(second.is_some());
        // The first owner's release does not free the second owner's lock.
        store.unlock("k", &first.unwrap()).await.unwrap();
        assert!(
            store
                .try_lock("k", Duration::from_secs(30))
                .await
                .unwrap()
                .is_none()
        );
    })
    .await;
}

#[tokio::test]
#[ignore = "needs NATS: cargo xtask test"]
async fn contenders_for_an_expired_lock_have_one_winner() {
    with_bucket("lock-race", |_, kv| async move {
        let store: NatsStore<String> = NatsStore::new(kv.clone(), "race").unwrap();
        for round in 0..5 {
            let key = format!("k{round}");
            kv.put(store.lock_key(&key), "1|dead-owner".into())
                .await
                .unwrap();
            let tasks: Vec<_> = (0..8)
                .map(|_| {
                    let store = store.clone();
                    let key = key.clone();
                    tokio::spawn(async move {
                        store.try_lock(&key, Duration::from_secs(30)).await.unwrap()
                    })
                })
                .collect();
            let mut winners = 0;
            for task in tasks {
                winners += usize::from(task.await.unwrap().is_some());
            }
            assert_eq!(winners, 1, "round {round}");
        }
    })
    .await;
}

#[tokio::test]
#[ignore = "needs NATS: cargo xtask test"]
async fn releasing_an_absent_lock_is_ok() {
    with_bucket("lock-absent", |_, kv| async move {
        let store: NatsStore<String> = NatsStore::new(kv, "abs").unwrap();
        // Go bug 22: never taken, then taken and released twice.
        store
            .unlock("never", &LockToken::generate())
            .await
            .expect("releasing a lock never taken");
        let token = store
            .try_lock("k", Duration::from_secs(5))
            .await
            .unwrap()
            .unwrap();
        store.unlock("k", &token).await.unwrap();
        store.unlock("k", &token).await.expect("releasing twice");
    })
    .await;
}

/// The deadline (milliseconds since the epoch) stored in the lock at `lock_key`, read raw.
async fn lock_deadline_ms(kv: &kv::Store, lock_key: String) -> u64 {
    let raw = kv.get(lock_key).await.unwrap().expect("a lock");
    let payload = String::from_utf8(raw.to_vec()).unwrap();
    payload.split_once('|').unwrap().0.parse().unwrap()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test]
#[ignore = "needs NATS: cargo xtask test"]
async fn extend_lock_moves_the_deadline_of_our_live_lock_only() {
    with_bucket("lock-extend", |_, kv| async move {
        let store: NatsStore<String> = NatsStore::new(kv.clone(), "ext").unwrap();
        let token = store
            .try_lock("k", Duration::from_secs(2))
            .await
            .unwrap()
            .unwrap();
        let before = lock_deadline_ms(&kv, store.lock_key("k")).await;
        assert!(before <= now_ms() + 2_000, "{before}");

        // The owner extends: the deadline moves to about 60 s from now.
        assert!(
            store
                .extend_lock("k", &token, Duration::from_secs(60))
                .await
                .unwrap()
        );
        let after = lock_deadline_ms(&kv, store.lock_key("k")).await;
        assert!(after >= now_ms() + 50_000, "{before} -> {after}");
        let raw = kv.get(store.lock_key("k")).await.unwrap().unwrap();
        assert!(raw.ends_with(format!("|{}", token.as_str()).as_bytes()));
        // Still held, by the same owner, past the first deadline's reach.
        assert!(
            store
                .try_lock("k", Duration::from_secs(1))
                .await
                .unwrap()
                .is_none()
        );

        // Another token changes nothing.
        let other = LockToken::new("someone-else");
        assert!(
            !store
                .extend_lock("k", &other, Duration::from_secs(600))
                .await
                .unwrap()
        );
        assert_eq!(lock_deadline_ms(&kv, store.lock_key("k")).await, after);

        // After the release, nothing to extend, and nothing is written.
        store.unlock("k", &token).await.unwrap();
        assert!(
            !store
                .extend_lock("k", &token, Duration::from_secs(60))
                .await
                .unwrap()
        );
        assert!(kv.get(store.lock_key("k")).await.unwrap().is_none());
        assert!(
            store
                .try_lock("k", Duration::from_secs(1))
                .await
                .unwrap()
                .is_some(),
            "free again"
        );

        // A lock never taken, and an expired one of ours, are not extended.
        assert!(
            !store
                .extend_lock("never", &token, Duration::from_secs(60))
                .await
                .unwrap()
        );
        let expired = store.try_lock("e", Duration::ZERO).await.unwrap().unwrap();
        assert!(
            !store
                .extend_lock("e", &expired, Duration::from_secs(60))
                .await
                .unwrap()
        );
    })
    .await;
}

#[tokio::test]
#[ignore = "needs NATS: cargo xtask test"]
async fn a_connect_store_recreates_a_bucket_deleted_under_it() {
    // On the shared server, with a bucket of this test's own (deleted at the end): the
    // store finds its bucket gone without any reconnection, by the errors of its writes.
    let bucket = unique_bucket("connect-deleted");
    let options = BucketOptions::new()
        .storage(StorageType::Memory)
        .max_age(Duration::from_secs(600));
    let store: NatsStore<String> = NatsStore::connect_with(&nats_url(), &bucket, "cd", options)
        .await
        .expect("connect");
    let js = store
        .jetstream()
        .expect("a connect store has a context")
        .clone();
    let stream = format!("KV_{bucket}");
    let outcome = tokio::spawn(async move {
        assert!(
            store.kv().is_some(),
            "opened during connect: the server is up"
        );
        store
            .set("k", &Entry::new("v1".into(), SystemTime::now()))
            .await
            .unwrap();
        assert_eq!(
            store.get("k").await.unwrap().map(|e| e.value).as_deref(),
            Some("v1")
        );
        store
            .jetstream()
            .unwrap()
            .delete_stream(format!("KV_{}", store.bucket()))
            .await
            .unwrap();
        // The write finds the bucket missing, re-creates it and is retried once.
        store
            .set("k", &Entry::new("v2".into(), SystemTime::now()))
            .await
            .expect("the bucket is re-created and the write retried");
        assert_eq!(
            store.get("k").await.unwrap().map(|e| e.value).as_deref(),
            Some("v2")
        );
        let info = store
            .jetstream()
            .unwrap()
            .get_stream(format!("KV_{}", store.bucket()))
            .await
            .unwrap();
        assert_eq!(
            info.cached_info().config.storage,
            StorageType::Memory,
            "same options"
        );
        assert_eq!(info.cached_info().config.max_age, Duration::from_secs(600));
        // Locks too.
        store
            .jetstream()
            .unwrap()
            .delete_stream(format!("KV_{}", store.bucket()))
            .await
            .unwrap();
        let token = store
            .try_lock("k", Duration::from_secs(30))
            .await
            .expect("re-created for the lock")
            .expect("free in the new bucket");
        assert!(
            store
                .extend_lock("k", &token, Duration::from_secs(30))
                .await
                .unwrap()
        );
        store.unlock("k", &token).await.unwrap();
    })
    .await;
    js.delete_stream(stream)
        .await
        .expect("delete the test bucket");
    if let Err(err) = outcome {
        std::panic::resume_unwind(err.into_panic());
    }
}

#[tokio::test]
#[ignore = "needs NATS: cargo xtask test"]
async fn ttl_is_enforced_on_read() {
    with_bucket("ttl-read", |_, kv| async move {
        let expiring: NatsStore<String> = NatsStore::new(kv.clone(), "ttl")
            .unwrap()
            .ttl(Duration::from_secs(60))
            .unwrap();
        let keeping: NatsStore<String> = NatsStore::new(kv, "ttl").unwrap();
        expiring
            .set("old", &Entry::new("stale".into(), ago(120)))
            .await
            .unwrap();
        expiring
            .set("new", &Entry::new("fresh".into(), ago(1)))
            .await
            .unwrap();
        assert!(
            expiring.get("old").await.unwrap().is_none(),
            "expired on read"
        );
        assert_eq!(expiring.get("new").await.unwrap().unwrap().value, "fresh");
        // The bytes are still there: the expiry came from the envelope's written_at.
        assert_eq!(keeping.get("old").await.unwrap().unwrap().value, "stale");
        // Through the cache, an expired entry is a miss that loads.
        let cache = EchoCache::new(expiring);
        let value = cache
            .fetch("old", || async {
                Ok::<_, std::io::Error>("reloaded".to_string())
            })
            .await
            .unwrap();
        assert_eq!(value, "reloaded");
        assert_eq!(cache.stats().misses, 1);
    })
    .await;
}

#[tokio::test]
#[ignore = "needs NATS: cargo xtask test"]
async fn corrupt_bytes_are_a_decode_error_that_fetch_repairs() {
    with_bucket("corrupt", |_, kv| async move {
        let store: NatsStore<String> = NatsStore::new(kv.clone(), "bad").unwrap();
        kv.put(store.data_key("k"), "not an envelope".into())
            .await
            .unwrap();
        let err = store.get("k").await.unwrap_err();
        assert!(err.is_decode(), "{err:?}");
        // An entry of the other codec is a decode error too.
        let json = NatsStore::<String>::new(kv.clone(), "bad")
            .unwrap()
            .codec(Json);
        json.set("j", &Entry::new("v".into(), SystemTime::now()))
            .await
            .unwrap();
        assert!(store.get("j").await.unwrap_err().is_decode());

        let cache = EchoCache::new(store);
        let value = cache
            .fetch("k", || async {
                Ok::<_, std::io::Error>("good".to_string())
            })
            .await
            .unwrap();
        assert_eq!(value, "good");
        assert_eq!(cache.stats().decode_errors, 1);
        assert_eq!(cache.stats().loads, 1);
        // The good value overwrote the bad bytes.
        settled(|| cache.loads_in_flight()).await;
        assert_eq!(cache.store().get("k").await.unwrap().unwrap().value, "good");
    })
    .await;
}

#[tokio::test]
#[ignore = "needs NATS: cargo xtask test"]
async fn oversized_values_are_refused_both_ways() {
    with_bucket("oversized", |_, kv| async move {
        let small: NatsStore<String> = NatsStore::new(kv.clone(), "big")
            .unwrap()
            .max_value_bytes(64);
        let err = small
            .set("k", &Entry::new("x".repeat(100), SystemTime::now()))
            .await
            .unwrap_err();
        assert!(err.is_decode(), "{err:?}");
        let large: NatsStore<String> = NatsStore::new(kv, "big").unwrap();
        large
            .set("k", &Entry::new("x".repeat(100), SystemTime::now()))
            .await
            .unwrap();
        assert!(small.get("k").await.unwrap_err().is_decode());
        assert_eq!(large.get("k").await.unwrap().unwrap().value.len(), 100);
    })
    .await;
}

#[tokio::test]
#[ignore = "needs NATS: cargo xtask test"]
async fn illegal_prefixes_are_rejected_at_construction() {
    with_bucket("prefixes", |_, kv| async move {
        for bad in ["", ".", "a.", ".a", "a..b", "a b", "a*", "a>", "a:b", "ü"] {
            let err = NatsStore::<String>::new(kv.clone(), bad).unwrap_err();
            assert!(err.to_string().contains("prefix"), "{bad:?}: {err}");
        }
        let store = NatsStore::<String, MessagePack>::new(kv, "ok.prefix-1/x=y").unwrap();
        let debug = format!("{store:?}");
        assert!(
            debug.contains("ok.prefix-1/x=y") && debug.contains("NatsStore"),
            "{debug}"
        );
    })
    .await;
}

#[tokio::test]
#[ignore = "needs NATS: cargo xtask test"]
async fn open_or_create_bucket_creates_then_opens() {
    let js = jetstream().await;
    let bucket = unique_bucket("open-create");
    let racy = unique_bucket("open-race");
    let body = {
        let (js, bucket, racy) = (js.clone(), bucket.clone(), racy.clone());
        async move {
            let options = BucketOptions::new()
                .storage(StorageType::Memory)
                .history(2)
                .description("echocache test");
            let created = open_or_create_bucket(&js, &bucket, &options).await.unwrap();
            let store: NatsStore<u64> = NatsStore::new(created, "oc").unwrap();
            store
                .set("answer", &Entry::new(42, SystemTime::now()))
                .await
                .unwrap();
            // Opening again finds the same bucket as it is (the new options are ignored).
            let opened = open_or_create_bucket(&js, &bucket, &BucketOptions::new().history(5))
                .await
                .unwrap();
            let config = opened.stream.cached_info().config.clone();
            assert_eq!(config.max_messages_per_subject, 2);
            assert!(config.allow_direct && config.allow_rollup && config.deny_delete);
            assert_eq!(config.subjects, [format!("$KV.{bucket}.>")]);
            let again: NatsStore<u64> = NatsStore::new(opened, "oc").unwrap();
            assert_eq!(again.get("answer").await.unwrap().unwrap().value, 42);
            // async-nats opens it as a KV bucket too.
            let plain = js.get_key_value(&bucket).await.unwrap();
            assert!(plain.get("oc.v.answer").await.unwrap().is_some());
            // Two processes racing to create one bucket both end up with it.
            let (a, b) = tokio::join!(
                open_or_create_bucket(&js, &racy, &options),
                open_or_create_bucket(&js, &racy, &options)
            );
            a.unwrap();
            b.unwrap();
        }
    };
    let outcome = tokio::spawn(body).await;
    for name in [bucket, racy] {
        // The racy bucket may not exist if the test failed before creating it.
        let _ = js.delete_stream(format!("KV_{name}")).await;
    }
    if let Err(err) = outcome {
        std::panic::resume_unwind(err.into_panic());
    }
}

#[tokio::test]
#[ignore = "needs NATS: cargo xtask test"]
async fn open_or_create_bucket_rejects_invalid_names() {
    let js = jetstream().await;
    for bad in ["", "a.b", "a b", "a*"] {
        let err = open_or_create_bucket(&js, bad, &BucketOptions::new())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), BucketErrorKind::Invalid, "{bad:?}");
    }
}

#[tokio::test]
#[ignore = "needs NATS: cargo xtask test"]
async fn stores_work_behind_both_caches() {
    with_bucket("caches", |_, kv| async move {
        let store: NatsStore<Vec<u32>> = NatsStore::new(kv, "caches").unwrap();
        let cache = echocache_core::LazyEchoCache::builder(store.clone())
            .build()
            .unwrap();
        let value = cache
            .fetch("k", || async { Ok::<_, std::io::Error>(vec![1, 2, 3]) })
            .await
            .unwrap();
        assert_eq!(value, vec![1, 2, 3]);
        settled(|| cache.loads_in_flight()).await;
        cache.shutdown().await;
        let eager = EchoCache::new(store);
        let again = eager
            .fetch("k", || async { Ok::<_, std::io::Error>(vec![9]) })
            .await
            .unwrap();
        assert_eq!(
            again,
            vec![1, 2, 3],
            "written by the lazy cache, read by the eager one"
        );
        assert_eq!(eager.stats().hits, 1);
    })
    .await;
}

/// Whether the server is NATS 2.11 or later (per-message TTLs).
#[cfg(feature = "server-2-11")]
fn has_message_ttl(js: &jetstream::Context) -> bool {
    let version = js.client().server_info().version;
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (2, 11)
}

#[cfg(feature = "server-2-11")]
#[tokio::test]
#[ignore = "needs NATS: cargo xtask test"]
async fn server_ttl_has_the_server_remove_expired_entries() {
    let options = BucketOptions::new().limit_markers(Duration::from_secs(1));
    with_bucket_options("server-ttl", options, |js, kv| async move {
        let store: NatsStore<String> = NatsStore::new(kv.clone(), "st")
            .unwrap()
            .ttl(Duration::from_millis(1_500))
            .unwrap();
        if !has_message_ttl(&js) {
            // Older servers ignore `limit_markers`: the store says so at once.
            let err = store.server_ttl(js).unwrap_err();
            assert!(err.to_string().contains("server_ttl"), "{err}");
            return;
        }
        let store = store
            .server_ttl(js)
            .expect("the bucket allows message TTLs");
        assert!(format!("{store:?}").contains("server_ttl: true"));
        store
            .set("k", &Entry::new("v".into(), SystemTime::now()))
            .await
            .unwrap();
        // The entry carries its ttl, rounded up to whole seconds.
        let subject = format!("{}{}", kv.prefix, store.data_key("k"));
        let message = kv
            .stream
            .direct_get_last_for_subject(subject)
            .await
            .unwrap();
        let ttl = message.headers.get("Nats-TTL").expect("a Nats-TTL header");
        assert_eq!(ttl.as_str(), "2");
        assert_eq!(store.get("k").await.unwrap().unwrap().value, "v");
        // The server removes it (bounded wait: the server's own clock decides when).
        let raw = store.data_key("k");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while kv.get(&raw).await.unwrap().is_some() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the server kept the entry"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Without a ttl the setting does nothing: entries are plain puts.
        let plain = NatsStore::<String>::new(kv.clone(), "st2").unwrap();
        plain
            .set("k", &Entry::new("v".into(), SystemTime::now()))
            .await
            .unwrap();
        let subject = format!("{}{}", kv.prefix, plain.data_key("k"));
        let message = kv
            .stream
            .direct_get_last_for_subject(subject)
            .await
            .unwrap();
        assert!(message.headers.get("Nats-TTL").is_none());
    })
    .await;
}

#[cfg(feature = "server-2-11")]
#[tokio::test]
#[ignore = "needs NATS: cargo xtask test"]
async fn server_ttl_needs_a_bucket_with_limit_markers() {
    with_bucket("server-ttl-refused", |js, kv| async move {
        let err = NatsStore::<String>::new(kv, "x")
            .unwrap()
            .server_ttl(js)
            .unwrap_err();
        assert!(err.to_string().contains("limit_markers"), "{err}");
    })
    .await;
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct User {
    id: u64,
    name: String,
    tags: Vec<String>,
    manager: Option<Box<User>>,
}

#[tokio::test]
#[ignore = "needs NATS: cargo xtask test"]
async fn a_struct_round_trips_through_both_codecs() {
    with_bucket("struct", |_, kv| async move {
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
        let msgpack: NatsStore<User> = NatsStore::new(kv.clone(), "mp").unwrap();
        let json: NatsStore<User, Json> = NatsStore::new(kv, "js").unwrap().codec(Json);
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
            assert_eq!(got.written_at, written);
        }
    })
    .await;
}

/// Two processes (two connections, two caches) share one bucket: a stale key is refreshed
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs NATS: cargo xtask test"]
async fn two_lazy_caches_sharing_a_bucket_refresh_a_stale_key_once() {
    with_bucket("fleet", |_, kv_a| async move {
        let js_b = jetstream().await;
        let kv_b = js_b
            .get_key_value(kv_a.name.clone())
            .await
            .expect("open the bucket");
        let clock = echocache_core::ManualClock::new(SystemTime::now());
        let cache = |kv: kv::Store| {
            echocache_core::LazyEchoCache::builder(NatsStore::<String>::new(kv, "fleet").unwrap())
                .refresh_after(Duration::from_secs(60))
                .clock(clock.clone())
                .build()
                .unwrap()
        };
        let (a, b) = (cache(kv_a), cache(kv_b));
        a.insert("k", "v1".to_owned()).await.unwrap();
        clock.advance(Duration::from_secs(61));

        let loads = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
        let loader = |value: &'static str| {
            let (loads, gate) = (loads.clone(), gate.clone());
            move || async move {
                loads.fetch_add(1, Ordering::SeqCst);
                gate.acquire().await.expect("gate").forget();
                Ok::<_, std::io::Error>(value.to_owned())
            }
        };
        assert_eq!(a.fetch("k", loader("from a")).await.unwrap(), "v1");
        tokio::time::timeout(Duration::from_secs(10), async {
            while loads.load(Ordering::SeqCst) == 0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
        .await
        .expect("A's refresh starts");
        assert_eq!(b.fetch("k", loader("from b")).await.unwrap(), "v1");
        settled(|| b.refreshes_pending()).await;
        assert_eq!(b.stats().refreshes_locked_out, 1, "{:?}", b.stats());
        gate.add_permits(10);
        settled(|| a.refreshes_pending()).await;
        assert_eq!(loads.load(Ordering::SeqCst), 1, "one refresh fleet-wide");
        assert_eq!(b.get("k").await.unwrap().as_deref(), Some("from a"));
        a.shutdown().await;
        b.shutdown().await;
    })
    .await;
}

/// A `nats-server -js` child of this test on its own port and folder, killed when dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs NATS: cargo xtask test"]
async fn the_store_recovers_after_a_server_restart() {
    let mut server = OwnServer::nats();
    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .request_timeout(Some(Duration::from_millis(500)))
        .connect(server.url())
        .await
        .expect("connect");
    let js = jetstream::new(client);
    let kv = open_or_create_bucket(
        &js,
        "restart",
        &BucketOptions::new().storage(StorageType::File),
    )
    .await
    .expect("bucket");
    let store: NatsStore<String> = NatsStore::new(kv, "r").unwrap();
    store
        .set("k", &Entry::new("before".into(), SystemTime::now()))
        .await
        .unwrap();

    server.kill();
    let down = tokio::time::timeout(Duration::from_secs(10), store.get("k"))
        .await
        .expect("a stopped server gives an error, not a hang");
    assert!(down.is_err(), "no server: {down:?}");

    server.restart();
    // A bound, not a timing assertion: the client reconnects by itself.
    let give_up = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut recovered = false;
    while tokio::time::Instant::now() < give_up {
        if let Ok(Some(entry)) = store.get("k").await {
            assert_eq!(
                entry.value, "before",
                "the file-backed bucket kept its entry"
            );
            recovered = store
                .set("k", &Entry::new("after".into(), SystemTime::now()))
                .await
                .is_ok();
            if recovered {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(recovered, "the store did not recover after the restart");
    assert_eq!(
        store.get("k").await.unwrap().map(|e| e.value).as_deref(),
        Some("after")
    );
    drop(server);
}
