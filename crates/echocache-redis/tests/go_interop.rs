//! The Go-compatible RedisStore against a real Redis, with the golden bytes of
//! `go-wire-format.md` (what the Go echocache v1.2.x writes through go-redis v9) set by raw
//! commands, and the bytes Rust writes checked as Go would read them.
//!
//! Every test here needs a server: they are ignored by `cargo test` and run by
//! `cargo xtask test` (or `cargo test -- --include-ignored` with `ECHOCACHE_REDIS_URL`
//! pointing at a server; default `redis://127.0.0.1:6379`). Each test works under its own
//! random prefix, deletes only the keys under it, and writes every raw key with a TTL.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use echocache_core::test_util::{check_data_ops, check_exclusive_lock};
use echocache_core::{EchoCache, Entry, LazyEchoCache, ManualClock, Store};
use echocache_redis::fred::prelude::*;
use echocache_redis::{Json, RedisStore};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

mod ns;

use ns::Ns;

const TTL: Duration = Duration::from_secs(60);
/// The lock token of the golden Go lock.
const GO_TOKEN: &str = "tokA1b2C3d4";
/// The `CreatedAt` of the golden values.
const T0_TEXT: &str = "2025-02-21T21:01:30.123456789Z";

/// 2025-02-21T21:01:30.123456789Z.
fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::new(1_740_171_690, 123_456_789)
}

/// Go: `map[string]any{"name": "John", "age": 30}` or a struct with `json:"name"` tags.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Person {
    name: String,
    age: u32,
}

/// Go: `type Weather struct { City string; Temperature int; Tags []string }`, no tags.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Weather {
    city: String,
    temperature: i64,
    tags: Option<Vec<String>>,
}

/// The Go layout and Go's own commands, on this test's corner of the server.
impl Ns {
    fn envelope<V>(&self) -> RedisStore<V, Json> {
        RedisStore::go_echocache_compatible(&self.client, &self.prefix, TTL).expect("store")
    }

    fn plain<V>(&self) -> RedisStore<V, Json> {
        RedisStore::go_echocache_compatible_plain(&self.client, &self.prefix, TTL).expect("store")
    }

    /// `{prefix}:{key}`, built here by hand: the Go layout, independent of the store.
    fn go_key(&self, key: &str) -> String {
        format!("{}:{key}", self.prefix)
    }

    /// `{prefix}:lock:{key}`.
    fn go_lock_key(&self, key: &str) -> String {
        format!("{}:lock:{key}", self.prefix)
    }

    /// `SET key value EX 60`, as Go writes an entry.
    async fn raw_set(&self, key: &str, value: &str) {
        self.client
            .set::<(), _, _>(key, value, Some(Expiration::EX(60)), None, false)
            .await
            .expect("raw SET");
    }

    /// `SET key token NX EX 30`, as Go takes a refresh lock: whether it was taken.
    async fn go_lock(&self, key: &str, token: &str) -> bool {
        let reply: Value = self
            .client
            .set(
                self.go_lock_key(key),
                token,
                Some(Expiration::EX(30)),
                Some(SetOptions::NX),
                false,
            )
            .await
            .expect("raw SET NX");
        !reply.is_null()
    }

    /// Go's `ReleaseRefreshLock`: `GET`, then `DEL` if the value is the token.
    async fn go_unlock(&self, key: &str, token: &str) {
        let lock_key = self.go_lock_key(key);
        if self.raw_get(&lock_key).await.as_deref() == Some(token) {
            self.client.del::<(), _>(&lock_key).await.expect("DEL");
        }
    }
}

