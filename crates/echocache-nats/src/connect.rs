//! [`NatsStore::connect`]: a client with safe defaults, a bucket opened when the server
//! answers, and [`ConnectError`].

use std::error::Error as StdError;
use std::fmt;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream::{self as js, kv};
use async_nats::{Client, ConnectErrorKind as ClientErrorKind, ConnectOptions};
use echocache_core::codec::MessagePack;

use crate::bucket::{BucketOptions, open_or_create_bucket};
use crate::handle::BucketHandle;
use crate::key::KeySpace;
use crate::store::NatsStore;

/// How long a connection attempt (TCP, TLS and the NATS handshake) may take.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(2);

/// How long the client waits for the answer to a request, JetStream API calls and
/// publish acks included: a second line of defence behind the caches' store timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// How often the client pings the server; two unanswered pings close the connection,
/// which is then re-established.
const PING_INTERVAL: Duration = Duration::from_secs(10);

/// The longest wait between two reconnection attempts.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// How long [`NatsStore::connect`] waits for the first connection before it returns a
/// store that connects in the background.
const FIRST_CONNECTION_WAIT: Duration = Duration::from_millis(500);

/// How long [`NatsStore::connect`] waits for the bucket once connected, before it leaves
/// the bucket to be opened by the first operation.
const FIRST_OPEN_WAIT: Duration = Duration::from_millis(500);

/// How often [`NatsStore::connect`] looks whether the first connection is up.
const CONNECTION_POLL: Duration = Duration::from_millis(5);

/// The wait before reconnection attempt `attempt` (counted from 1): none for the first,
/// then 10 ms doubling up to [`MAX_RECONNECT_DELAY`].
fn reconnect_delay(attempt: usize) -> Duration {
    if attempt <= 1 {
        return Duration::ZERO;
    }
    let doublings = u32::try_from(attempt - 2).unwrap_or(u32::MAX).min(16);
    Duration::from_millis(10u64 << doublings).min(MAX_RECONNECT_DELAY)
}

/// The client settings of [`NatsStore::connect`].
pub(crate) fn client_options() -> ConnectOptions {
    ConnectOptions::new()
        .name("echocache")
        .retry_on_initial_connect()
        .max_reconnects(None)
        .reconnect_delay_callback(reconnect_delay)
        .connection_timeout(CONNECTION_TIMEOUT)
        .request_timeout(Some(REQUEST_TIMEOUT))
        .ping_interval(PING_INTERVAL)
}

