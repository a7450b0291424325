//! [`NatsBackplane`]: the [`Backplane`] of a [`TieredStore`](echocache_core::TieredStore)
//! over a core NATS subject, one per bucket and prefix.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_nats::Client;
use async_nats::connection::State;
use bytes::Bytes;
use echocache_core::{Backplane, BuildError, Listener, LockToken, StoreError};
use futures::StreamExt;

use crate::connect::{ConnectError, ConnectErrorKind, client_options};
use crate::key::KeySpace;

/// How often the listening task looks at the client's connection (state and number of
/// connections made), and whether its tiered store is gone.
const WATCH_EVERY: Duration = Duration::from_millis(20);

/// A [`Backplane`] over core NATS: each change is published on
/// `_echocache.{bucket}.{prefix}.i` as `{node}\n{key}`, and a subscription on the same
/// client relays the others'.
///
/// Why a core subject rather than a watch of the bucket's data subjects: a KV watch would
/// also see writes made outside echocache, but it is a JetStream consumer per process (its
/// state on the server, its own delivery and flow control), and the messages carry whole
/// values; an announcement here is a few bytes, sent at most once and not stored.
/// Announcements sent while this process is disconnected are lost: the backplane notices
/// (the client's state, and its count of connections, read every 20 ms), stops the L1, and
/// drops what the L1 held once the client is connected again (async-nats renews the
/// subscription itself).
pub struct NatsBackplane {
    client: Client,
    subject: Arc<str>,
    node: Arc<str>,
}

impl NatsBackplane {
    /// A backplane for the stores of `bucket` under `prefix`, over `client` (the store's
    /// own client will do).
    ///
    /// # Errors
    ///
    /// [`BuildError::InvalidSetting`] naming `prefix` or `bucket`, as the store refuses
    /// them.
    pub fn new(client: Client, bucket: &str, prefix: &str) -> Result<Self, BuildError> {
        let keys = KeySpace::new(prefix)?;
        crate::BucketOptions::new()
            .validate(bucket)
            .map_err(|_| BuildError::InvalidSetting {
                setting: "bucket",
                reason: "a bucket name is one or more of A-Z, a-z, 0-9, `_` and `-`",
            })?;
        Ok(Self {
            client,
            subject: format!("_echocache.{bucket}.{}.i", keys.prefix()).into(),
            node: LockToken::generate().as_str().into(),
        })
    }

    /// A backplane over a client of its own, built with
    /// [`NatsStore::connect`](crate::NatsStore::connect)'s defaults: it starts while the
    /// server is down and listens once it answers.
    ///
    /// # Errors
    ///
    /// As [`NatsStore::connect`](crate::NatsStore::connect).
    pub async fn connect(url: &str, bucket: &str, prefix: &str) -> Result<Self, ConnectError> {
        KeySpace::new(prefix).map_err(|e| ConnectError::new(ConnectErrorKind::Prefix, e))?;
        let client = client_options().connect(url).await.map_err(|e| {
            let kind = match e.kind() {
                async_nats::ConnectErrorKind::ServerParse => ConnectErrorKind::Url,
                _ => ConnectErrorKind::Client,
            };
            ConnectError::new(kind, e)
        })?;
        Self::new(client, bucket, prefix)
            .map_err(|e| ConnectError::new(ConnectErrorKind::Bucket, e))
    }

    /// The subject: `_echocache.{bucket}.{prefix}.i`.
    pub fn subject(&self) -> &str {
        &self.subject
    }
}

impl fmt::Debug for NatsBackplane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsBackplane")
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

/// `{node}\n{key}`.
fn message(node: &str, key: &str) -> Bytes {
    Bytes::from(format!("{node}\n{key}"))
}

/// The key of a message from another node; `None` for this node's own messages and for
/// messages that are not echocache's.
fn key_from<'a>(node: &str, payload: &'a [u8]) -> Option<&'a str> {
    let (from, key) = std::str::from_utf8(payload).ok()?.split_once('\n')?;
    (from != node).then_some(key)
}

impl Backplane for NatsBackplane {
    async fn publish(&self, key: &str) -> Result<(), StoreError> {
        self.client
            .publish(self.subject.to_string(), message(&self.node, key))
            .await
            .map_err(StoreError::backend)
    }

    /// Spawns the listening task on the current tokio runtime. Without one, the L1 never
    /// serves (every read goes to L2).
    fn listen(&self, listener: Listener) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(relay(
            self.client.clone(),
            Arc::clone(&self.subject),
            Arc::clone(&self.node),
            listener,
        ));
    }
}

/// The listening task: subscribes (until it works), then relays other nodes' messages to
/// `listener` and watches the connection. Ends when the tiered store is gone.
async fn relay(client: Client, subject: Arc<str>, node: Arc<str>, listener: Listener) {
    let mut subscription = loop {
        if listener.is_closed() {
            return;
        }
        match client.subscribe(subject.to_string()).await {
            Ok(subscription) => break subscription,
            Err(_) => tokio::time::sleep(WATCH_EVERY).await,
        }
    };
    let mut watch = tokio::time::interval(WATCH_EVERY);
    let mut connects = client
        .statistics()
        .connects
        .load(std::sync::atomic::Ordering::Relaxed);
    let mut up = false;
    loop {
        tokio::select! {
            message = subscription.next() => match message {
                Some(message) => {
                    if let Some(key) = key_from(&node, &message.payload) {
                        listener.changed(key);
                    }
                }
                None => break,
            },
            _ = watch.tick() => {
                if listener.is_closed() {
                    break;
                }
                let now = client.statistics().connects.load(std::sync::atomic::Ordering::Relaxed);
                let connected = client.connection_state() == State::Connected;
                if !connected {
                    if up {
                        listener.disconnected();
                        up = false;
                    }
                } else if !up || now != connects {
                    // (Re)connected, or reconnected between two looks: what the L1 holds
                    // may have missed announcements.
                    listener.disconnected();
                    listener.connected();
                    up = true;
                }
                connects = now;
            }
        }
    }
    listener.disconnected();
    let _ = subscription.unsubscribe().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_carry_the_node_and_skip_their_sender() {
        let m = message("n1", "a.b\nodd");
        assert_eq!(key_from("n2", &m), Some("a.b\nodd"), "the key as sent");
        assert_eq!(key_from("n1", &m), None, "a node's own message");
        assert_eq!(key_from("n2", b"no separator"), None);
        assert_eq!(key_from("n2", b"\xff\n"), None, "not UTF-8");
    }
}
