//! Unit tests of [`RedisStore`](super::RedisStore) that send no command.

use std::error::Error as _;
use std::time::SystemTime;

use echocache_core::codec::HEADER_LEN;
use fred::clients::Client;
use fred::types::config::Config;

use super::*;

fn client() -> Client {
    // Never connected: these tests send no command.
    Client::new(Config::default(), None, None, None)
}

fn setting(result: Result<RedisStore<String>, BuildError>) -> (&'static str, &'static str) {
    match result {
        Err(BuildError::InvalidSetting { setting, reason }) => (setting, reason),
        other => panic!("accepted: {other:?}"),
    }
}

#[test]
fn builds_keys_under_the_prefix() {
    let store: RedisStore<String> =
        RedisStore::new(client(), "app", Duration::from_secs(60)).unwrap();
    assert_eq!(store.prefix(), "app");
    assert_eq!(store.ttl(), Duration::from_secs(60));
    assert_eq!(store.data_key("k"), "app:v:k");
    assert_eq!(store.lock_key("k"), "app:l:k");
    assert_ne!(store.data_key("l:k"), store.lock_key("k"));
}

#[test]
fn rejects_bad_prefix_and_ttl_at_construction() {
    let ttl = Duration::from_secs(1);
    assert_eq!(setting(RedisStore::new(client(), "", ttl)).0, "prefix");
    assert_eq!(setting(RedisStore::new(client(), "a b", ttl)).0, "prefix");
    assert_eq!(setting(RedisStore::new(client(), "a:l", ttl)).0, "prefix");
    assert_eq!(
        setting(RedisStore::new(client(), "app", Duration::ZERO)),
        ("ttl", "must be at least 1 ms (Redis PX resolution)")
    );
    assert_eq!(
        setting(RedisStore::new(client(), "app", Duration::from_micros(999))).0,
        "ttl"
    );
    assert_eq!(
        setting(RedisStore::new(client(), "app", Duration::MAX)),
        ("ttl", "is too large for Redis PX")
    );
}

#[test]
fn codec_and_limit_are_settable() {
    let store: RedisStore<String, crate::Json> =
        RedisStore::new(client(), "app", Duration::from_secs(1))
            .unwrap()
            .codec(crate::Json)
            .max_value_bytes(HEADER_LEN + 1);
    let printed = format!("{store:?}");
    assert!(printed.contains("codec_id: 2"), "{printed}");
    assert!(printed.contains("max_value_bytes: 11"), "{printed}");
}

#[tokio::test]
async fn a_limit_no_entry_fits_is_accepted_and_every_write_fails() {
    // No server: the size check fails before any command is sent.
    for max in [0, 1, HEADER_LEN] {
        let store: RedisStore<String> = RedisStore::new(client(), "app", Duration::from_secs(1))
            .unwrap()
            .max_value_bytes(max);
        assert!(format!("{store:?}").contains(&format!("max_value_bytes: {max}")));
        let err = store
            .set("k", &Entry::new(String::new(), SystemTime::UNIX_EPOCH))
            .await;
        let err = err.unwrap_err();
        assert!(err.is_decode(), "{err:?}");
        let cause = err.source().unwrap().to_string();
        assert!(cause.contains("exceeds the limit"), "{cause}");
    }
    let go: RedisStore<String, crate::Json> =
        RedisStore::go_echocache_compatible(client(), "app", Duration::from_secs(1))
            .unwrap()
            .max_value_bytes(0);
    let err = go
        .set("k", &Entry::new(String::new(), SystemTime::UNIX_EPOCH))
        .await;
    assert!(err.unwrap_err().is_decode());
}

#[test]
fn go_stores_use_the_go_layout() {
    let ttl = Duration::from_secs(3600);
    let store: RedisStore<String, crate::Json> =
        RedisStore::go_echocache_compatible(client(), "myapp", ttl).unwrap();
    assert_eq!(store.prefix(), "myapp");
    assert_eq!(store.ttl(), ttl);
    assert_eq!(store.data_key("greeting"), "myapp:greeting");
    assert_eq!(store.lock_key("greeting"), "myapp:lock:greeting");
    // The known collision of the Go layout (Go bug 21), kept: Go services use it.
    assert_eq!(store.data_key("lock:x"), store.lock_key("x"));
    let printed = format!("{store:?}");
    assert!(printed.contains("go-echocache-envelope"), "{printed}");
    assert!(!printed.contains("codec_id"), "{printed}");

    let plain: RedisStore<String, crate::Json> =
        RedisStore::go_echocache_compatible_plain(client(), "", ttl).unwrap();
    assert_eq!(
        plain.data_key("k"),
        ":k",
        "an empty prefix is used as Go uses it"
    );
    assert!(format!("{plain:?}").contains("go-echocache-plain"));
    // `codec` changes the type, not the format.
    let plain = plain.codec(MessagePack);
    assert_eq!(plain.data_key("k"), ":k");
    assert!(format!("{plain:?}").contains("go-echocache-plain"));
}