impl<V> NatsStore<V, MessagePack> {
    /// Connects to the NATS server at `url` and makes a store over the KV bucket `bucket`
    /// (created with [`BucketOptions::new`] when it does not exist), with keys under
    /// `prefix`. The service starts whether or not the server is up: the store uses it as
    /// soon as it answers.
    ///
    /// This is the recommended way to make a store. It is [`connect_with`](Self::connect_with)
    /// with default bucket options; to use a client of your own (credentials files, NKeys,
    /// custom TLS, a shared connection), open the bucket yourself and use
    /// [`new`](NatsStore::new).
    ///
    /// `url` is one server, `nats://host:port` (or `tls://`, `ws://`, `wss://`; `host:port`
    /// alone means `nats://`), with `user:password@` or `token@` when the server wants
    /// them.
    ///
    /// # The client
    ///
    /// The client is built with settings for a cache, whose store may be down at any time:
    ///
    /// - **Start while the server is down.** The first connection is retried in the
    ///   background; `connect` waits at most about half a second for it (and half a second
    ///   more for the bucket), then returns the store anyway.
    /// - **Reconnect for ever**, with no wait before the first attempt, then 10 ms doubling
    ///   up to 1 s between attempts; a connection attempt may take 2 s.
    /// - **Bounded requests**: every request, JetStream API call and publish ack waits at
    ///   most 2 s for its answer. The caches bound each store call more tightly still
    ///   (their store timeout); this is a second line of defence.
    /// - **Pings** every 10 s, so that a connection to a server that no longer answers is
    ///   dropped and re-established.
    ///
    /// # The bucket
    ///
    /// The bucket is opened, or created, as [`open_or_create_bucket`] does, as soon as the
    /// server answers: during `connect` if it is up, else by the first operation after it
    /// comes up. The store checks the bucket again after every reconnection, and when an
    /// operation finds that the server has lost it (a bucket with
    /// [`Memory`](async_nats::jetstream::stream::StorageType::Memory) storage after a
    /// server restart), it creates the bucket again with the same options and retries the
    /// operation once. One re-creation runs at a time, nothing loops.
    ///
    /// While the client is not connected, every operation fails at once with a backend
    /// [`StoreError`](echocache_core::StoreError), which the caches count and survive:
    /// nothing waits for a request timeout, and no write is queued to land after the
    /// reconnection, possibly over a newer value. While the server is up but the bucket
    /// cannot be opened or created, operations fail with the reason as the error's source.
    ///
    /// # Errors
    ///
    /// A [`ConnectError`] of kind:
    ///
    /// - [`Url`](ConnectErrorKind::Url) when `url` is not a NATS server URL;
    /// - [`Prefix`](ConnectErrorKind::Prefix) when `prefix` is invalid (the rules of
    ///   [`new`](NatsStore::new));
    /// - [`Bucket`](ConnectErrorKind::Bucket) when the bucket name or an option is invalid
    ///   (the rules of [`open_or_create_bucket`]).
    ///
    /// A server that is down or refuses the bucket is not an error here.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use echocache_core::EchoCache;
    /// use echocache_nats::NatsStore;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let store = NatsStore::connect("nats://127.0.0.1:4222", "echocache", "users")
    ///     .await?
    ///     .ttl(Duration::from_secs(600))?;
    /// let cache = EchoCache::new(store);
    /// let name: String = cache
    ///     .fetch("user:42", || async { Ok::<_, std::io::Error>("Ada".to_string()) })
    ///     .await?;
    /// # let _ = name;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(url: &str, bucket: &str, prefix: &str) -> Result<Self, ConnectError> {
        Self::connect_with(url, bucket, prefix, BucketOptions::new()).await
    }

    /// [`connect`](Self::connect), creating the bucket with `options` when it does not
    /// exist (an existing bucket is used as it is), and re-creating it with them when the
    /// server has lost it.
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use echocache_nats::{BucketOptions, NatsStore};
    /// use echocache_nats::async_nats::jetstream::stream::StorageType;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// // A bucket kept in the server's memory only: lost when the server restarts, and
    /// // then created again by the store on its own.
    /// let options = BucketOptions::new()
    ///     .storage(StorageType::Memory)
    ///     .max_age(Duration::from_secs(3600));
    /// let store = NatsStore::<String>::connect_with(
    ///     "nats://127.0.0.1:4222",
    ///     "echocache",
    ///     "users",
    ///     options,
    /// )
    /// .await?;
    /// # let _ = store;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect_with(
        url: &str,
        bucket: &str,
        prefix: &str,
        options: BucketOptions,
    ) -> Result<Self, ConnectError> {
        let keys =
            KeySpace::new(prefix).map_err(|e| ConnectError::new(ConnectErrorKind::Prefix, e))?;
        options
            .validate(bucket)
            .map_err(|e| ConnectError::new(ConnectErrorKind::Bucket, e))?;
        let client = client_options().connect(url).await.map_err(|e| {
            let kind = match e.kind() {
                ClientErrorKind::ServerParse => ConnectErrorKind::Url,
                _ => ConnectErrorKind::Client,
            };
            ConnectError::new(kind, e)
        })?;
        let js = js::ContextBuilder::new()
            .timeout(REQUEST_TIMEOUT)
            .build(client.clone());
        let (kv, checked_at) = first_open(&client, &js, bucket, &options).await;
        let handle = BucketHandle::owned(bucket, js, options, kv, checked_at);
        Ok(NatsStore::from_handle(handle, keys))
    }
}

