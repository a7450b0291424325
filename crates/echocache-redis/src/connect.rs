//! [`RedisStore::connect`]: a store over a fred client built with safe defaults, and
//! [`ConnectError`].

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use echocache_core::BuildError;
use echocache_core::codec::MessagePack;
use fred::clients::Client;
use fred::error::{Error as FredError, ErrorKind};
use fred::interfaces::ClientLike;
use fred::types::Builder;
use fred::types::config::{Config, ReconnectPolicy};

use crate::RedisStore;

/// How long a command may wait for its reply before fred gives up on it. The caches bound
/// their own store calls much tighter: this is the second line, for callers of the store
/// itself and for anything else sent through the client.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a TCP connect (and TLS handshake), and each command fred sends on its own
/// while connecting (`HELLO`, `AUTH`, `SELECT`, `CLUSTER SLOTS`), may take.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(2);

/// A connection that has written a command and read nothing for this long is taken as dead
/// (a stalled or vanished server, a half-open socket): fred closes it and reconnects. fred
/// counts from the last write, so this fires once no command was sent for that long (for
/// instance while the caches' circuit breaker skips the store).
const UNRESPONSIVE_AFTER: Duration = Duration::from_secs(4);

/// How often fred looks for unresponsive connections (below half of
/// [`UNRESPONSIVE_AFTER`], as fred asks).
const UNRESPONSIVE_CHECK: Duration = Duration::from_secs(1);

/// Reconnection delays: from this, doubling ...
const RECONNECT_MIN_DELAY_MS: u32 = 100;

/// ... up to this (plus fred's jitter of up to 100 ms), for ever: a server that comes back
/// is used again within about this long.
const RECONNECT_MAX_DELAY_MS: u32 = 2_000;

/// How long `connect` waits for the first connection before it returns anyway.
const FIRST_CONNECTION_WAIT: Duration = Duration::from_millis(500);

/// Why [`RedisStore::connect`] made no store.
///
/// Never a server that is down or unreachable: `connect` returns a store all the same, and
/// the client connects when it can. The message never holds the URL (it may hold a
/// password); the cause is the [`source`](StdError::source).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use echocache_redis::{ConnectError, RedisStore};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let ttl = Duration::from_secs(60);
/// let err = RedisStore::<String>::connect("localhost:6379", "app", ttl).await.unwrap_err();
/// assert!(matches!(err, ConnectError::InvalidUrl(_)), "no scheme: {err:?}");
/// assert_eq!(err.to_string(), "invalid redis url");
///
/// let err = RedisStore::<String>::connect("redis://127.0.0.1:6379", "", ttl).await.unwrap_err();
/// assert!(matches!(err, ConnectError::InvalidSetting(_)), "empty prefix: {err:?}");
/// # }
/// ```
#[non_exhaustive]
#[derive(Debug)]
pub enum ConnectError {
    /// fred does not accept the URL: unknown scheme, missing host, bad port or database,
    /// a `rediss://` URL while fred has no TLS feature enabled, a Unix socket URL without
    /// fred's `unix-sockets` feature. The fred error is the [`source`](StdError::source).
    InvalidUrl(FredError),
    /// The prefix or TTL was refused, as [`RedisStore::new`] refuses it.
    InvalidSetting(BuildError),
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the URL itself: it may hold a password.
        match self {
            ConnectError::InvalidUrl(_) => f.write_str("invalid redis url"),
            ConnectError::InvalidSetting(_) => f.write_str("invalid redis store setting"),
        }
    }
}

impl StdError for ConnectError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            ConnectError::InvalidUrl(err) => Some(err),
            ConnectError::InvalidSetting(err) => Some(err),
        }
    }
}

impl From<BuildError> for ConnectError {
    fn from(err: BuildError) -> Self {
        ConnectError::InvalidSetting(err)
    }
}

/// Whether `url` asks for TLS (`rediss://`, `rediss-cluster://`, `valkeys://`, ...).
fn wants_tls(url: &str) -> bool {
    let scheme = url.split_once("://").map_or("", |(scheme, _)| scheme);
    let scheme = scheme.to_ascii_lowercase();
    scheme.starts_with("rediss") || scheme.starts_with("valkeys")
}