#[test]
fn go_stores_validate_their_settings() {
    let go = |prefix: &str, ttl| -> Result<RedisStore<String, crate::Json>, BuildError> {
        RedisStore::go_echocache_compatible(client(), prefix, ttl)
    };
    let setting_of = |result: Result<RedisStore<String, crate::Json>, BuildError>| match result {
        Err(BuildError::InvalidSetting { setting, .. }) => setting,
        Ok(store) => panic!("accepted: {store:?}"),
        Err(other) => panic!("{other:?}"),
    };
    let ttl = Duration::from_secs(1);
    assert!(
        go("my app:vv", ttl).is_ok(),
        "Go prefixes are used as given"
    );
    assert_eq!(
        setting_of(go("my app:v", ttl)),
        "prefix",
        "but never inside a native store's namespace"
    );
    assert_eq!(setting_of(go("app\n", ttl)), "prefix");
    assert_eq!(setting_of(go(&"x".repeat(257), ttl)), "prefix");
    assert_eq!(setting_of(go("app", Duration::ZERO)), "ttl");
    assert_eq!(setting_of(go("app", Duration::MAX)), "ttl");
    assert_eq!(
        setting_of(RedisStore::go_echocache_compatible_plain(
            client(),
            "app\0",
            ttl
        )),
        "prefix"
    );
    assert!(
        go("app", Duration::from_secs(3_153_600_000)).is_ok(),
        "NeverExpire"
    );
}

#[tokio::test]
async fn the_go_plain_store_refuses_locks_with_a_clear_error() {
    // No server: refused before any command is sent.
    let store: RedisStore<String, crate::Json> =
        RedisStore::go_echocache_compatible_plain(client(), "app", Duration::from_secs(1)).unwrap();
    let err = store
        .try_lock("k", Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(!err.is_decode());
    let message = format!("{err}: {:?}", err.source());
    assert!(
        message.contains("LazyEchoCache needs RedisStore::go_echocache_compatible"),
        "{message}"
    );
    let token = LockToken::generate();
    assert!(
        store.unlock("k", &token).await.is_ok(),
        "nothing to release"
    );
    assert!(
        store
            .extend_lock("k", &token, Duration::from_secs(1))
            .await
            .is_err()
    );
    assert!(
        Store::extend_lock(&store, "k", &token, Duration::from_secs(1))
            .await
            .is_err(),
        "the trait method refuses too (not the default `Ok(false)`)"
    );
}

#[test]
fn debug_shows_no_credentials() {
    let config = Config::from_url("redis://user:hunter2@127.0.0.1:6379").unwrap();
    let client = Client::new(config, None, None, None);
    let store: RedisStore<String> =
        RedisStore::new(&client, "app", Duration::from_secs(1)).unwrap();
    let printed = format!("{store:?}");
    assert!(!printed.contains("hunter2"), "{printed}");
    assert!(printed.contains("prefix: \"app\""), "{printed}");
}

#[test]
fn store_futures_are_send() {
    fn is_send<T: Send>(_: T) {}
    let ttl = Duration::from_secs(1);
    let native: RedisStore<String, crate::Json> = RedisStore::new(client(), "app", ttl)
        .unwrap()
        .codec(crate::Json);
    let go = RedisStore::go_echocache_compatible(client(), "app", ttl).unwrap();
    let entry = Entry::new(String::new(), SystemTime::UNIX_EPOCH);
    let token = LockToken::generate();
    for store in [native, go] {
        is_send(store.get("k"));
        is_send(store.set("k", &entry));
        is_send(store.remove("k"));
        is_send(store.try_lock("k", ttl));
        is_send(store.unlock("k", &token));
        is_send(store.extend_lock("k", &token, ttl));
        is_send(Store::extend_lock(&store, "k", &token, ttl));
    }
}
