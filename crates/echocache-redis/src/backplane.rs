//! [`RedisBackplane`]: the [`Backplane`] of a [`TieredStore`](echocache_core::TieredStore)
//! over Redis pub/sub, one channel per prefix.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use echocache_core::{Backplane, BuildError, Listener, LockToken, StoreError};
use fred::clients::Client;
use fred::interfaces::{ClientLike, EventInterface, PubsubInterface};
use fred::types::Value;
use tokio::sync::broadcast::error::RecvError;

use crate::connect::{ConnectError, client};
use crate::keys::KeySpace;
use crate::store::RedisConnection;

/// How long to wait between two attempts to subscribe while Redis does not answer.
const RESUBSCRIBE_EVERY: Duration = Duration::from_millis(100);

/// How often the subscriber task looks whether its tiered store is gone.
const CLOSED_CHECK: Duration = Duration::from_secs(1);

/// A [`Backplane`] over Redis pub/sub: each change is `PUBLISH {prefix}:i "{node}\n{key}"`,
/// and a client of its own subscribes to that channel.
///
/// Why pub/sub rather than client-side-caching tracking (`CLIENT TRACKING … BCAST`): a
/// message names the key the echocache process changed, in any deployment (Cluster
/// included: `PUBLISH` reaches every node's subscribers), with nothing to configure on the
/// server; tracking would also report writes made outside echocache (Go services,
/// `redis-cli`), but needs RESP3 and a redirect connection per client, and reports
/// expiries too. Writes made outside echocache are bounded by the L1 TTL instead (see
/// docs/ARCHITECTURE.md).
///
/// Connection changes: when the subscriber's connection reports an error the tiered store
/// stops serving from L1; when it reconnects, the backplane subscribes again and only then
/// lets the L1 serve, having dropped what it held (messages sent meanwhile were missed).
/// A subscriber that falls behind (its message buffer overflowed) drops the L1 the same
/// way.
pub struct RedisBackplane {
    publisher: RedisConnection,
    subscriber: Client,
    channel: Arc<str>,
    /// This process's id, in every message it sends, so that it skips its own.
    node: Arc<str>,
    /// Made by [`connect`](Self::connect): quit when the tiered store is gone.
    owned: bool,
}

impl RedisBackplane {
    /// A backplane for the stores under `prefix`, publishing through `publisher` (the
    /// store's own client will do) and subscribing through `subscriber`, a client used for
    /// nothing else (a subscribed connection can send no other command). Start the
    /// subscriber yourself (`subscriber.init()` or `connect()`); the subscription is made
    /// when a [`TieredStore`](echocache_core::TieredStore) starts listening, and made again
    /// after every reconnection.
    ///
    /// # Errors
    ///
    /// [`BuildError::InvalidSetting`] naming `prefix`, as [`RedisStore::new`] refuses it.
    ///
    /// [`RedisStore::new`]: crate::RedisStore::new
    pub fn new(
        publisher: impl Into<RedisConnection>,
        subscriber: Client,
        prefix: &str,
    ) -> Result<Self, BuildError> {
        let keys = KeySpace::new(prefix)?;
        Ok(Self {
            publisher: publisher.into(),
            subscriber,
            channel: format!("{}:i", keys.prefix()).into(),
            node: LockToken::generate().as_str().into(),
            owned: false,
        })
    }

    /// A backplane over two fred clients of its own (publisher and subscriber), built with
    /// [`RedisStore::connect`](crate::RedisStore::connect)'s safe defaults: it starts
    /// while Redis is down and subscribes once Redis answers.
    ///
    /// # Errors
    ///
    /// As [`RedisStore::connect`](crate::RedisStore::connect).
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, ConnectError> {
        let publisher = client(url).map_err(ConnectError::InvalidUrl)?;
        let subscriber = client(url).map_err(ConnectError::InvalidUrl)?;
        let backplane = Self {
            owned: true,
            ..Self::new(&publisher, subscriber.clone(), prefix)?
        };
        drop(publisher.connect());
        drop(subscriber.connect());
        Ok(backplane)
    }

    /// The pub/sub channel: `{prefix}:i`.
    pub fn channel(&self) -> &str {
        &self.channel
    }
}

impl fmt::Debug for RedisBackplane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackplane")
            .field("channel", &self.channel)
            .field("publisher", &self.publisher)
            .finish_non_exhaustive()
    }
}