/// A fred client for `url` with [`RedisStore::connect`]'s defaults, not connected yet.
pub(crate) fn client(url: &str) -> Result<Client, FredError> {
    let config = Config {
        // The first connection follows the reconnect policy too (fred's default gives up on
        // a first connection that fails, for good).
        fail_fast: false,
        ..Config::from_url(url)?
    };
    if wants_tls(url) && !config.uses_tls() {
        // fred would connect in plain text (it only logs a warning): refuse instead.
        return Err(FredError::new(
            ErrorKind::Config,
            "the url asks for TLS but fred was built without a TLS feature \
             (enable fred's `enable-rustls` or `enable-native-tls`)",
        ));
    }
    Builder::from_config(config)
        .with_connection_config(|c| {
            c.connection_timeout = CONNECTION_TIMEOUT;
            c.internal_command_timeout = CONNECTION_TIMEOUT;
            c.unresponsive.max_timeout = Some(UNRESPONSIVE_AFTER);
            c.unresponsive.interval = UNRESPONSIVE_CHECK;
        })
        .with_performance_config(|c| c.default_command_timeout = COMMAND_TIMEOUT)
        .set_policy(ReconnectPolicy::new_exponential(
            0, // no limit: reconnect for ever
            RECONNECT_MIN_DELAY_MS,
            RECONNECT_MAX_DELAY_MS,
            2,
        ))
        .build()
}

impl<V> RedisStore<V, MessagePack> {
    /// Connects to the Redis at `url` and makes a store that keeps entries under `prefix`
    /// for `ttl` after their last write, encoded with [`MessagePack`] (`.codec(Json)`
    /// afterwards for JSON).
    ///
    /// The common way to make a [`RedisStore`]. It builds a fred [`Client`] whose settings
    /// suit a cache, which must keep serving (from the loader) while Redis is slow or down:
    ///
    /// | fred setting | value | why |
    /// |---|---|---|
    /// | `fail_fast` ([`Config`]) | `false` | the process starts while Redis is down |
    /// | reconnect policy | exponential, 100 ms doubling to 2 s, for ever | Redis is used again, with no action from you, within about 2 s of coming back |
    /// | `default_command_timeout` | 2 s | no command waits longer for its reply |
    /// | `connection_timeout`, `internal_command_timeout` | 2 s | a connect that hangs is given up and retried |
    /// | `unresponsive.max_timeout` | 4 s | a connection that wrote a command and read nothing for 4 s (a stalled server, a half-open socket) is closed and made again |
    ///
    /// The connection is made in the background: `connect` waits at most 500 ms for it and
    /// returns the store either way. While the client is not connected, every store call
    /// fails at once (as with any `RedisStore`: see [`RedisStore::new`]), and the caches
    /// load from the source. A stalled server (connected, not answering) costs each call
    /// up to the 2 s command timeout, which the caches cut short with their own store
    /// timeout; once no command was written for 4 s the connection is dropped and calls
    /// fail at once until Redis answers again.
    ///
    /// The URL is fred's ([`Config::from_url`]): `redis://[user:password@]host[:port][/db]`,
    /// `rediss://` for TLS (with one of fred's TLS features enabled in your `Cargo.toml`),
    /// `redis-cluster://host:port?node=host2:port2`, `redis-sentinel://...`.
    ///
    /// For anything else (a [`Pool`](fred::clients::Pool), your own timeouts, TLS
    /// certificates), build the client yourself and use [`RedisStore::new`]: the
    /// [crate docs](crate#your-own-fred-client) say which settings matter.
    ///
    /// The client is the store's: reach it through [`connection`](RedisStore::connection)
    /// (a [`RedisConnection::Client`](crate::RedisConnection::Client)), e.g. to `quit` it
    /// at shutdown. Dropping the store does not stop its connection task.
    ///
    /// # Errors
    ///
    /// [`ConnectError::InvalidUrl`] when fred does not accept `url` (a `rediss://` URL
    /// without one of fred's TLS features included); [`ConnectError::InvalidSetting`] for
    /// the prefix or TTL, as [`RedisStore::new`] refuses them. Never for a server that is
    /// down or unreachable: the store is returned and connects when it can.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime (fred spawns its connection task on it).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use echocache_core::EchoCache;
    /// use echocache_redis::{Json, RedisStore};
    ///
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// // Returns even while Redis is down; the store is used as soon as Redis answers.
    /// let store = RedisStore::connect("redis://127.0.0.1:6379", "myapp:users", Duration::from_secs(3600)).await?;
    /// let cache = EchoCache::new(store);
    /// let name = cache
    ///     .fetch("42", || async { Ok::<_, std::io::Error>("Ada".to_string()) })
    ///     .await?;
    /// # drop(name);
    ///
    /// // JSON instead of MessagePack, e.g. to read the entries in `redis-cli`.
    /// let json: RedisStore<Vec<u32>, Json> =
    ///     RedisStore::connect("redis://127.0.0.1:6379", "myapp:lists", Duration::from_secs(600))
    ///         .await?
    ///         .codec(Json);
    /// # drop(json);
    /// # Ok(()) }
    /// ```
    pub async fn connect(url: &str, prefix: &str, ttl: Duration) -> Result<Self, ConnectError> {
        let client = client(url).map_err(ConnectError::InvalidUrl)?;
        // Checked before the connection task starts: a refused setting leaves nothing
        // running.
        let store = RedisStore::new(&client, prefix, ttl)?;
        start(&[&client]).await;
        Ok(store)
    }
}

