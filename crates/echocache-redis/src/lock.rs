//! The refresh lock: `SET lockkey token NX PX ms` to take it (`EX secs` for whole seconds
//! in the Go layout, as go-redis sends), atomic compare-and-delete and compare-and-pexpire
//! Lua scripts to release and extend it.
//!
//! The Go original took the lock with SETNX, GET and EXPIRE (not atomic, a re-entrant take
//! reset the TTL to a hard-coded minute, a zero TTL made a lock that never expired: Go bug
//! 19) and released it with GET then DEL (which could delete the lock of an owner that
//! took it after ours expired: Go bug 20). Here every step is one atomic command on one
//! key, so it also runs on Redis Cluster.

use std::time::Duration;

use echocache_core::LockToken;
use fred::bytes::Bytes;
use fred::error::Error as FredError;
use fred::interfaces::{KeysInterface, LuaInterface};
use fred::types::{Expiration, SetOptions, Value};

use crate::connection::Commands;

/// The largest TTL sent with `PX`, in milliseconds (about 146 million years): Redis
/// refuses an expiry whose absolute time overflows a signed 64-bit millisecond count.
pub(crate) const MAX_TTL_MS: i64 = i64::MAX / 2;

/// A Lua script run by `EVALSHA`, falling back to `EVAL` when the server does not have it
/// cached (after a restart, a `SCRIPT FLUSH`, or on a cluster node that never saw it).
/// `EVAL` also caches it, so the next call takes the short path again.
pub(crate) struct Script {
    pub(crate) source: &'static str,
    /// The SHA-1 of `source`, as `SCRIPT LOAD` returns it.
    pub(crate) sha1: &'static str,
}

/// Deletes `KEYS[1]` only if it still holds the caller's token `ARGV[1]` (Go bug 20).
pub(crate) const UNLOCK: Script = Script {
    source: "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end",
    sha1: "e9f69f2beb755be68b5e456ee2ce9aadfbc4ebf4",
};

/// Sets the TTL of `KEYS[1]` to `ARGV[2]` ms only if it still holds the caller's token
/// `ARGV[1]`.
pub(crate) const EXTEND: Script = Script {
    source: "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end",
    sha1: "9136fcf51831e5cf49f109b6e9c97d5b675280d6",
};

/// Writes `ARGV[2]` to `KEYS[1]` with the `SET` options in `ARGV[3..]` (the expiry)
/// only if the key still holds the bytes `ARGV[1]` (`""` for a key that was absent), and
/// returns 1; 0 when the key changed since it was read. The compare-and-set behind
/// `RedisStore::set_if_version`.
pub(crate) const SET_IF_UNCHANGED: Script = Script {
    source: "local cur = redis.call('get', KEYS[1]) if (cur == false and ARGV[1] == '') or cur == ARGV[1] then redis.call('set', KEYS[1], ARGV[2], unpack(ARGV, 3)) return 1 end return 0",
    sha1: "f38289f70993d7f127042942e2f1cf1d2f3fa7e5",
};

impl Script {
    /// Runs the script on one key and returns its integer reply.
    pub(crate) async fn run(
        &self,
        client: &Commands,
        key: String,
        args: Vec<Value>,
    ) -> Result<i64, FredError> {
        match client
            .evalsha::<i64, _, _, _>(self.sha1, key.clone(), args.clone())
            .await
        {
            Err(e) if e.details().starts_with("NOSCRIPT") => {
                client.eval(self.source, key, args).await
            }
            result => result,
        }
    }
}

/// A duration as a `PX` argument: rounded up to whole milliseconds, at least 1 ms (a lock
/// must expire by itself: a zero TTL never becomes "no expiry", Go bug 19), at most
/// [`MAX_TTL_MS`].
pub(crate) fn px_millis(ttl: Duration) -> i64 {
    let ms = ttl.as_nanos().div_ceil(1_000_000).max(1);
    i64::try_from(ms).map_or(MAX_TTL_MS, |ms| ms.min(MAX_TTL_MS))
}

/// The expiry go-redis sends for a TTL (its `usePrecise` and `formatSec`/`formatMs`):
/// `EX secs` for a whole number of seconds, `PX ms` otherwise, the milliseconds truncated
/// as Go truncates them (below 1 ms: `PX 1`).
///
/// Unlike go-redis, a zero TTL is `PX 1`, never "no expiry": a lock must expire by itself
/// (Go bug 19), and stores refuse a zero entry TTL when they are made.
pub(crate) fn go_expiration(ttl: Duration) -> Expiration {
    if ttl.subsec_nanos() == 0
        && let Ok(secs) = i64::try_from(ttl.as_secs())
        && (1..=MAX_TTL_MS / 1000).contains(&secs)
    {
        return Expiration::EX(secs);
    }
    let ms = i64::try_from(ttl.as_millis()).map_or(MAX_TTL_MS, |ms| ms.clamp(1, MAX_TTL_MS));
    Expiration::PX(ms)
}