/// `{node}\n{key}`.
fn message(node: &str, key: &str) -> String {
    format!("{node}\n{key}")
}

/// The key of a message from another node; `None` for this node's own messages and for
/// messages that are not echocache's.
fn key_from<'a>(node: &str, payload: &'a str) -> Option<&'a str> {
    let (from, key) = payload.split_once('\n')?;
    (from != node).then_some(key)
}

impl Backplane for RedisBackplane {
    async fn publish(&self, key: &str) -> Result<(), StoreError> {
        self.publisher
            .commands()
            .publish::<Value, _, _>(&*self.channel, message(&self.node, key))
            .await
            .map(drop)
            .map_err(crate::store::backend("PUBLISH"))
    }

    /// Spawns the subscriber task on the current tokio runtime. Without one, the L1 never
    /// serves (every read goes to L2).
    fn listen(&self, listener: Listener) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(subscribe_and_relay(
            self.subscriber.clone(),
            Arc::clone(&self.channel),
            Arc::clone(&self.node),
            listener,
            self.owned,
        ));
    }
}

/// Subscribes until it works; `false` when the tiered store went away meanwhile.
async fn subscribe(subscriber: &Client, channel: &str, listener: &Listener) -> bool {
    while subscriber.subscribe(channel).await.is_err() {
        if listener.is_closed() {
            return false;
        }
        tokio::time::sleep(RESUBSCRIBE_EVERY).await;
    }
    true
}

/// The subscriber task: relays other nodes' messages to `listener`, and its connection
/// changes. Ends when the tiered store is gone (looked at every [`CLOSED_CHECK`]) or the
/// client's event channels close; a client the backplane made itself is then quit.
async fn subscribe_and_relay(
    subscriber: Client,
    channel: Arc<str>,
    node: Arc<str>,
    listener: Listener,
    owned: bool,
) {
    // Receivers first: a message or reconnection from now on is seen.
    let mut messages = subscriber.message_rx();
    let mut reconnects = subscriber.reconnect_rx();
    let mut errors = subscriber.error_rx();
    let mut closed_check = tokio::time::interval(CLOSED_CHECK);
    if subscribe(&subscriber, &channel, &listener).await {
        listener.connected();
        loop {
            tokio::select! {
                message = messages.recv() => match message {
                    Ok(message) => {
                        if let Some(payload) = message.value.as_str()
                            && let Some(key) = key_from(&node, &payload)
                        {
                            listener.changed(key);
                        }
                    }
                    Err(RecvError::Lagged(_)) => {
                        // Messages were dropped: forget everything the L1 holds.
                        listener.disconnected();
                        listener.connected();
                    }
                    Err(RecvError::Closed) => break,
                },
                reconnected = reconnects.recv() => match reconnected {
                    Ok(_) | Err(RecvError::Lagged(_)) => {
                        listener.disconnected();
                        if !subscribe(&subscriber, &channel, &listener).await {
                            break;
                        }
                        listener.connected();
                    }
                    Err(RecvError::Closed) => break,
                },
                error = errors.recv() => match error {
                    Ok(_) | Err(RecvError::Lagged(_)) => listener.disconnected(),
                    Err(RecvError::Closed) => break,
                },
                _ = closed_check.tick() => {
                    if listener.is_closed() {
                        break;
                    }
                }
            }
        }
    }
    listener.disconnected();
    if owned {
        let _ = subscriber.quit().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_carry_the_node_and_skip_their_sender() {
        let m = message("n1", "user:42\nodd");
        assert_eq!(key_from("n2", &m), Some("user:42\nodd"), "the key as sent");
        assert_eq!(key_from("n1", &m), None, "a node's own message");
        assert_eq!(key_from("n2", "no separator"), None);
    }

    #[test]
    fn the_channel_is_under_the_prefix_and_bad_prefixes_are_refused() {
        let client = Client::new(fred::types::config::Config::default(), None, None, None);
        let b = RedisBackplane::new(&client, client.clone(), "app").unwrap();
        assert_eq!(b.channel(), "app:i");
        assert!(RedisBackplane::new(&client, client.clone(), "").is_err());
        assert!(RedisBackplane::new(&client, client.clone(), "a:l").is_err());
    }
}