/// Starts the connection tasks of `clients`, then waits until they are connected, for at
/// most [`FIRST_CONNECTION_WAIT`]: the first calls of a fresh process find their
/// connection made when Redis is up (the stores' commands fail at once while their client
/// is not connected, rather than wait in fred's buffer). Returns either way: a server that
/// is down is connected to when it comes back.
pub(crate) async fn start(clients: &[&Client]) {
    for client in clients {
        drop(client.connect());
    }
    // `wait_for_connect` could miss a connection made between its state check and its
    // subscription: poll the state instead.
    let _ = tokio::time::timeout(FIRST_CONNECTION_WAIT, async {
        while !clients.iter().all(|c| c.is_connected()) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_urls_are_recognised() {
        for url in [
            "rediss://h:6380",
            "REDISS://h",
            "rediss-cluster://h:1",
            "valkeys://h",
        ] {
            assert!(wants_tls(url), "{url}");
        }
        for url in ["redis://h", "redis-cluster://h:1", "valkey://h", "nonsense"] {
            assert!(!wants_tls(url), "{url}");
        }
    }

    #[test]
    fn the_client_gets_the_safe_defaults() {
        let client = client("redis://127.0.0.1:6379/2").unwrap();
        assert!(!client.client_config().fail_fast);
        let perf = client.perf_config();
        assert_eq!(perf.default_command_timeout, COMMAND_TIMEOUT);
        let conn = client.connection_config();
        assert_eq!(conn.connection_timeout, CONNECTION_TIMEOUT);
        assert_eq!(conn.internal_command_timeout, CONNECTION_TIMEOUT);
        assert_eq!(conn.unresponsive.max_timeout, Some(UNRESPONSIVE_AFTER));
        assert!(UNRESPONSIVE_CHECK * 2 < UNRESPONSIVE_AFTER);
        match client.client_reconnect_policy() {
            Some(ReconnectPolicy::Exponential {
                max_attempts,
                min_delay,
                max_delay,
                ..
            }) => {
                assert_eq!(max_attempts, 0, "for ever");
                assert_eq!(min_delay, RECONNECT_MIN_DELAY_MS);
                assert_eq!(max_delay, RECONNECT_MAX_DELAY_MS);
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn bad_urls_and_settings_are_clear_errors() {
        let ttl = Duration::from_secs(60);
        for url in ["", "127.0.0.1:6379", "redis://", "redis://h:notaport"] {
            let err = RedisStore::<String>::connect(url, "app", ttl)
                .await
                .unwrap_err();
            assert!(matches!(err, ConnectError::InvalidUrl(_)), "{url}: {err:?}");
            assert_eq!(err.to_string(), "invalid redis url");
            assert!(err.source().is_some());
        }
        // Without a TLS feature of fred, a TLS URL is refused, not downgraded to plain text.
        if Config::from_url("rediss://h:6380").unwrap().uses_tls() {
            return;
        }
        let err = RedisStore::<String>::connect("rediss://user:hunter2@h:6380", "app", ttl)
            .await
            .unwrap_err();
        assert!(err.source().unwrap().to_string().contains("TLS"), "{err:?}");
        assert!(!format!("{err} {err:?}").contains("hunter2"));

        let err = RedisStore::<String>::connect("redis://127.0.0.1:1", "a b", ttl)
            .await
            .unwrap_err();
        match err {
            ConnectError::InvalidSetting(BuildError::InvalidSetting { setting, .. }) => {
                assert_eq!(setting, "prefix");
            }
            other => panic!("{other:?}"),
        }
        let err = RedisStore::<String>::connect("redis://127.0.0.1:1", "app", Duration::ZERO)
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "invalid redis store setting");
    }
}