/// The bucket, when the server answers within [`FIRST_CONNECTION_WAIT`] and opens it
/// within [`FIRST_OPEN_WAIT`]; and the client's connection count before it was opened.
async fn first_open(
    client: &Client,
    js: &js::Context,
    bucket: &str,
    options: &BucketOptions,
) -> (Option<kv::Store>, u64) {
    let connected = tokio::time::timeout(FIRST_CONNECTION_WAIT, async {
        while client.connection_state() != State::Connected {
            tokio::time::sleep(CONNECTION_POLL).await;
        }
    })
    .await;
    if connected.is_err() {
        return (None, 0);
    }
    let connects = client.statistics().connects.load(Ordering::Acquire);
    match tokio::time::timeout(FIRST_OPEN_WAIT, open_or_create_bucket(js, bucket, options)).await {
        Ok(Ok(kv)) => (Some(kv), connects),
        // Left to the first operation, which reports why.
        Ok(Err(_)) | Err(_) => (None, 0),
    }
}

/// What [`NatsStore::connect`] found wrong.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectErrorKind {
    /// The server URL could not be parsed.
    Url,
    /// The prefix is invalid.
    Prefix,
    /// The bucket name or a bucket option is invalid.
    Bucket,
    /// The client could not be started.
    Client,
}

/// [`NatsStore::connect`] failed: [`kind`](Self::kind) says what was wrong, the
/// [`source`](StdError::source) says why (an async-nats error for [`ConnectErrorKind::Url`]
/// and [`ConnectErrorKind::Client`], outside this crate's semver; a
/// [`BuildError`](echocache_core::BuildError) for [`ConnectErrorKind::Prefix`]; a
/// [`BucketError`](crate::BucketError) for [`ConnectErrorKind::Bucket`]). Messages never
/// contain the URL, which may hold a password.
pub struct ConnectError {
    kind: ConnectErrorKind,
    source: Box<dyn StdError + Send + Sync + 'static>,
}

impl ConnectError {
    pub(crate) fn new(
        kind: ConnectErrorKind,
        source: impl StdError + Send + Sync + 'static,
    ) -> Self {
        Self {
            kind,
            source: Box::new(source),
        }
    }

    /// What was wrong.
    pub fn kind(&self) -> ConnectErrorKind {
        self.kind
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.kind {
            ConnectErrorKind::Url => "invalid nats server url",
            ConnectErrorKind::Prefix => "invalid prefix",
            ConnectErrorKind::Bucket => "invalid bucket name or options",
            ConnectErrorKind::Client => "could not start the nats client",
        })
    }
}

impl fmt::Debug for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectError")
            .field("kind", &self.kind)
            .field("source", &self.source)
            .finish()
    }
}

impl StdError for ConnectError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnects_back_off_to_one_second() {
        let delays: Vec<u64> = (0..12)
            .map(|a| reconnect_delay(a).as_millis() as u64)
            .collect();
        assert_eq!(
            delays,
            [0, 0, 10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000]
        );
        assert_eq!(reconnect_delay(usize::MAX), MAX_RECONNECT_DELAY);
    }

    #[tokio::test]
    async fn bad_urls_prefixes_and_buckets_are_refused_before_connecting() {
        let err = NatsStore::<String>::connect("nats://127.0.0.1:4222", "b", "a..b")
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ConnectErrorKind::Prefix);
        assert_eq!(err.to_string(), "invalid prefix");
        let err = NatsStore::<String>::connect("nats://127.0.0.1:4222", "a.b", "p")
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ConnectErrorKind::Bucket);
        for url in [
            "http://127.0.0.1:4222",
            "nats://user:secret@[::1",
            "nats://h:99999",
        ] {
            let err = NatsStore::<String>::connect(url, "b", "p")
                .await
                .unwrap_err();
            assert_eq!(err.kind(), ConnectErrorKind::Url, "{url}");
            assert!(!format!("{err} {err:?}").contains("secret"), "{err:?}");
        }
    }
}