/// Writes `raw` at `key` and reads it back through `store`.
async fn read_golden<V>(ns: &Ns, store: &RedisStore<V, Json>, key: &str, raw: &str) -> Entry<V>
where
    V: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    ns.raw_set(&ns.go_key(key), raw).await;
    store
        .get(key)
        .await
        .unwrap_or_else(|e| panic!("{raw}: {e:?}"))
        .unwrap_or_else(|| panic!("{raw}: no entry"))
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask test"]
async fn golden_envelopes_decode_to_the_value_and_time_go_wrote() {
    let ns = Ns::new("golden").await;
    let strings = ns.envelope::<String>();
    let cases = [
        (
            r#"{"Value":"hello","CreatedAt":"2025-02-21T21:01:30.123456789Z"}"#,
            "hello",
            t0(),
        ),
        (
            r#"{"Value":"hello","CreatedAt":"2025-02-21T22:01:30.123456789+01:00"}"#,
            "hello",
            t0(),
        ),
        (
            r#"{"Value":"hello","CreatedAt":"2025-02-21T21:01:30.12Z"}"#,
            "hello",
            SystemTime::UNIX_EPOCH + Duration::new(1_740_171_690, 120_000_000),
        ),
        (
            r#"{"Value":"hello","CreatedAt":"2025-02-21T21:01:30Z"}"#,
            "hello",
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_740_171_690),
        ),
        // Go's zero time: before 1970, read as the epoch (always stale).
        (
            r#"{"Value":"","CreatedAt":"0001-01-01T00:00:00Z"}"#,
            "",
            SystemTime::UNIX_EPOCH,
        ),
        // Go's escapes of <, > and &, and the usual JSON ones.
        (
            r#"{"Value":"a\u003cb\u003e\u0026c \"q\" \\ é ☃\n\t","CreatedAt":"2025-02-21T21:01:30.123456789Z"}"#,
            "a<b>&c \"q\" \\ é ☃\n\t",
            t0(),
        ),
        // Go's decoder matches field names in any case and skips unknown fields.
        (
            r#"{"value":"hi","createdAt":"2025-02-21T21:01:30.123456789Z","Extra":[1]}"#,
            "hi",
            t0(),
        ),
        // A missing CreatedAt is Go's zero time.
        (r#"{"Value":"hi"}"#, "hi", SystemTime::UNIX_EPOCH),
    ];
    for (i, (raw, value, written_at)) in cases.into_iter().enumerate() {
        let entry = read_golden(&ns, &strings, &format!("s{i}"), raw).await;
        assert_eq!(entry.value, value, "{raw}");
        assert_eq!(entry.written_at, written_at, "{raw}");
    }

    let entry = read_golden(
        &ns,
        &ns.envelope::<Person>(),
        "person",
        r#"{"Value":{"name":"John","age":30},"CreatedAt":"2025-02-21T21:01:30.123456789Z"}"#,
    )
    .await;
    assert_eq!(
        entry.value,
        Person {
            name: "John".into(),
            age: 30
        }
    );
    assert_eq!(entry.written_at, t0());

    let entry = read_golden(
        &ns,
        &ns.envelope::<Weather>(),
        "weather",
        r#"{"Value":{"City":"Oslo","Temperature":-3,"Tags":null},"CreatedAt":"2025-02-21T21:01:30.123456789Z"}"#,
    )
    .await;
    assert_eq!(
        entry.value,
        Weather {
            city: "Oslo".into(),
            temperature: -3,
            tags: None
        }
    );
    assert_eq!(entry.written_at, t0());

    // What Go could not decode either is a decode error: a plain value, a bad time.
    for raw in [
        r#""hello""#,
        r#"{"Value":"hello","CreatedAt":"21/02/2025"}"#,
        "not json",
    ] {
        ns.raw_set(&ns.go_key("bad"), raw).await;
        let err = strings.get("bad").await.unwrap_err();
        assert!(err.is_decode(), "{raw}: {err:?}");
    }
    assert!(strings.get("missing").await.unwrap().is_none());
    ns.cleanup().await;
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask test"]
async fn golden_plain_values_decode_without_a_timestamp() {
    let ns = Ns::new("golden-plain").await;
    let entry = read_golden(&ns, &ns.plain::<String>(), "s", r#""hello""#).await;
    assert_eq!(entry.value, "hello");
    assert_eq!(
        entry.written_at,
        SystemTime::UNIX_EPOCH,
        "no timestamp in the plain format: the oldest time"
    );
    let entry = read_golden(
        &ns,
        &ns.plain::<Person>(),
        "p",
        r#"{"name":"John","age":30}"#,
    )
    .await;
    assert_eq!(
        entry.value,
        Person {
            name: "John".into(),
            age: 30
        }
    );
    let entry = read_golden(
        &ns,
        &ns.plain::<String>(),
        "esc",
        r#""a\u003cb\u003e\u0026c""#,
    )
    .await;
    assert_eq!(entry.value, "a<b>&c");
    ns.cleanup().await;
}

/// Checks `text` against Go's `time.Time` JSON for a UTC time, as Rust must write it:
/// `YYYY-MM-DDTHH:MM:SS`, an optional fraction of 1 to 9 digits not ending in 0, `Z`.
fn is_go_utc_time(text: &str) -> bool {
    let b = text.as_bytes();
    let digits_at = |range: std::ops::Range<usize>| b[range].iter().all(u8::is_ascii_digit);
    if b.len() < 20 || !b.is_ascii() || b.last() != Some(&b'Z') {
        return false;
    }
    let head = digits_at(0..4)
        && b[4] == b'-'
        && digits_at(5..7)
        && b[7] == b'-'
        && digits_at(8..10)
        && b[10] == b'T'
        && digits_at(11..13)
        && b[13] == b':'
        && digits_at(14..16)
        && b[16] == b':'
        && digits_at(17..19);
    let fraction = &b[19..b.len() - 1];
    head && match fraction {
        [] => true,
        [b'.', digits @ ..] => {
            (1..=9).contains(&digits.len())
                && digits.iter().all(u8::is_ascii_digit)
                && digits.last() != Some(&b'0')
        }
        _ => false,
    }
}

/// Parses the raw bytes at `key` as JSON and checks the Go envelope's shape: an object with
/// exactly `Value` then `CreatedAt`, the time in Go's UTC form. Returns both.
async fn go_shape(ns: &Ns, key: &str) -> (serde_json::Value, String) {
    let raw = ns.raw_get(&ns.go_key(key)).await.expect("an entry");
    assert!(raw.starts_with(r#"{"Value":"#), "Go's field order: {raw}");
    let json: serde_json::Value = serde_json::from_str(&raw).expect("JSON");
    let object = json.as_object().expect("an object");
    let mut names: Vec<&str> = object.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["CreatedAt", "Value"], "{raw}");
    let created_at = object["CreatedAt"].as_str().expect("a string").to_owned();
    assert!(is_go_utc_time(&created_at), "{created_at}");
    (object["Value"].clone(), created_at)
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask test"]
async fn rust_writes_exactly_the_go_envelope() {
    let ns = Ns::new("shape").await;
    let strings = ns.envelope::<String>();
    let cases = [
        (t0(), T0_TEXT),
        (
            SystemTime::UNIX_EPOCH + Duration::new(1_740_171_690, 120_000_000),
            "2025-02-21T21:01:30.12Z",
        ),
        (
            SystemTime::UNIX_EPOCH + Duration::new(1_740_171_690, 1_000),
            "2025-02-21T21:01:30.000001Z",
        ),
        (
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_740_171_690),
            "2025-02-21T21:01:30Z",
        ),
        (SystemTime::UNIX_EPOCH, "1970-01-01T00:00:00Z"),
    ];
    for (i, (written_at, want)) in cases.into_iter().enumerate() {
        let key = format!("t{i}");
        strings
            .set(&key, &Entry::new("hello".to_owned(), written_at))
            .await
            .unwrap();
        let (value, created_at) = go_shape(&ns, &key).await;
        assert_eq!(value, serde_json::json!("hello"));
        assert_eq!(created_at, want);
        let back = strings.get(&key).await.unwrap().unwrap();
        assert_eq!(back.written_at, written_at, "{want} round-trips exactly");
    }

    // The golden escaped value: byte for byte what Go writes.
    let tricky = "a<b>&c \"q\" \\ é ☃\n\t";
    strings
        .set("esc", &Entry::new(tricky.to_owned(), t0()))
        .await
        .unwrap();
    assert_eq!(
        ns.raw_get(&ns.go_key("esc")).await.as_deref(),
        Some(
            r#"{"Value":"a\u003cb\u003e\u0026c \"q\" \\ é ☃\n\t","CreatedAt":"2025-02-21T21:01:30.123456789Z"}"#
        )
    );
    let (value, _) = go_shape(&ns, "esc").await;
    assert_eq!(value, serde_json::json!(tricky));

    let people = ns.envelope::<Person>();
    let john = Person {
        name: "John".into(),
        age: 30,
    };
    people
        .set("p", &Entry::new(john.clone(), t0()))
        .await
        .unwrap();
    assert_eq!(
        ns.raw_get(&ns.go_key("p")).await.as_deref(),
        Some(r#"{"Value":{"name":"John","age":30},"CreatedAt":"2025-02-21T21:01:30.123456789Z"}"#)
    );
    assert_eq!(
        go_shape(&ns, "p").await.0,
        serde_json::json!({"name": "John", "age": 30})
    );

    let weather = ns.envelope::<Weather>();
    let oslo = Weather {
        city: "Oslo".into(),
        temperature: -3,
        tags: None,
    };
    weather
        .set("w", &Entry::new(oslo.clone(), t0()))
        .await
        .unwrap();
    assert_eq!(
        ns.raw_get(&ns.go_key("w")).await.as_deref(),
        Some(
            r#"{"Value":{"City":"Oslo","Temperature":-3,"Tags":null},"CreatedAt":"2025-02-21T21:01:30.123456789Z"}"#
        )
    );

    // A write time from the real clock round-trips to the nanosecond.
    let now = SystemTime::now();
    weather
        .set("now", &Entry::new(oslo.clone(), now))
        .await
        .unwrap();
    go_shape(&ns, "now").await;
    let back = weather.get("now").await.unwrap().unwrap();
    assert_eq!((back.value, back.written_at), (oslo, now));
    ns.cleanup().await;
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask test"]
async fn rust_writes_the_bare_json_in_the_plain_format() {
    let ns = Ns::new("plain-shape").await;
    let strings = ns.plain::<String>();
    strings
        .set("s", &Entry::new("hello".to_owned(), t0()))
        .await
        .unwrap();
    assert_eq!(
        ns.raw_get(&ns.go_key("s")).await.as_deref(),
        Some(r#""hello""#),
        "a string keeps its quotes, as Go stores it"
    );
    strings
        .set("esc", &Entry::new("a<b>&c".to_owned(), t0()))
        .await
        .unwrap();
    assert_eq!(
        ns.raw_get(&ns.go_key("esc")).await.as_deref(),
        Some(r#""a\u003cb\u003e\u0026c""#)
    );
    ns.plain::<Person>()
        .set(
            "p",
            &Entry::new(
                Person {
                    name: "John".into(),
                    age: 30,
                },
                t0(),
            ),
        )
        .await
        .unwrap();
    let raw = ns.raw_get(&ns.go_key("p")).await.unwrap();
    assert_eq!(raw, r#"{"name":"John","age":30}"#);
    let json: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(json, serde_json::json!({"name": "John", "age": 30}));
    ns.cleanup().await;
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask test"]
async fn entries_get_the_store_ttl_as_go_sets_it() {
    let ns = Ns::new("ttl").await;
    let entry = Entry::new("v".to_owned(), t0());

    // 60 s, whole seconds: `EX 60`.
    ns.envelope::<String>().set("whole", &entry).await.unwrap();
    let pttl = ns.pttl(&ns.go_key("whole")).await;
    assert!(pttl > 0 && pttl <= 60_000, "PTTL {pttl}");
    ns.plain::<String>().set("plain", &entry).await.unwrap();
    let pttl = ns.pttl(&ns.go_key("plain")).await;
    assert!(pttl > 0 && pttl <= 60_000, "PTTL {pttl}");

    // 90.5 s, not whole seconds: `PX 90500`, kept to the millisecond (an `EX` would have
    // rounded it to 90 or 91 s).
    let store: RedisStore<String, Json> =
        RedisStore::go_echocache_compatible(&ns.client, &ns.prefix, Duration::from_millis(90_500))
            .unwrap();
    store.set("fraction", &entry).await.unwrap();
    let pttl = ns.pttl(&ns.go_key("fraction")).await;
    assert!(pttl > 60_000 && pttl <= 90_500, "PTTL {pttl}");

    // Below a second: `PX 750`. The key may be gone by now, but never without an expiry.
    let store: RedisStore<String, Json> =
        RedisStore::go_echocache_compatible(&ns.client, &ns.prefix, Duration::from_millis(750))
            .unwrap();
    store.set("short", &entry).await.unwrap();
    let pttl = ns.pttl(&ns.go_key("short")).await;
    assert!(pttl == -2 || (0..=750).contains(&pttl), "PTTL {pttl}");

    // Go's NeverExpire, 100 years: `EX 3153600000`.
    let store: RedisStore<String, Json> = RedisStore::go_echocache_compatible(
        &ns.client,
        &ns.prefix,
        Duration::from_secs(3_153_600_000),
    )
    .unwrap();
    store.set("never", &entry).await.unwrap();
    let pttl = ns.pttl(&ns.go_key("never")).await;
    // Deleted before asserting: a failed assertion must not leave a 100-year key behind.
    ns.client.del::<(), _>(ns.go_key("never")).await.unwrap();
    assert!(
        pttl > 3_153_000_000_000 && pttl <= 3_153_600_000_000,
        "PTTL {pttl}"
    );
    ns.cleanup().await;
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask test"]
async fn conformance_go_envelope() {
    let ns = Ns::new("conf").await;
    let store = ns.envelope::<String>();
    check_data_ops(&store, "").await;
    check_exclusive_lock(&store, "").await;
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

/// A loader counting its calls.
fn counting_loader(
    loads: &Arc<AtomicUsize>,
    value: &'static str,
) -> impl FnOnce() -> std::future::Ready<Result<String, std::io::Error>> + Send + 'static {
    let loads = Arc::clone(loads);
    move || {
        loads.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok(value.to_owned()))
    }
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask test"]
async fn a_lock_taken_by_go_blocks_the_rust_refresh() {
    let ns = Ns::new("go-lock").await;
    // A Go service wrote the entry at t0 and holds the refresh lock.
    ns.raw_set(
        &ns.go_key("k"),
        r#"{"Value":"from go","CreatedAt":"2025-02-21T21:01:30.123456789Z"}"#,
    )
    .await;
    assert!(ns.go_lock("k", GO_TOKEN).await);

    let clock = ManualClock::new(t0() + Duration::from_secs(61));
    let cache = LazyEchoCache::builder(ns.envelope::<String>())
        .refresh_after(Duration::from_secs(60))
        .clock(clock.clone())
        .build()
        .unwrap();
    let loads = Arc::new(AtomicUsize::new(0));
    assert_eq!(
        cache
            .fetch("k", counting_loader(&loads, "from rust"))
            .await
            .unwrap(),
        "from go",
        "the stale Go value comes back at once"
    );
    wait_for_refreshes(&cache).await;
    let stats = cache.stats();
    assert_eq!(stats.stale_hits, 1, "{stats:?}");
    assert_eq!(stats.refreshes_locked_out, 1, "{stats:?}");
    assert_eq!(stats.refreshes, 0, "{stats:?}");
    assert_eq!(loads.load(Ordering::SeqCst), 0, "the loader did not run");
    assert_eq!(
        ns.raw_get(&ns.go_lock_key("k")).await.as_deref(),
        Some(GO_TOKEN),
        "the Go lock is untouched"
    );

    // The Go service releases its lock (GET, then DEL): the next stale hit refreshes, and
    // the refreshed entry is one Go reads.
    ns.go_unlock("k", GO_TOKEN).await;
    assert_eq!(
        cache
            .fetch("k", counting_loader(&loads, "from rust"))
            .await
            .unwrap(),
        "from go"
    );
    wait_for_refreshes(&cache).await;
    assert_eq!(cache.stats().refreshes, 1, "{:?}", cache.stats());
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    let (value, created_at) = go_shape(&ns, "k").await;
    assert_eq!(value, serde_json::json!("from rust"));
    assert_eq!(
        created_at, "2025-02-21T21:02:31.123456789Z",
        "the clock's time"
    );
    assert!(
        ns.raw_get(&ns.go_lock_key("k")).await.is_none(),
        "the Rust refresher released its lock"
    );
    cache.shutdown().await;
    ns.cleanup().await;
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask test"]
async fn a_lock_taken_by_rust_blocks_go() {
    let ns = Ns::new("rust-lock").await;
    let store = ns.envelope::<String>();
    let token = store
        .try_lock("k", Duration::from_secs(30))
        .await
        .unwrap()
        .expect("free lock");
    // The Go layout and a plain token value, with `EX 30`.
    assert_eq!(store.lock_key("k"), ns.go_lock_key("k"));
    assert_eq!(
        ns.raw_get(&ns.go_lock_key("k")).await.as_deref(),
        Some(token.as_str())
    );
    let pttl = ns.pttl(&ns.go_lock_key("k")).await;
    assert!(pttl > 0 && pttl <= 30_000, "PTTL {pttl}");
    assert!(!ns.go_lock("k", GO_TOKEN).await, "Go's SET NX fails");

    // Go's release with its own token leaves the Rust lock; Rust's release frees it.
    ns.go_unlock("k", GO_TOKEN).await;
    assert_eq!(
        ns.raw_get(&ns.go_lock_key("k")).await.as_deref(),
        Some(token.as_str())
    );
    store.unlock("k", &token).await.unwrap();
    assert!(ns.go_lock("k", GO_TOKEN).await, "Go takes the freed lock");

    // Now Go holds it: Rust is refused, and a stale Rust token releases nothing.
    assert!(
        store
            .try_lock("k", Duration::from_secs(30))
            .await
            .unwrap()
            .is_none()
    );
    store.unlock("k", &token).await.unwrap();
    assert!(
        !store
            .extend_lock("k", &token, Duration::from_secs(60))
            .await
            .unwrap()
    );
    assert_eq!(
        ns.raw_get(&ns.go_lock_key("k")).await.as_deref(),
        Some(GO_TOKEN),
        "compare-and-delete left the Go lock"
    );

    // Go's GET-then-DEL releases a Rust lock too.
    ns.go_unlock("k", GO_TOKEN).await;
    let token = store
        .try_lock("k", Duration::from_millis(1_500))
        .await
        .unwrap()
        .expect("free lock");
    let pttl = ns.pttl(&ns.go_lock_key("k")).await;
    assert!(pttl == -2 || (0..=1_500).contains(&pttl), "PX 1500: {pttl}");
    ns.go_unlock("k", token.as_str()).await;
    assert!(ns.raw_get(&ns.go_lock_key("k")).await.is_none());
    ns.cleanup().await;
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask test"]
async fn the_go_layout_collides_lock_x_with_the_lock_of_x() {
    // Known flaw of the Go format, kept (documented in the crate docs): the entry of the
    // user key `lock:x` is the refresh lock of `x`.
    let ns = Ns::new("collision").await;
    let store = ns.envelope::<String>();
    assert_eq!(store.data_key("lock:x"), store.lock_key("x"));

    // While `x` is locked, `lock:x` reads as a decode error: the token is not JSON.
    let token = store
        .try_lock("x", Duration::from_secs(30))
        .await
        .unwrap()
        .expect("free lock");
    assert!(store.get("lock:x").await.unwrap_err().is_decode());

    // Writing `lock:x` overwrites the lock of `x`; the owner's unlock then finds another
    // value and leaves the entry alone (compare-and-delete) ...
    store
        .set("lock:x", &Entry::new("data".to_owned(), t0()))
        .await
        .unwrap();
    store.unlock("x", &token).await.unwrap();
    assert_eq!(
        store
            .get("lock:x")
            .await
            .unwrap()
            .map(|e| e.value)
            .as_deref(),
        Some("data")
    );
    // ... and, while the entry lives, nobody can take the lock of `x`, Go nor Rust.
    assert!(
        store
            .try_lock("x", Duration::from_secs(30))
            .await
            .unwrap()
            .is_none()
    );
    assert!(!ns.go_lock("x", GO_TOKEN).await);
    // Removing `lock:x` frees the lock of `x`.
    store.remove("lock:x").await.unwrap();
    assert!(
        store
            .try_lock("x", Duration::from_secs(30))
            .await
            .unwrap()
            .is_some()
    );
    ns.cleanup().await;
}

#[tokio::test]
#[ignore = "needs Redis: cargo xtask test"]
async fn the_plain_format_serves_echo_cache_and_refuses_lazy_refreshes() {
    let ns = Ns::new("plain-caches").await;
    let loads = Arc::new(AtomicUsize::new(0));

    // EchoCache ignores ages: the plain format is all it needs.
    let cache = EchoCache::new(ns.plain::<String>());
    assert_eq!(
        cache
            .fetch("k", counting_loader(&loads, "v"))
            .await
            .unwrap(),
        "v"
    );
    assert_eq!(
        cache
            .fetch("k", counting_loader(&loads, "v2"))
            .await
            .unwrap(),
        "v"
    );
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    assert_eq!(ns.raw_get(&ns.go_key("k")).await.as_deref(), Some(r#""v""#));
    ns.raw_set(&ns.go_key("go"), r#""from go""#).await;
    assert_eq!(
        cache
            .fetch("go", counting_loader(&loads, "x"))
            .await
            .unwrap(),
        "from go"
    );
    assert_eq!(loads.load(Ordering::SeqCst), 1, "a Go entry is a hit");
    // Misses of new keys: the format has no lock, so none is tried (which would fail,
    // count as store errors and open the circuit breaker after two misses).
    for k in ["m1", "m2", "m3"] {
        cache.fetch(k, counting_loader(&loads, "m")).await.unwrap();
        assert_eq!(ns.raw_get(&ns.go_key(k)).await.as_deref(), Some(r#""m""#));
    }
    let stats = cache.stats();
    assert_eq!(stats.store_errors, 0, "{stats:?}");
    assert_eq!(stats.circuit_opens, 0, "{stats:?}");

    // A LazyEchoCache cannot know the age: the entry reads as the oldest, and the refresh
    // fails with the store's clear error instead of running.
    let lazy = LazyEchoCache::builder(ns.plain::<String>())
        .refresh_after(Duration::from_secs(60))
        .build()
        .unwrap();
    assert_eq!(
        lazy.fetch("go", counting_loader(&loads, "x"))
            .await
            .unwrap(),
        "from go"
    );
    wait_for_refreshes(&lazy).await;
    let stats = lazy.stats();
    assert_eq!(stats.stale_hits, 1, "{stats:?}");
    assert_eq!(stats.refresh_errors, 1, "{stats:?}");
    assert_eq!(stats.store_errors, 1, "{stats:?}");
    assert_eq!(stats.refreshes, 0, "{stats:?}");
    assert_eq!(
        loads.load(Ordering::SeqCst),
        4,
        "the lazy cache's loader did not run"
    );
    assert!(
        ns.raw_get(&ns.go_lock_key("go")).await.is_none(),
        "no lock was taken"
    );
    lazy.shutdown().await;
    ns.cleanup().await;
}