/// `SET lock_key token NX PX ttl` (or the given expiry): the new owner's token, or `None`
/// when the lock is held. The token is stored as a plain string, as the Go echocache
/// stores its own.
pub(crate) async fn try_lock(
    client: &Commands,
    lock_key: String,
    expiry: Expiration,
) -> Result<Option<LockToken>, FredError> {
    let token = LockToken::generate();
    let reply: Value = client
        .set(
            lock_key,
            token.as_str(),
            Some(expiry),
            Some(SetOptions::NX),
            false,
        )
        .await?;
    // `OK` when set, nil when the key exists.
    Ok((!reply.is_null()).then_some(token))
}

/// Writes `bytes` to `key` with `expiry` if the key still holds `expected` (empty: absent);
/// whether it wrote.
pub(crate) async fn set_if_unchanged(
    client: &Commands,
    key: String,
    expected: &[u8],
    bytes: Vec<u8>,
    expiry: &Expiration,
) -> Result<bool, FredError> {
    let mut args = vec![
        Value::Bytes(Bytes::copy_from_slice(expected)),
        Value::Bytes(Bytes::from(bytes)),
    ];
    let (option, amount) = match *expiry {
        Expiration::EX(n) => ("EX", Some(n)),
        Expiration::PX(n) => ("PX", Some(n)),
        Expiration::EXAT(n) => ("EXAT", Some(n)),
        Expiration::PXAT(n) => ("PXAT", Some(n)),
        Expiration::KEEPTTL => ("KEEPTTL", None),
    };
    args.push(Value::from(option));
    args.extend(amount.map(Value::from));
    Ok(SET_IF_UNCHANGED.run(client, key, args).await? == 1)
}

/// Deletes the lock if `token` still owns it; a lock that expired or changed owner is left
/// alone.
pub(crate) async fn unlock(
    client: &Commands,
    lock_key: String,
    token: &LockToken,
) -> Result<(), FredError> {
    UNLOCK
        .run(client, lock_key, vec![Value::from(token.as_str())])
        .await
        .map(drop)
}

/// Resets the lock's TTL to `ttl` if `token` still owns it; `false` when it does not.
pub(crate) async fn extend(
    client: &Commands,
    lock_key: String,
    token: &LockToken,
    ttl: Duration,
) -> Result<bool, FredError> {
    let args = vec![Value::from(token.as_str()), Value::from(px_millis(ttl))];
    Ok(EXTEND.run(client, lock_key, args).await? == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn px_rounds_up_and_clamps() {
        assert_eq!(px_millis(Duration::ZERO), 1);
        assert_eq!(px_millis(Duration::from_nanos(1)), 1);
        assert_eq!(px_millis(Duration::from_micros(1_500)), 2);
        assert_eq!(px_millis(Duration::from_millis(30_000)), 30_000);
        assert_eq!(px_millis(Duration::MAX), MAX_TTL_MS);
    }

    #[test]
    fn go_expiry_is_ex_for_whole_seconds_and_px_otherwise() {
        let cases = [
            (Duration::from_secs(3600), Expiration::EX(3600)),
            (Duration::from_secs(1), Expiration::EX(1)),
            // Go's NeverExpire, 100 years.
            (
                Duration::from_secs(3_153_600_000),
                Expiration::EX(3_153_600_000),
            ),
            (Duration::from_millis(1_500), Expiration::PX(1_500)),
            (Duration::from_millis(999), Expiration::PX(999)),
            (Duration::from_micros(90_500_900), Expiration::PX(90_500)),
            (Duration::from_micros(1), Expiration::PX(1)),
            (Duration::ZERO, Expiration::PX(1)),
            (Duration::MAX, Expiration::PX(MAX_TTL_MS)),
            (Duration::from_secs(u64::MAX), Expiration::PX(MAX_TTL_MS)),
        ];
        for (ttl, want) in cases {
            assert_eq!(go_expiration(ttl), want, "{ttl:?}");
        }
    }

    #[test]
    fn scripts_are_single_key_compare_and_act() {
        for script in [&UNLOCK, &EXTEND] {
            assert!(
                script
                    .source
                    .starts_with("if redis.call('get', KEYS[1]) == ARGV[1] then")
            );
            assert!(!script.source.contains("KEYS[2]"));
            assert_eq!(script.sha1.len(), 40);
        }
        assert!(!SET_IF_UNCHANGED.source.contains("KEYS[2]"));
    }

    #[tokio::test]
    #[ignore = "needs Redis: cargo xtask test"]
    async fn script_hashes_match_the_server() {
        use fred::clients::Client;
        use fred::interfaces::ClientLike;
        use fred::types::config::Config;

        let url = std::env::var("ECHOCACHE_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
        let client = Client::new(Config::from_url(&url).unwrap(), None, None, None);
        client.init().await.expect("connect to redis");
        for script in [&UNLOCK, &EXTEND, &SET_IF_UNCHANGED] {
            let sha1: String = client.script_load(script.source).await.unwrap();
            assert_eq!(sha1, script.sha1, "{}", script.source);
        }
        client.quit().await.unwrap();
    }
}
